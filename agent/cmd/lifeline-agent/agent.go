package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/hostkeys"
	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	"github.com/lifeline-dev/lifeline/agent/mainwatch"
	"github.com/lifeline-dev/lifeline/agent/memstat"
	"github.com/lifeline-dev/lifeline/agent/netsetup"
	"github.com/lifeline-dev/lifeline/agent/outage"
	"github.com/lifeline-dev/lifeline/agent/sdnotify"
	"github.com/lifeline-dev/lifeline/agent/tunnel"
	"github.com/lifeline-dev/lifeline/agent/upgrade"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
	"github.com/lifeline-dev/lifeline/shared/logging"
	"github.com/lifeline-dev/lifeline/shared/version"
)

const helpText = `lifeline-agent keeps reverse SSH tunnels from this site to its bastions.

Usage:
  lifeline-agent            run the agent: tunnels, hourly link checks and, with LIFELINE_MAIN_GATEWAY,
                            the watch of the site's main internet; with LIFELINE_OUTAGE_INSTANCE too,
                            outage mode: when the main internet is down and no bastion answers, start
                            the stopped AWS jump host (EC2 StartInstances, made by lifeline-jumpstart)
                            and tell the bastion so once it connects (configured by the environment
                            below)
  lifeline-agent pair [--line]
                            pair this site (run with sudo): make or read the key as the service's
                            user (lifeline) and print its line for the bastion's agents file, with
                            permitlisten for every forward, then the next steps (--line: the line only)
  lifeline-agent pubkey     the same as pair --line, for scripts
  lifeline-agent doctor     check the setup as the service sees it (run with sudo), one line per
                            check: ✓, or ✗ with why and the fix; exit 0 all passed, 1 a ✗, 2 usage
  lifeline-agent check [--json] [--force]
                            run one link check now, recorded and counted against the monthly
                            budget (--force: even over it); exit 0 ok, 1 failed, 2 usage, 3 refused
  lifeline-agent netsetup apply|remove|status
                            the Pi's router duties (needs CAP_NET_ADMIN)
  lifeline-agent --version  print the version
  lifeline-agent --help     this text

pair, pubkey, doctor and check first read /etc/lifeline/agent.env (LIFELINE_ENV_FILE), as the unit
does; a variable already in the environment wins.

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

// pubkeyMain is `lifeline-agent pubkey`: pair --line (pair.go), which as
// root makes or reads the key as the service's user.
func pubkeyMain(stdout, stderr io.Writer) int {
	return pair(stdout, stderr, pairOptions{lineOnly: true, compat: true})
}

// The agent returns its heap's unneeded memory to the OS once there is
// more than scavengeSlack of it, looking every scavengeEvery; it runs its
// goroutines on at most maxProcs threads at once unless GOMAXPROCS says
// otherwise. Each runtime P keeps caches and GC workers of its own: 0.4 MB
// of RSS per doubling, measured (BenchmarkIdleRSS, README).
const (
	scavengeEvery = time.Minute
	scavengeSlack = 256 << 10
	maxProcs      = 2
)

func agentMain(ctx context.Context, getenv func(string) string, stderr io.Writer) int {
	cfg, checks, log, err := loadAgent(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-agent: %v\n", err)
		return exitUsage
	}
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(min(runtime.GOMAXPROCS(0), maxProcs))
	}
	signer, ok := agentSigner(cfg.Key, log)
	if !ok {
		return exitFailed
	}
	ml := newMainLink(nil, log)
	jump, err := newOutage(cfg.Outage, nil, ml, log)
	if err != nil {
		log.Error("cannot start outage mode", "err", err)
		return exitFailed
	}
	var onBastion func(bool, time.Time)
	if jump != nil {
		onBastion = jump.Bastion
	}
	t, err := tunnel.New(tunnel.Config{
		Bastions:      cfg.Bastions,
		User:          cfg.User,
		Signer:        signer,
		HostKeys:      hostkeys.New(cfg.KnownHosts, cfg.TrustNewBastion, log),
		Forwards:      cfg.ForwardList,
		Interface:     cfg.Interface,
		Keepalive:     cfg.Keepalive,
		DeadAfter:     cfg.DeadAfter,
		BackoffMax:    cfg.BackoffMax,
		MaxChannels:   cfg.MaxChannels,
		Systemd:       sdnotify.FromEnv(getenv),
		WatchdogEvery: sdnotify.WatchdogInterval(getenv, os.Getpid()),
		OnBastion:     onBastion,
		Log:           log,
	})
	if err != nil {
		log.Error("cannot start", "err", err)
		return exitFailed
	}
	ml.publish, ml.note = t.Publish, t.SetMainNote
	// The link checks' schedule and monthly data go in systemd's STATUS=
	// after the tunnels' state.
	checks.Status = t.SetNote
	checker, err := linkcheck.New(checks, log.With("part", "linkcheck"))
	if err != nil {
		log.Error("cannot start link checks", "err", err)
		return exitFailed
	}
	watch, err := newMainWatch(cfg.Main, ml, log)
	if err != nil {
		log.Error("cannot start the main internet watch", "err", err)
		return exitFailed
	}
	log.Info("lifeline-agent starting", "version", version.Version, "bastions", strings.Join(cfg.Bastions, ","),
		"forwards", cfg.Forwards, "key", keyfile.Fingerprint(signer.PublicKey()), "check_every", checks.CheckEvery,
		"main_watch", watch != nil, "outage_mode", jump != nil)
	return serveAgent(ctx, cfg, t, checker, watch, agentParts{main: ml, jump: jump}, log)
}

// agentParts are the parts of the agent that run beside the tunnels
// besides the link checks and the watch: main carries the main link's
// events and reports, jump (nil: outage mode off) starts the jump host.
type agentParts struct {
	main *mainLink
	jump *outage.Decider
}

// newMainWatch makes the watch of the site's main internet link, nil when
// LIFELINE_MAIN_GATEWAY is not set (m nil). Each of its events goes to
// main (mainLink.event): to every connected bastion (all keep it, the
// reporter texts it; the latest is resent to a bastion that connects
// later), into systemd's STATUS= and, in outage mode, to the Decider. Its
// probes leave by the main router only through netsetup's host routes.
func newMainWatch(m *config.MainWatch, main *mainLink, log *slog.Logger) (*mainwatch.Watcher, error) {
	if m == nil {
		return nil, nil
	}
	return mainwatch.New(mainwatch.Config{
		Targets:   m.Targets,
		Every:     m.Every,
		DownAfter: m.DownAfter,
		Log:       log.With("part", "mainwatch"),
		OnEvent:   main.event,
	})
}

// mainNote is what STATUS= says of the main link after ev.
func mainNote(ev mainwatch.Event) string {
	if d, ok := ev.(mainwatch.Down); ok {
		return "MAIN INTERNET DOWN since " + d.Since.UTC().Format("2006-01-02 15:04 UTC") + " (" + d.Code + ")"
	}
	return ""
}

// loadAgent reads the agent's configuration and the link checks' from the
// environment, every problem at once, and makes the log.
func loadAgent(stderr io.Writer) (*config.Config, linkcheck.Config, *slog.Logger, error) {
	var checks linkcheck.Config
	cfg, err := config.Load()
	if err := errors.Join(err, envconf.Process(&checks)); err != nil {
		return nil, checks, nil, err
	}
	log, err := logging.New(stderr, cfg.LogLevel)
	return cfg, checks, log, err
}

// agentSigner loads the agent's key (made if missing) and, when the site
// was paired by certificate (ssh-keygen -s SITE_CA -n pi:22 KEY.pub), the
// certificate beside it: then the bastion's agents file needs no line of
// its own. It logs why it failed (false).
func agentSigner(key string, log *slog.Logger) (ssh.Signer, bool) {
	signer, created, err := keyfile.LoadOrCreate(key, keyComment())
	if err != nil {
		log.Error("cannot load the agent key", "err", err)
		return nil, false
	}
	if created {
		log.Warn("created a new agent key: put the line of `sudo lifeline-agent pair` in the bastion's agents file", "key", key, "fingerprint", keyfile.Fingerprint(signer.PublicKey()))
	}
	signer, cert, err := keyfile.WithCertificate(signer, key, time.Now())
	if err != nil {
		log.Error("cannot use the agent's certificate (remove it to log in with the bare key)", "err", err)
		return nil, false
	}
	if cert != nil {
		log.Info("presenting a certificate", "path", keyfile.CertPath(key), "id", cert.KeyId, "principals", cert.ValidPrincipals,
			"valid_before", certTime(cert.ValidBefore))
	}
	return signer, true
}

// serveAgent runs the tunnels and, beside them, the link checks, the main
// internet watch (nil: none) and outage mode (parts.jump nil: off), which
// report over them, the memory's upkeep and the watch for upgrades, until
// ctx ends or an upgrade asks for a restart; it waits for all of them.
func serveAgent(ctx context.Context, cfg *config.Config, t *tunnel.Tunnels, checker *linkcheck.Checker, watch *mainwatch.Watcher, parts agentParts, log *slog.Logger) int {
	// A package upgrade restarts nothing: the agent stops by itself once no
	// operator depends on it (restartOnUpgrade), the same way as on SIGTERM.
	ctx, restart := context.WithCancelCause(ctx)
	defer restart(nil)
	// SIGUSR1 logs the memory; the heap's free pages go back to the OS
	// every scavengeEvery.
	logMemory := memstat.OnSignal(log)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := checker.Run(ctx, t.RTT, t.Publish); err != nil {
			log.Error("link checks stopped", "err", err)
		}
	})
	if watch != nil {
		wg.Go(func() {
			if err := watch.Run(ctx); err != nil {
				log.Error("main internet watch stopped", "err", err)
				return
			}
			st := watch.Status()
			log.Info("main internet watch stopped", "state", st.State.String(), "rounds", st.Rounds, "probes", st.Probes, "bytes", st.Bytes)
		})
	}
	if parts.jump != nil {
		wg.Go(func() { parts.main.run(ctx) })
		wg.Go(func() {
			if err := parts.jump.Run(ctx); err != nil {
				log.Error("outage mode stopped", "err", err)
			}
		})
	}
	wg.Go(func() { logMemory(ctx) })
	wg.Go(func() { memstat.Scavenge(ctx, clock.Real{}, scavengeEvery, scavengeSlack) })
	wg.Go(func() { restartOnUpgrade(ctx, restart, cfg, t.Activity, log) })
	err := t.Run(ctx)
	wg.Wait()
	if err != nil {
		log.Error("stopped", "err", err)
		return exitFailed
	}
	if errors.Is(context.Cause(ctx), errUpgraded) {
		log.Info("lifeline-agent stopped to restart into its new binary")
		return exitOK
	}
	log.Info("lifeline-agent stopped")
	return exitOK
}

var errUpgraded = errors.New("the agent's binary was upgraded")

// restartOnUpgrade ends the agent (restart(errUpgraded)) once a package
// upgrade has replaced its binary and no operator connection has been
// open through it for LIFELINE_UPGRADE_QUIET, so an operator who runs
// `apt install` over `ssh -J bastion pi` keeps the session it runs in. It
// returns when ctx ends, at once (a stop within TimeoutStopSec is never
// held up by it). A binary it cannot watch is logged; the agent runs on.
//
// Restarting is exiting 0 after the same clean stop as on SIGTERM
// (STOPPING=1, tunnels closed, link checks ended), not re-executing the
// new binary in place. The unit has Restart=always, so systemd starts the
// new binary from the unit as the package left it: a new ExecStart,
// sandbox, limit or EnvironmentFile (loaded by the package's
// daemon-reload) applies, where a re-exec would keep the old process's
// for good. And it is an ordinary start that systemd watches (READY=1
// within TimeoutStartSec, then the watchdog; journal and NRestarts show
// it; a new binary that fails is retried every RestartSec), where a
// re-exec keeps the PID and systemd sees no start at all. Outside
// systemd, whatever started the agent must start it again.
func restartOnUpgrade(ctx context.Context, restart context.CancelCauseFunc, cfg *config.Config, activity func() (int, time.Time), log *slog.Logger) {
	log = log.With("part", "upgrade")
	path, running, err := upgrade.Executable()
	if err != nil {
		log.Warn("not watching for upgrades: restart the agent by hand after one", "err", err)
		return
	}
	w, err := upgrade.New(upgrade.Config{Path: path, Running: running, Activity: activity, Every: cfg.UpgradePoll, Quiet: cfg.UpgradeQuiet, Log: log})
	if err != nil {
		log.Warn("not watching for upgrades: restart the agent by hand after one", "err", err)
		return
	}
	if w.Wait(ctx) == nil {
		restart(errUpgraded)
	}
}

// certTime formats a certificate's validity bound ("forever" for none).
func certTime(t uint64) string {
	if t == ssh.CertTimeInfinity || t > 1<<62 {
		return "forever"
	}
	return time.Unix(int64(t), 0).UTC().Format(time.RFC3339)
}
