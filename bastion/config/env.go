// Package config is the bastion's configuration, read from the environment
// (prefix LIFELINE_, plus Twilio's own TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN).
// It is the only package that knows the variables' names: Load reads the
// environment once and returns typed, checked settings for the libraries.
package config

import (
	"time"

	"github.com/lifeline-dev/lifeline/shared/envconf"
)

// Env is the environment of lifeline-bastion as decoded, not yet checked.
// Field tags are the variable names and defaults that `lifeline-bastion
// --help` prints.
type Env struct {
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

	OutageIdle    string        `envconfig:"OUTAGE_IDLE" desc:"outage mode: power the jump host off (lifeline-poweroff.path) once no connected site reports its main internet down, no operator is connected and no hold is in force for this long, a duration of at least 5m (Terraform's outage_mode sets 30m); empty or 0 = off, the host runs for ever"`
	OutageMaxHold time.Duration `envconfig:"OUTAGE_MAX_HOLD" default:"24h" desc:"outage mode: the longest hold an operator may ask for (ssh bastion hold 2h keeps the host up 2h)"`

	TwilioEnv       `ignored:"true"` // read without prefix, see TwilioEnv
	TwilioURL       string           `envconfig:"TWILIO_URL" default:"https://api.twilio.com" desc:"base URL of the Twilio API (proxy or local test server)"`
	SMSFrom         string           `envconfig:"SMS_FROM" desc:"sending number, E.164 (+15551234567)"`
	SMSTo           string           `envconfig:"SMS_TO" desc:"comma-separated numbers to text, E.164"`
	QuietFrom       string           `envconfig:"QUIET_FROM" desc:"comma-separated CIDRs whose logins are audited but not texted"`
	AgentDownAfter  time.Duration    `envconfig:"AGENT_DOWN_AFTER" default:"5m" desc:"how long an agent may be gone before \"site down\" is texted"`
	SMSPerMinute    int              `envconfig:"SMS_PER_MINUTE" default:"6" desc:"most texts per minute; the rest are summarised"`
	FailedLoginMin  int              `envconfig:"FAILED_LOGIN_MIN" default:"10" desc:"failed logins in an interval below this are not texted"`
	FailedLoginEach time.Duration    `envconfig:"FAILED_LOGIN_EVERY" default:"15m" desc:"failed logins are summarised at most once per interval"`

	SMTPAddr      string        `envconfig:"SMTP_ADDR" desc:"e-mail alerts: SMTP submission server, host:port (smtp.example.com:587); e-mail needs it, LIFELINE_SMTP_FROM and LIFELINE_SMTP_TO"`
	SMTPUser      string        `envconfig:"SMTP_USER" desc:"SMTP AUTH user (PLAIN, or LOGIN); empty = no AUTH"`
	SMTPPassword  string        `envconfig:"SMTP_PASSWORD" desc:"SMTP AUTH password, with LIFELINE_SMTP_USER (keep it in the 0600 env file)"`
	SMTPFrom      string        `envconfig:"SMTP_FROM" desc:"sender address of the alert e-mails (lifeline <bastion@example.com>)"`
	SMTPTo        string        `envconfig:"SMTP_TO" desc:"comma-separated addresses to e-mail"`
	SMTPTLS       string        `envconfig:"SMTP_TLS" default:"starttls" desc:"starttls (required before AUTH and MAIL; port 587), tls (from the first byte; port 465) or none-on-loopback-only (a relay on 127.0.0.1 or ::1)"`
	SMTPCAFile    string        `envconfig:"SMTP_CA_FILE" desc:"PEM file of the roots the SMTP server's certificate must chain to; empty = the system's"`
	SMTPTimeout   time.Duration `envconfig:"SMTP_TIMEOUT" default:"30s" desc:"bound on one e-mail delivery, dial to QUIT"`
	SMTPHelo      string        `envconfig:"SMTP_HELO" default:"localhost" desc:"name given in EHLO"`
	SMTPPerMinute int           `envconfig:"SMTP_PER_MINUTE" default:"10" desc:"most e-mails per minute; the rest are summarised"`

	WebhookURL       string        `envconfig:"WEBHOOK_URL" desc:"webhook alerts: URL each alert is POSTed to (https, or http to a loopback IP); for ntfy the topic URL (https://ntfy.sh/TOPIC)"`
	WebhookFormat    string        `envconfig:"WEBHOOK_FORMAT" default:"json" desc:"json (a JSON document: id, kind, text, detail, created, site) or ntfy (an ntfy push notification)"`
	WebhookToken     string        `envconfig:"WEBHOOK_TOKEN" desc:"sent as Authorization: Bearer TOKEN (ntfy: an access token tk_...); empty = none (keep it in the 0600 env file)"`
	WebhookCAFile    string        `envconfig:"WEBHOOK_CA_FILE" desc:"PEM file of the roots the webhook's certificate must chain to; empty = the system's"`
	WebhookTimeout   time.Duration `envconfig:"WEBHOOK_TIMEOUT" default:"15s" desc:"bound on one webhook request, dial to response"`
	WebhookPerMinute int           `envconfig:"WEBHOOK_PER_MINUTE" default:"12" desc:"most webhook posts per minute (ntfy.sh allows about 12); the rest are summarised"`
}

// TwilioEnv holds Twilio's own variables, read without the LIFELINE_ prefix.
type TwilioEnv struct {
	TwilioSID   string `envconfig:"TWILIO_ACCOUNT_SID" desc:"Twilio account SID; texts need it, TWILIO_AUTH_TOKEN, LIFELINE_SMS_FROM and LIFELINE_SMS_TO"`
	TwilioToken string `envconfig:"TWILIO_AUTH_TOKEN" desc:"Twilio auth token (keep it in the 0600 env file)"`
}

// Specs lists the configuration structs for --help.
func Specs() []envconf.Spec {
	return []envconf.Spec{{Prefix: envconf.Prefix, Spec: &Env{}}, {Prefix: "", Spec: &TwilioEnv{}}}
}

// Decode reads the environment without checking it: a value that does
// not decode is an error naming the variable (the first one found). Load
// is Decode then Check; `lifeline-bastion doctor` calls them apart, to go
// on with its other checks whatever Check says.
func Decode() (Env, error) {
	var e Env
	if err := envconf.ProcessPrefix("", &e.TwilioEnv); err != nil {
		return Env{}, err
	}
	if err := envconf.Process(&e); err != nil {
		return Env{}, err
	}
	return e, nil
}
