# The lifeline jump host: one small instance with a static address (Elastic
# IP), a security group that opens only the bastion port, IMDSv2, an encrypted
# root volume, and cloud-init that installs the lifeline-bastion package
# (pinned by SHA-256), its configuration and the host key, then starts it.
# Admin access is SSM Session Manager; port 22 is never opened.

locals {
  tags = merge({ "lifeline:name" = var.name, "managed-by" = "terraform" }, var.tags)

  # The instance type decides the architecture of the image and the package.
  arch     = contains(data.aws_ec2_instance_type.this.supported_architectures, "arm64") ? "arm64" : "x86_64"
  deb_arch = local.arch == "arm64" ? "arm64" : "amd64"

  subnet_id = var.subnet_id != null ? var.subnet_id : sort(data.aws_subnets.default[0].ids)[0]

  host_key_private = var.host_key_openssh != null ? var.host_key_openssh : tls_private_key.host[0].private_key_openssh
  host_key_public  = trimspace(data.tls_public_key.host.public_key_openssh)

  bastion_env = templatefile("${path.module}/templates/bastion.env.tftpl", {
    port               = var.port
    name               = var.name
    agent_down_after   = var.agent_down_after
    twilio_account_sid = var.twilio_account_sid
    twilio_auth_token  = var.twilio_auth_token
    sms_from           = var.sms_from
    sms_to             = var.sms_to
    quiet_from         = var.quiet_from
  })

  bootstrap = templatefile("${path.module}/templates/bootstrap.sh.tftpl", {
    package_url    = var.bastion_package_url
    package_sha256 = var.bastion_package_sha256
  })

  user_data = templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
    bootstrap   = local.bootstrap
    bastion_env = local.bastion_env
    operators   = join("", [for k in var.operators : "${k}\n"])
    agents      = join("", [for k in var.agents : "${k}\n"])
    host_key    = local.host_key_private
  })
}

data "aws_ec2_instance_type" "this" {
  instance_type = var.instance_type
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
}

data "aws_subnet" "this" {
  id = local.subnet_id
}

# --- host key: generated unless given, so operators can pin it before the
# first connection (outputs known_hosts_line and ssh_config).
resource "tls_private_key" "host" {
  count     = var.host_key_openssh == null ? 1 : 0
  algorithm = "ED25519"
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

# Outbound: Twilio, package mirrors, SSM endpoints (all HTTPS, plus DNS and NTP
# inside the VPC).
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

# --- admin path: SSM Session Manager (no SSH daemon reachable, no key pair).
data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ssm" {
  count              = var.enable_ssm ? 1 : 0
  name_prefix        = "${var.name}-ssm-"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "ssm" {
  count      = var.enable_ssm ? 1 : 0
  role       = aws_iam_role.ssm[0].name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "ssm" {
  count       = var.enable_ssm ? 1 : 0
  name_prefix = "${var.name}-"
  role        = aws_iam_role.ssm[0].name
  tags        = local.tags
}

# --- the instance.
resource "aws_instance" "bastion" {
  ami                         = data.aws_ami.ubuntu.id
  instance_type               = var.instance_type
  subnet_id                   = local.subnet_id
  vpc_security_group_ids      = [aws_security_group.bastion.id]
  iam_instance_profile        = var.enable_ssm ? aws_iam_instance_profile.ssm[0].name : null
  user_data_base64            = base64gzip(local.user_data)
  user_data_replace_on_change = true
  monitoring                  = false

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
    delete_on_termination = true
  }

  credit_specification {
    cpu_credits = "standard"
  }

  tags        = merge(local.tags, { Name = var.name })
  volume_tags = merge(local.tags, { Name = var.name })

  lifecycle {
    # A newer image must not replace the jump host behind your back: it patches
    # itself (unattended-upgrades). Rebuild on purpose with
    # terraform apply -replace=module.<name>.aws_instance.bastion
    ignore_changes = [ami]

    precondition {
      condition     = strcontains(var.bastion_package_url, "_${local.deb_arch}.deb")
      error_message = "bastion_package_url must be the ${local.deb_arch} package: ${var.instance_type} is ${local.arch}."
    }
  }
}

# The static address agents dial. It survives instance replacement.
resource "aws_eip" "bastion" {
  domain = "vpc"
  tags   = merge(local.tags, { Name = var.name })
}

resource "aws_eip_association" "bastion" {
  allocation_id = aws_eip.bastion.id
  instance_id   = aws_instance.bastion.id
}
