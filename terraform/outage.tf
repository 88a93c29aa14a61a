# Outage mode (var.outage_mode, off by default): the jump host's normal state
# is stopped. A stopped instance has no attack surface and costs almost
# nothing (its Elastic IP and EBS volumes still bill). The site's agent starts
# it when the main link fails, with a credential of its own that may do
# exactly that: start and stop this one instance. The bastion powers the host
# off after LIFELINE_OUTAGE_IDLE with nobody on it (templates.tf), and that
# poweroff stops the instance, never terminates it
# (instance_initiated_shutdown_behavior, main.tf).
#
# With outage_mode = false nothing here is created (every count is 0).
#
# The first apply creates the instance running, waits until cloud-init's
# bootstrap has finished and lifeline-bastion is active (an SSM association,
# below: aws_ec2_instance_state alone would stop a running instance at once,
# in the middle of its bootstrap, which cloud-init never runs again), then
# stops it. ignore_changes = [state]: a later apply never stops a host the
# site has started.

locals {
  outage = var.outage_mode ? 1 : 0

  # The site credential's policy: start and stop this instance, by its ARN,
  # and nothing else. An IAM user with this one inline policy is denied
  # everything else implicitly, so there is no explicit Deny. No condition on
  # aws:SourceIp: the site calls from its backup link, behind carrier-grade
  # NAT, from whichever of the carrier's shared addresses it is given that
  # day. With a customer managed KMS key, starting the instance also needs
  # kms:CreateGrant on that key for EC2 (the volumes are decrypted by a grant
  # the caller creates); the aws/ebs key needs nothing. The offline tests
  # evaluate this expression (outage_test.go).
  outage_policy = {
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "StartStopThisJumpHost"
        Effect   = "Allow"
        Action   = ["ec2:StartInstances", "ec2:StopInstances"]
        Resource = [aws_instance.bastion.arn]
      }
      ], [for key in var.kms_key_arn == null ? [] : [var.kms_key_arn] : {
        Sid      = "DecryptItsVolumesOnStart"
        Effect   = "Allow"
        Action   = ["kms:CreateGrant"]
        Resource = [key]
        Condition = {
          StringEquals = { "kms:ViaService" = "ec2.${data.aws_region.current.region}.amazonaws.com" }
          Bool         = { "kms:GrantIsForAWSResource" = "true" }
        }
    }])
  }
}

# Waits, on the first apply (and for every new instance), until the
# bootstrap is over and the bastion serves: `cloud-init status --wait`, then
# the service's state. A failed bootstrap fails the apply here and leaves the
# instance running, to be looked at. It runs through SSM Run Command, the
# module's admin path (enable_ssm).
resource "aws_ssm_association" "bootstrapped" {
  count            = local.outage
  association_name = "${var.name}-bootstrapped"
  name             = "AWS-RunShellScript"

  targets {
    key    = "InstanceIds"
    values = [aws_instance.bastion.id]
  }

  parameters = {
    commands         = "cloud-init status --wait >/dev/null || true; systemctl is-active --quiet lifeline-bastion.service"
    executionTimeout = "2400"
  }
  # The bootstrap waits up to 20 minutes for the apt lock and 10 for the
  # state volume.
  wait_for_success_timeout_seconds = 2700

  tags = local.tags

  depends_on = [aws_iam_role_policy_attachment.ssm, aws_volume_attachment.state, aws_eip_association.bastion]

  lifecycle {
    precondition {
      condition     = var.enable_ssm
      error_message = "outage_mode needs enable_ssm = true: the first apply waits through SSM for the bootstrap to finish before it stops the jump host."
    }
  }
}

# Stopped once, after the bootstrap. The site starts it in an outage and the
# bastion stops it when idle; Terraform never fights either.
resource "aws_ec2_instance_state" "bastion" {
  count       = local.outage
  instance_id = aws_instance.bastion.id
  state       = "stopped"

  depends_on = [aws_ssm_association.bootstrapped]

  lifecycle {
    ignore_changes = [state]
  }
}

# The site's credential: one IAM user, no console password, one access key,
# one inline policy (local.outage_policy). It goes to the agent's
# /etc/lifeline/agent.env (output outage_env) and nowhere else: not in the
# user data, not in a parameter the instance may read.
resource "aws_iam_user" "site_outage" {
  count = local.outage
  name  = "${var.name}-site-outage"
  path  = "/lifeline/"
  tags  = local.tags
}

resource "aws_iam_access_key" "site_outage" {
  count   = local.outage
  user    = aws_iam_user.site_outage[0].name
  pgp_key = var.outage_pgp_key
}

resource "aws_iam_user_policy" "site_outage" {
  count  = local.outage
  name   = "start-stop-${var.name}"
  user   = aws_iam_user.site_outage[0].name
  policy = jsonencode(local.outage_policy)
}
