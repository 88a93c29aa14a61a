package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/agent/hostkeys"
	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	"github.com/lifeline-dev/lifeline/agent/netsetup"
	"github.com/lifeline-dev/lifeline/agent/sdnotify"
	"github.com/lifeline-dev/lifeline/agent/tunnel"
	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
	"github.com/lifeline-dev/lifeline/shared/logging"
	"github.com/lifeline-dev/lifeline/shared/version"
)

const helpText = `lifeline-agent keeps reverse SSH tunnels from this site to its bastions.

Usage:
  lifeline-agent            run the agent: tunnels and hourly link checks (configured by the environment below)
  lifeline-agent pubkey     print the agent's key as a line for the bastion's agents file
  lifeline-agent check [--json]
                            run one link check now; exit 0 ok, 1 failed, 2 usage
  lifeline-agent netsetup apply|remove|status
                            the Pi's router duties (needs CAP_NET_ADMIN)
  lifeline-agent --version  print the version
  lifeline-agent --help     this text

Environment:
`

func helpMain(stdout, stderr io.Writer) int {
	fmt.Fprint(stdout, helpText)
	if err := envconf.UsageSpecs(stdout, envconf.Spec{Prefix: envconf.Prefix, Spec: &config.Config{}},
		envconf.Spec{Prefix: envconf.Prefix, Spec: &linkcheck.Config{}}, envconf.Spec{Prefix: envconf.Prefix, Spec: &netsetup.Config{}}); err != nil {
		fmt.Fprintf(stderr, "lifeline-agent: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// keyComment names the key after this machine.
func keyComment() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "unknown-host"
	}
	return "lifeline-agent@" + h
}

func pubkeyMain(stdout, stderr io.Writer) int {
	var cfg config.Pubkey
	if err := envconf.Process(&cfg); err != nil {
		fmt.Fprintf(stderr, "lifeline-agent: %v\n", err)
		return exitUsage
	}
	signer, created, err := keyfile.LoadOrCreate(cfg.Key, keyComment())
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-agent: %v\n", err)
		return exitFailed
	}
	if created {
		fmt.Fprintf(stderr, "lifeline-agent: created a new key in %s\n", cfg.Key)
	}
	fs, _ := forward.Parse(cfg.Forwards) // checked by Validate
	fmt.Fprintln(stdout, forward.PermitListen(fs)+" "+keyfile.AuthorizedLine(signer.PublicKey(), keyComment()))
	return exitOK
}

func agentMain(ctx context.Context, getenv func(string) string, stderr io.Writer) int {
	var cfg config.Config
	var checks linkcheck.Config
	if err := errors.Join(envconf.Process(&cfg), envconf.Process(&checks)); err != nil {
		fmt.Fprintf(stderr, "lifeline-agent: %v\n", err)
		return exitUsage
	}
	log, err := logging.New(stderr, cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-agent: %v\n", err)
		return exitUsage
	}
	signer, created, err := keyfile.LoadOrCreate(cfg.Key, keyComment())
	if err != nil {
		log.Error("cannot load the agent key", "err", err)
		return exitFailed
	}
	if created {
		log.Warn("created a new agent key: add `lifeline-agent pubkey` to the bastion's agents file", "key", cfg.Key, "fingerprint", keyfile.Fingerprint(signer.PublicKey()))
	}
	t, err := tunnel.New(tunnel.Config{
		Bastions:        cfg.Bastions(),
		User:            cfg.User,
		Signer:          signer,
		HostKeys:        hostkeys.New(cfg.KnownHosts, cfg.TrustNewBastion, log),
		Forwards:        cfg.ForwardList(),
		Interface:       cfg.Interface,
		Keepalive:       cfg.Keepalive,
		KeepaliveMisses: cfg.KeepaliveMisses,
		BackoffMax:      cfg.BackoffMax,
		MaxChannels:     cfg.MaxChannels,
		Notifier:        sdnotify.FromEnv(getenv),
		WatchdogEvery:   sdnotify.WatchdogInterval(getenv, os.Getpid()),
		Log:             log,
	})
	if err != nil {
		log.Error("cannot start", "err", err)
		return exitFailed
	}
	checker, err := linkcheck.New(checks, log.With("part", "linkcheck"))
	if err != nil {
		log.Error("cannot start link checks", "err", err)
		return exitFailed
	}
	log.Info("lifeline-agent starting", "version", version.Version, "bastions", strings.Join(cfg.Bastions(), ","),
		"forwards", cfg.Forwards, "key", keyfile.Fingerprint(signer.PublicKey()), "check_every", checks.CheckEvery)
	// Link checks run beside the tunnels and report over them; both stop
	// with ctx, and the agent waits for both.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := checker.Run(ctx, t.RTT, t.Publish); err != nil {
			log.Error("link checks stopped", "err", err)
		}
	}()
	err = t.Run(ctx)
	wg.Wait()
	if err != nil {
		log.Error("stopped", "err", err)
		return exitFailed
	}
	log.Info("lifeline-agent stopped")
	return exitOK
}
