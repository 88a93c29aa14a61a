# Every input of the lifeline jump host module. Values that end up on the
# instance are validated here so that a typo fails `terraform plan`, not the
# boot of the jump host.

variable "name" {
  description = "Name of the jump host: prefix of every AWS resource, and the bastion name in SMS alerts (LIFELINE_NAME). Lowercase letters, digits and dashes."
  type        = string
  default     = "lifeline"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,30}$", var.name))
    error_message = "name must be 1-31 lowercase letters, digits or dashes, starting with a letter or digit."
  }
}

variable "instance_type" {
  description = "EC2 instance type. The default t4g.nano (arm64, 2 vCPU burst, 0.5 GiB) is plenty for a relay; the package URL must match its architecture."
  type        = string
  default     = "t4g.nano"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like an EC2 instance type, for example t4g.nano."
  }
}

variable "subnet_id" {
  description = "Subnet for the jump host (it needs a route to an internet gateway). null: the first default subnet of the region's default VPC."
  type        = string
  default     = null

  validation {
    condition     = var.subnet_id == null || can(regex("^subnet-[0-9a-f]{8,17}$", var.subnet_id))
    error_message = "subnet_id must be null or a subnet ID like subnet-0123456789abcdef0."
  }
}

variable "port" {
  description = "TCP port lifeline-bastion listens on and the security group opens (LIFELINE_LISTEN). Above 1024 so the service needs no capability; never 22, which stays closed."
  type        = number
  default     = 2222

  validation {
    condition     = var.port == floor(var.port) && var.port > 1024 && var.port <= 65535
    error_message = "port must be an integer from 1025 to 65535 (the bastion runs without privileges; port 22 stays closed)."
  }
}

variable "allowed_cidrs" {
  description = "Source CIDRs (IPv4 and IPv6) allowed to reach the bastion port. Default: everywhere, because agents on cellular links have changing addresses. This is the only ingress rule of the security group."
  type        = list(string)
  default     = ["0.0.0.0/0", "::/0"]

  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "allowed_cidrs must hold at least one valid CIDR, like 0.0.0.0/0 or 2001:db8::/32."
  }
}

variable "bastion_package_url" {
  description = "HTTPS URL of the lifeline-bastion .deb (from `make deb`) for the instance's architecture (arm64 for t4g)."
  type        = string

  validation {
    condition     = can(regex("^https://[^\\s'\"]+_(arm64|amd64)\\.deb$", var.bastion_package_url))
    error_message = "bastion_package_url must be an https:// URL of a lifeline-bastion_<version>_<arm64|amd64>.deb without spaces or quotes."
  }
}

variable "bastion_package_sha256" {
  description = "SHA-256 of the .deb at bastion_package_url (its line in dist/SHA256SUMS). The instance refuses any other file."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.bastion_package_sha256))
    error_message = "bastion_package_sha256 must be 64 lowercase hex digits."
  }
}

variable "operators" {
  description = "Lines of /etc/lifeline/operators (authorized_keys format): the people who may use the jump host, with optional from=, permitopen=, cert-authority, principals=, expiry-time= options."
  type        = list(string)

  validation {
    condition = length(var.operators) > 0 && alltrue([
      for k in var.operators : length(regexall("[\r\n]", k)) == 0 &&
      can(regex("(^|[ ])(ssh-ed25519|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) AAAA[0-9A-Za-z+/=]+", k))
    ])
    error_message = "operators must hold at least one authorized_keys line (one key per element, no newlines)."
  }
}

variable "agents" {
  description = "Lines of /etc/lifeline/agents (authorized_keys format): one per site agent, each with permitlisten=\"NAME:PORT\" naming the targets it may register, e.g. permitlisten=\"pi:22\" ssh-ed25519 AAAA… pi. May be empty at first and filled in when pairing."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for k in var.agents : length(regexall("[\r\n]", k)) == 0 &&
      can(regex("permitlisten=\"[^\"]+\"", k)) &&
      can(regex("(^|[ ])(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) AAAA[0-9A-Za-z+/=]+", k))
    ])
    error_message = "Each agents line must be one authorized_keys line with a permitlisten=\"NAME:PORT\" option."
  }
}

variable "host_key_openssh" {
  description = "The bastion's ed25519 host key in OpenSSH private key format, to keep an existing identity. null: the module generates one (tls_private_key). Either way the key is in the Terraform state."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.host_key_openssh == null || can(regex("^-----BEGIN OPENSSH PRIVATE KEY-----", var.host_key_openssh))
    error_message = "host_key_openssh must be null or an unencrypted OpenSSH private key."
  }
}

variable "twilio_account_sid" {
  description = "Twilio account SID (AC…) for SMS alerts (TWILIO_ACCOUNT_SID). Empty: alerts go to the journal only."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = var.twilio_account_sid == "" || can(regex("^AC[0-9a-f]{32}$", var.twilio_account_sid))
    error_message = "twilio_account_sid must be empty or AC followed by 32 lowercase hex digits."
  }
}

variable "twilio_auth_token" {
  description = "Twilio auth token (TWILIO_AUTH_TOKEN). Sensitive: it lands in the Terraform state, the instance user data and /etc/lifeline/bastion.env (root only)."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = var.twilio_auth_token == "" || can(regex("^[0-9A-Za-z]{32}$", var.twilio_auth_token))
    error_message = "twilio_auth_token must be empty or 32 letters and digits."
  }
}

variable "sms_from" {
  description = "Twilio phone number that sends the alerts, E.164 (LIFELINE_SMS_FROM), e.g. +15005550006. Empty: no SMS."
  type        = string
  default     = ""

  validation {
    condition     = var.sms_from == "" || can(regex("^\\+[1-9][0-9]{6,14}$", var.sms_from))
    error_message = "sms_from must be empty or an E.164 phone number like +15005550006."
  }
}

variable "sms_to" {
  description = "Phone numbers that receive the alerts, E.164 (LIFELINE_SMS_TO)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for n in var.sms_to : can(regex("^\\+[1-9][0-9]{6,14}$", n))])
    error_message = "Each sms_to entry must be an E.164 phone number like +447700900123."
  }
}

variable "quiet_from" {
  description = "Operator source CIDRs whose logins are logged but not texted (LIFELINE_QUIET_FROM)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.quiet_from : can(cidrhost(c, 0))])
    error_message = "Each quiet_from entry must be a valid CIDR."
  }
}

variable "agent_down_after" {
  description = "How long an agent may be gone before the agent-down alert (LIFELINE_AGENT_DOWN_AFTER), a Go duration."
  type        = string
  default     = "5m"

  validation {
    condition     = can(regex("^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$", var.agent_down_after))
    error_message = "agent_down_after must be a Go duration like 5m or 1h30m."
  }
}

variable "enable_ssm" {
  description = "Attach an instance profile with AmazonSSMManagedInstanceCore, so admins get a shell with `aws ssm start-session` (the only admin path: port 22 is never opened)."
  type        = bool
  default     = true
}

variable "root_volume_size" {
  description = "Size of the encrypted gp3 root volume in GiB."
  type        = number
  default     = 8

  validation {
    condition     = var.root_volume_size == floor(var.root_volume_size) && var.root_volume_size >= 8 && var.root_volume_size <= 64
    error_message = "root_volume_size must be an integer from 8 to 64 GiB."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
