// Package config is lifeline-agent's configuration: environment variables
// with the LIFELINE_ prefix, decoded by shared/envconf and checked by
// Validate before anything starts.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/agent/outage"
	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/logging"
)

// Config is the agent's tunnel configuration. The zero value is not valid:
// read it with Load.
type Config struct {
	Bastion         string        `envconfig:"BASTION" desc:"required: bastion host:port, or a comma-separated list (one tunnel to each, at once)"`
	Key             string        `envconfig:"KEY" default:"/var/lib/lifeline/agent_ed25519_key" desc:"the agent's private key, created (ed25519, mode 0600) if missing"`
	KnownHosts      string        `envconfig:"KNOWN_HOSTS" default:"/etc/lifeline/known_hosts" desc:"known_hosts file pinning the bastions' host keys"`
	TrustNewBastion bool          `envconfig:"TRUST_NEW_BASTION" default:"false" desc:"record the key of a bastion not in LIFELINE_KNOWN_HOSTS instead of refusing it (trust on first use)"`
	Forwards        string        `envconfig:"FORWARDS" default:"pi:22=127.0.0.1:22" desc:"comma-separated NAME:PORT=HOST:PORT: register NAME:PORT on the bastion, dial HOST:PORT for each connection"`
	Interface       string        `envconfig:"INTERFACE" desc:"bind the tunnel's socket to this network interface (the backup uplink); empty: any"`
	DeadAfter       time.Duration `envconfig:"DEAD_AFTER" default:"15s" desc:"a link silent this long is declared dead and redialled (TCP keepalive probes when idle, a bound on unacknowledged data, and on keepalive replies)"`
	Keepalive       time.Duration `envconfig:"KEEPALIVE" default:"5m" desc:"interval of SSH keepalive requests, which check that the bastion itself answers and measure the round trip (TCP keepalives find a dead link within LIFELINE_DEAD_AFTER)"`
	BackoffMax      time.Duration `envconfig:"BACKOFF_MAX" default:"30s" desc:"longest wait between reconnection attempts (jittered exponential backoff)"`
	User            string        `envconfig:"USER" default:"lifeline-agent" desc:"SSH user name sent to the bastion (lifeline's bastion ignores it; a stock sshd needs a real user)"`
	LogLevel        string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	MaxChannels     int           `envconfig:"MAX_CHANNELS" default:"8" desc:"forwarded connections served at once per bastion; each may buffer up to 2 MiB when its target or operator stalls, so 8 keeps the agent under 32 MB"`
	UpgradeQuiet    time.Duration `envconfig:"UPGRADE_QUIET" default:"1m" desc:"once a package upgrade replaced the agent's binary, restart into it when no operator connection has been open through the agent for this long (systemctl restart lifeline-agent restarts at once)"`
	UpgradePoll     time.Duration `envconfig:"UPGRADE_POLL" default:"30s" desc:"how often the agent looks whether its binary was replaced"`
	MainGateway     string        `envconfig:"MAIN_GATEWAY" desc:"the main router's IPv4 address on the site LAN: setting it turns on the watch of the site's main internet (reported down and back through the tunnel); netsetup routes the targets via it; empty: no watch"`
	MainTargets     string        `envconfig:"MAIN_TARGETS" default:"dns://1.0.0.1,dns://149.112.112.112,tcp://1.0.0.1:443" desc:"main internet watch: comma-separated dns://IP[:port] and tcp://IP:port (IPv4 literals), probed in order until one answers; each gets a host route via LIFELINE_MAIN_GATEWAY, so do not use one as the Pi's DNS resolver"`
	MainEvery       time.Duration `envconfig:"MAIN_EVERY" default:"30s" desc:"main internet watch: time between probe rounds"`
	MainDownAfter   time.Duration `envconfig:"MAIN_DOWN_AFTER" default:"5m" desc:"main internet watch: how long every round must fail before the main link is reported down (back after 2 good rounds)"`
	// Outage is outage mode (LIFELINE_OUTAGE_*): start the stopped AWS
	// jump host when the main link is down and no bastion answers. Its
	// Interface is LIFELINE_INTERFACE, copied by Validate. It needs the
	// main internet watch (LIFELINE_MAIN_GATEWAY).
	Outage

	// Bastions and ForwardList are Bastion and Forwards parsed, filled by
	// Validate (nil while either is invalid).
	Bastions    []string          `ignored:"true"`
	ForwardList []forward.Forward `ignored:"true"`
	// Main is the main-link watch, filled by Validate when
	// LIFELINE_MAIN_GATEWAY is set and every LIFELINE_MAIN_* is valid;
	// nil: no watch.
	Main *MainWatch `ignored:"true"`
}

// Outage is outage mode's configuration, embedded in Config so that its
// variables keep their LIFELINE_OUTAGE_ names.
type Outage = outage.Config

// Load reads the agent's configuration from the environment once, applies
// the defaults and validates it (Validate), so that every value, the
// bastion list and the forwards included, is typed and checked.
func Load() (*Config, error) {
	var c Config
	if err := envconf.Process(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate reports every problem at once, each naming its variable, and
// fills Bastions, ForwardList, Main and Outage.Interface.
func (c *Config) Validate() error {
	var errs []error
	var err error
	if c.Bastions, err = ParseBastions(c.Bastion); err != nil {
		errs = append(errs, fmt.Errorf("LIFELINE_BASTION=%q: %w", c.Bastion, err))
	}
	errs = append(errs, c.validateKeyAndForwards()...)
	if c.KnownHosts == "" {
		errs = append(errs, errors.New("LIFELINE_KNOWN_HOSTS is empty: give the known_hosts file that pins the bastion's key"))
	}
	if err := CheckInterface(c.Interface); err != nil {
		errs = append(errs, err)
	}
	if c.Keepalive < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("LIFELINE_KEEPALIVE=%s: must be at least 100ms", c.Keepalive))
	}
	if c.DeadAfter < 100*time.Millisecond || c.DeadAfter > time.Hour {
		errs = append(errs, fmt.Errorf("LIFELINE_DEAD_AFTER=%s: must be from 100ms to 1h (detection takes whole seconds below 5s)", c.DeadAfter))
	}
	if c.MaxChannels < 1 || c.MaxChannels > 1024 {
		errs = append(errs, fmt.Errorf("LIFELINE_MAX_CHANNELS=%d: must be from 1 to 1024", c.MaxChannels))
	}
	if c.UpgradeQuiet < time.Second || c.UpgradeQuiet > 24*time.Hour {
		errs = append(errs, fmt.Errorf("LIFELINE_UPGRADE_QUIET=%s: must be from 1s to 24h", c.UpgradeQuiet))
	}
	if c.UpgradePoll < 100*time.Millisecond || c.UpgradePoll > time.Hour {
		errs = append(errs, fmt.Errorf("LIFELINE_UPGRADE_POLL=%s: must be from 100ms to 1h", c.UpgradePoll))
	}
	if c.BackoffMax < time.Second {
		errs = append(errs, fmt.Errorf("LIFELINE_BACKOFF_MAX=%s: must be at least 1s", c.BackoffMax))
	}
	if c.User == "" || strings.ContainsAny(c.User, " \t\n@:") {
		errs = append(errs, fmt.Errorf("LIFELINE_USER=%q: must be a non-empty user name without spaces, '@' or ':'", c.User))
	}
	if _, err := logging.New(nil, c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateMain()...)
	errs = append(errs, c.validateOutage()...)
	return errors.Join(errs...)
}

// validateOutage checks the LIFELINE_OUTAGE_* variables (their messages
// never hold the secret) and that the main internet watch, which alone
// says when the main link is down, is on.
func (c *Config) validateOutage() []error {
	c.Outage.Interface = c.Interface
	var errs []error
	if err := c.Outage.Validate(); err != nil {
		errs = append(errs, err)
	}
	o := c.Outage
	set := o.Enabled() || o.Region != "" || o.AccessKeyID != "" || o.SecretAccessKey != "" || o.SessionToken != "" || o.Endpoint != "" ||
		(o.DailyCalls != 0 && o.DailyCalls != outage.DefaultDailyCalls)
	if set && c.MainGateway == "" {
		errs = append(errs, errors.New("LIFELINE_OUTAGE_ variables are set but LIFELINE_MAIN_GATEWAY is not: outage mode starts the jump host only when the main internet watch says the main link is down; set LIFELINE_MAIN_GATEWAY to the main router's LAN address, or remove the LIFELINE_OUTAGE_ variables"))
	}
	return errs
}

func (c *Config) validateKeyAndForwards() []error {
	var errs []error
	if c.Key == "" {
		errs = append(errs, errors.New("LIFELINE_KEY is empty: give the path of the agent's private key"))
	}
	var err error
	if c.ForwardList, err = forward.Parse(c.Forwards); err != nil {
		errs = append(errs, fmt.Errorf("LIFELINE_FORWARDS=%q: %w", c.Forwards, err))
	}
	return errs
}

// Pubkey is what `lifeline-agent pair` (and pubkey) needs: the key and the
// forwards it may register. The bastion address is not needed (the line is
// pasted on the bastion before the agent ever connects): Bastion and
// KnownHosts only make pair's next steps concrete, and are not validated.
type Pubkey struct {
	Key        string `envconfig:"KEY" default:"/var/lib/lifeline/agent_ed25519_key"`
	Forwards   string `envconfig:"FORWARDS" default:"pi:22=127.0.0.1:22"`
	Bastion    string `envconfig:"BASTION"`
	KnownHosts string `envconfig:"KNOWN_HOSTS" default:"/etc/lifeline/known_hosts"`
}

// Validate reports every problem at once, each naming its variable.
func (p *Pubkey) Validate() error {
	c := Config{Key: p.Key, Forwards: p.Forwards}
	return errors.Join(c.validateKeyAndForwards()...)
}
