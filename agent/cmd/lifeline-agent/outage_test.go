package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/mainwatch"
	"github.com/lifeline-dev/lifeline/agent/outage"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// fakeCaller answers every start call with res and counts them.
type fakeCaller struct {
	res outage.Result

	mu   sync.Mutex
	reqs []outage.Request
}

func (f *fakeCaller) Call(_ context.Context, req outage.Request) outage.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	return f.res
}

func (f *fakeCaller) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

// outageWorld is outage mode wired as agentMain wires it, with a fake
// clock and caller, and the tunnel's Publish and SetMainNote recorded.
type outageWorld struct {
	t      *testing.T
	clk    *clocktest.Fake
	caller *fakeCaller
	ml     *mainLink
	d      *outage.Decider
	ctx    context.Context

	mu        sync.Mutex
	published []report.LinkReport
	notes     []string
}

// t0 is 10:00 UTC; the main link went down at 09:55.
var t0 = time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)

func newOutageWorld(t *testing.T, res outage.Result) *outageWorld {
	t.Helper()
	w := &outageWorld{t: t, clk: clocktest.New(t0), caller: &fakeCaller{res: res}}
	w.ml = newMainLink(w.clk, slog.New(slog.DiscardHandler))
	w.ml.publish = func(_ context.Context, r report.LinkReport) {
		// What Publish would refuse to send.
		if _, err := report.Encode(r); err != nil {
			t.Errorf("published an invalid report: %v", err)
		}
		w.mu.Lock()
		w.published = append(w.published, r)
		w.mu.Unlock()
	}
	w.ml.note = func(s string) {
		w.mu.Lock()
		w.notes = append(w.notes, s)
		w.mu.Unlock()
	}
	cfg := outage.Config{Region: "eu-west-1", InstanceID: "i-0123456789abcdef0", AccessKeyID: "AKIAIOSFODNN7EXAMPLE",
		SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", Interface: "wwan0"}
	d, err := newOutage(cfg, w.caller, w.ml, slog.New(slog.DiscardHandler))
	if err != nil || d == nil {
		t.Fatalf("newOutage: %v, %v", d, err)
	}
	w.d = d
	ctx, cancel := context.WithCancel(context.Background())
	w.ctx = ctx
	var wg sync.WaitGroup
	wg.Go(func() { w.ml.run(ctx) })
	wg.Go(func() { _ = d.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return w
}

func (w *outageWorld) reports() []report.LinkReport {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]report.LinkReport(nil), w.published...)
}

func (w *outageWorld) note() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.notes) == 0 {
		return ""
	}
	return w.notes[len(w.notes)-1]
}

// mainDown is the watch's Down, then the Decider's grace of a minute
// without a bastion: the start call is made.
func (w *outageWorld) mainDown() mainwatch.Down {
	w.t.Helper()
	down := mainwatch.Down{Since: t0.Add(-5 * time.Minute), At: t0, Reason: "dns://1.0.0.1:53: no answer within 3s", Code: report.CodeMainUnreachable}
	w.ml.event(w.ctx, down)
	if r := w.reports(); len(r) != 1 || r[0].Verdict != report.VerdictFailed || r[0].Jump != nil {
		w.t.Fatalf("the Down event published %+v", r)
	}
	sshtest.Eventually(w.t, 10*time.Second, func() bool { return w.clk.Pending() == 1 }, "the decider waiting out its grace")
	if n := w.caller.calls(); n != 0 {
		w.t.Fatalf("%d start calls within the grace", n)
	}
	w.clk.Advance(outage.DefaultNoBastionFor)
	sshtest.Eventually(w.t, 10*time.Second, func() bool { return w.caller.calls() == 1 }, "one start call")
	return down
}

// The main link down and no bastion: one start call, its outcome in
// STATUS=; a bastion connecting (the tunnel's OnBastion) gets the Down
// report again with Jump filled; the main link back clears the note.
func TestOutageStartsTheJumpHostAndReports(t *testing.T) {
	t.Parallel()
	w := newOutageWorld(t, outage.Result{OK: true, Code: outage.CodeOK, State: "pending", PreviousState: "stopped"})
	down := w.mainDown()
	if req := w.caller.reqs[0]; req.Action != outage.ActionStart || req.InstanceID != "i-0123456789abcdef0" || req.Interface != "wwan0" {
		t.Errorf("request %+v", req.LogValue())
	}
	sshtest.Eventually(t, 10*time.Second, func() bool {
		return w.note() == "MAIN INTERNET DOWN since 2026-03-10 09:55 UTC (main_unreachable); jump host start requested 10:01 UTC (pending)"
	}, "STATUS= says the start was requested, not %q", w.note())
	// The Decider now gives the instance ReadyWithin: no second call.
	sshtest.Eventually(t, 10*time.Second, func() bool { return w.clk.Pending() == 1 }, "the decider waiting for a bastion")
	w.clk.Advance(90 * time.Second)
	if n := w.caller.calls(); n != 1 {
		t.Fatalf("%d start calls, want 1", n)
	}

	// The jump host booted: the tunnel tells the Decider, as agentMain's
	// OnBastion does.
	ready := w.clk.Now()
	w.d.Bastion(true, ready)
	sshtest.Eventually(t, 10*time.Second, func() bool { return len(w.reports()) == 2 }, "the report re-published")
	r := w.reports()[1]
	if r.Link != report.LinkMain || r.Verdict != report.VerdictFailed || !r.Since.Equal(down.Since) || r.Jump == nil {
		t.Fatalf("re-published %+v", r)
	}
	if j := *r.Jump; !j.StartedAt.Equal(t0.Add(time.Minute)) || !j.ReadyAt.Equal(ready) || j.Attempts != 1 || j.LastCode != outage.CodeOK {
		t.Errorf("jump %+v", j)
	}
	if got, want := w.note(), "MAIN INTERNET DOWN since 2026-03-10 09:55 UTC (main_unreachable); jump host started 10:01 UTC, ready 10:02 UTC"; got != want {
		t.Errorf("STATUS= %q, want %q", got, want)
	}
	if st := w.d.Status(); !st.BastionConnected || st.Phase != outage.PhaseBastion {
		t.Errorf("decider status %+v", st)
	}

	w.ml.event(w.ctx, mainwatch.Up{Since: down.Since, Back: w.clk.Now(), Outage: w.clk.Now().Sub(down.Since)})
	if got := w.note(); got != "" {
		t.Errorf("STATUS= after the main link came back: %q", got)
	}
	if r := w.reports(); len(r) != 3 || r[2].Verdict != report.VerdictOK || r[2].Jump != nil {
		t.Errorf("after Up: %+v", r)
	}
}

// A start that failed for good (the key refused) is said in STATUS= and
// carried in Jump to a bastion started by hand; no second call is made.
func TestOutageFailedStartIsReported(t *testing.T) {
	t.Parallel()
	msg := "EC2 AuthFailure: AWS was not able to validate the provided access credentials " + strings.Repeat("x", 700)
	w := newOutageWorld(t, outage.Result{Code: outage.CodeAuthFailed, Message: msg})
	w.mainDown()
	sshtest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(w.note(), "; JUMP HOST START FAILED 10:01 UTC: auth_failed: EC2 AuthFailure") &&
			strings.HasSuffix(w.note(), "(no more start calls this outage)")
	}, "STATUS= says the start failed, not %q", w.note())
	w.clk.Advance(time.Hour)
	if n := w.caller.calls(); n != 1 {
		t.Fatalf("%d start calls after auth_failed, want 1", n)
	}
	w.d.Bastion(true, w.clk.Now())
	sshtest.Eventually(t, 10*time.Second, func() bool { return len(w.reports()) == 2 }, "the report re-published")
	j := w.reports()[1].Jump
	if j == nil || !j.StartedAt.IsZero() || j.Attempts != 1 || j.LastCode != outage.CodeAuthFailed || !strings.HasPrefix(j.LastMessage, "EC2 AuthFailure") || len(j.LastMessage) > 512 {
		t.Fatalf("jump %+v", j)
	}
	if !strings.Contains(w.note(), "jump host start failed (auth_failed, 1 attempt), bastion connected 11:01 UTC") {
		t.Errorf("STATUS= %q", w.note())
	}
}

// Outage mode off: no Decider.
func TestOutageOff(t *testing.T) {
	t.Parallel()
	if d, err := newOutage(outage.Config{}, nil, newMainLink(nil, slog.New(slog.DiscardHandler)), slog.New(slog.DiscardHandler)); d != nil || err != nil {
		t.Errorf("newOutage off: %v, %v", d, err)
	}
}
