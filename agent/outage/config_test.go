package outage

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	secret := testConfig().SecretAccessKey
	cases := []struct {
		name   string
		change func(*Config)
		want   []string // "" : valid
	}{
		{name: "good", change: func(*Config) {}},
		{name: "17-digit and 8-digit ids", change: func(c *Config) { c.InstanceID = "i-0123abcd" }},
		{name: "off", change: func(c *Config) { *c = Config{} }},
		{name: "off but half set", change: func(c *Config) { c.InstanceID = "" }, want: []string{"LIFELINE_OUTAGE_INSTANCE is empty"}},
		{name: "bad instance", change: func(c *Config) { c.InstanceID = "i-0123456789ABCDEF0" }, want: []string{"LIFELINE_OUTAGE_INSTANCE", "hex"}},
		{name: "no region", change: func(c *Config) { c.Region = "" }, want: []string{"LIFELINE_OUTAGE_REGION is empty"}},
		{name: "bad region", change: func(c *Config) { c.Region = "eu-west" }, want: []string{"LIFELINE_OUTAGE_REGION", "not an AWS region"}},
		{name: "gov region", change: func(c *Config) { c.Region = "us-gov-west-1" }},
		{name: "bad key id", change: func(c *Config) { c.AccessKeyID = "AKID123" }, want: []string{"LIFELINE_OUTAGE_ACCESS_KEY_ID", "AKIA or ASIA"}},
		{name: "temporary key without token", change: func(c *Config) { c.AccessKeyID = "ASIAIOSFODNN7EXAMPLE" }, want: []string{"LIFELINE_OUTAGE_SESSION_TOKEN"}},
		{name: "quoted secret", change: func(c *Config) { c.SecretAccessKey = `"` + secret + `"` }, want: []string{"LIFELINE_OUTAGE_SECRET_ACCESS_KEY", "42 characters"}},
		{name: "http endpoint off loopback", change: func(c *Config) { c.Endpoint = "http://ec2.example" }, want: []string{"LIFELINE_OUTAGE_ENDPOINT", "loopback"}},
		{name: "test endpoint", change: func(c *Config) { c.Endpoint = "http://127.0.0.1:8080" }},
		{name: "endpoint with path", change: func(c *Config) { c.Endpoint = "https://ec2.example/x" }, want: []string{"LIFELINE_OUTAGE_ENDPOINT", "alone"}},
		{name: "daily calls", change: func(c *Config) { c.DailyCalls = -1 }, want: []string{"LIFELINE_OUTAGE_DAILY_CALLS=-1"}},
		{name: "retry bounds", change: func(c *Config) { c.RetryMin, c.RetryMax = time.Hour, time.Minute }, want: []string{"retry"}},
		{name: "all at once", change: func(c *Config) { c.Region, c.AccessKeyID, c.SecretAccessKey = "x", "y", "z" },
			want: []string{"LIFELINE_OUTAGE_REGION", "LIFELINE_OUTAGE_ACCESS_KEY_ID", "LIFELINE_OUTAGE_SECRET_ACCESS_KEY"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := testConfig()
			tc.change(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate passed, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error holds the secret: %v", err)
			}
		})
	}
}
