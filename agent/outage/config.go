package outage

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Config is outage mode's part of the agent configuration. It is meant to
// be embedded anonymously in the agent's Config, so its variables keep
// their LIFELINE_ names. Outage mode is off while InstanceID is empty
// (Enabled); when it is on, Region and the key are required. Zero
// durations and counts take the defaults (the Default… constants), so a
// Config built by hand needs only the five strings.
//
// The secret access key is a credential: it travels only on the jump
// start program's stdin, never in an argument or an environment variable
// of the program, and LogValue redacts it.
type Config struct {
	Region          string `envconfig:"OUTAGE_REGION" desc:"AWS region of the jump host's EC2 instance (e.g. eu-west-1); required with LIFELINE_OUTAGE_INSTANCE"`
	InstanceID      string `envconfig:"OUTAGE_INSTANCE" desc:"EC2 instance id of the jump host (i-…) that the agent starts when the main link is down and no bastion answers; empty: outage mode off"`
	AccessKeyID     string `envconfig:"OUTAGE_ACCESS_KEY_ID" desc:"AWS access key id (AKIA… or ASIA…) of a user allowed ec2:StartInstances on that instance only"`
	SecretAccessKey string `envconfig:"OUTAGE_SECRET_ACCESS_KEY" desc:"its secret access key; keep it in an env file only root can read"`
	SessionToken    string `envconfig:"OUTAGE_SESSION_TOKEN" desc:"session token, for temporary (ASIA…) keys only"`
	Endpoint        string `envconfig:"OUTAGE_ENDPOINT" desc:"EC2 API endpoint URL instead of the region's (tests; https, or http to a loopback address)"`
	DailyCalls      int    `envconfig:"OUTAGE_DAILY_CALLS" default:"24" desc:"most start calls per UTC day, 1 to 1000"`

	// Interface binds the program's sockets, like the tunnel's
	// (LIFELINE_INTERFACE): the agent copies it there. Empty: any.
	Interface string `ignored:"true" json:"-"`
	// NoBastionFor is how long no bastion must have been connected, with
	// the main link down, before the first start call: the tunnel may
	// just be reconnecting. 0: DefaultNoBastionFor.
	NoBastionFor time.Duration `ignored:"true" json:"-"`
	// ReadyWithin is how long a started jump host gets to be connected
	// before the agent calls again. 0: DefaultReadyWithin.
	ReadyWithin time.Duration `ignored:"true" json:"-"`
	// RetryMin and RetryMax bound the backoff between calls that failed
	// with Retry (doubling, jittered). 0: the defaults.
	RetryMin, RetryMax time.Duration `ignored:"true" json:"-"`
	// CallTimeout bounds one call of the program. 0: DefaultCallTimeout.
	CallTimeout time.Duration `ignored:"true" json:"-"`
}

// Defaults of Config.
const (
	DefaultDailyCalls   = 24
	DefaultNoBastionFor = time.Minute
	DefaultReadyWithin  = 5 * time.Minute
	DefaultRetryMin     = time.Minute
	DefaultRetryMax     = 30 * time.Minute
	DefaultCallTimeout  = 45 * time.Second
	maxDailyCalls       = 1000
)

var (
	instanceRE  = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)
	regionRE    = regexp.MustCompile(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[1-9][0-9]?$`)
	accessKeyRE = regexp.MustCompile(`^(AKIA|ASIA)[A-Z0-9]{16}$`)
	secretRE    = regexp.MustCompile(`^[A-Za-z0-9/+]{40}$`)
)

// Enabled reports whether outage mode is configured: an instance to start.
func (c Config) Enabled() bool { return c.InstanceID != "" }

// withDefaults is c with every zero duration and count defaulted.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.DailyCalls == 0 {
		c.DailyCalls = DefaultDailyCalls
	}
	def(&c.NoBastionFor, DefaultNoBastionFor)
	def(&c.ReadyWithin, DefaultReadyWithin)
	def(&c.RetryMin, DefaultRetryMin)
	def(&c.RetryMax, DefaultRetryMax)
	def(&c.CallTimeout, DefaultCallTimeout)
	return c
}

// Validate checks c and returns every problem at once, each naming its
// variable; no message contains the secret. A disabled Config (no
// instance) is valid unless other outage variables are set, which is a
// mistake worth saying.
func (c Config) Validate() error {
	if !c.Enabled() {
		if c.Region != "" || c.AccessKeyID != "" || c.SecretAccessKey != "" || c.Endpoint != "" {
			return errors.New("LIFELINE_OUTAGE_INSTANCE is empty but other LIFELINE_OUTAGE_ variables are set: give the jump host's instance id, or unset them (outage mode off)")
		}
		return nil
	}
	c = c.withDefaults()
	errs := validateTarget(c.Region, c.InstanceID, c.AccessKeyID, c.SecretAccessKey, c.SessionToken, c.Endpoint, envNames)
	if c.DailyCalls < 1 || c.DailyCalls > maxDailyCalls {
		errs = append(errs, fmt.Errorf("LIFELINE_OUTAGE_DAILY_CALLS=%d: must be from 1 to %d", c.DailyCalls, maxDailyCalls))
	}
	if c.NoBastionFor < 0 || c.ReadyWithin < 0 || c.CallTimeout < 0 || c.RetryMin < 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("outage timings: no-bastion grace %s, ready within %s, call timeout %s, retry %s to %s: none may be negative, and the retry maximum not below its minimum",
			c.NoBastionFor, c.ReadyWithin, c.CallTimeout, c.RetryMin, c.RetryMax))
	}
	return errors.Join(errs...)
}

// LogValue is c without its secret and session token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("region", c.Region), slog.String("instance", c.InstanceID),
		slog.String("access_key_id", c.AccessKeyID), slog.String("secret_access_key", redacted(c.SecretAccessKey)),
		slog.String("endpoint", c.Endpoint), slog.Int("daily_calls", c.DailyCalls))
}

// request is the program request for action with c's target.
func (c Config) request(action string, timeout time.Duration) Request {
	return Request{V: ProgramProtocol, Action: action, Region: c.Region, InstanceID: c.InstanceID,
		AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
		Endpoint: c.Endpoint, Interface: c.Interface, Timeout: Duration(timeout)}
}

func redacted(s string) string {
	if s == "" {
		return ""
	}
	return "(redacted)"
}

// fieldNames names the fields in validation errors: the agent's variables,
// or the request's JSON fields.
type fieldNames struct{ region, instance, keyID, secret, token, endpoint string }

var (
	envNames = fieldNames{"LIFELINE_OUTAGE_REGION", "LIFELINE_OUTAGE_INSTANCE", "LIFELINE_OUTAGE_ACCESS_KEY_ID",
		"LIFELINE_OUTAGE_SECRET_ACCESS_KEY", "LIFELINE_OUTAGE_SESSION_TOKEN", "LIFELINE_OUTAGE_ENDPOINT"}
	jsonNames = fieldNames{"region", "instance_id", "access_key_id", "secret_access_key", "session_token", "endpoint"}
)

// validateTarget checks what a call needs. Secrets are described, never
// quoted.
func validateTarget(region, instance, keyID, secret, token, endpoint string, n fieldNames) []error {
	var errs []error
	switch {
	case region == "":
		errs = append(errs, fmt.Errorf("%s is empty: give the jump host's AWS region (e.g. eu-west-1)", n.region))
	case !regionRE.MatchString(region):
		errs = append(errs, fmt.Errorf("%s=%q: not an AWS region (like eu-west-1 or us-gov-west-1)", n.region, region))
	}
	if !instanceRE.MatchString(instance) {
		errs = append(errs, fmt.Errorf("%s=%q: not an EC2 instance id (i- and 8 or 17 lowercase hex digits)", n.instance, instance))
	}
	switch {
	case keyID == "":
		errs = append(errs, fmt.Errorf("%s is empty: give the access key id of the user allowed to start the jump host", n.keyID))
	case !accessKeyRE.MatchString(keyID):
		errs = append(errs, fmt.Errorf("%s=%q: not an AWS access key id (AKIA or ASIA and 16 capital letters or digits)", n.keyID, keyID))
	case strings.HasPrefix(keyID, "ASIA") && token == "":
		errs = append(errs, fmt.Errorf("%s is a temporary key (ASIA…): it needs %s", n.keyID, n.token))
	case strings.HasPrefix(keyID, "AKIA") && token != "":
		errs = append(errs, fmt.Errorf("%s is a long-term key (AKIA…): %s must be empty", n.keyID, n.token))
	}
	switch {
	case secret == "":
		errs = append(errs, fmt.Errorf("%s is empty: give the key's secret", n.secret))
	case !secretRE.MatchString(secret):
		errs = append(errs, fmt.Errorf("%s (%d characters): not an AWS secret access key (40 letters, digits, '/' or '+'; check for quotes or spaces)", n.secret, len(secret)))
	}
	if endpoint != "" {
		if err := checkEndpoint(endpoint); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", n.endpoint, endpoint, err))
		}
	}
	return errs
}

// checkEndpoint accepts an https URL, or an http one to a loopback
// address (a test's fake), with no path, query or user.
func checkEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must be scheme://host[:port] alone")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
		return errors.New("http only to a loopback address (a test's fake); use https")
	}
	return errors.New("scheme must be https")
}
