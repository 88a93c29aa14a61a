package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/alert/email"
	"github.com/lifeline-dev/lifeline/bastion/alert/webhook"
	"github.com/lifeline-dev/lifeline/bastion/outage"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// Config is the bastion's configuration: the environment (Env) checked,
// with its lists parsed and the libraries' settings typed.
type Config struct {
	Env
	// Name is LIFELINE_NAME, else the host name, else "bastion".
	Name string
	// ExemptCIDRs is LIFELINE_BAN_EXEMPT.
	ExemptCIDRs []netip.Prefix
	// MemoryLimitBytes is LIFELINE_MEMORY_LIMIT in bytes; -1 = auto.
	MemoryLimitBytes int64
	// Alerts holds the alerter's settings from the environment; the
	// caller adds Channels (see Channels), Log and Audit.
	Alerts alert.Config
	// SMS is the Twilio sender's configuration; nil when none of the SMS
	// variables is set.
	SMS *alert.TwilioConfig
	// Email is the e-mail sender's configuration; nil when none of the
	// LIFELINE_SMTP_ variables that need a value is set.
	Email *email.Config
	// Webhook is the webhook sender's configuration; nil when
	// LIFELINE_WEBHOOK_URL, _TOKEN and _CA_FILE are unset.
	Webhook *webhook.Config
	// Outage is outage mode's settings (LIFELINE_OUTAGE_IDLE, _MAX_HOLD,
	// the state directory); Idle zero means off. The caller adds Log,
	// Notify and OpenOperators.
	Outage outage.Config
}

// Load reads the environment once and checks it: the configuration, or
// every problem at once, each naming its variable.
func Load() (Config, error) {
	e, err := Decode()
	if err != nil {
		return Config{}, err
	}
	return e.Check()
}

// Check checks every value of e and reports every problem at once, each
// naming its variable. The Config holds whatever did parse even when the
// error is not nil (for doctor); only a nil error makes it usable to run.
func (e Env) Check() (Config, error) {
	c := Config{Env: e, Name: e.Name, MemoryLimitBytes: -1}
	if c.Name == "" {
		c.Name = hostname()
	}
	var p problems
	e.checkFiles(&p)
	e.checkGate(&p)
	e.checkLimits(&p)
	e.checkAgents(&p)
	c.ExemptCIDRs = p.cidrs("LIFELINE_BAN_EXEMPT", e.BanExempt)
	c.MemoryLimitBytes = e.memoryLimit(&p)
	c.Alerts = e.alerts(&p, c.Name)
	c.SMS = e.sms(&p)
	c.Email, c.Webhook = e.channels(&p, c.Name)
	c.Outage = e.outage(&p)
	if err := errors.Join(p...); err != nil {
		return c, fmt.Errorf("configuration: %w", err)
	}
	return c, nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "bastion"
	}
	return h
}

// problems collects what is wrong, each naming its variable.
type problems []error

func (p *problems) add(name, format string, a ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, a...)))
}

// atLeast adds a problem for every value of vars below min.
func atLeast[T int | time.Duration](p *problems, min T, vars map[string]T) {
	for name, v := range vars {
		if v < min {
			p.add(name, "%v must be at least %v", v, min)
		}
	}
}

// cidrs parses the comma-separated CIDRs of variable name ("" = none).
func (p *problems) cidrs(name, s string) []netip.Prefix {
	if s == "" {
		return nil
	}
	c, err := alert.ParseCIDRs(s)
	if err != nil {
		p.add(name, "%v", err)
	}
	return c
}

func (e *Env) checkFiles(p *problems) {
	if _, port, err := net.SplitHostPort(e.Listen); err != nil || port == "" {
		p.add("LIFELINE_LISTEN", "%q is not host:port (e.g. :2222)", e.Listen)
	}
	for name, path := range map[string]string{"LIFELINE_HOST_KEY": e.HostKey, "LIFELINE_AGENTS": e.Agents, "LIFELINE_OPERATORS": e.Operators, "LIFELINE_STATE_DIR": e.StateDir} {
		if path == "" {
			p.add(name, "must not be empty")
		} else if !filepath.IsAbs(path) {
			p.add(name, "%q must be an absolute path", path)
		}
	}
	if e.Revoked != "" && !filepath.IsAbs(e.Revoked) {
		p.add("LIFELINE_REVOKED_KEYS", "%q must be an absolute path (or empty for none)", e.Revoked)
	}
}

// checkGate checks what bounds connections before they log in: the
// handshake's deadlines, the pending caps, throttles and bans.
func (e *Env) checkGate(p *problems) {
	if e.LoginGrace < time.Second {
		p.add("LIFELINE_LOGIN_GRACE", "%s is too short (at least 1s)", e.LoginGrace)
	}
	if e.MaxPending < 1 {
		p.add("LIFELINE_MAX_PENDING", "%d must be at least 1", e.MaxPending)
	}
	if e.MaxPendingPerSource < 1 || e.MaxPendingPerSource > e.MaxPending {
		p.add("LIFELINE_MAX_PENDING_PER_SOURCE", "%d must be from 1 to LIFELINE_MAX_PENDING (%d)", e.MaxPendingPerSource, e.MaxPending)
	}
	if e.HelloTimeout < 100*time.Millisecond || e.HelloTimeout > e.LoginGrace {
		p.add("LIFELINE_HELLO_TIMEOUT", "%s must be from 100ms to LIFELINE_LOGIN_GRACE (%s)", e.HelloTimeout, e.LoginGrace)
	}
	if e.ThrottleAfter < 0 {
		p.add("LIFELINE_THROTTLE_AFTER", "%d must not be negative", e.ThrottleAfter)
	}
	if e.ThrottleAfter > 0 && (e.ThrottleWindow <= 0 || e.ThrottleFor <= 0) {
		p.add("LIFELINE_THROTTLE_WINDOW/LIFELINE_THROTTLE_FOR", "must be positive when LIFELINE_THROTTLE_AFTER is set")
	}
	if e.TrustFor < 0 {
		p.add("LIFELINE_TRUST_FOR", "%s must not be negative", e.TrustFor)
	}
	if e.BanAfter < 0 {
		p.add("LIFELINE_BAN_AFTER", "%d must not be negative", e.BanAfter)
	}
	if e.BanAfter > 0 && (e.BanWindow <= 0 || e.BanFor <= 0) {
		p.add("LIFELINE_BAN_WINDOW/LIFELINE_BAN_FOR", "must be positive when LIFELINE_BAN_AFTER is set")
	}
}

// checkLimits checks the limits after login and the audit settings.
func (e *Env) checkLimits(p *problems) {
	atLeast(p, 1, map[string]int{
		"LIFELINE_MAX_CHANNELS": e.MaxChannels, "LIFELINE_MAX_CHANNELS_PER_CONN": e.MaxChannelsPerConn,
		"LIFELINE_MAX_CHANNELS_PER_KEY": e.MaxChannelsPerKey, "LIFELINE_MAX_CONNS_PER_KEY": e.MaxConnsPerKey,
		"LIFELINE_MAX_CHANNELS_PER_AGENT": e.MaxChannelsPerAgent,
		"LIFELINE_MAX_NAMES_PER_CONN":     e.MaxNamesPerConn, "LIFELINE_REQUESTS_PER_SECOND": e.RequestsPerSecond,
		"LIFELINE_AUDIT_KEEP_DAYS": e.AuditKeepDays,
	})
	atLeast(p, time.Second, map[string]time.Duration{
		"LIFELINE_REPORT_EVERY": e.ReportEvery, "LIFELINE_IDLE_TIMEOUT": e.IdleTimeout, "LIFELINE_AUDIT_SUMMARY_EVERY": e.AuditSummaryEvery,
	})
}

func (e *Env) checkAgents(p *problems) {
	if e.AgentDeadAfter < 100*time.Millisecond || e.AgentDeadAfter > time.Hour {
		p.add("LIFELINE_AGENT_DEAD_AFTER", "%s must be from 100ms to 1h", e.AgentDeadAfter)
	}
	if e.AgentQuiet < 100*time.Millisecond {
		p.add("LIFELINE_AGENT_QUIET", "%s is too short (at least 100ms; lifeline-agent sends a keepalive every 5m)", e.AgentQuiet)
	}
}

// memoryLimit is LIFELINE_MEMORY_LIMIT in bytes: -1 for auto, 0 for none.
func (e *Env) memoryLimit(p *problems) int64 {
	if e.MemoryLimit == "auto" {
		return -1
	}
	b, err := units.ParseByteSize(e.MemoryLimit)
	switch {
	case err != nil:
		p.add("LIFELINE_MEMORY_LIMIT", "%v (want auto, a size like 192MiB, or 0)", err)
	case b != 0 && b < 32<<20:
		p.add("LIFELINE_MEMORY_LIMIT", "%s is too small (at least 32MiB, or 0 for none)", b)
	default:
		return b.Bytes()
	}
	return -1
}

// alerts checks the alerter's settings and returns them.
func (e *Env) alerts(p *problems, name string) alert.Config {
	if e.AgentDownAfter <= 0 {
		p.add("LIFELINE_AGENT_DOWN_AFTER", "%s must be positive", e.AgentDownAfter)
	}
	if e.SMSPerMinute < 1 {
		p.add("LIFELINE_SMS_PER_MINUTE", "%d must be at least 1", e.SMSPerMinute)
	}
	if e.FailedLoginEach <= 0 {
		p.add("LIFELINE_FAILED_LOGIN_EVERY", "%s must be positive", e.FailedLoginEach)
	}
	return alert.Config{
		Dir: e.StateDir, BastionName: name,
		QuietFrom: p.cidrs("LIFELINE_QUIET_FROM", e.QuietFrom), QuietSetting: "LIFELINE_QUIET_FROM",
		DownAfter: e.AgentDownAfter, PerMinute: e.SMSPerMinute,
		FailedLoginEvery: e.FailedLoginEach, FailedLoginMin: e.FailedLoginMin,
	}
}

// outage checks outage mode's settings and returns them.
func (e *Env) outage(p *problems) outage.Config {
	var idle time.Duration
	if v := strings.TrimSpace(e.OutageIdle); v != "" && v != "0" {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			p.add("LIFELINE_OUTAGE_IDLE", "%q is not a duration like 30m (empty or 0: outage mode off)", e.OutageIdle)
		case d < 0:
			p.add("LIFELINE_OUTAGE_IDLE", "%s must not be negative (empty or 0: outage mode off)", d)
		case d > 0 && d < outage.MinIdle:
			p.add("LIFELINE_OUTAGE_IDLE", "%s is too short (at least %s, so that the agent that started the jump host has time to connect; empty or 0: off)", d, outage.MinIdle)
		default:
			idle = d
		}
	}
	if e.OutageMaxHold < time.Minute {
		p.add("LIFELINE_OUTAGE_MAX_HOLD", "%s must be at least 1m", e.OutageMaxHold)
	}
	return outage.Config{Idle: idle, MaxHold: max(e.OutageMaxHold, 0), StateDir: e.StateDir}
}
