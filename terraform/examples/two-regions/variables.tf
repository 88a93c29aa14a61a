variable "regions" {
  description = "The two regions of the jump hosts, e.g. one near the sites and one far away."
  type        = list(string)
  default     = ["eu-west-1", "us-east-2"]

  validation {
    condition     = length(var.regions) == 2 && var.regions[0] != var.regions[1]
    error_message = "regions must be two different regions."
  }
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
  description = "authorized_keys lines of the operators (the same on both jump hosts)."
  type        = list(string)
}

variable "agents" {
  description = "authorized_keys lines of the agents, or a site CA (cert-authority)."
  type        = list(string)
  default     = []
}

variable "sites" {
  description = "Site name => NAME:PORT, for Host lifeline-eu-<site> and lifeline-us-<site>."
  type        = map(string)
  default     = { pi = "pi:22" }
}

variable "twilio_account_sid" {
  description = "Twilio account SID; empty for no SMS."
  type        = string
  default     = ""
  sensitive   = true
}

variable "twilio_auth_token" {
  description = "Twilio auth token; set it with TF_VAR_twilio_auth_token."
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
