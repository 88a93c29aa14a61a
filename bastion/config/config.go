// Package config is the bastion's configuration, read from the environment
// (prefix LIFELINE_, plus Twilio's own TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN).
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// Config of lifeline-bastion. Field tags are the variable names and defaults
// that `lifeline-bastion --help` prints.
type Config struct {
	Listen    string `envconfig:"LISTEN" default:":2222" desc:"address:port to listen on"`
	HostKey   string `envconfig:"HOST_KEY" default:"/var/lib/lifeline/ssh_host_ed25519_key" desc:"host key; created 0600 on first start, reused afterwards"`
	Agents    string `envconfig:"AGENTS" default:"/etc/lifeline/agents" desc:"authorized_keys of agents; each key needs permitlisten=\"NAME:PORT\""`
	Operators string `envconfig:"OPERATORS" default:"/etc/lifeline/operators" desc:"authorized_keys of people: from=, permitopen=, cert-authority+principals=, expiry-time="`
	Revoked   string `envconfig:"REVOKED_KEYS" desc:"OpenSSH KRL (ssh-keygen -k) of keys and certificates refused in both roles, re-read on reload; empty = none"`
	StateDir  string `envconfig:"STATE_DIR" default:"/var/lib/lifeline" desc:"audit log (audit.jsonl) and alert spool"`
	Name      string `envconfig:"NAME" desc:"this bastion's name in texts and status (default: hostname)"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`

	LoginGrace          time.Duration `envconfig:"LOGIN_GRACE" default:"20s" desc:"time allowed for handshake and authentication"`
	HelloTimeout        time.Duration `envconfig:"HELLO_TIMEOUT" default:"5s" desc:"a new connection's SSH version line and first key-exchange packet must arrive within this"`
	MaxPending          int           `envconfig:"MAX_PENDING" default:"64" desc:"connections allowed to be authenticating at once; when full, a new source evicts the oldest of the source holding the most"`
	MaxPendingPerSource int           `envconfig:"MAX_PENDING_PER_SOURCE" default:"4" desc:"connections one source (IPv6: one /64) may have authenticating at once"`
	ThrottleAfter       int           `envconfig:"THROTTLE_AFTER" default:"20" desc:"connections from one source that end without logging in within THROTTLE_WINDOW before it is throttled (one pending connection, evicted first); 0 disables"`
	ThrottleWindow      time.Duration `envconfig:"THROTTLE_WINDOW" default:"1m" desc:"window in which THROTTLE_AFTER counts"`
	ThrottleFor         time.Duration `envconfig:"THROTTLE_FOR" default:"5m" desc:"how long a source stays throttled"`
	BanAfter            int           `envconfig:"BAN_AFTER" default:"10" desc:"failed logins from one source (IPv6: one /64) before it is banned; 0 disables"`
	BanWindow           time.Duration `envconfig:"BAN_WINDOW" default:"10m" desc:"window in which BAN_AFTER failures count"`
	BanFor              time.Duration `envconfig:"BAN_FOR" default:"30m" desc:"how long a banned source is refused"`
	BanExempt           string        `envconfig:"BAN_EXEMPT" desc:"comma-separated CIDRs never banned nor throttled (an office, a monitoring host)"`
	TrustFor            time.Duration `envconfig:"TRUST_FOR" default:"24h" desc:"a source where a key logged in is never banned or throttled for this long, and may have 4x MAX_PENDING_PER_SOURCE pending (agents share carrier-NAT addresses with strangers)"`

	MaxChannels         int           `envconfig:"MAX_CHANNELS" default:"64" desc:"relayed connections open in total; each may buffer up to 2 MiB per direction when a side stalls"`
	MaxChannelsPerConn  int           `envconfig:"MAX_CHANNELS_PER_CONN" default:"10" desc:"channels open on one operator connection (one of them may be a session, for status)"`
	MaxChannelsPerKey   int           `envconfig:"MAX_CHANNELS_PER_KEY" default:"16" desc:"channels open by one operator key over all its connections"`
	MaxChannelsPerAgent int           `envconfig:"MAX_CHANNELS_PER_AGENT" default:"4" desc:"relayed connections one operator key may hold to one site's agent; keep it below the agent's LIFELINE_MAX_CHANNELS (8) so no key can fill a site"`
	MaxConnsPerKey      int           `envconfig:"MAX_CONNS_PER_KEY" default:"8" desc:"logged-in connections per key; a newer one closes the oldest"`
	MaxNamesPerConn     int           `envconfig:"MAX_NAMES_PER_CONN" default:"16" desc:"names one agent connection may register"`
	RequestsPerSecond   int           `envconfig:"REQUESTS_PER_SECOND" default:"20" desc:"global requests and channel opens per key over all its connections (bursts of twice that); more are refused; a key that keeps flooding is cut off for a minute"`
	ReportEvery         time.Duration `envconfig:"REPORT_EVERY" default:"1m" desc:"an agent key's link reports are taken in bursts of 3, then one per interval"`
	IdleTimeout         time.Duration `envconfig:"IDLE_TIMEOUT" default:"15m" desc:"an operator connection with no channel open this long is closed"`
	MemoryLimit         string        `envconfig:"MEMORY_LIMIT" default:"auto" desc:"soft memory limit of the Go runtime, so a flood's memory goes back once it ends: auto (3/4 of the memory the service may use: its cgroup limit, else the machine's), a size (192MiB), or 0 for none; GOMEMLIMIT wins when set"`
	AuditKeepDays       int           `envconfig:"AUDIT_KEEP_DAYS" default:"90" desc:"logins, jumps and status calls are kept in access.jsonl at least this many days"`
	AuditSummaryEvery   time.Duration `envconfig:"AUDIT_SUMMARY_EVERY" default:"1m" desc:"refusals from one source: the first in full, then one count per interval"`
	AgentDeadAfter      time.Duration `envconfig:"AGENT_DEAD_AFTER" default:"90s" desc:"an agent connection silent this long is closed and its names freed (TCP keepalive probes from 2/3 of it on, a bound on unacknowledged data)"`
	AgentQuiet          time.Duration `envconfig:"AGENT_QUIET" default:"10m" desc:"an agent nothing was heard from this long is sent one keepalive and closed unless it answers within LIFELINE_AGENT_DEAD_AFTER; otherwise the bastion sends agents nothing (their links may be metered)"`

	Twilio          `ignored:"true"` // read without prefix, see Twilio
	TwilioURL       string           `envconfig:"TWILIO_URL" default:"https://api.twilio.com" desc:"base URL of the Twilio API (proxy or local test server)"`
	SMSFrom         string           `envconfig:"SMS_FROM" desc:"sending number, E.164 (+15551234567)"`
	SMSTo           string           `envconfig:"SMS_TO" desc:"comma-separated numbers to text, E.164"`
	QuietFrom       string           `envconfig:"QUIET_FROM" desc:"comma-separated CIDRs whose logins are audited but not texted"`
	AgentDownAfter  time.Duration    `envconfig:"AGENT_DOWN_AFTER" default:"5m" desc:"how long an agent may be gone before \"site down\" is texted"`
	SMSPerMinute    int              `envconfig:"SMS_PER_MINUTE" default:"6" desc:"most texts per minute; the rest are summarised"`
	FailedLoginMin  int              `envconfig:"FAILED_LOGIN_MIN" default:"10" desc:"failed logins in an interval below this are not texted"`
	FailedLoginEach time.Duration    `envconfig:"FAILED_LOGIN_EVERY" default:"15m" desc:"failed logins are summarised at most once per interval"`

	// Parsed by Validate.
	SMSToList   []string       `ignored:"true"`
	QuietCIDRs  []netip.Prefix `ignored:"true"`
	ExemptCIDRs []netip.Prefix `ignored:"true"`
	// MemoryLimitBytes is LIFELINE_MEMORY_LIMIT in bytes; -1 = auto.
	MemoryLimitBytes int64 `ignored:"true"`
}

// Twilio holds Twilio's own variables, read without the LIFELINE_ prefix.
type Twilio struct {
	TwilioSID   string `envconfig:"TWILIO_ACCOUNT_SID" desc:"Twilio account SID; texts need it, TWILIO_AUTH_TOKEN, LIFELINE_SMS_FROM and LIFELINE_SMS_TO"`
	TwilioToken string `envconfig:"TWILIO_AUTH_TOKEN" desc:"Twilio auth token (keep it in the 0600 env file)"`
}

// Specs lists the configuration structs for --help.
func Specs() []envconf.Spec {
	return []envconf.Spec{{Prefix: envconf.Prefix, Spec: &Config{}}, {Prefix: "", Spec: &Twilio{}}}
}

// Load reads and validates the environment.
func Load() (Config, error) {
	c, err := Decode()
	if err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Decode reads the environment without validating it: a value that does
// not decode is an error naming the variable (the first one found). The
// caller must call Validate before using the result; `lifeline-bastion
// doctor` does, and goes on with the other checks whatever it says.
func Decode() (Config, error) {
	var c Config
	if err := envconf.ProcessPrefix("", &c.Twilio); err != nil {
		return Config{}, err
	}
	// decodeOnly has Config's fields and tags but not its Validate method,
	// which envconf would call.
	type decodeOnly Config
	if err := envconf.Process((*decodeOnly)(&c)); err != nil {
		return Config{}, err
	}
	return c, nil
}

// SMS reports whether Twilio delivery is configured.
func (c *Config) SMS() bool {
	return c.TwilioSID != "" || c.TwilioToken != "" || c.SMSFrom != "" || c.SMSTo != ""
}

// Validate checks every value and reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(name, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, a...)))
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		bad("LIFELINE_LISTEN", "%q is not host:port (e.g. :2222)", c.Listen)
	}
	for name, p := range map[string]string{"LIFELINE_HOST_KEY": c.HostKey, "LIFELINE_AGENTS": c.Agents, "LIFELINE_OPERATORS": c.Operators, "LIFELINE_STATE_DIR": c.StateDir} {
		if p == "" {
			bad(name, "must not be empty")
		} else if !filepath.IsAbs(p) {
			bad(name, "%q must be an absolute path", p)
		}
	}
	if c.Revoked != "" && !filepath.IsAbs(c.Revoked) {
		bad("LIFELINE_REVOKED_KEYS", "%q must be an absolute path (or empty for none)", c.Revoked)
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "bastion"
		}
		c.Name = h
	}
	if c.LoginGrace < time.Second {
		bad("LIFELINE_LOGIN_GRACE", "%s is too short (at least 1s)", c.LoginGrace)
	}
	if c.MaxPending < 1 {
		bad("LIFELINE_MAX_PENDING", "%d must be at least 1", c.MaxPending)
	}
	if c.MaxPendingPerSource < 1 || c.MaxPendingPerSource > c.MaxPending {
		bad("LIFELINE_MAX_PENDING_PER_SOURCE", "%d must be from 1 to LIFELINE_MAX_PENDING (%d)", c.MaxPendingPerSource, c.MaxPending)
	}
	if c.HelloTimeout < 100*time.Millisecond || c.HelloTimeout > c.LoginGrace {
		bad("LIFELINE_HELLO_TIMEOUT", "%s must be from 100ms to LIFELINE_LOGIN_GRACE (%s)", c.HelloTimeout, c.LoginGrace)
	}
	if c.ThrottleAfter < 0 {
		bad("LIFELINE_THROTTLE_AFTER", "%d must not be negative", c.ThrottleAfter)
	}
	if c.ThrottleAfter > 0 && (c.ThrottleWindow <= 0 || c.ThrottleFor <= 0) {
		bad("LIFELINE_THROTTLE_WINDOW/LIFELINE_THROTTLE_FOR", "must be positive when LIFELINE_THROTTLE_AFTER is set")
	}
	if c.TrustFor < 0 {
		bad("LIFELINE_TRUST_FOR", "%s must not be negative", c.TrustFor)
	}
	if c.BanExempt != "" {
		p, err := alert.ParseCIDRs(c.BanExempt)
		if err != nil {
			bad("LIFELINE_BAN_EXEMPT", "%v", err)
		}
		c.ExemptCIDRs = p
	}
	for name, v := range map[string]int{
		"LIFELINE_MAX_CHANNELS": c.MaxChannels, "LIFELINE_MAX_CHANNELS_PER_CONN": c.MaxChannelsPerConn,
		"LIFELINE_MAX_CHANNELS_PER_KEY": c.MaxChannelsPerKey, "LIFELINE_MAX_CONNS_PER_KEY": c.MaxConnsPerKey,
		"LIFELINE_MAX_CHANNELS_PER_AGENT": c.MaxChannelsPerAgent,
		"LIFELINE_MAX_NAMES_PER_CONN":     c.MaxNamesPerConn, "LIFELINE_REQUESTS_PER_SECOND": c.RequestsPerSecond,
	} {
		if v < 1 {
			bad(name, "%d must be at least 1", v)
		}
	}
	for name, v := range map[string]time.Duration{
		"LIFELINE_REPORT_EVERY": c.ReportEvery, "LIFELINE_IDLE_TIMEOUT": c.IdleTimeout, "LIFELINE_AUDIT_SUMMARY_EVERY": c.AuditSummaryEvery,
	} {
		if v < time.Second {
			bad(name, "%s must be at least 1s", v)
		}
	}
	c.MemoryLimitBytes = -1
	if c.MemoryLimit != "auto" {
		if b, err := units.ParseByteSize(c.MemoryLimit); err != nil {
			bad("LIFELINE_MEMORY_LIMIT", "%v (want auto, a size like 192MiB, or 0)", err)
		} else if b != 0 && b < 32<<20 {
			bad("LIFELINE_MEMORY_LIMIT", "%s is too small (at least 32MiB, or 0 for none)", b)
		} else {
			c.MemoryLimitBytes = b.Bytes()
		}
	}
	if c.AuditKeepDays < 1 {
		bad("LIFELINE_AUDIT_KEEP_DAYS", "%d must be at least 1", c.AuditKeepDays)
	}
	if c.BanAfter < 0 {
		bad("LIFELINE_BAN_AFTER", "%d must not be negative", c.BanAfter)
	}
	if c.BanAfter > 0 && (c.BanWindow <= 0 || c.BanFor <= 0) {
		bad("LIFELINE_BAN_WINDOW/LIFELINE_BAN_FOR", "must be positive when LIFELINE_BAN_AFTER is set")
	}
	if c.AgentDeadAfter < 100*time.Millisecond || c.AgentDeadAfter > time.Hour {
		bad("LIFELINE_AGENT_DEAD_AFTER", "%s must be from 100ms to 1h", c.AgentDeadAfter)
	}
	if c.AgentQuiet < 100*time.Millisecond {
		bad("LIFELINE_AGENT_QUIET", "%s is too short (at least 100ms; lifeline-agent sends a keepalive every 5m)", c.AgentQuiet)
	}
	if c.AgentDownAfter <= 0 {
		bad("LIFELINE_AGENT_DOWN_AFTER", "%s must be positive", c.AgentDownAfter)
	}
	if c.SMSPerMinute < 1 {
		bad("LIFELINE_SMS_PER_MINUTE", "%d must be at least 1", c.SMSPerMinute)
	}
	if c.FailedLoginEach <= 0 {
		bad("LIFELINE_FAILED_LOGIN_EVERY", "%s must be positive", c.FailedLoginEach)
	}
	if u, err := url.Parse(c.TwilioURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		bad("LIFELINE_TWILIO_URL", "%q is not an http(s) URL", c.TwilioURL)
	}
	if c.SMS() {
		var missing []string
		for name, v := range map[string]string{"TWILIO_ACCOUNT_SID": c.TwilioSID, "TWILIO_AUTH_TOKEN": c.TwilioToken, "LIFELINE_SMS_FROM": c.SMSFrom, "LIFELINE_SMS_TO": c.SMSTo} {
			if v == "" {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			errs = append(errs, fmt.Errorf("SMS alerts are half configured: %v not set (set all of TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, LIFELINE_SMS_FROM, LIFELINE_SMS_TO, or none)", missing))
		}
		if c.SMSFrom != "" {
			if _, err := alert.SplitNumbers(c.SMSFrom); err != nil {
				bad("LIFELINE_SMS_FROM", "%v", err)
			}
		}
		if c.SMSTo != "" {
			to, err := alert.SplitNumbers(c.SMSTo)
			if err != nil {
				bad("LIFELINE_SMS_TO", "%v", err)
			}
			c.SMSToList = to
		}
	}
	if c.QuietFrom != "" {
		q, err := alert.ParseCIDRs(c.QuietFrom)
		if err != nil {
			bad("LIFELINE_QUIET_FROM", "%v", err)
		}
		c.QuietCIDRs = q
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}
