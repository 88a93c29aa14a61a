output "bastion_addresses" {
  description = "LIFELINE_BASTION for every agent: one tunnel to each jump host, at once."
  value       = join(",", [module.eu.bastion_address, module.us.bastion_address])
}

output "known_hosts" {
  description = "Both known_hosts lines: ~/.ssh/known_hosts of operators and /etc/lifeline/known_hosts on every agent."
  value       = join("\n", [module.eu.known_hosts_line, module.us.known_hosts_line])
}

output "ssh_config" {
  description = "Hosts lifeline-eu, lifeline-us, lifeline-eu-<site> and lifeline-us-<site>: paste into ~/.ssh/config."
  value       = join("\n", [module.eu.ssh_config, module.us.ssh_config])
}

output "instance_ids" {
  description = "The two instances, for SSM."
  value       = { eu = module.eu.instance_id, us = module.us.instance_id }
}

output "bootstrap_status_commands" {
  description = "Run each after the first apply."
  value       = { eu = module.eu.bootstrap_status_command, us = module.us.bootstrap_status_command }
}
