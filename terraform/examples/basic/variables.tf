variable "region" {
  description = "AWS region of the jump host."
  type        = string
  default     = "eu-west-1"
}

variable "bastion_package_url" {
  description = "HTTPS URL of lifeline-bastion_<version>_arm64.deb; default: that of release 0.1.0."
  type        = string
  default     = "https://github.com/lifeline-dev/lifeline/releases/download/v0.1.0/lifeline-bastion_0.1.0_arm64.deb"
}

variable "bastion_package_sha256" {
  description = "Its SHA-256, from the release's signed SHA256SUMS."
  type        = string
  default     = "e0212d3d72afd1d633ba77e1b146e4e8a25b7a91dee82e686e1d8cd44e439fc1"
}

variable "operators" {
  description = "authorized_keys lines of the operators."
  type        = list(string)
}

variable "agents" {
  description = "authorized_keys lines of the agents, each with permitlisten=\"NAME:PORT\"."
  type        = list(string)
  default     = []
}

variable "twilio_account_sid" {
  description = "Twilio account SID; empty for no SMS."
  type        = string
  default     = ""
  sensitive   = true
}

variable "twilio_auth_token" {
  description = "Twilio auth token; set it with TF_VAR_twilio_auth_token, never in a file under version control."
  type        = string
  default     = ""
  sensitive   = true
}

variable "sms_from" {
  description = "Twilio sender number, E.164."
  type        = string
  default     = ""
}

variable "sms_to" {
  description = "Alert recipients, E.164."
  type        = list(string)
  default     = []
}

variable "sites" {
  description = "Site name => NAME:PORT its agent registers, for the ssh_config output (Host lifeline-<site>)."
  type        = map(string)
  default     = { pi = "pi:22" }
}

variable "maintenance_window" {
  description = "HH:MM UTC when unattended-upgrades may reboot the jump host."
  type        = string
  default     = "04:00"
}
