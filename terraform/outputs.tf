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
  description = "A ready ~/.ssh/config block: Host bastion (address, port, strict host key checking against known_hosts_line) and Host pi (ProxyJump bastion). Adjust User/IdentityFile to your setup."
  value       = <<-EOT
    Host bastion
      HostName ${aws_eip.bastion.public_ip}
      Port ${var.port}
      StrictHostKeyChecking yes
      IdentitiesOnly yes
      IdentityFile ~/.ssh/id_ed25519

    Host pi
      HostName pi
      Port 22
      ProxyJump bastion
      IdentityFile ~/.ssh/id_ed25519
  EOT
}

output "instance_id" {
  description = "EC2 instance ID of the jump host (for SSM: aws ssm start-session --target <id>)."
  value       = aws_instance.bastion.id
}

output "ssm_session_command" {
  description = "The admin shell on the jump host, through SSM Session Manager (no port 22)."
  value       = "aws ssm start-session --target ${aws_instance.bastion.id}"
}

output "security_group_id" {
  description = "ID of the security group (one ingress rule per allowed CIDR, bastion port only)."
  value       = aws_security_group.bastion.id
}
