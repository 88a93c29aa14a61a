# Example root: one lifeline jump host in the default VPC.
#   terraform init && terraform apply
# then pair the Pi: ../../README.md ("Pairing a site"), and step by step,
# Pi and operators included: ../../../README.md ("Deploy").

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

  # Keep the state somewhere encrypted and access-controlled: it holds the
  # bastion's private host key and the Twilio token (see ../../README.md,
  # "What is in the Terraform state"). For example:
  # backend "s3" {
  #   bucket       = "my-tfstate"
  #   key          = "lifeline/terraform.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = var.region
}

module "bastion" {
  source = "../.."

  name                   = "lifeline"
  bastion_package_url    = var.bastion_package_url
  bastion_package_sha256 = var.bastion_package_sha256
  operators              = var.operators
  agents                 = var.agents
  sites                  = var.sites
  maintenance_window     = var.maintenance_window

  twilio_account_sid = var.twilio_account_sid
  twilio_auth_token  = var.twilio_auth_token
  sms_from           = var.sms_from
  sms_to             = var.sms_to

  # Outage mode: the jump host stays stopped until the site needs it (the
  # agent starts it with the outage_env credential; the bastion powers it off
  # after outage_idle with nobody on it). See ../../README.md, "Outage mode".
  # outage_mode = true
  # outage_idle = "30m"
}
