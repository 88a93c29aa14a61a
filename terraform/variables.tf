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
  description = "Subnet for the jump host (it needs a route to an internet gateway), in an availability zone that offers instance_type. null: the first default subnet of the default VPC in such a zone."
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
  description = "HTTPS URL of the lifeline-bastion .deb (from `make deb`) for the instance's architecture (arm64 for t4g): a release asset, or a presigned URL (its query string is allowed; it must still be valid when an instance is replaced). null: use bastion_package_s3_uri."
  type        = string
  default     = null

  validation {
    condition     = var.bastion_package_url == null || can(regex("^https://[^\\s'\"?#]+_(arm64|amd64)\\.deb(\\?[^\\s'\"#]*)?$", var.bastion_package_url))
    error_message = "bastion_package_url must be null or an https:// URL of a lifeline-bastion_<version>_<arm64|amd64>.deb (a query string may follow) without spaces or quotes."
  }
}

variable "bastion_package_s3_uri" {
  description = "s3://bucket/key of the lifeline-bastion .deb in a private bucket; the instance role may read exactly that object (s3:GetObject). Used instead of bastion_package_url; never expires."
  type        = string
  default     = null

  validation {
    condition     = var.bastion_package_s3_uri == null || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\\s'\"]+_(arm64|amd64)\\.deb$", var.bastion_package_s3_uri))
    error_message = "bastion_package_s3_uri must be null or s3://<bucket>/<key ending in _arm64.deb or _amd64.deb> without spaces or quotes."
  }
}

variable "bastion_package_sha256" {
  description = "SHA-256 of the .deb (its line in dist/SHA256SUMS), wherever it comes from. The instance refuses any other file."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.bastion_package_sha256))
    error_message = "bastion_package_sha256 must be 64 lowercase hex digits."
  }
}

variable "operators" {
  description = "Lines of /etc/lifeline/operators (authorized_keys format): the people who may use the jump host, with optional from=, permitopen=, cert-authority, principals=, expiry-time= options. Kept in SSM Parameter Store and applied in place within a minute: a change never replaces the instance."
  type        = list(string)

  validation {
    condition     = length(join("\n", var.operators)) <= 7800
    error_message = "operators is longer than one SSM parameter holds (8 KiB): use a cert-authority line for groups of people."
  }

  validation {
    condition = length(var.operators) > 0 && alltrue([
      for k in var.operators : length(regexall("[\r\n]", k)) == 0 &&
      can(regex("(^|[ ])(ssh-ed25519|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) AAAA[0-9A-Za-z+/=]+", k))
    ])
    error_message = "operators must hold at least one authorized_keys line (one key per element, no newlines)."
  }
}

variable "agents" {
  description = "Lines of /etc/lifeline/agents (authorized_keys format): one per site agent, each with permitlisten=\"NAME:PORT\" naming the targets it may register, e.g. permitlisten=\"pi:22\" ssh-ed25519 AAAA… pi; or a cert-authority line for a site CA, whose certificates' principals are the targets. Kept in SSM Parameter Store and applied in place within a minute."
  type        = list(string)
  default     = []

  validation {
    condition     = length(join("\n", var.agents)) <= 7800
    error_message = "agents is longer than one SSM parameter holds (8 KiB): pair sites with a site CA (cert-authority) instead of one line each."
  }

  validation {
    condition = alltrue([
      for k in var.agents : length(regexall("[\r\n]", k)) == 0 &&
      (can(regex("permitlisten=\"[^\"]+\"", k)) || can(regex("^([^ ]*,)?cert-authority(,|[ ])", k))) &&
      can(regex("(^|[ ])(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) AAAA[0-9A-Za-z+/=]+", k))
    ])
    error_message = "Each agents line must be one authorized_keys line with a permitlisten=\"NAME:PORT\" option, or a cert-authority line."
  }
}

variable "revoked_keys_krl_base64" {
  description = "The OpenSSH KRL of revoked keys and certificates (ssh-keygen -k), base64: filebase64(\"revoked_keys\"). Applied in place like operators and agents (LIFELINE_REVOKED_KEYS); a revoked key's live sessions are closed. Empty: nothing revoked."
  type        = string
  default     = ""

  validation {
    condition     = var.revoked_keys_krl_base64 == "" || (startswith(var.revoked_keys_krl_base64, "U1NIS1JMCgA") && can(regex("^[A-Za-z0-9+/]+={0,2}$", var.revoked_keys_krl_base64)) && length(var.revoked_keys_krl_base64) <= 7800)
    error_message = "revoked_keys_krl_base64 must be empty or the base64 of an OpenSSH KRL (filebase64 of a file made by ssh-keygen -k), at most 7800 characters."
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
  description = "Twilio account SID (AC…) for SMS alerts (TWILIO_ACCOUNT_SID), kept in an SSM SecureString parameter like the token. Empty: alerts go to the journal only."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = var.twilio_account_sid == "" || can(regex("^AC[0-9a-f]{32}$", var.twilio_account_sid))
    error_message = "twilio_account_sid must be empty or AC followed by 32 lowercase hex digits."
  }
}

variable "twilio_auth_token" {
  description = "Twilio auth token (TWILIO_AUTH_TOKEN). Kept in an SSM SecureString parameter that only the instance role may read, fetched at boot into /etc/lifeline/secrets.env (root only); never in user data. It is in the Terraform state."
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
  description = "Attach AmazonSSMManagedInstanceCore to the instance role, so admins get a shell with `aws ssm start-session` (the only admin path: port 22 is never opened). The role exists either way: it reads the key lists and secrets from Parameter Store."
  type        = bool
  default     = true
}

variable "outage_mode" {
  description = "Outage mode: the jump host's normal state is stopped (no attack surface, almost no cost; the Elastic IP and volumes still bill). The first apply creates it, lets cloud-init's bootstrap finish (it waits for it through SSM, so enable_ssm must stay true), then stops it; the site's agent starts it when the main link fails, with the outage_env credential, which may only start and stop this instance. false: the jump host runs all the time and none of this is created."
  type        = bool
  default     = false
  nullable    = false
}

variable "outage_idle" {
  description = "With outage_mode: how long the bastion may serve no agent and no operator before it powers the jump host off (LIFELINE_OUTAGE_IDLE), a Go duration. Ignored without outage_mode."
  type        = string
  default     = "30m"
  nullable    = false

  validation {
    condition     = can(regex("^([0-9]+(\\.[0-9]+)?(s|m|h))+$", var.outage_idle)) && !can(regex("^([0.]+(s|m|h))+$", var.outage_idle))
    error_message = "outage_idle must be a non-zero Go duration in s, m or h, like 30m or 1h30m."
  }
}

variable "outage_pgp_key" {
  description = "With outage_mode: a PGP public key (base64 of `gpg --export KEYID`, or keybase:<user>) that encrypts the site credential's secret access key, so that the Terraform state and outputs hold only its ciphertext (outage_credentials.encrypted_secret_access_key; decrypt with base64 -d | gpg --decrypt). null: the secret is in the state in clear text, like every aws_iam_access_key's."
  type        = string
  default     = null

  validation {
    condition     = var.outage_pgp_key == null || can(regex("^keybase:[A-Za-z0-9_]{2,16}$", var.outage_pgp_key)) || can(regex("^[A-Za-z0-9+/\\r\\n]{64,}={0,2}[\\r\\n]*$", var.outage_pgp_key))
    error_message = "outage_pgp_key must be null, keybase:<user>, or the base64 of a binary PGP public key (gpg --export KEYID | base64); an ASCII-armored key (-----BEGIN PGP…) is not accepted."
  }
}

variable "kms_key_arn" {
  description = "Customer managed KMS key for the SecureString parameters (host key, Twilio) and the state volume; the instance role may decrypt with it through SSM only. null: the AWS managed keys aws/ssm and aws/ebs."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$", var.kms_key_arn))
    error_message = "kms_key_arn must be null or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<uuid>)."
  }
}

variable "state_volume_size" {
  description = "Size in GiB of the encrypted gp3 volume that holds /var/lib/lifeline (host key, audit logs, alert spool). It outlives instance replacements and carries prevent_destroy."
  type        = number
  default     = 2

  validation {
    condition     = var.state_volume_size == floor(var.state_volume_size) && var.state_volume_size >= 1 && var.state_volume_size <= 64
    error_message = "state_volume_size must be an integer from 1 to 64 GiB."
  }
}

variable "maintenance_window" {
  description = "Daily time (HH:MM, UTC) at which unattended-upgrades may reboot the jump host when an update needs it; updates are installed an hour before. Pick the site owners' quietest hour: agents reconnect within seconds and no text is sent."
  type        = string
  default     = "04:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_window))
    error_message = "maintenance_window must be HH:MM in 24-hour UTC, like 04:00 or 21:30."
  }
}

variable "syslog_forwarding" {
  description = "Forward the journal (lifeline-bastion's log and, tagged lifeline-audit, every audit log line) to your log aggregation over syslog with TLS (RFC 5425, rsyslog): host, port (default 6514), and ca_pem, the PEM CA bundle that signs the server's certificate (null: the system CAs). The server name is checked against its certificate. null: logs stay on the host."
  type = object({
    host   = string
    port   = optional(number, 6514)
    ca_pem = optional(string)
  })
  default = null

  validation {
    condition = var.syslog_forwarding == null || (
      can(regex("^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$", try(var.syslog_forwarding.host, ""))) &&
      try(var.syslog_forwarding.port == floor(var.syslog_forwarding.port) && var.syslog_forwarding.port >= 1 && var.syslog_forwarding.port <= 65535, false) &&
      (try(var.syslog_forwarding.ca_pem, null) == null || can(regex("^-----BEGIN CERTIFICATE-----", try(var.syslog_forwarding.ca_pem, ""))))
    )
    error_message = "syslog_forwarding must be null or { host = a DNS name, port = 1..65535, ca_pem = null or a PEM certificate bundle }."
  }
}

variable "sites" {
  description = "Sites reached through this jump host, for the ssh_config output: site name => NAME:PORT its agent registers, e.g. { pi = \"pi:22\" }. Each becomes Host <name>-<site> with ProxyJump <name>."
  type        = map(string)
  default     = { pi = "pi:22" }

  validation {
    condition = alltrue([
      for site, target in var.sites : can(regex("^[a-z0-9][a-z0-9-]{0,30}$", site)) && can(regex("^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$", target))
    ])
    error_message = "sites must map lowercase names (letters, digits, dashes) to NAME:PORT targets like pi:22."
  }
}

variable "ssh_identity_file" {
  description = "IdentityFile written into the ssh_config output."
  type        = string
  default     = "~/.ssh/id_ed25519"

  validation {
    condition     = can(regex("^[^\\s\"]+$", var.ssh_identity_file))
    error_message = "ssh_identity_file must be a path without spaces or quotes."
  }
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
