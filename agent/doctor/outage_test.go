package doctor

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/outage"
	"github.com/lifeline-dev/lifeline/shared/version"
)

// With outage mode on, doctor reports its settings (never the secret) and
// checks that lifeline-jumpstart is found and runs; it never calls AWS
// (the program only ever gets --version).
func TestOutageChecks(t *testing.T) {
	t.Parallel()
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	program := func(t *testing.T, say string) string {
		dir := t.TempDir()
		args := filepath.Join(dir, "args")
		p := filepath.Join(dir, outage.ProgramName)
		script := "#!/bin/sh\necho \"$@\" >> " + args + "\necho '" + say + "'\n"
		if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			b, _ := os.ReadFile(args)
			if got := strings.TrimSpace(string(b)); got != "" && got != "--version" {
				t.Errorf("program run with %q, only --version may be", got)
			}
		})
		return p
	}
	tests := []struct {
		name  string
		find  func(t *testing.T) func() (string, error)
		check func(t *testing.T, out string)
	}{
		{"all good", func(t *testing.T) func() (string, error) {
			p := program(t, outage.ProgramName+" "+version.Version)
			return func() (string, error) { return p, nil }
		}, func(t *testing.T, out string) {
			want(t, out, "outage mode:", "✓", "starts i-0123456789abcdef0 in eu-west-1 with key AKIAIOSFODNN7EXAMPLE",
				"down 5m0s", "at most 3 start calls a UTC day", "not called here")
			want(t, out, "jump start program", "✓", outage.ProgramName+" "+version.Version)
		}},
		{"not found", func(t *testing.T) func() (string, error) {
			return func() (string, error) {
				return "", errors.New("jump start program lifeline-jumpstart not found: tried /x")
			}
		}, func(t *testing.T, out string) {
			want(t, out, "jump start program", "✗", "not found", "apt install --reinstall lifeline-agent")
		}},
		{"another version", func(t *testing.T) func() (string, error) {
			p := program(t, outage.ProgramName+" 0.0.1-old")
			return func() (string, error) { return p, nil }
		}, func(t *testing.T, out string) {
			want(t, out, "jump start program", "✗", "version 0.0.1-old", "systemctl restart lifeline-agent")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSite(t, "127.0.0.1:"+strconv.Itoa(closedPort(t)), "pi:22=127.0.0.1:22")
			s.cfg.Agent.Main = &config.MainWatch{DownAfter: 5 * time.Minute}
			s.cfg.Agent.Outage = outage.Config{Region: "eu-west-1", InstanceID: "i-0123456789abcdef0", AccessKeyID: "AKIAIOSFODNN7EXAMPLE",
				SecretAccessKey: secret, DailyCalls: 3}
			s.cfg.JumpProgram = tc.find(t)
			out, _ := s.run(t)
			if strings.Contains(out, secret) {
				t.Errorf("the secret is printed:\n%s", out)
			}
			tc.check(t, out)
		})
	}

	// Outage mode off: no such lines.
	s := newSite(t, "127.0.0.1:"+strconv.Itoa(closedPort(t)), "pi:22=127.0.0.1:22")
	if out, _ := s.run(t); strings.Contains(out, "outage") || strings.Contains(out, "jump start") {
		t.Errorf("outage checks while off:\n%s", out)
	}
}
