package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kelseyhightower/envconfig"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/doctor"
	"github.com/lifeline-dev/lifeline/agent/netsetup"
	"github.com/lifeline-dev/lifeline/shared/envconf"
)

const doctorUsage = `usage: lifeline-agent doctor

Checks this site's setup as the service will use it, one line per check:
  ✓ what                             passed
  ✗ what: why — fix: what to do      failed
  - what: why                        skipped (does not apply, or what it needs failed above)
Configuration, key, known_hosts, every bastion (name, TCP through LIFELINE_INTERFACE,
host key, login, each forward), every forward's target, the main internet watch, outage
mode (its settings and lifeline-jumpstart; AWS is never called, which would start the jump
host), netsetup, the last link check and this month's data, the systemd unit. Each step
gives up after 5 s; nothing is changed.
Run it as root (sudo): it checks as the service's user. The configuration is read from
/etc/lifeline/agent.env (LIFELINE_ENV_FILE) and the environment, which wins.
Exit status: 0 every check passed (or was skipped), 1 something failed, 2 usage.
`

func doctorMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, doctorUsage)
		return exitOK
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "lifeline-agent doctor: unexpected argument %q\n%s", args[0], doctorUsage)
		return exitUsage
	}
	svc := serviceAccount()
	root := os.Geteuid() == 0
	if !root && !svc.is() {
		fmt.Fprintf(stderr, "lifeline-agent doctor: run it as root: sudo lifeline-agent doctor\n"+
			"(it checks as the service's user %s, who alone can read the agent's key)\n", svc.Name)
		return exitUsage
	}
	envPath, n, _, err := config.LoadEnvFile()
	if err != nil {
		r := doctor.Failed("configuration", "the environment file does not read", "correct it (one NAME=VALUE a line; lifeline-agent --help lists every variable)")
		r.Detail = strings.Split(err.Error(), "\n")
		fmt.Fprint(stdout, r.Line())
		return exitFailed
	}
	cfg := doctor.Config{EnvFile: envPath, Vars: n, User: svc.ServiceUser, KeyComment: keyComment()}
	cfg.AgentErr = envconf.Process(&cfg.Agent)
	// Decoded (values read) but maybe invalid: the other checks use it.
	cfg.AgentDecoded = envconfig.Process(envconf.Prefix, &config.Config{}) == nil
	cfg.ChecksErr = envconf.Process(&cfg.Checks)
	if config.Routes() {
		cfg.Net = &netsetup.Config{}
		cfg.NetErr = envconf.Process(cfg.Net)
	}
	if root && svc.Err == nil {
		cfg.Drop = svc.become
	}
	if doctor.New(cfg).Run(ctx, stdout) > 0 {
		return exitFailed
	}
	return exitOK
}
