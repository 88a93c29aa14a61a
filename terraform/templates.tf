# Everything the instance is given, rendered from templates/. These locals
# use only variables, path.module and local.instance_facts (main.tf), so the
# offline tests render them with terraform itself, standing in for that one
# local. Members (operators, agents, revoked keys) and secrets never reach
# user_data: they are parameters (ssm.tf), so changing them leaves the user
# data byte for byte the same and the instance in place.

locals {
  ssm_prefix = "/lifeline/${var.name}"
  ssm = {
    host_key           = "${local.ssm_prefix}/host-key"
    twilio_account_sid = "${local.ssm_prefix}/twilio-account-sid"
    twilio_auth_token  = "${local.ssm_prefix}/twilio-auth-token"
    keys_path          = "${local.ssm_prefix}/keys"
    status_path        = "${local.ssm_prefix}/status"
  }

  # Parameter values. Each file starts with a comment, so no value is empty
  # (SSM refuses empty values) and an admin on the instance knows where it
  # comes from.
  managed_header   = "# Managed by Terraform (lifeline module, jump host ${var.name}) through SSM Parameter Store; edits here are overwritten within a minute.\n"
  operators_file   = "${local.managed_header}${join("", [for k in var.operators : "${k}\n"])}"
  agents_file      = "${local.managed_header}${join("", [for k in var.agents : "${k}\n"])}"
  empty_krl_base64 = "U1NIS1JMCgAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" # header only: revokes nothing
  revoked_keys_b64 = var.revoked_keys_krl_base64 != "" ? var.revoked_keys_krl_base64 : local.empty_krl_base64

  # unattended-upgrades installs an hour before the window and reboots, when
  # an update needs it, at the window.
  window_hour    = tonumber(split(":", var.maintenance_window)[0])
  window_minute  = split(":", var.maintenance_window)[1]
  upgrade_time   = format("%02d:%s", (local.window_hour + 23) % 24, local.window_minute)
  log_forwarding = var.syslog_forwarding != null
  # From the non-secret settings only: a value derived from the (sensitive)
  # Twilio variables would make the user data sensitive, and could not be a
  # count. main.tf checks that the four are set together.
  sms = var.sms_from != "" || length(var.sms_to) > 0

  bastion_env = templatefile("${path.module}/templates/bastion.env.tftpl", {
    port             = var.port
    name             = var.name
    agent_down_after = var.agent_down_after
    sms              = local.sms
    sms_from         = var.sms_from
    sms_to           = var.sms_to
    quiet_from       = var.quiet_from
    # Outage mode (outage.tf): the bastion powers the host off when idle.
    # Empty without it, so outage_mode = false leaves the user data as it was.
    outage_idle = var.outage_mode ? var.outage_idle : ""
  })

  # The scripts' shared settings, rendered into each as shell assignments.
  script_settings = {
    region          = local.instance_facts.region
    host_key_param  = local.ssm.host_key
    sid_param       = local.sms ? local.ssm.twilio_account_sid : ""
    token_param     = local.sms ? local.ssm.twilio_auth_token : ""
    keys_path       = local.ssm.keys_path
    status_path     = local.ssm.status_path
    state_volume_id = local.instance_facts.state_volume_id
    package_url     = var.bastion_package_url == null ? "" : var.bastion_package_url
    package_s3_uri  = var.bastion_package_s3_uri == null ? "" : var.bastion_package_s3_uri
    package_sha256  = var.bastion_package_sha256
    log_forwarding  = local.log_forwarding
    # Outage mode: the bootstrap enables lifeline-poweroff.path; without it
    # the scripts render as they did before.
    outage_mode = var.outage_mode
  }

  keys_sync     = templatefile("${path.module}/templates/keys-sync.sh.tftpl", local.script_settings)
  fetch_secrets = templatefile("${path.module}/templates/fetch-secrets.sh.tftpl", local.script_settings)
  bootstrap     = templatefile("${path.module}/templates/bootstrap.sh.tftpl", local.script_settings)

  unattended_upgrades = templatefile("${path.module}/templates/52lifeline-unattended-upgrades.tftpl", {
    reboot_time = var.maintenance_window
  })
  upgrade_timer = templatefile("${path.module}/templates/apt-daily-upgrade.timer.d.conf.tftpl", {
    upgrade_time = local.upgrade_time
  })

  rsyslog_forward = local.log_forwarding ? templatefile("${path.module}/templates/rsyslog-forward.conf.tftpl", {
    host    = var.syslog_forwarding.host
    port    = var.syslog_forwarding.port
    ca_file = var.syslog_forwarding.ca_pem != null ? "/etc/ssl/lifeline/syslog-ca.pem" : "/etc/ssl/certs/ca-certificates.crt"
  }) : ""

  # Files cloud-init writes, path => [mode, content]. Units and scripts are
  # the same on every instance of this jump host.
  instance_files = merge(
    {
      "/etc/apt/apt.conf.d/20auto-upgrades"                              = ["0644", file("${path.module}/templates/20auto-upgrades")]
      "/etc/apt/apt.conf.d/52lifeline-unattended-upgrades"               = ["0644", local.unattended_upgrades]
      "/etc/systemd/system/apt-daily-upgrade.timer.d/lifeline.conf"      = ["0644", local.upgrade_timer]
      "/usr/local/lib/lifeline/keys-sync"                                = ["0755", local.keys_sync]
      "/usr/local/lib/lifeline/fetch-secrets"                            = ["0755", local.fetch_secrets]
      "/etc/systemd/system/lifeline-keys-sync.service"                   = ["0644", file("${path.module}/templates/lifeline-keys-sync.service")]
      "/etc/systemd/system/lifeline-keys-sync.timer"                     = ["0644", file("${path.module}/templates/lifeline-keys-sync.timer")]
      "/etc/systemd/system/lifeline-secrets.service"                     = ["0644", file("${path.module}/templates/lifeline-secrets.service")]
      "/etc/systemd/system/lifeline-bastion.service.d/lifeline-aws.conf" = ["0644", file("${path.module}/templates/lifeline-bastion-aws.conf")]
      "/run/lifeline-bootstrap/bastion.env"                              = ["0600", local.bastion_env]
      "/run/lifeline-bootstrap/bootstrap.sh"                             = ["0700", local.bootstrap]
    },
    local.log_forwarding ? {
      "/etc/rsyslog.d/60-lifeline-forward.conf"         = ["0644", local.rsyslog_forward]
      "/etc/systemd/journald.conf.d/lifeline.conf"      = ["0644", file("${path.module}/templates/journald-forward.conf")]
      "/etc/systemd/system/lifeline-audit-tail.service" = ["0644", file("${path.module}/templates/lifeline-audit-tail.service")]
    } : {},
    try(var.syslog_forwarding.ca_pem, null) != null ? {
      "/etc/ssl/lifeline/syslog-ca.pem" = ["0644", var.syslog_forwarding.ca_pem]
    } : {},
  )

  user_data = templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
    files = local.instance_files
  })
}
