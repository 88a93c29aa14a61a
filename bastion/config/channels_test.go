package config

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/lifeline-dev/lifeline/bastion/alert/email"
	"github.com/lifeline-dev/lifeline/bastion/alert/webhook"
	"github.com/lifeline-dev/lifeline/shared/envconf"
)

// setEnv sets vars ("" = unset) and decodes the environment.
func setEnv(t *testing.T, vars map[string]string) Env {
	t.Helper()
	for _, k := range append(append(SMSVars(), emailVars...), append(emailExtra, append(webhookVars, webhookExtra...)...)...) {
		t.Setenv(k, "")
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
	e, err := Decode()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var (
	smsSet   = map[string]string{"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "tok", "LIFELINE_SMS_FROM": "+15005550006", "LIFELINE_SMS_TO": "+15551230001"}
	emailSet = map[string]string{"LIFELINE_SMTP_ADDR": "smtp.example.com:587", "LIFELINE_SMTP_FROM": "lifeline <bastion@example.com>", "LIFELINE_SMTP_TO": "owner@example.com, night@example.com"}
	hookSet  = map[string]string{"LIFELINE_WEBHOOK_URL": "https://ntfy.example.com/site", "LIFELINE_WEBHOOK_FORMAT": "ntfy"}
)

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// Every configured channel is built, Twilio first, each with its own rate
// limit; a half-configured channel is an error naming what is missing.
func TestChannelsAllOrNone(t *testing.T) {
	tests := []struct {
		name     string
		vars     map[string]string
		channels []string
		perMin   []int
		wantErr  []string
		notInErr []string
		warn     string
	}{
		{name: "all three", vars: merge(smsSet, emailSet, hookSet, map[string]string{"LIFELINE_SMTP_PER_MINUTE": "20"}),
			channels: []string{"twilio", "email", "webhook"}, perMin: []int{6, 20, 12}},
		{name: "e-mail only", vars: emailSet, channels: []string{"email"}, perMin: []int{10}, warn: "nobody will be texted; alerts go by email only"},
		{name: "webhook only", vars: hookSet, channels: []string{"webhook"}, perMin: []int{12}},
		{name: "none", vars: nil, channels: []string{"log"}, perMin: []int{6}, warn: "NOBODY WILL BE TEXTED"},
		{name: "e-mail half", vars: merge(smsSet, map[string]string{"LIFELINE_SMTP_ADDR": "smtp.example.com:587"}),
			wantErr:  []string{"e-mail alerts are half configured: [LIFELINE_SMTP_FROM LIFELINE_SMTP_TO] not set"},
			notInErr: []string{"LIFELINE_SMTP_TO is empty"}},
		{name: "a password alone", vars: map[string]string{"LIFELINE_SMTP_PASSWORD": "pw"},
			wantErr: []string{"e-mail alerts are half configured: [LIFELINE_SMTP_ADDR LIFELINE_SMTP_FROM LIFELINE_SMTP_TO] not set", "LIFELINE_SMTP_USER and LIFELINE_SMTP_PASSWORD: set both"}},
		{name: "webhook token alone", vars: map[string]string{"LIFELINE_WEBHOOK_TOKEN": "tk_1"},
			wantErr: []string{"webhook alerts are half configured: [LIFELINE_WEBHOOK_URL] not set"}, notInErr: []string{"LIFELINE_WEBHOOK_URL is empty"}},
		{name: "bad values named", vars: merge(emailSet, hookSet, map[string]string{"LIFELINE_SMTP_TLS": "maybe", "LIFELINE_WEBHOOK_URL": "http://ntfy.example.com/x", "LIFELINE_WEBHOOK_PER_MINUTE": "0"}),
			wantErr: []string{`LIFELINE_SMTP_TLS "maybe"`, "LIFELINE_WEBHOOK_URL http://ntfy.example.com/x: use https", "LIFELINE_WEBHOOK_PER_MINUTE: 0 must be at least 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := setEnv(t, tt.vars).Check()
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("Check accepted it")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				for _, w := range tt.notInErr {
					if strings.Contains(err.Error(), w) {
						t.Errorf("error %q has %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			chans, err := c.Channels(slog.New(slog.NewTextHandler(&buf, nil)))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for i, ch := range chans {
				name := ch.Name
				if name == "" {
					name = ch.Sender.Name()
				}
				names = append(names, name)
				if i < len(tt.perMin) && ch.PerMinute != tt.perMin[i] {
					t.Errorf("channel %s: %d per minute, want %d", name, ch.PerMinute, tt.perMin[i])
				}
			}
			if strings.Join(names, ",") != strings.Join(tt.channels, ",") {
				t.Errorf("channels %v, want %v", names, tt.channels)
			}
			if tt.warn != "" && !strings.Contains(buf.String(), tt.warn) {
				t.Errorf("log %q lacks %q", buf.String(), tt.warn)
			}
		})
	}
}

// The typed settings carry the values, LIFELINE_NAME names the site, and
// --help shows every variable with defaults equal to the packages' own.
func TestChannelSettingsAndHelp(t *testing.T) {
	c, err := setEnv(t, merge(emailSet, hookSet, map[string]string{"LIFELINE_NAME": "bast1", "LIFELINE_WEBHOOK_TOKEN": "tk_1"})).Check()
	if err != nil {
		t.Fatal(err)
	}
	if e := c.Email; e == nil || len(e.To) != 2 || e.To[1] != "night@example.com" || e.TLS != email.StartTLS || e.Timeout != email.DefaultTimeout || e.HeloName != email.DefaultHeloName {
		t.Errorf("e-mail settings %+v", c.Email)
	}
	if w := c.Webhook; w == nil || w.Site != "bast1" || w.Format != webhook.Ntfy || w.Token != "tk_1" || w.Timeout != webhook.DefaultTimeout {
		t.Errorf("webhook settings %+v", c.Webhook)
	}
	var help bytes.Buffer
	if err := envconf.UsageSpecs(&help, Specs()...); err != nil {
		t.Fatal(err)
	}
	for _, w := range append(append(emailVars, emailExtra...), "LIFELINE_SMTP_TLS", "LIFELINE_SMTP_TIMEOUT", "LIFELINE_SMTP_HELO", "LIFELINE_SMTP_PER_MINUTE",
		"LIFELINE_WEBHOOK_URL", "LIFELINE_WEBHOOK_FORMAT", "LIFELINE_WEBHOOK_TOKEN", "LIFELINE_WEBHOOK_CA_FILE", "LIFELINE_WEBHOOK_TIMEOUT", "LIFELINE_WEBHOOK_PER_MINUTE") {
		if !strings.Contains(help.String(), w) {
			t.Errorf("--help lacks %q", w)
		}
	}
}
