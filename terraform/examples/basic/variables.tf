variable "region" {
  description = "AWS region of the jump host."
  type        = string
  default     = "eu-west-1"
}

variable "bastion_package_url" {
  description = "HTTPS URL of lifeline-bastion_<version>_arm64.deb."
  type        = string
}

variable "bastion_package_sha256" {
  description = "Its SHA-256, from SHA256SUMS."
  type        = string
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
