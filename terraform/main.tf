# The lifeline jump host: one small instance with a static address (Elastic
# IP), a security group that opens only the bastion port, IMDSv2, encrypted
# disks, and cloud-init that installs the lifeline-bastion package (pinned by
# SHA-256). Admin access is SSM Session Manager; port 22 is never opened.
#
# What lives for years is kept apart from the instance, which may be replaced
# at any time: the address (aws_eip) and the host key (tls_private_key) carry
# prevent_destroy; /var/lib/lifeline lives on its own EBS volume (audit logs,
# alert spool, host key copy); the key lists and secrets live in SSM Parameter
# Store (ssm.tf). The user data holds neither members nor secrets, so adding
# an operator or pairing a site never replaces the instance.

locals {
  tags = merge({ "lifeline:name" = var.name, "managed-by" = "terraform" }, var.tags)

  # The instance type decides the architecture of the image and the package.
  arch     = contains(data.aws_ec2_instance_type.this.supported_architectures, "arm64") ? "arm64" : "x86_64"
  deb_arch = local.arch == "arm64" ? "arm64" : "amd64"

  # A default subnet in a zone where the instance type is offered.
  subnet_id = var.subnet_id != null ? var.subnet_id : try(sort(data.aws_subnets.default[0].ids)[0], null)

  host_key_private = var.host_key_openssh != null ? var.host_key_openssh : tls_private_key.host[0].private_key_openssh
  host_key_public  = trimspace(data.tls_public_key.host.public_key_openssh)

  # AWS facts the instance-side templates (templates.tf) need. The offline
  # tests stand in for this one local; the templates use nothing else of AWS.
  instance_facts = {
    region          = data.aws_region.current.region
    state_volume_id = aws_ebs_volume.state.id
  }
}

data "aws_region" "current" {}
data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

data "aws_ec2_instance_type" "this" {
  instance_type = var.instance_type
}

# The zones of this region that offer the instance type (t4g is not in all).
data "aws_ec2_instance_type_offerings" "this" {
  location_type = "availability-zone"

  filter {
    name   = "instance-type"
    values = [var.instance_type]
  }
}

# Ubuntu 24.04 LTS from Canonical: amazon-ssm-agent is preinstalled and
# unattended security upgrades are on by default.
data "aws_ami" "ubuntu" {
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-${local.deb_arch}-server-*"]
  }

  filter {
    name   = "architecture"
    values = [local.arch]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

data "aws_vpc" "default" {
  count   = var.subnet_id == null ? 1 : 0
  default = true
}

data "aws_subnets" "default" {
  count = var.subnet_id == null ? 1 : 0

  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }

  filter {
    name   = "default-for-az"
    values = ["true"]
  }

  filter {
    name   = "availability-zone"
    values = data.aws_ec2_instance_type_offerings.this.locations
  }
}

data "aws_subnet" "this" {
  id = local.subnet_id

  lifecycle {
    precondition {
      condition     = local.subnet_id != null
      error_message = "No default subnet is in a zone that offers ${var.instance_type} (zones: ${join(", ", data.aws_ec2_instance_type_offerings.this.locations)}): set subnet_id or another instance_type."
    }
  }
}

# --- host key: generated unless given, so operators can pin it before the
# first connection (outputs known_hosts_line and ssh_config). Every agent pins
# it: destroying it strands every site. To change it on purpose, see
# README.md ("Replacing what is protected").
resource "tls_private_key" "host" {
  count     = var.host_key_openssh == null ? 1 : 0
  algorithm = "ED25519"

  lifecycle {
    prevent_destroy = true
  }
}

data "tls_public_key" "host" {
  private_key_openssh = local.host_key_private
}

# --- network: the bastion port from allowed_cidrs, nothing else inbound.
resource "aws_security_group" "bastion" {
  name_prefix = "${var.name}-"
  description = "lifeline jump host: bastion port only"
  vpc_id      = data.aws_subnet.this.vpc_id
  tags        = merge(local.tags, { Name = var.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "bastion_v4" {
  for_each = toset([for c in var.allowed_cidrs : c if !strcontains(c, ":")])

  security_group_id = aws_security_group.bastion.id
  description       = "lifeline bastion port"
  ip_protocol       = "tcp"
  from_port         = var.port
  to_port           = var.port
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "bastion_v6" {
  for_each = toset([for c in var.allowed_cidrs : c if strcontains(c, ":")])

  security_group_id = aws_security_group.bastion.id
  description       = "lifeline bastion port"
  ip_protocol       = "tcp"
  from_port         = var.port
  to_port           = var.port
  cidr_ipv6         = each.value
  tags              = local.tags
}

# Outbound: Twilio, package mirrors, SSM endpoints, log aggregation (all
# TLS, plus DNS and NTP inside the VPC).
resource "aws_vpc_security_group_egress_rule" "all_v4" {
  security_group_id = aws_security_group.bastion.id
  description       = "outbound (Twilio, updates, SSM)"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "all_v6" {
  security_group_id = aws_security_group.bastion.id
  description       = "outbound (Twilio, updates, SSM)"
  ip_protocol       = "-1"
  cidr_ipv6         = "::/0"
  tags              = local.tags
}

# --- the instance role: reads exactly its parameters (iam.tf), and with
# enable_ssm the Session Manager admin path (no SSH daemon, no key pair).
data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  name_prefix        = "${var.name}-"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "ssm" {
  count      = var.enable_ssm ? 1 : 0
  role       = aws_iam_role.instance.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "instance" {
  name_prefix = "${var.name}-"
  role        = aws_iam_role.instance.name
  tags        = local.tags
}

moved {
  from = aws_iam_role.ssm[0]
  to   = aws_iam_role.instance
}

moved {
  from = aws_iam_instance_profile.ssm[0]
  to   = aws_iam_instance_profile.instance
}

# --- the instance. It can be replaced at any time (a new image, a new
# package): nothing it holds is kept only on it.
resource "aws_instance" "bastion" {
  ami                         = data.aws_ami.ubuntu.id
  instance_type               = var.instance_type
  subnet_id                   = data.aws_subnet.this.id
  vpc_security_group_ids      = [aws_security_group.bastion.id]
  iam_instance_profile        = aws_iam_instance_profile.instance.name
  user_data_base64            = base64gzip(local.user_data)
  user_data_replace_on_change = true
  monitoring                  = false
  # Outage mode: the bastion's own poweroff stops the instance, never
  # terminates it (outage.tf). null otherwise: the plan stays as it was.
  instance_initiated_shutdown_behavior = var.outage_mode ? "stop" : null

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    delete_on_termination = true
    tags                  = merge(local.tags, { Name = "${var.name}-root" })
  }

  credit_specification {
    cpu_credits = "standard"
  }

  tags = merge(local.tags, { Name = var.name })

  # The bootstrap reads these at first boot: they must exist, and the role
  # must allow it, before the instance starts.
  depends_on = [aws_iam_role_policy.instance, aws_ssm_parameter.host_key, aws_ssm_parameter.keys,
  aws_ssm_parameter.twilio_account_sid, aws_ssm_parameter.twilio_auth_token, aws_ssm_parameter.status]

  lifecycle {
    # A newer image must not replace the jump host behind your back: it patches
    # itself (unattended-upgrades). Rebuild on purpose with
    # terraform apply -replace=module.<name>.aws_instance.bastion
    ignore_changes = [ami]

    precondition {
      condition     = (var.bastion_package_url == null) != (var.bastion_package_s3_uri == null)
      error_message = "Set exactly one of bastion_package_url and bastion_package_s3_uri."
    }

    precondition {
      condition     = strcontains(var.bastion_package_url != null ? var.bastion_package_url : (var.bastion_package_s3_uri != null ? var.bastion_package_s3_uri : ""), "_${local.deb_arch}.deb")
      error_message = "The bastion package must be the ${local.deb_arch} one: ${var.instance_type} is ${local.arch}."
    }

    precondition {
      condition     = local.sms ? (var.twilio_account_sid != "" && var.twilio_auth_token != "" && var.sms_from != "" && length(var.sms_to) > 0) : (var.twilio_account_sid == "" && var.twilio_auth_token == "")
      error_message = "SMS alerts are half configured: set all of twilio_account_sid, twilio_auth_token, sms_from and sms_to, or none."
    }

    precondition {
      condition     = contains(data.aws_ec2_instance_type_offerings.this.locations, data.aws_subnet.this.availability_zone)
      error_message = "${var.instance_type} is not offered in ${data.aws_subnet.this.availability_zone}, the zone of subnet ${data.aws_subnet.this.id}."
    }
  }
}

# --- state that outlives the instance: /var/lib/lifeline (host key copy,
# audit.jsonl, access.jsonl, alert spool). Attached after each new instance
# starts; the bootstrap waits for it, formats it only if it is blank, and
# lifeline-bastion never starts without it mounted.
resource "aws_ebs_volume" "state" {
  availability_zone = data.aws_subnet.this.availability_zone
  size              = var.state_volume_size
  type              = "gp3"
  encrypted         = true
  kms_key_id        = var.kms_key_arn
  tags              = merge(local.tags, { Name = "${var.name}-state" })

  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_volume_attachment" "state" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.state.id
  instance_id = aws_instance.bastion.id
  # On replacement the old instance is stopped first, so the volume is
  # unmounted cleanly before it moves.
  stop_instance_before_detaching = true
}

# The static address agents dial. It survives instance replacement, and a
# destroy: every site has it configured (LIFELINE_BASTION).
resource "aws_eip" "bastion" {
  domain = "vpc"
  tags   = merge(local.tags, { Name = var.name })

  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_eip_association" "bastion" {
  allocation_id = aws_eip.bastion.id
  instance_id   = aws_instance.bastion.id
}
