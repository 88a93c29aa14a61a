package config

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/shared/envconf"
)

// env decodes the environment with the SMS variables set as given ("" =
// unset) and everything else at its default.
func env(t *testing.T, sid, token, from, to string) Env {
	t.Helper()
	for k, v := range map[string]string{"TWILIO_ACCOUNT_SID": sid, "TWILIO_AUTH_TOKEN": token, "LIFELINE_SMS_FROM": from, "LIFELINE_SMS_TO": to} {
		t.Setenv(k, v)
	}
	e, err := Decode()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestSMSAllOrNone(t *testing.T) {
	tests := []struct {
		name                 string
		sid, token, from, to string
		sender               string
		wantErr, notInErr    []string
	}{
		{"all set", "AC1", "tok", "+15005550006", "+15551230001", "twilio", nil, nil},
		{"none set", "", "", "", "", "log", nil, nil},
		{"token and to missing", "AC1", "", "+15005550006", "", "", []string{"half configured: [LIFELINE_SMS_TO TWILIO_AUTH_TOKEN] not set"}, nil},
		{"bad values named", "AC 1", "tok", "555", "+15551230001,+1", "", []string{`TWILIO_ACCOUNT_SID: must be set and hold only letters and digits`, `LIFELINE_SMS_FROM: "555"`, `LIFELINE_SMS_TO: "+1"`}, []string{"half configured"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := env(t, tt.sid, tt.token, tt.from, tt.to).Check()
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
						t.Errorf("error %q names %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			chans, err := c.Channels(slog.New(slog.NewTextHandler(&buf, nil)))
			if err != nil || len(chans) != 1 || chans[0].Sender.Name() != tt.sender {
				t.Fatalf("channels %v, %v; want %s", chans, err, tt.sender)
			}
			if tt.sender == "log" && !strings.Contains(buf.String(), "NOBODY WILL BE TEXTED") {
				t.Errorf("no warning logged: %q", buf.String())
			}
		})
	}
}

// The alerter's settings come from their variables; the Twilio defaults
// live once, in package alert, and --help shows the same URL.
func TestLoadTypesTheLibrariesSettings(t *testing.T) {
	t.Setenv("LIFELINE_QUIET_FROM", "10.0.0.0/8")
	t.Setenv("LIFELINE_NAME", "bast1")
	c, err := env(t, "AC1", "tok", "+15005550006", "+15551230001").Check()
	if err != nil {
		t.Fatal(err)
	}
	if c.Alerts.BastionName != "bast1" || len(c.Alerts.QuietFrom) != 1 || c.Alerts.Dir != c.StateDir || c.Alerts.DownAfter != c.AgentDownAfter {
		t.Errorf("alert settings %+v", c.Alerts)
	}
	if c.SMS == nil || c.SMS.BaseURL != alert.DefaultTwilioURL || c.SMS.Timeout != 0 || len(c.SMS.To) != 1 {
		t.Errorf("twilio settings %+v", c.SMS)
	}
	var help bytes.Buffer
	if err := envconf.UsageSpecs(&help, Specs()...); err != nil {
		t.Fatal(err)
	}
	for _, w := range append(SMSVars(), "LIFELINE_TWILIO_URL", alert.DefaultTwilioURL, "LIFELINE_QUIET_FROM", "LIFELINE_AGENT_QUIET") {
		if !strings.Contains(help.String(), w) {
			t.Errorf("--help lacks %q", w)
		}
	}
}

// Outage mode is off unless LIFELINE_OUTAGE_IDLE is set, then at least
// outage.MinIdle; the maximum hold defaults to 24h; both are in --help.
func TestOutageSettings(t *testing.T) {
	tests := []struct {
		name, idle, maxHold string
		wantIdle, wantHold  time.Duration
		wantErr             string
	}{
		{"unset: off", "", "", 0, 24 * time.Hour, ""},
		{"zero: off", "0", "", 0, 24 * time.Hour, ""},
		{"30m", "30m", "", 30 * time.Minute, 24 * time.Hour, ""},
		{"the minimum", "5m", "2h", 5 * time.Minute, 2 * time.Hour, ""},
		{"below the minimum", "4m59s", "", 0, 0, "LIFELINE_OUTAGE_IDLE: 4m59s is too short (at least 5m0s"},
		{"negative", "-1h", "", 0, 0, "LIFELINE_OUTAGE_IDLE: -1h0m0s must not be negative"},
		{"not a duration", "30 minutes", "", 0, 0, `LIFELINE_OUTAGE_IDLE: "30 minutes" is not a duration`},
		{"hold too short", "30m", "30s", 0, 0, "LIFELINE_OUTAGE_MAX_HOLD: 30s must be at least 1m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("LIFELINE_OUTAGE_IDLE", tt.idle) // empty: set and empty, as in an env file
			t.Setenv("LIFELINE_OUTAGE_MAX_HOLD", tt.maxHold)
			if tt.maxHold == "" {
				os.Unsetenv("LIFELINE_OUTAGE_MAX_HOLD") // t.Setenv restores it
			}
			c, err := env(t, "", "", "", "").Check()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Outage.Idle != tt.wantIdle || c.Outage.MaxHold != tt.wantHold || c.Outage.StateDir != c.StateDir {
				t.Errorf("outage settings %+v, want idle %s, max hold %s, state dir %s", c.Outage, tt.wantIdle, tt.wantHold, c.StateDir)
			}
		})
	}
	var help bytes.Buffer
	if err := envconf.UsageSpecs(&help, Specs()...); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"LIFELINE_OUTAGE_IDLE", "LIFELINE_OUTAGE_MAX_HOLD"} {
		if !strings.Contains(help.String(), w) {
			t.Errorf("--help lacks %q", w)
		}
	}
}
