package outage

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
)

func testConfig() Config {
	return Config{Region: "eu-west-1", InstanceID: "i-0123456789abcdef0", AccessKeyID: "AKIAIOSFODNN7EXAMPLE",
		SecretAccessKey: "wJalrXUtnFI/K7MDENG/bPxRfiCYEXAMPLEKEYab"}
}

// fakeCaller answers calls from a script (the last answer repeats) and
// counts them.
type fakeCaller struct {
	mu      sync.Mutex
	answers []Result
	reqs    []Request
}

func (f *fakeCaller) Call(_ context.Context, req Request) Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	r := f.answers[0]
	if len(f.answers) > 1 {
		f.answers = f.answers[1:]
	}
	return r
}

func (f *fakeCaller) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

var (
	started  = Result{OK: true, Code: CodeOK, State: "pending", PreviousState: "stopped"}
	capacity = Result{Code: CodeCapacity, Retry: true, Message: "EC2 InsufficientInstanceCapacity: none"}
	authFail = Result{Code: CodeAuthFailed, Message: "EC2 AuthFailure: AWS was not able to validate the provided access credentials"}
)

// syncBuffer is a log sink safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

type world struct {
	t       *testing.T
	clk     *clocktest.Fake
	caller  *fakeCaller
	d       *Decider
	log     *syncBuffer
	mu      sync.Mutex
	reports []Report
}

// t0 is a Tuesday, 10:00 UTC.
var t0 = time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)

func newWorld(t *testing.T, cfg Config, answers ...Result) *world {
	t.Helper()
	w := &world{t: t, clk: clocktest.New(t0), caller: &fakeCaller{answers: answers}, log: &syncBuffer{}}
	d, err := NewDecider(cfg, w.caller, w.clk, slog.New(slog.NewTextHandler(w.log, nil)), func(r Report) {
		w.mu.Lock()
		w.reports = append(w.reports, r)
		w.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	w.d = d
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	w.settle()
	return w
}

// settle waits until Run has decided on the latest input and is parked
// on its timer (or on inputs alone).
func (w *world) settle() {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		w.d.mu.Lock()
		ok := w.d.parked && w.d.decided == w.d.inputs
		timer := !w.d.parkedAt.IsZero()
		w.d.mu.Unlock()
		if ok && (!timer || w.clk.Pending() == 1) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	w.t.Fatal("the decider did not settle")
}

// advance moves the clock by d in steps of at most step, settling after
// each, so that every timer due on the way fires in turn.
func (w *world) advance(d, step time.Duration) {
	w.t.Helper()
	w.settle()
	for d > 0 {
		s := min(d, step)
		w.clk.Advance(s)
		d -= s
		w.settle()
	}
}

func (w *world) wantCalls(n int, when string) {
	w.t.Helper()
	if got := w.caller.calls(); got != n {
		w.t.Fatalf("%s: %d start calls, want %d; status %+v\nlog:\n%s", when, got, n, w.d.Status(), w.log.b.String())
	}
}

// TestOneStartWhenMainDownAndNoBastion: the main link down and no
// bastion for NoBastionFor: exactly one start call, then waiting for the
// instance to boot, no other call within ReadyWithin.
func TestOneStartWhenMainDownAndNoBastion(t *testing.T) {
	t.Parallel()
	w := newWorld(t, testConfig(), started)
	w.advance(10*time.Minute, 10*time.Second) // link up: nothing
	w.wantCalls(0, "main link up")
	down := w.clk.Now().Add(-3 * time.Minute)
	w.d.MainDown(down)
	w.settle()
	w.wantCalls(1, "main down, no bastion for 10 minutes: at once")
	if s := w.d.Status(); s.Phase != PhaseWaitReady || !s.NextCallAt.Equal(t0.Add(10*time.Minute+DefaultReadyWithin)) {
		t.Errorf("status %+v: want wait_ready until 5 min after the call", s)
	}
	w.advance(4*time.Minute, 10*time.Second)
	w.wantCalls(1, "4 minutes later, while it boots")
	req := w.caller.reqs[0]
	if req.Action != ActionStart || req.InstanceID != "i-0123456789abcdef0" || req.SecretAccessKey == "" || time.Duration(req.Timeout) != DefaultCallTimeout {
		t.Errorf("request %+v", req.LogValue())
	}
	// The bastion connects at 14:04 (here, 10:14): one report, ready.
	w.d.Bastion(true, w.clk.Now())
	w.settle()
	w.mu.Lock()
	reps := append([]Report(nil), w.reports...)
	w.mu.Unlock()
	if len(reps) != 1 || reps[0].Attempts != 1 || reps[0].LastCode != CodeOK || !reps[0].ReadyAt.Equal(w.clk.Now()) ||
		!reps[0].StartedAt.Equal(t0.Add(10*time.Minute)) || !reps[0].MainDownSince.Equal(down) {
		t.Errorf("reports %+v: want one, 1 attempt, ok, started and ready times", reps)
	}
	w.advance(time.Hour, time.Minute)
	w.wantCalls(1, "bastion connected for an hour")
}

// TestStartNotReadyCallsAgain: a start AWS accepted but no bastion within
// ReadyWithin: called again, with backoff.
func TestStartNotReadyCallsAgain(t *testing.T) {
	t.Parallel()
	w := newWorld(t, testConfig(), started)
	w.d.MainDown(t0)
	w.advance(time.Minute, time.Second)
	w.wantCalls(1, "first")
	w.advance(DefaultReadyWithin-time.Second, time.Second)
	w.wantCalls(1, "just before ReadyWithin")
	w.advance(time.Second, time.Second)
	w.wantCalls(2, "ReadyWithin passed without a bastion")
}

// TestBastionConnectedNoStart: a bastion connected (or reconnecting
// within the grace) means no call, however long the main link is down.
func TestBastionConnectedNoStart(t *testing.T) {
	t.Parallel()
	w := newWorld(t, testConfig(), started)
	w.d.Bastion(true, t0)
	w.d.MainDown(t0)
	w.advance(2*time.Hour, time.Minute)
	w.wantCalls(0, "bastion connected")
	// The tunnel drops and is back 50 s later: still no call.
	w.d.Bastion(false, w.clk.Now())
	w.advance(50*time.Second, 10*time.Second)
	w.d.Bastion(true, w.clk.Now())
	w.advance(time.Hour, time.Minute)
	w.wantCalls(0, "bastion back within the grace")
	if s := w.d.Status(); s.Phase != PhaseBastion {
		t.Errorf("phase %s, want bastion", s.Phase)
	}
}

// TestMainBackStopsTrying: calls failing with retry stop when the main
// link is back; the instance is not stopped by the agent.
func TestMainBackStopsTrying(t *testing.T) {
	t.Parallel()
	w := newWorld(t, testConfig(), capacity)
	w.d.MainDown(t0)
	w.advance(time.Minute, time.Second)
	w.wantCalls(1, "first")
	w.d.MainUp()
	w.settle()
	w.advance(24*time.Hour, 10*time.Minute)
	w.wantCalls(1, "main link back")
	for _, r := range w.caller.reqs {
		if r.Action != ActionStart {
			t.Errorf("the decider asked for %s: it only ever starts", r.Action)
		}
	}
	if s := w.d.Status(); s.Phase != PhaseOff || s.MainDown || s.Report.Attempts != 1 {
		t.Errorf("status %+v: want off, the last outage's report kept", s)
	}
	if w.log.count("main link back") != 1 {
		t.Errorf("log lacks one 'main link back' line:\n%s", w.log.b.String())
	}
}

// TestCapacityBackoffAndDailyBudget: capacity errors are retried with a
// growing backoff, at most DailyCalls a UTC day; then a log line and
// nothing until the next UTC day, when calls resume.
func TestCapacityBackoffAndDailyBudget(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.DailyCalls = 5
	w := newWorld(t, cfg, capacity)
	w.d.MainDown(t0)
	w.advance(time.Minute, time.Second)
	w.wantCalls(1, "first")
	// Backoff: 1m, 2m, 4m, 8m at most (jittered between Min and those).
	var times []time.Time
	last := w.clk.Now()
	for i := 2; i <= 5; i++ {
		for w.caller.calls() < i {
			w.advance(10*time.Second, 10*time.Second)
			if w.clk.Now().Sub(last) > time.Duration(1<<(i-2))*time.Minute+10*time.Second {
				t.Fatalf("call %d not within its backoff of %dm", i, 1<<(i-2))
			}
		}
		if gap := w.clk.Now().Sub(last); gap < DefaultRetryMin {
			t.Errorf("call %d %s after the one before: under RetryMin", i, gap)
		}
		last = w.clk.Now()
		times = append(times, last)
	}
	w.advance(13*time.Hour, 10*time.Minute) // to 23:xx UTC
	w.wantCalls(5, "budget spent")
	if s := w.d.Status(); s.Phase != PhaseBudgetSpent || s.CallsToday != 5 || !s.NextCallAt.Equal(time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("status %+v: want budget_spent until midnight UTC", s)
	}
	if n := w.log.count("today's start calls are spent"); n != 1 {
		t.Errorf("%d budget log lines, want 1", n)
	}
	w.advance(time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC).Sub(w.clk.Now()), 10*time.Minute)
	w.wantCalls(6, "a new UTC day")
}

// TestAuthFailureOneAttempt: a call that cannot succeed by retrying is
// made once, logged once, never looped, even while inputs keep coming;
// a new outage tries again.
func TestAuthFailureOneAttempt(t *testing.T) {
	t.Parallel()
	w := newWorld(t, testConfig(), authFail, started)
	w.d.MainDown(t0)
	w.advance(time.Minute, time.Second)
	w.wantCalls(1, "first")
	for i := 0; i < 20; i++ { // a flapping tunnel to a dead bastion
		w.d.Bastion(i%2 == 0, w.clk.Now())
		w.advance(5*time.Minute, time.Minute)
	}
	w.d.Bastion(false, w.clk.Now())
	w.advance(24*time.Hour, time.Hour)
	w.wantCalls(1, "auth failure")
	if n := w.log.count("no more start calls this outage"); n != 1 {
		t.Errorf("%d 'no more start calls' lines, want 1:\n%s", n, w.log.b.String())
	}
	if s := w.d.Status(); s.Phase != PhaseBlocked || s.Report.LastCode != CodeAuthFailed || !s.NextCallAt.IsZero() {
		t.Errorf("status %+v: want blocked, auth_failed, nothing planned", s)
	}
	// Main back, then down again: a new outage, a new first call.
	w.d.MainUp()
	w.settle()
	w.d.MainDown(w.clk.Now())
	w.advance(time.Minute, time.Second)
	w.wantCalls(2, "a new outage")
	if s := w.d.Status(); s.Report.Attempts != 1 || s.Report.LastCode != CodeOK {
		t.Errorf("new outage's report %+v: want 1 attempt, ok", s.Report)
	}
}

// TestLogsNoSecret: nothing the decider logs holds the secret.
func TestLogsNoSecret(t *testing.T) {
	t.Parallel()
	leak := capacity
	leak.Message = "echo " + testConfig().SecretAccessKey
	w := newWorld(t, testConfig(), leak)
	w.d.MainDown(t0)
	w.advance(time.Minute, time.Second)
	w.wantCalls(1, "first")
	slog.New(slog.NewTextHandler(w.log, nil)).Info("config", "cfg", testConfig())
	if w.log.count(testConfig().SecretAccessKey) != 0 {
		t.Errorf("the secret is in the log:\n%s", w.log.b.String())
	}
	if m := w.d.Status().Report.LastMessage; strings.Contains(m, testConfig().SecretAccessKey) {
		t.Errorf("the secret is in the report: %s", m)
	}
}
