# Example root: two lifeline jump hosts in two regions, with the same
# operators and agents. Every agent holds a tunnel to each at once
# (LIFELINE_BASTION is the comma-separated bastion_addresses output), so an
# outage, an upgrade or a replacement of one region leaves the other serving.
#   terraform init && terraform apply

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.0.0"
    }
    tls = {
      source  = "hashicorp/tls"
      version = ">= 4.0.0"
    }
  }

  # Configure an encrypted, access-controlled backend (see ../basic/main.tf).
}

provider "aws" {
  alias  = "eu"
  region = var.regions[0]
}

provider "aws" {
  alias  = "us"
  region = var.regions[1]
}

module "eu" {
  source    = "../.."
  providers = { aws = aws.eu }

  name                   = "lifeline-eu"
  bastion_package_url    = var.bastion_package_url
  bastion_package_sha256 = var.bastion_package_sha256
  operators              = var.operators
  agents                 = var.agents
  sites                  = var.sites
  maintenance_window     = "03:00"

  twilio_account_sid = var.twilio_account_sid
  twilio_auth_token  = var.twilio_auth_token
  sms_from           = var.sms_from
  sms_to             = var.sms_to
}

# Its maintenance window is hours apart from the other's: both are never
# rebooting at once.
module "us" {
  source    = "../.."
  providers = { aws = aws.us }

  name                   = "lifeline-us"
  bastion_package_url    = var.bastion_package_url
  bastion_package_sha256 = var.bastion_package_sha256
  operators              = var.operators
  agents                 = var.agents
  sites                  = var.sites
  maintenance_window     = "09:00"

  twilio_account_sid = var.twilio_account_sid
  twilio_auth_token  = var.twilio_auth_token
  sms_from           = var.sms_from
  sms_to             = var.sms_to
}
