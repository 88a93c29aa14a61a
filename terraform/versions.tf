terraform {
  # Minimums only, as a reusable module should: the root that calls it pins
  # exact builds in its .terraform.lock.hcl.
  # 1.5: check and import blocks; optional() object attributes (1.3).
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.0: data.aws_region.region, aws_ssm_parameter.insecure_value.
      version = ">= 6.0.0"
    }
    tls = {
      source  = "hashicorp/tls"
      version = ">= 4.0.0"
    }
  }
}
