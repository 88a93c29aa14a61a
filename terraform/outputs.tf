output "public_ip" {
  description = "The Elastic IP: the static address agents (LIFELINE_BASTION) and operators dial."
  value       = aws_eip.bastion.public_ip
}

output "port" {
  description = "The bastion port."
  value       = var.port
}

output "bastion_address" {
  description = "host:port for LIFELINE_BASTION on the agents."
  value       = "${aws_eip.bastion.public_ip}:${var.port}"
}

output "known_hosts_line" {
  description = "The exact known_hosts line of the bastion host key: append it to ~/.ssh/known_hosts of operators and to /etc/lifeline/known_hosts on every agent."
  value       = "[${aws_eip.bastion.public_ip}]:${var.port} ${local.host_key_public}"
}

output "host_key_fingerprint" {
  description = "SHA256 fingerprint of the bastion host key, as ssh prints it."
  value       = data.tls_public_key.host.public_key_fingerprint_sha256
}

output "ssh_config" {
  description = "A ready ~/.ssh/config block: Host <name> (the jump host: address, port, strict host key checking against known_hosts_line) and Host <name>-<site> for every entry of sites (ProxyJump <name>). Hosts are named per jump host, so the blocks of several jump hosts can be pasted together."
  value = join("\n", concat([<<-EOT
    Host ${var.name}
      HostName ${aws_eip.bastion.public_ip}
      Port ${var.port}
      StrictHostKeyChecking yes
      IdentitiesOnly yes
      IdentityFile ${var.ssh_identity_file}
    EOT
    ], [for site, target in var.sites : <<-EOT
    Host ${var.name}-${site}
      HostName ${split(":", target)[0]}
      Port ${split(":", target)[1]}
      ProxyJump ${var.name}
      IdentitiesOnly yes
      IdentityFile ${var.ssh_identity_file}
    EOT
  ]))
}

output "instance_id" {
  description = "EC2 instance ID of the jump host (for SSM: aws ssm start-session --target <id>)."
  value       = aws_instance.bastion.id
}

output "state_volume_id" {
  description = "The EBS volume holding /var/lib/lifeline (audit logs, alert spool, host key copy); it survives instance replacement."
  value       = aws_ebs_volume.state.id
}

output "parameters" {
  description = "Names of the SSM parameters the jump host reads (keys, secrets) and writes (status)."
  value = {
    host_key           = aws_ssm_parameter.host_key.name
    twilio_account_sid = one(aws_ssm_parameter.twilio_account_sid[*].name)
    twilio_auth_token  = one(aws_ssm_parameter.twilio_auth_token[*].name)
    operators          = aws_ssm_parameter.keys["operators"].name
    agents             = aws_ssm_parameter.keys["agents"].name
    revoked_keys       = aws_ssm_parameter.keys["revoked-keys"].name
    bootstrap_status   = aws_ssm_parameter.status["bootstrap"].name
    keys_status        = aws_ssm_parameter.status["keys"].name
  }
}

output "bootstrap_status_command" {
  description = "Prints how the first boot went: \"ok …\" once lifeline-bastion serves, or the step that failed. (The same lines are in the serial console: aws ec2 get-console-output --latest --instance-id <id>.)"
  value       = "aws ssm get-parameter --region ${data.aws_region.current.region} --name ${aws_ssm_parameter.status["bootstrap"].name} --query Parameter.Value --output text"
}

output "keys_status_command" {
  description = "Prints whether the last operators/agents/revoked-keys change is in force (\"applied …\", \"in force …\") or was refused, and why."
  value       = "aws ssm get-parameter --region ${data.aws_region.current.region} --name ${aws_ssm_parameter.status["keys"].name} --query Parameter.Value --output text"
}

output "keys_sync_command" {
  description = "Applies the key parameters now instead of within the minute (SSM Run Command)."
  value       = "aws ssm send-command --region ${data.aws_region.current.region} --instance-ids ${aws_instance.bastion.id} --document-name AWS-RunShellScript --parameters commands='systemctl start lifeline-keys-sync.service'"
}

output "ssm_session_command" {
  description = "The admin shell on the jump host, through SSM Session Manager (no port 22)."
  value       = "aws ssm start-session --target ${aws_instance.bastion.id}"
}

output "security_group_id" {
  description = "ID of the security group (one ingress rule per allowed CIDR, bastion port only)."
  value       = aws_security_group.bastion.id
}

# --- outage mode (outage.tf); null without it.

output "outage_credentials" {
  description = "With outage_mode: the site's credential, which may only start and stop this jump host: access_key_id, secret_access_key (null with outage_pgp_key), encrypted_secret_access_key (base64 PGP ciphertext with outage_pgp_key, else null), region, instance_id. Sensitive; it is in the Terraform state."
  sensitive   = true
  value = var.outage_mode ? {
    access_key_id               = aws_iam_access_key.site_outage[0].id
    secret_access_key           = var.outage_pgp_key == null ? aws_iam_access_key.site_outage[0].secret : null
    encrypted_secret_access_key = var.outage_pgp_key == null ? null : aws_iam_access_key.site_outage[0].encrypted_secret
    region                      = data.aws_region.current.region
    instance_id                 = aws_instance.bastion.id
  } : null
}

output "outage_env" {
  description = "With outage_mode: the lines to add to the agent's /etc/lifeline/agent.env (mode 0600): LIFELINE_OUTAGE_REGION, LIFELINE_OUTAGE_INSTANCE, LIFELINE_OUTAGE_ACCESS_KEY_ID, LIFELINE_OUTAGE_SECRET_ACCESS_KEY (with outage_pgp_key, a comment says how to decrypt it instead). terraform output -raw outage_env. Sensitive."
  sensitive   = true
  value = var.outage_mode ? join("\n", [
    "# lifeline outage mode: start and stop jump host ${var.name} (terraform output outage_env)",
    "LIFELINE_OUTAGE_REGION=${data.aws_region.current.region}",
    "LIFELINE_OUTAGE_INSTANCE=${aws_instance.bastion.id}",
    "LIFELINE_OUTAGE_ACCESS_KEY_ID=${aws_iam_access_key.site_outage[0].id}",
    var.outage_pgp_key == null ? "LIFELINE_OUTAGE_SECRET_ACCESS_KEY=${aws_iam_access_key.site_outage[0].secret}" : "# LIFELINE_OUTAGE_SECRET_ACCESS_KEY=<terraform output -json outage_credentials | jq -r .encrypted_secret_access_key | base64 -d | gpg --decrypt>",
    "",
  ]) : null
}

output "start_command" {
  description = "With outage_mode: starts the jump host by hand (an operator's AWS credentials; the agent does the same with its own). It serves within a minute or two; the bastion powers it off again after outage_idle with nobody on it."
  value       = var.outage_mode ? "aws ec2 start-instances --region ${data.aws_region.current.region} --instance-ids ${aws_instance.bastion.id}" : null
}

output "stop_command" {
  description = "With outage_mode: stops the jump host by hand."
  value       = var.outage_mode ? "aws ec2 stop-instances --region ${data.aws_region.current.region} --instance-ids ${aws_instance.bastion.id}" : null
}
