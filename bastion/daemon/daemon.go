// Package daemon assembles the bastion from its configuration: host key,
// key policy, audit log, alert queue and SSH server, and runs them under one
// context. The main package only parses arguments and signals.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/bastion/ban"
	"github.com/lifeline-dev/lifeline/bastion/config"
	"github.com/lifeline-dev/lifeline/bastion/gate"
	"github.com/lifeline-dev/lifeline/bastion/outage"
	"github.com/lifeline-dev/lifeline/bastion/server"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// Daemon is a configured bastion, not yet listening.
type Daemon struct {
	cfg     config.Config
	policy  *authz.Policy // the policy in force, for the audit of the next reload's changes
	log     *slog.Logger
	audit   *audit.Log
	summary *audit.Summarizer
	alerter *alert.Alerter
	srv     *server.Server
	keeper  *outage.Keeper
	ln      net.Listener
}

// New loads the host key (creating it on first start), both key files, the
// audit log and the alert spool, and binds the listener. Every problem is an
// error naming the file or variable; nothing is left open on error.
func New(cfg config.Config, log *slog.Logger) (_ *Daemon, err error) {
	setMemoryLimit(cfg.MemoryLimitBytes, log)
	hostKey, created, err := keyfile.LoadOrCreate(cfg.HostKey, "lifeline-bastion")
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	if created {
		log.Warn("created a new host key: give operators and agents its known_hosts line (lifeline-bastion hostkey)", "path", cfg.HostKey, "fingerprint", keyfile.Fingerprint(hostKey.PublicKey()))
	}
	policy, err := authz.LoadFiles(policyFiles(cfg))
	if err != nil {
		return nil, err
	}
	agents, operators := policy.Counts()
	log.Info("key files loaded", "agents", agents, "operators", operators, "revoked_keys", policy.RevocationList().String())

	auditLog, err := audit.OpenWith(audit.Options{
		Path:     filepath.Join(cfg.StateDir, "audit.jsonl"),
		KeepDays: cfg.AuditKeepDays,
		OnError:  func(err error) { log.Error("audit log write failed", "err", err) },
		OnWarn:   func(msg string) { log.Warn(msg) },
	})
	if err != nil {
		return nil, err
	}
	// Refusals from one source are summarised: an outsider cannot flush
	// the log with them.
	summary := audit.NewSummarizer(auditLog, audit.SummaryOptions{Interval: cfg.AuditSummaryEvery})
	defer func() {
		if err != nil {
			auditLog.Close()
		}
	}()

	chans, err := cfg.Channels(log)
	if err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	ac := cfg.Alerts
	ac.Channels, ac.Log, ac.Audit = chans, log, auditLog
	alerter, err := alert.New(ac)
	if err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}

	// Expect every agent in the agents file: one that has not connected
	// within LIFELINE_AGENT_DOWN_AFTER of this start is reported down, so a
	// bastion restarted during an outage still tells the owner.
	for _, k := range policy.AgentKeys() {
		names := make([]string, 0, len(k.Listen))
		for _, t := range k.Listen {
			names = append(names, t.String())
		}
		alerter.AgentDown(alert.Agent{Name: k.Name, Fingerprint: k.Fingerprint, Names: names})
	}

	throttleAfter, trustFor := cfg.ThrottleAfter, cfg.TrustFor
	if throttleAfter == 0 {
		throttleAfter = -1 // LIFELINE_THROTTLE_AFTER=0: never throttle
	}
	if trustFor == 0 {
		trustFor = -1 // LIFELINE_TRUST_FOR=0: trust nobody
	}
	g, err := gate.New(gate.Config{
		MaxPending: cfg.MaxPending, MaxPendingPerSource: cfg.MaxPendingPerSource,
		HelloTimeout: cfg.HelloTimeout, LoginGrace: cfg.LoginGrace,
		ThrottleAfter: throttleAfter, ThrottleWindow: cfg.ThrottleWindow, ThrottleFor: cfg.ThrottleFor,
		Exempt: cfg.ExemptCIDRs, TrustFor: trustFor,
		Bans: ban.New(cfg.BanAfter, cfg.BanWindow, cfg.BanFor, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("connection gate: %w", err)
	}
	// Outage mode (LIFELINE_OUTAGE_IDLE; with it off the keeper does
	// nothing): its inputs come from the server, through ev and Sessions;
	// its events become texts and audit events (ev.notify).
	ev := newEvents(alerter, auditLog)
	var srv *server.Server
	oc := cfg.Outage
	oc.Log, oc.Notify = log, ev.notify
	oc.OpenOperators = func() int { return srv.OperatorConns() } // Run starts after srv is set
	keeper, err := outage.New(oc)
	if err != nil {
		return nil, fmt.Errorf("outage mode: %w", err)
	}
	ev.k = keeper
	srv, err = server.New(server.Config{
		HostKey: hostKey, Policy: policy, Log: log, Audit: summary, Events: ev, Outage: keeper,
		Name: cfg.Name, Gate: g,
		AgentDeadAfter: cfg.AgentDeadAfter, AgentQuiet: cfg.AgentQuiet,
		Limits: server.Limits{
			MaxChannels: cfg.MaxChannels, MaxChannelsPerConn: cfg.MaxChannelsPerConn, MaxChannelsPerKey: cfg.MaxChannelsPerKey,
			MaxChannelsPerAgent: cfg.MaxChannelsPerAgent,
			MaxConnsPerKey:      cfg.MaxConnsPerKey, MaxNamesPerConn: cfg.MaxNamesPerConn, RequestsPerSecond: cfg.RequestsPerSecond,
			ReportEvery: cfg.ReportEvery, IdleTimeout: cfg.IdleTimeout,
		},
		Alerts: alerter,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (LIFELINE_LISTEN): %w", cfg.Listen, err)
	}
	return &Daemon{cfg: cfg, policy: policy, log: log, audit: auditLog, summary: summary, alerter: alerter, srv: srv, keeper: keeper, ln: ln}, nil
}

// policyFiles names the files of the key policy.
func policyFiles(cfg config.Config) authz.Files {
	return authz.Files{Agents: cfg.Agents, Operators: cfg.Operators, RevokedKeys: cfg.Revoked}
}

// CheckKeys loads the key files and the revocation list exactly as a start
// or a reload does, without touching anything else, and returns the policy
// or every problem, each naming file and line. It is how new files are
// validated before they replace the ones in force.
func CheckKeys(cfg config.Config) (*authz.Policy, error) {
	return authz.LoadFiles(policyFiles(cfg))
}

// setMemoryLimit makes the Go runtime collect harder as the heap nears
// limit (bytes; -1 = auto, 0 = none), so that memory held by a flood goes
// back to the system once it ends. GOMEMLIMIT in the environment wins (the
// runtime has read it).
func setMemoryLimit(limit int64, log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" || limit == 0 {
		return
	}
	if limit < 0 {
		avail, from := availableMemory()
		if avail <= 0 {
			log.Warn("no memory limit set: cannot tell how much memory there is (set LIFELINE_MEMORY_LIMIT)")
			return
		}
		limit = avail / 4 * 3
		log.Info("memory limit", "bytes", limit, "of", avail, "from", from)
	}
	debug.SetMemoryLimit(limit)
}

// availableMemory is the memory this process may use: its cgroup's
// memory.max (systemd's MemoryMax=), else the machine's MemTotal.
func availableMemory() (int64, string) {
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && v > 0 {
			return v, "cgroup memory.max"
		}
	}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				if v, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return v << 10, "/proc/meminfo"
				}
			}
		}
	}
	return 0, ""
}

// Run serves until ctx is done, then shuts down within a few seconds:
// stop accepting, close every connection, leave undelivered alerts spooled.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.audit.Close()
	actx, cancelAlerts := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	var alertErr error
	wg.Add(3)
	go func() {
		defer wg.Done()
		alertErr = d.alerter.Run(actx)
	}()
	go func() {
		defer wg.Done()
		d.summary.Run(actx)
	}()
	go func() {
		defer wg.Done()
		if err := d.keeper.Run(actx); err != nil {
			d.log.Error("outage mode", "err", err)
		}
	}()
	err := d.srv.Serve(ctx, d.ln)
	// Undelivered alerts stay in the spool and go out after the next start.
	cancelAlerts()
	wg.Wait()
	d.summary.Flush() // counts of refusals recorded during shutdown
	if alertErr != nil && !errors.Is(alertErr, context.Canceled) {
		err = errors.Join(err, fmt.Errorf("alerts: %w", alertErr))
	}
	return err
}

// Reload re-reads both key files and the revocation list. On error the old
// policy stays in force. The audit event lists what changed; connections the
// new policy no longer admits (a removed or revoked key) are closed.
// Reload must not be called concurrently with itself.
func (d *Daemon) Reload() error {
	p, err := authz.LoadFiles(policyFiles(d.cfg))
	if err != nil {
		d.audit.Record(audit.Event{Kind: audit.KindReload, Reason: "kept the previous key files: " + err.Error()})
		return fmt.Errorf("reload (previous key files stay in force): %w", err)
	}
	changes := p.Changes(d.policy)
	closed := d.srv.SetPolicy(p)
	d.policy = p
	if err := d.audit.Reopen(); err != nil {
		d.log.Error("reopen audit log", "err", err)
	}
	agents, operators := p.Counts()
	msg := fmt.Sprintf("%d agent keys, %d operator keys", agents, operators)
	if d.cfg.Revoked != "" {
		msg += "; " + p.RevocationList().String()
	}
	if closed > 0 {
		msg += fmt.Sprintf("; closed %d connections no longer authorized", closed)
	}
	msg += "; " + changeSummary(changes)
	d.audit.Record(audit.Event{Kind: audit.KindReload, Message: msg, Count: int64(len(changes))})
	d.log.Info("key files reloaded", "agents", agents, "operators", operators, "changes", len(changes), "closed", closed)
	return nil
}

// changeSummary joins the changes of a reload, at most maxChanges of them.
func changeSummary(changes []string) string {
	const maxChanges = 40
	if len(changes) == 0 {
		return "no changes"
	}
	if len(changes) > maxChanges {
		return strings.Join(changes[:maxChanges], ", ") + fmt.Sprintf(" and %d more", len(changes)-maxChanges)
	}
	return strings.Join(changes, ", ")
}
