// Command lifeline-bastion is lifeline's jump host. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/lifeline-dev/lifeline/bastion/config"
	"github.com/lifeline-dev/lifeline/bastion/daemon"
	"github.com/lifeline-dev/lifeline/bastion/doctor"
	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/logging"
	"github.com/lifeline-dev/lifeline/shared/version"
)

const usage = `usage: lifeline-bastion [run]       serve (the default)
       lifeline-bastion hostkey --host NAME[:PORT][,...]
                                    print the host key as the known_hosts line of each name or address
                                    operators and agents dial (--host repeats; PORT defaults to the port
                                    of LIFELINE_LISTEN; 22 is written bare, as ssh does), then its fingerprint
       lifeline-bastion check-keys  load LIFELINE_AGENTS, LIFELINE_OPERATORS and LIFELINE_REVOKED_KEYS
                                    as a start or reload would; exit 0 if they load, 1 with every
                                    problem (file:line) if not
       lifeline-bastion doctor [--send-test] [--user NAME]
                                    check the installed bastion, one line per check (✓ or ✗ with the fix):
                                    configuration, host key, key files, state directory and disk space,
                                    listen address, alert channels: Twilio account, e-mail, webhook
                                    (--send-test: a test through each: text every LIFELINE_SMS_TO, mail
                                    LIFELINE_SMTP_TO, post to LIFELINE_WEBHOOK_URL; one line per result);
                                    started as root, it checks as the service user (--user, default lifeline);
                                    exit 0 if all pass, 1 if not
       lifeline-bastion --version
Configuration comes from the environment (systemd: /etc/lifeline/bastion.env). hostkey and doctor also
read LIFELINE_ENV_FILE (default: /etc/lifeline/bastion.env, then /etc/lifeline/secrets.env, each if present)
for the variables the environment does not set:
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	cmd, rest := "run", []string(nil)
	if len(args) > 0 {
		cmd, rest = args[0], args[1:]
	}
	var hosts hostList
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		envconf.UsageSpecs(stdout, config.Specs()...)
		return 0
	case "--version", "version":
		fmt.Fprintln(stdout, "lifeline-bastion", version.Version)
		return 0
	case "doctor":
		return doctorCmd(rest, stdout, stderr)
	case "hostkey":
		fs := flag.NewFlagSet("lifeline-bastion hostkey", flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.Var(&hosts, "host", "name or address[:port] operators and agents dial (repeatable, comma-separated)")
		if err := fs.Parse(rest); err != nil {
			return usageExit(err)
		}
		rest = fs.Args()
	case "run", "check-keys":
	default:
		fmt.Fprintf(stderr, "lifeline-bastion: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "lifeline-bastion: unexpected argument %q\n%s", rest[0], usage)
		return 2
	}
	if cmd == "hostkey" {
		// Run by hand, it must find the key the service uses, not make
		// another where the defaults point.
		if _, err := doctor.ApplyEnvFiles(os.Getenv("LIFELINE_ENV_FILE"), doctor.DefaultEnvFiles); err != nil {
			fmt.Fprintf(stderr, "lifeline-bastion hostkey: %v\n", err)
			return 2
		}
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-bastion: %v\n", err)
		return 2
	}
	log, err := logging.New(stderr, cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-bastion: %v\n", err)
		return 2
	}
	switch cmd {
	case "hostkey":
		return hostKey(cfg, hosts, stdout, stderr)
	case "check-keys":
		return checkKeys(cfg, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d, err := daemon.New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-bastion: %v\n", err)
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := d.Reload(); err != nil {
					log.Error("reload failed", "err", err)
				}
			}
		}
	}()
	if err := d.Run(ctx); err != nil {
		log.Error("bastion stopped with an error", "err", err)
		return 1
	}
	return 0
}

// checkKeys validates the key files without starting anything: the step
// that stands between new files and a reload.
func checkKeys(cfg config.Config, stdout, stderr io.Writer) int {
	p, err := daemon.CheckKeys(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-bastion check-keys: the key files would be refused:\n%v\n", err)
		return 1
	}
	agents, operators := p.Counts()
	fmt.Fprintf(stdout, "ok: %s: %d agent lines; %s: %d operator lines", cfg.Agents, agents, cfg.Operators, operators)
	if cfg.Revoked != "" {
		fmt.Fprintf(stdout, "; %s: %s", cfg.Revoked, p.RevocationList())
	}
	fmt.Fprintln(stdout)
	return 0
}

// usageExit is the exit code of a flag error: 0 for -h, else 2.
func usageExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}
