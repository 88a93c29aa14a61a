# SSM Parameter Store: what the instance reads, so that neither members nor
# secrets are in its user data.
#
#   /lifeline/<name>/host-key              SecureString  read at every boot
#   /lifeline/<name>/twilio-account-sid    SecureString  read at every boot (with SMS)
#   /lifeline/<name>/twilio-auth-token     SecureString  read at every boot (with SMS)
#   /lifeline/<name>/keys/operators        String        polled every minute
#   /lifeline/<name>/keys/agents           String        polled every minute
#   /lifeline/<name>/keys/revoked-keys     String        polled every minute (KRL, base64)
#   /lifeline/<name>/status/bootstrap      String        written by the instance
#   /lifeline/<name>/status/keys           String        written by the instance
#
# The keys are plain String parameters (insecure_value): public keys are not
# secret, and a plan must show who is being added or removed.

resource "aws_ssm_parameter" "host_key" {
  name        = local.ssm.host_key
  description = "lifeline ${var.name}: the bastion's private host key (read at boot by the instance role)"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = local.host_key_private
  tags        = local.tags
}

resource "aws_ssm_parameter" "twilio_account_sid" {
  count       = local.sms ? 1 : 0
  name        = local.ssm.twilio_account_sid
  description = "lifeline ${var.name}: Twilio account SID"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = var.twilio_account_sid
  tags        = local.tags
}

resource "aws_ssm_parameter" "twilio_auth_token" {
  count       = local.sms ? 1 : 0
  name        = local.ssm.twilio_auth_token
  description = "lifeline ${var.name}: Twilio auth token"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = var.twilio_auth_token
  tags        = local.tags
}

# Intelligent-Tiering: standard (free) up to 4 KiB, advanced up to 8 KiB.
resource "aws_ssm_parameter" "keys" {
  for_each = {
    operators    = local.operators_file
    agents       = local.agents_file
    revoked-keys = local.revoked_keys_b64
  }
  name           = "${local.ssm.keys_path}/${each.key}"
  description    = "lifeline ${var.name}: ${each.key} of the jump host, applied within a minute"
  type           = "String"
  tier           = "Intelligent-Tiering"
  insecure_value = each.value
  tags           = local.tags
}

resource "aws_ssm_parameter" "status" {
  for_each    = toset(["bootstrap", "keys"])
  name        = "${local.ssm.status_path}/${each.key}"
  description = "lifeline ${var.name}: ${each.key} status, written by the instance"
  type        = "String"
  value       = "pending: the instance has not reported yet"
  tags        = local.tags

  lifecycle {
    # The instance writes it; Terraform only creates and deletes it.
    ignore_changes = [value, insecure_value]
  }
}

# --- what the instance role may do: read exactly these parameters, write
# its two status parameters, decrypt through SSM with the chosen key, and
# read the package object when it comes from S3.
locals {
  secret_arns = concat([aws_ssm_parameter.host_key.arn], aws_ssm_parameter.twilio_account_sid[*].arn, aws_ssm_parameter.twilio_auth_token[*].arn)
  keys_path_arn = format("arn:%s:ssm:%s:%s:parameter%s", data.aws_partition.current.partition, data.aws_region.current.region,
  data.aws_caller_identity.current.account_id, local.ssm.keys_path)
  package_s3 = var.bastion_package_s3_uri == null ? null : regex("^s3://([^/]+)/(.+)$", var.bastion_package_s3_uri)
}

data "aws_iam_policy_document" "instance" {
  statement {
    sid       = "ReadSecretsAtBoot"
    actions   = ["ssm:GetParameter"]
    resources = local.secret_arns
  }

  # GetParametersByPath is authorized against the path asked for, which
  # holds only the three key parameters.
  statement {
    sid       = "ReadKeyLists"
    actions   = ["ssm:GetParametersByPath"]
    resources = [local.keys_path_arn]
  }

  statement {
    sid       = "ReportStatus"
    actions   = ["ssm:PutParameter"]
    resources = [for p in aws_ssm_parameter.status : p.arn]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptThroughSSM"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${data.aws_region.current.region}.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = local.package_s3 == null ? [] : [local.package_s3]
    content {
      sid       = "ReadPackage"
      actions   = ["s3:GetObject"]
      resources = ["arn:${data.aws_partition.current.partition}:s3:::${statement.value[0]}/${statement.value[1]}"]
    }
  }
}

resource "aws_iam_role_policy" "instance" {
  name_prefix = "${var.name}-parameters-"
  role        = aws_iam_role.instance.id
  policy      = data.aws_iam_policy_document.instance.json
}
