// Command lifeline-bastion is lifeline's jump host. See README.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/lifeline-dev/lifeline/bastion/config"
	"github.com/lifeline-dev/lifeline/bastion/daemon"
	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
	"github.com/lifeline-dev/lifeline/shared/logging"
	"github.com/lifeline-dev/lifeline/shared/version"
)

const usage = `usage: lifeline-bastion [run]       serve (the default)
       lifeline-bastion hostkey     print the host key as a known_hosts line and its fingerprint
       lifeline-bastion check-keys  load LIFELINE_AGENTS, LIFELINE_OPERATORS and LIFELINE_REVOKED_KEYS
                                    as a start or reload would; exit 0 if they load, 1 with every
                                    problem (file:line) if not
       lifeline-bastion --version
Configuration comes from the environment (systemd: /etc/lifeline/bastion.env):
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		cmd = args[0]
	}
	if len(args) > 1 {
		fmt.Fprintf(stderr, "lifeline-bastion: unexpected argument %q\n%s", args[1], usage)
		return 2
	}
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		envconf.UsageSpecs(stdout, config.Specs()...)
		return 0
	case "--version", "version":
		fmt.Fprintln(stdout, "lifeline-bastion", version.Version)
		return 0
	case "run", "hostkey", "check-keys":
	default:
		fmt.Fprintf(stderr, "lifeline-bastion: unknown command %q\n%s", cmd, usage)
		return 2
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
		return hostKey(cfg, stdout, stderr)
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

func hostKey(cfg config.Config, stdout, stderr io.Writer) int {
	signer, created, err := keyfile.LoadOrCreate(cfg.HostKey, "lifeline-bastion")
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-bastion: %v\n", err)
		return 1
	}
	if created {
		fmt.Fprintf(stderr, "created host key %s\n", cfg.HostKey)
	}
	host := cfg.Name
	fmt.Fprintln(stdout, keyfile.KnownHostsLine([]string{hostPort(host, cfg.Listen)}, signer.PublicKey()))
	fmt.Fprintln(stdout, "# fingerprint", keyfile.Fingerprint(signer.PublicKey()))
	return 0
}
