package config

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/mainwatch"
	"github.com/lifeline-dev/lifeline/shared/envconf"
)

func valid() Config {
	return Config{
		Bastion: "bastion.example:22", Key: "/k", KnownHosts: "/kh", Forwards: "pi:22=127.0.0.1:22",
		Keepalive: 5 * time.Minute, DeadAfter: 15 * time.Second, BackoffMax: 30 * time.Second, User: "lifeline-agent", LogLevel: "info", MaxChannels: 8,
		UpgradeQuiet: time.Minute, UpgradePoll: 30 * time.Second,
		MainTargets: mainwatch.DefaultTargets, MainEvery: 30 * time.Second, MainDownAfter: 5 * time.Minute,
	}
}

// outageOn is a valid outage mode (AWS's documentation's example key).
func outageOn() Outage {
	return Outage{Region: "eu-west-1", InstanceID: "i-0123456789abcdef0", AccessKeyID: "AKIAIOSFODNN7EXAMPLE",
		SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", DailyCalls: 24}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // each must appear in the error; none = valid
	}{
		{name: "valid", change: func(*Config) {}},
		{name: "two bastions", change: func(c *Config) { c.Bastion = "a:22, b:2222" }},
		{name: "interface", change: func(c *Config) { c.Interface = "wwan0" }},
		{name: "no bastion", change: func(c *Config) { c.Bastion = "" }, want: []string{"LIFELINE_BASTION", "required"}},
		{name: "bastion without port", change: func(c *Config) { c.Bastion = "bastion" }, want: []string{"LIFELINE_BASTION", "host:port"}},
		{name: "bastion port zero", change: func(c *Config) { c.Bastion = "b:0" }, want: []string{"LIFELINE_BASTION"}},
		{name: "bastion twice", change: func(c *Config) { c.Bastion = "b:22,b:22" }, want: []string{"listed twice"}},
		{name: "bad forward", change: func(c *Config) { c.Forwards = "pi:22" }, want: []string{"LIFELINE_FORWARDS", "NAME:PORT=HOST:PORT"}},
		{name: "no key", change: func(c *Config) { c.Key = "" }, want: []string{"LIFELINE_KEY"}},
		{name: "no known hosts", change: func(c *Config) { c.KnownHosts = "" }, want: []string{"LIFELINE_KNOWN_HOSTS"}},
		{name: "bad interface", change: func(c *Config) { c.Interface = "eth0/1" }, want: []string{"LIFELINE_INTERFACE"}},
		{name: "keepalive zero", change: func(c *Config) { c.Keepalive = 0 }, want: []string{"LIFELINE_KEEPALIVE="}},
		{name: "dead after zero", change: func(c *Config) { c.DeadAfter = 0 }, want: []string{"LIFELINE_DEAD_AFTER"}},
		{name: "dead after a day", change: func(c *Config) { c.DeadAfter = 24 * time.Hour }, want: []string{"LIFELINE_DEAD_AFTER", "1h"}},
		{name: "backoff tiny", change: func(c *Config) { c.BackoffMax = time.Millisecond }, want: []string{"LIFELINE_BACKOFF_MAX"}},
		{name: "user with space", change: func(c *Config) { c.User = "a b" }, want: []string{"LIFELINE_USER"}},
		{name: "log level", change: func(c *Config) { c.LogLevel = "loud" }, want: []string{"LIFELINE_LOG_LEVEL"}},
		{name: "no channels", change: func(c *Config) { c.MaxChannels = 0 }, want: []string{"LIFELINE_MAX_CHANNELS"}},
		{name: "upgrade quiet zero", change: func(c *Config) { c.UpgradeQuiet = 0 }, want: []string{"LIFELINE_UPGRADE_QUIET=0s", "from 1s to 24h"}},
		{name: "upgrade quiet a week", change: func(c *Config) { c.UpgradeQuiet = 7 * 24 * time.Hour }, want: []string{"LIFELINE_UPGRADE_QUIET"}},
		{name: "upgrade poll tiny", change: func(c *Config) { c.UpgradePoll = time.Millisecond }, want: []string{"LIFELINE_UPGRADE_POLL=1ms", "from 100ms to 1h"}},
		{name: "main watch", change: func(c *Config) { c.MainGateway = "192.168.1.1" }},
		{name: "main watch, own targets", change: func(c *Config) {
			c.MainGateway, c.MainTargets, c.MainEvery, c.MainDownAfter = "192.168.1.1", "tcp://192.0.2.80:443", time.Minute, 10*time.Minute
		}},
		{name: "main gateway not an address", change: func(c *Config) { c.MainGateway = "router.lan" },
			want: []string{"LIFELINE_MAIN_GATEWAY=\"router.lan\"", "not an IP address", "main router's address on the site LAN"}},
		{name: "main gateway IPv6", change: func(c *Config) { c.MainGateway = "fe80::1" }, want: []string{"LIFELINE_MAIN_GATEWAY", "IPv4"}},
		{name: "main gateway loopback", change: func(c *Config) { c.MainGateway = "127.0.0.1" }, want: []string{"LIFELINE_MAIN_GATEWAY", "unicast"}},
		{name: "main target a name", change: func(c *Config) { c.MainGateway, c.MainTargets = "192.168.1.1", "dns://one.one.one.one" },
			want: []string{"LIFELINE_MAIN_TARGETS", "host name"}},
		{name: "main target IPv6", change: func(c *Config) { c.MainGateway, c.MainTargets = "192.168.1.1", "dns://2606:4700::1111" },
			want: []string{"LIFELINE_MAIN_TARGETS", "IPv6", "IPv4 targets"}},
		{name: "main target the gateway", change: func(c *Config) { c.MainGateway, c.MainTargets = "192.168.1.1", "dns://192.168.1.1" },
			want: []string{"LIFELINE_MAIN_TARGETS", "LIFELINE_MAIN_GATEWAY itself"}},
		{name: "main target a bastion", change: func(c *Config) {
			c.Bastion, c.MainGateway, c.MainTargets = "a.example:22, 203.0.113.10:2222", "192.168.1.1", "dns://1.0.0.1, tcp://203.0.113.10:443"
		}, want: []string{"LIFELINE_MAIN_TARGETS", "203.0.113.10 is the bastion", "backup link"}},
		{name: "main every too short", change: func(c *Config) { c.MainGateway, c.MainEvery = "192.168.1.1", time.Millisecond },
			want: []string{"LIFELINE_MAIN_EVERY=1ms", "from 1s to 1h"}},
		{name: "main down after below every", change: func(c *Config) { c.MainGateway, c.MainDownAfter = "192.168.1.1", 10*time.Second },
			want: []string{"LIFELINE_MAIN_DOWN_AFTER=10s", "LIFELINE_MAIN_EVERY"}},
		{name: "main targets without gateway", change: func(c *Config) { c.MainTargets = "dns://9.9.9.9" },
			want: []string{"LIFELINE_MAIN_TARGETS is set but LIFELINE_MAIN_GATEWAY is not", "set LIFELINE_MAIN_GATEWAY", "remove LIFELINE_MAIN_TARGETS"}},
		{name: "main timing without gateway", change: func(c *Config) { c.MainEvery, c.MainDownAfter = time.Minute, 10*time.Minute },
			want: []string{"LIFELINE_MAIN_EVERY is set but", "LIFELINE_MAIN_DOWN_AFTER is set but"}},
		{name: "outage mode", change: func(c *Config) { c.MainGateway = "192.168.1.1"; c.Outage = outageOn() }},
		{name: "outage mode, temporary key", change: func(c *Config) {
			c.MainGateway, c.Outage = "192.168.1.1", outageOn()
			c.Outage.AccessKeyID, c.Outage.SessionToken = "ASIAIOSFODNN7EXAMPLE", "token"
		}},
		{name: "outage mode without the main watch", change: func(c *Config) { c.Outage = outageOn() },
			want: []string{"LIFELINE_OUTAGE_ variables are set but LIFELINE_MAIN_GATEWAY is not", "set LIFELINE_MAIN_GATEWAY"}},
		{name: "outage variables without instance or gateway", change: func(c *Config) { c.Outage.Region = "eu-west-1" },
			want: []string{"LIFELINE_OUTAGE_INSTANCE is empty", "LIFELINE_MAIN_GATEWAY is not"}},
		{name: "outage daily calls without gateway", change: func(c *Config) { c.Outage.DailyCalls = 5 },
			want: []string{"LIFELINE_MAIN_GATEWAY is not"}},
		{name: "outage mode, every problem", change: func(c *Config) {
			c.MainGateway, c.Outage = "192.168.1.1", outageOn()
			c.Outage.Region, c.Outage.InstanceID, c.Outage.AccessKeyID = "Europe", "i-123", "key"
			c.Outage.SecretAccessKey, c.Outage.DailyCalls, c.Outage.Endpoint = "not-a-secret with spaces", 5000, "http://ec2.example.com"
		}, want: []string{"LIFELINE_OUTAGE_REGION=\"Europe\"", "LIFELINE_OUTAGE_INSTANCE=\"i-123\"", "LIFELINE_OUTAGE_ACCESS_KEY_ID=\"key\"",
			"LIFELINE_OUTAGE_SECRET_ACCESS_KEY (24 characters)", "LIFELINE_OUTAGE_DAILY_CALLS=5000", "LIFELINE_OUTAGE_ENDPOINT"}},
		{name: "all at once", change: func(c *Config) { c.Bastion, c.DeadAfter, c.User = "", -1, "" },
			want: []string{"LIFELINE_BASTION", "LIFELINE_DEAD_AFTER", "LIFELINE_USER"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.change(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted a bad config")
			}
			if sec := c.Outage.SecretAccessKey; sec != "" && strings.Contains(err.Error(), sec) {
				t.Errorf("error %q holds the secret", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestFromEnvironment uses t.Setenv and therefore does not run in parallel.
func TestFromEnvironment(t *testing.T) {
	t.Setenv("LIFELINE_BASTION", "a.example:22,b.example:2222")
	t.Setenv("LIFELINE_FORWARDS", "pi:22=127.0.0.1:22,nuc:3389=192.168.1.100:3389")
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Bastions; !slices.Equal(got, []string{"a.example:22", "b.example:2222"}) {
		t.Errorf("Bastions = %v", got)
	}
	if got := c.ForwardList; len(got) != 2 || got[1].Name != "nuc" {
		t.Errorf("ForwardList = %v", got)
	}
	if c.Keepalive != 5*time.Minute || c.DeadAfter != 15*time.Second || c.BackoffMax != 30*time.Second ||
		c.Key != "/var/lib/lifeline/agent_ed25519_key" || c.KnownHosts != "/etc/lifeline/known_hosts" || c.User != "lifeline-agent" || c.TrustNewBastion {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c.UpgradeQuiet != time.Minute || c.UpgradePoll != 30*time.Second {
		t.Errorf("upgrade defaults not applied: quiet %s, poll %s", c.UpgradeQuiet, c.UpgradePoll)
	}
	// The main-link watch is off by default, its defaults mainwatch's.
	if c.Main != nil || c.MainTargets != mainwatch.DefaultTargets || c.MainEvery != mainwatch.DefaultEvery || c.MainDownAfter != mainwatch.DefaultDownAfter {
		t.Errorf("main watch defaults: %+v, targets %q, every %s, down after %s", c.Main, c.MainTargets, c.MainEvery, c.MainDownAfter)
	}
	t.Setenv("LIFELINE_MAIN_GATEWAY", "192.168.1.1")
	if c, err = Load(); err != nil {
		t.Fatal(err)
	}
	if c.Main == nil || c.Main.Gateway.String() != "192.168.1.1" || len(c.Main.Targets) != 3 || c.Main.Targets[2].String() != "tcp://1.0.0.1:443" ||
		c.Main.Every != 30*time.Second || c.Main.DownAfter != 5*time.Minute {
		t.Errorf("main watch: %+v", c.Main)
	}

	// Outage mode: off by default; its variables keep their names; the
	// interface is the tunnel's.
	if c.Outage.Enabled() || c.Outage.DailyCalls != 24 {
		t.Errorf("outage defaults: %+v", c.Outage.LogValue())
	}
	t.Setenv("LIFELINE_INTERFACE", "wwan0")
	t.Setenv("LIFELINE_OUTAGE_INSTANCE", "i-0123456789abcdef0")
	t.Setenv("LIFELINE_OUTAGE_REGION", "eu-west-1")
	t.Setenv("LIFELINE_OUTAGE_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
	t.Setenv("LIFELINE_OUTAGE_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	t.Setenv("LIFELINE_OUTAGE_DAILY_CALLS", "3")
	if c, err = Load(); err != nil {
		t.Fatal(err)
	}
	if o := c.Outage; !o.Enabled() || o.Region != "eu-west-1" || o.DailyCalls != 3 || o.Interface != "wwan0" || o.SecretAccessKey == "" {
		t.Errorf("outage mode: %v, interface %q", o.LogValue(), o.Interface)
	}
	t.Setenv("LIFELINE_OUTAGE_SECRET_ACCESS_KEY", "short secret")
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), "LIFELINE_OUTAGE_SECRET_ACCESS_KEY") || strings.Contains(err.Error(), "short secret") {
		t.Errorf("bad secret: error %v", err)
	}
	t.Setenv("LIFELINE_OUTAGE_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")

	t.Setenv("LIFELINE_KEEPALIVE", "five seconds")
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), "LIFELINE_KEEPALIVE") {
		t.Errorf("bad duration: error %v does not name LIFELINE_KEEPALIVE", err)
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := envconf.Usage(&b, &Config{}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"LIFELINE_BASTION", "LIFELINE_KEY", "LIFELINE_KNOWN_HOSTS", "LIFELINE_TRUST_NEW_BASTION", "LIFELINE_FORWARDS",
		"LIFELINE_INTERFACE", "LIFELINE_KEEPALIVE", "LIFELINE_DEAD_AFTER", "LIFELINE_BACKOFF_MAX", "LIFELINE_USER", "LIFELINE_LOG_LEVEL", "LIFELINE_UPGRADE_QUIET", "LIFELINE_UPGRADE_POLL", "LIFELINE_MAIN_GATEWAY", "LIFELINE_MAIN_TARGETS", "LIFELINE_MAIN_EVERY", "LIFELINE_MAIN_DOWN_AFTER",
		"LIFELINE_OUTAGE_REGION", "LIFELINE_OUTAGE_INSTANCE", "LIFELINE_OUTAGE_ACCESS_KEY_ID", "LIFELINE_OUTAGE_SECRET_ACCESS_KEY", "LIFELINE_OUTAGE_SESSION_TOKEN",
		"LIFELINE_OUTAGE_ENDPOINT", "LIFELINE_OUTAGE_DAILY_CALLS", mainwatch.DefaultTargets, "15s", "pi:22=127.0.0.1:22"} {
		if !strings.Contains(b.String(), v) {
			t.Errorf("usage lacks %s:\n%s", v, b.String())
		}
	}
}

func TestPubkeyNeedsNoBastion(t *testing.T) {
	t.Parallel()
	p := Pubkey{Key: "/k", Forwards: "pi:22=127.0.0.1:22"}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	p.Forwards = "junk"
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "LIFELINE_FORWARDS") {
		t.Fatalf("Validate = %v", err)
	}
}
