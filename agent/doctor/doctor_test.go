package doctor

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLineFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		r    Result
		want string
	}{
		{Passed("key k: ssh-ed25519"), "✓ key k: ssh-ed25519\n"},
		{Failed("key k", "missing", "sudo lifeline-agent pair"), "✗ key k: missing — fix: sudo lifeline-agent pair\n"},
		{Skipped("netsetup", "not set"), "- netsetup: not set\n"},
		{Result{Outcome: Fail, What: "configuration", Why: "2 problems (below)", Fix: "edit it", Detail: []string{"A=1: bad", "B=2: worse"}},
			"✗ configuration: 2 problems (below) — fix: edit it\n    A=1: bad\n    B=2: worse\n"},
	} {
		if got := tc.r.Line(); got != tc.want {
			t.Errorf("Line() = %q, want %q", got, tc.want)
		}
	}
}

func TestCleanNetworkText(t *testing.T) {
	t.Parallel()
	if got := clean("evil\x1b[2Jtext\r\nmore", 100); got != "evil [2Jtext more" {
		t.Errorf("clean = %q", got)
	}
	if got := clean(strings.Repeat("é", 100), 11); got != "ééééé…" {
		t.Errorf("clean cut = %q", got)
	}
}

// TestRunOrderPrivilegedAndDrop: privileged checks run before Drop, every
// line is printed in list order, and the count of ✗ is returned.
func TestRunOrderPrivilegedAndDrop(t *testing.T) {
	t.Parallel()
	var order []string
	d := &Doctor{cfg: Config{StepTimeout: time.Second, Timeout: 10 * time.Second}}
	d.cfg.Drop = func() error { order = append(order, "drop"); return nil }
	mk := func(name string, o Outcome, priv bool) Check {
		return Check{Name: name, Privileged: priv, Run: func(context.Context) Result {
			order = append(order, name)
			return Result{Outcome: o, Why: "because", Fix: "do it"}
		}}
	}
	d.checks = []Check{mk("a", Pass, false), mk("b", Fail, false), mk("root", Skip, true), mk("c", Fail, false)}
	var out bytes.Buffer
	if n := d.Run(context.Background(), &out); n != 2 {
		t.Errorf("Run returned %d failures, want 2", n)
	}
	if got := strings.Join(order, ","); got != "root,drop,a,b,c" {
		t.Errorf("ran %s, want root,drop,a,b,c", got)
	}
	want := "✓ a: because\n✗ b: because — fix: do it\n- root: because\n✗ c: because — fix: do it\n2 problems found"
	if !strings.HasPrefix(out.String(), want) {
		t.Errorf("output:\n%s\nwant it to start with:\n%s", out.String(), want)
	}
}

// TestRunNeverHangs: a check that ignores its deadline is reported and
// left behind; the checks after it still run, and the doctor's overall
// time bounds the rest.
func TestRunNeverHangs(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	d := &Doctor{cfg: Config{StepTimeout: 50 * time.Millisecond, Timeout: 10 * time.Second}}
	d.checks = []Check{
		{Name: "stuck", Run: func(context.Context) Result { <-release; return Passed("stuck") }},
		{Name: "polite", Run: func(ctx context.Context) Result {
			<-ctx.Done()
			return Failed("polite", "gave up: "+ctx.Err().Error(), "none")
		}},
		{Name: "after", Run: func(context.Context) Result { return Passed("after") }},
	}
	var out bytes.Buffer
	start := time.Now()
	if n := d.Run(context.Background(), &out); n != 2 {
		t.Errorf("failures %d, want 2:\n%s", n, out.String())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s", took)
	}
	want(t, out.String(), "stuck", "✗", "did not finish within 50ms")
	want(t, out.String(), "polite", "✗", "deadline exceeded")
	want(t, out.String(), "after", "✓")

	// Out of overall time: what is left is a ✗ saying so, not a hang.
	d2 := &Doctor{cfg: Config{StepTimeout: time.Second, Timeout: 30 * time.Millisecond}}
	d2.checks = []Check{
		{Name: "slow", Run: func(ctx context.Context) Result { <-ctx.Done(); return Failed("slow", "timeout", "x") }},
		{Name: "never", Run: func(context.Context) Result { return Passed("never") }},
	}
	out.Reset()
	d2.Run(context.Background(), &out)
	want(t, out.String(), "never", "✗", "not checked: the doctor's time ran out")
}

func TestRunInterrupted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := &Doctor{cfg: Config{StepTimeout: time.Second, Timeout: time.Minute}}
	d.checks = []Check{{Name: "x", Run: func(context.Context) Result { return Passed("x") }}}
	var out bytes.Buffer
	if n := d.Run(ctx, &out); n != 1 {
		t.Errorf("failures %d", n)
	}
	want(t, out.String(), "x", "✗", "interrupted")
}

func TestUserCheck(t *testing.T) {
	t.Parallel()
	s := newSite(t, "127.0.0.1:1", "pi:22=127.0.0.1:22")
	d := New(s.cfg)
	if r := d.checkUser(context.Background()); r.Outcome != Pass || !strings.Contains(r.What, "checking as tester") {
		t.Errorf("as the service user: %+v", r)
	}
	d.cfg.User.Err = errors.New("user: unknown user lifeline")
	if r := d.checkUser(context.Background()); r.Outcome != Fail || !strings.Contains(r.Why, "not installed properly") || !strings.Contains(r.Fix, "apt install --reinstall lifeline-agent") {
		t.Errorf("no such user: %+v", r)
	}
	d.cfg.User.Err = nil
	d.cfg.User.UID++
	if r := d.checkUser(context.Background()); r.Outcome != Fail || !strings.Contains(r.Fix, "sudo lifeline-agent doctor") {
		t.Errorf("another user: %+v", r)
	}
	d.dropErr = errors.New("setuid: operation not permitted")
	if r := d.checkUser(context.Background()); r.Outcome != Fail || !strings.Contains(r.Why, "could not become tester") {
		t.Errorf("drop failed: %+v", r)
	}
}

func TestConfigCheck(t *testing.T) {
	t.Parallel()
	s := newSite(t, "127.0.0.1:1", "pi:22=127.0.0.1:22")
	s.cfg.EnvFile, s.cfg.Vars = "/etc/lifeline/agent.env", 4
	d := New(s.cfg)
	r := d.checkConfig(context.Background())
	if r.Outcome != Pass || !strings.Contains(r.What, "/etc/lifeline/agent.env (4 variables set from it)") || !strings.Contains(r.What, "bastion 127.0.0.1:1") {
		t.Errorf("valid: %+v", r)
	}
	s.cfg.AgentErr = errors.Join(errors.New(`LIFELINE_BASTION="": required`), errors.New("LIFELINE_KEEPALIVE=1ms: must be at least 100ms"))
	s.cfg.ChecksErr = errors.New("LIFELINE_CHECK_DURATION=0s: must be from 1s to 1m0s")
	r = New(s.cfg).checkConfig(context.Background())
	if r.Outcome != Fail || r.Why != "3 problems (below)" || len(r.Detail) != 3 || !strings.Contains(r.Fix, "/etc/lifeline/agent.env") {
		t.Errorf("invalid: %+v", r)
	}
	for i, v := range []string{"LIFELINE_BASTION", "LIFELINE_KEEPALIVE", "LIFELINE_CHECK_DURATION"} {
		if !strings.HasPrefix(r.Detail[i], v) {
			t.Errorf("detail %d = %q, want it to name %s", i, r.Detail[i], v)
		}
	}
}

// TestUndecodableConfigSkipsTheRest: with values that do not even decode,
// the checks that need them are one skipped line, not a cascade.
func TestUndecodableConfigSkipsTheRest(t *testing.T) {
	t.Parallel()
	s := newSite(t, "", "")
	s.cfg.AgentDecoded = false
	s.cfg.AgentErr = errors.New(`LIFELINE_KEEPALIVE="soon": cannot read as Duration`)
	out, n := s.run(t)
	if n != 1 {
		t.Errorf("failures %d, want 1:\n%s", n, out)
	}
	want(t, out, "configuration", "✗", "1 problem")
	want(t, out, "key, known_hosts, bastions and forwards", "-", "does not decode")
	if strings.Contains(out, "bastion ") {
		t.Errorf("bastion checks ran:\n%s", out)
	}
}
