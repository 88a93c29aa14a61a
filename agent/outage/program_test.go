package outage

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/fakeec2"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	buildOut  []byte
)

// realProgram is lifeline-jumpstart built from this tree, once per run.
func realProgram(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "outage-test-")
		if buildErr != nil {
			return
		}
		buildOut, buildErr = exec.Command("go", "build", "-o", filepath.Join(buildDir, ProgramName), "../cmd/lifeline-jumpstart").CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOut)
	}
	return filepath.Join(buildDir, ProgramName)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// script writes a shell script standing in for the program.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), ProgramName)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func fakeKey() fakeec2.Key {
	c := testConfig()
	return fakeec2.Key{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, Region: c.Region}
}

// TestStarterWithTheRealProgram: the Starter runs lifeline-jumpstart,
// which starts the instance on the fake EC2; the program's log lines
// reach the Starter's log, without the secret.
func TestStarterWithTheRealProgram(t *testing.T) {
	t.Parallel()
	f := fakeec2.New(t, fakeKey())
	f.AddInstance("i-0123456789abcdef0", fakeec2.Stopped)
	cfg := testConfig()
	cfg.Endpoint = f.URL()
	var log syncBuffer
	s := &Starter{Program: realProgram(t), Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	res := s.Call(context.Background(), cfg.request(ActionStart, 10*time.Second))
	if !res.OK || res.State != "pending" || res.PreviousState != "stopped" {
		t.Fatalf("result %+v, want ok pending<-stopped", res)
	}
	if calls := f.Calls(); len(calls) != 1 || !calls[0].SignatureOK {
		t.Errorf("calls %+v: want one, signature verified", calls)
	}
	if log.count("calling EC2") != 1 {
		t.Errorf("the program's debug line is not in the agent's log:\n%s", log.b.String())
	}
	cfg.SecretAccessKey = strings.Repeat("Q", 40)
	res = s.Call(context.Background(), cfg.request(ActionStart, 10*time.Second))
	if res.Code != CodeAuthFailed || res.Retry {
		t.Errorf("wrong secret: %+v, want auth_failed, no retry", res)
	}
	if log.count(testConfig().SecretAccessKey) != 0 || log.count(cfg.SecretAccessKey) != 0 {
		t.Errorf("a secret is in the log:\n%s", log.b.String())
	}
}

// TestStarterTimeoutOnHungServer: a server that never answers is a
// timeout Result within the request's deadline (the program's own).
func TestStarterTimeoutOnHungServer(t *testing.T) {
	t.Parallel()
	f := fakeec2.New(t, fakeKey())
	f.AddInstance("i-0123456789abcdef0", fakeec2.Stopped)
	f.Script("StartInstances", fakeec2.Response{Hang: true})
	cfg := testConfig()
	cfg.Endpoint = f.URL()
	start := time.Now()
	res := (&Starter{Program: realProgram(t)}).Call(context.Background(), cfg.request(ActionStart, time.Second))
	if res.Code != CodeTimeout || !res.Retry {
		t.Errorf("result %+v, want timeout, retry", res)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("took %s with a 1s deadline", took)
	}
}

// TestStarterFailures: every way the program fails is a Result.
func TestStarterFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		body  string // "" : no program at all
		code  string
		retry bool
		want  string
	}{
		{name: "missing", code: CodeInternal, want: "could not be started"},
		{name: "garbage", body: `cat >/dev/null; echo hello`, code: CodeInternal, retry: true, want: "no valid result"},
		{name: "nothing", body: `cat >/dev/null`, code: CodeInternal, retry: true, want: "no result"},
		{name: "refused", body: `cat >/dev/null; echo "lifeline-jumpstart: request version 1, this reads 2" >&2; exit 2`, code: CodeInternal, want: "request version 1"},
		{name: "crash", body: `cat >/dev/null; echo "panic: boom" >&2; exit 1`, code: CodeInternal, retry: true, want: "panic: boom"},
		{name: "too much", body: `cat >/dev/null; head -c 100000 /dev/zero | tr '\0' x`, code: CodeInternal, retry: true, want: "more than"},
		{name: "unknown code", body: `cat >/dev/null; echo '{"ok":true,"code":"great","retry":false}'`, code: CodeInternal, want: "unknown result code"},
		{name: "deaf to SIGTERM", body: `cat >/dev/null; trap '' TERM; exec sleep 60`, code: CodeTimeout, retry: true, want: "no result within"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			prog := filepath.Join(t.TempDir(), "absent")
			if tc.body != "" {
				prog = script(t, tc.body)
			}
			s := &Starter{Program: prog, stopGrace: 200 * time.Millisecond, killGrace: 300 * time.Millisecond}
			start := time.Now()
			res := s.Call(context.Background(), testConfig().request(ActionStart, 300*time.Millisecond))
			if res.Code != tc.code || res.Retry != tc.retry || res.OK || !strings.Contains(res.Message, tc.want) {
				t.Errorf("result %+v, want %s retry %v, message with %q", res, tc.code, tc.retry, tc.want)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
}

// TestStarterCancel: the caller's context ending stops the program.
func TestStarterCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := (&Starter{Program: script(t, `cat >/dev/null; exec sleep 60`)}).Call(ctx, testConfig().request(ActionStart, time.Minute))
	if res.OK || res.Code != CodeTimeout {
		t.Errorf("result %+v, want a timeout", res)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s after the context ended at 300ms", took)
	}
}

// TestSecretOnlyOnStdin: the program gets the secret on stdin, never in
// its arguments or environment, even when the agent's environment has it
// (as LIFELINE_OUTAGE_SECRET_ACCESS_KEY from its env file).
func TestSecretOnlyOnStdin(t *testing.T) {
	secret := testConfig().SecretAccessKey
	t.Setenv("LIFELINE_OUTAGE_SECRET_ACCESS_KEY", secret)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	out := filepath.Join(t.TempDir(), "seen")
	prog := script(t, `{ echo "args: $*"; env; } > `+out+`; grep -c '"secret_access_key":"`+secret+`"' > `+out+`.stdin; echo '{"ok":true,"code":"ok","state":"pending","retry":false}'`)
	res := (&Starter{Program: prog}).Call(context.Background(), testConfig().request(ActionStart, 5*time.Second))
	if !res.OK {
		t.Fatalf("result %+v", res)
	}
	seen, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(seen), secret) || strings.Contains(string(seen), "LIFELINE_") {
		t.Errorf("the program's arguments or environment hold the secret or agent variables:\n%s", seen)
	}
	if n, _ := os.ReadFile(out + ".stdin"); strings.TrimSpace(string(n)) != "1" {
		t.Errorf("the secret did not come on stdin (grep count %q)", n)
	}
}

// TestFindProgram: next to the executable first, then ProgramDir; the
// error names what it tried.
func TestFindProgram(t *testing.T) {
	t.Parallel()
	a, b := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(b, ProgramName), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p, err := findProgram([]string{a, b}); err != nil || p != filepath.Join(b, ProgramName) {
		t.Errorf("findProgram = %q, %v", p, err)
	}
	if _, err := findProgram([]string{a}); err == nil || !strings.Contains(err.Error(), filepath.Join(a, ProgramName)) {
		t.Errorf("err = %v, want one naming %s", err, a)
	}
}
