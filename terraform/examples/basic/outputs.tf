output "bastion_address" {
  description = "LIFELINE_BASTION for the agents."
  value       = module.bastion.bastion_address
}

output "known_hosts_line" {
  description = "Append to ~/.ssh/known_hosts (operators) and /etc/lifeline/known_hosts (agents)."
  value       = module.bastion.known_hosts_line
}

output "host_key_fingerprint" {
  description = "SHA256 fingerprint of the bastion host key."
  value       = module.bastion.host_key_fingerprint
}

output "ssh_config" {
  description = "Paste into ~/.ssh/config."
  value       = module.bastion.ssh_config
}

output "ssm_session_command" {
  description = "Admin shell on the jump host."
  value       = module.bastion.ssm_session_command
}

output "instance_id" {
  description = "The jump host's instance (SSM: aws ssm start-session --target ...)."
  value       = module.bastion.instance_id
}

output "bootstrap_status_command" {
  description = "Run it after the first apply: ok, or the bootstrap step that failed."
  value       = module.bastion.bootstrap_status_command
}

output "keys_status_command" {
  description = "Run it after changing operators or agents: applied, or refused and why."
  value       = module.bastion.keys_status_command
}

output "outage_env" {
  description = "With outage_mode: lines for the agent's /etc/lifeline/agent.env (terraform output -raw outage_env); the site's start/stop credential."
  value       = module.bastion.outage_env
  sensitive   = true
}

output "start_command" {
  description = "With outage_mode: start the jump host by hand."
  value       = module.bastion.start_command
}

output "stop_command" {
  description = "With outage_mode: stop the jump host by hand."
  value       = module.bastion.stop_command
}
