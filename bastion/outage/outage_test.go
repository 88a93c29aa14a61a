package outage

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const idle = 30 * time.Minute

// harness runs one Keeper on a fake clock, with its events on a channel.
type harness struct {
	t      *testing.T
	clk    *clocktest.Fake
	k      *Keeper
	events chan Event
	state  string // StateDir
	req    string // RequestPath
	stop   func()
}

type logWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// newHarness makes a Keeper (Idle 30m, a fresh state dir and runtime dir)
// and runs it; edit changes the Config first. state reuses a state dir.
func newHarness(t *testing.T, clk *clocktest.Fake, state string, edit func(*Config)) *harness {
	t.Helper()
	if state == "" {
		state = t.TempDir()
	}
	h := &harness{t: t, clk: clk, events: make(chan Event, 100), state: state,
		req: filepath.Join(t.TempDir(), "lifeline", "poweroff")}
	require.NoError(t, os.Mkdir(filepath.Dir(h.req), 0o700))
	lw := &logWriter{t: t}
	cfg := Config{
		Idle: idle, StateDir: state, RequestPath: h.req, Clock: clk,
		Log:    slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Notify: func(e Event) { h.events <- e },
	}
	if edit != nil {
		edit(&cfg)
	}
	h.req = cfg.RequestPath
	k, err := New(cfg)
	require.NoError(t, err)
	h.k = k
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		runErr = k.Run(ctx)
	}()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			assert.NoError(t, runErr)
			lw.mu.Lock()
			lw.done = true
			lw.mu.Unlock()
		})
	}
	t.Cleanup(h.stop)
	return h
}

// settle waits until Run has taken in every input and is parked.
func (h *harness) settle() {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return h.k.seen == h.k.gen
	}, 5*time.Second, time.Millisecond, "Run did not take in the inputs")
}

// armed is the deadline Run waits for (zero: none), once settled.
func (h *harness) armed() time.Time {
	h.t.Helper()
	h.settle()
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	return h.k.armed
}

// advance moves the clock by d; when that fires Run's timer it waits until
// Run has handled it and parked again.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.settle()
	h.k.mu.Lock()
	parks, armed := h.k.parks, h.k.armed
	h.k.mu.Unlock()
	h.clk.Advance(d)
	if armed.IsZero() || armed.After(h.clk.Now()) {
		return
	}
	require.Eventually(h.t, func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return h.k.parks > parks && h.k.seen == h.k.gen
	}, 5*time.Second, time.Millisecond, "Run did not handle its timer")
}

func (h *harness) next() Event {
	h.t.Helper()
	select {
	case e := <-h.events:
		return e
	case <-time.After(5 * time.Second):
		h.t.Fatal("no event")
		return Event{}
	}
}

// quiet asserts that no event is waiting (call it once Run is settled).
func (h *harness) quiet() {
	h.t.Helper()
	h.settle()
	select {
	case e := <-h.events:
		h.t.Fatalf("unexpected event %s: %s", e.Kind, e)
	default:
	}
}

func (h *harness) started() Event {
	h.t.Helper()
	e := h.next()
	require.Equal(h.t, Started, e.Kind)
	return e
}

func (h *harness) requestExists() bool {
	_, err := os.Stat(h.req)
	return err == nil
}

func (h *harness) readState() state {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.state, StateFile))
	require.NoError(h.t, err)
	var s state
	require.NoError(h.t, json.Unmarshal(data, &s))
	return s
}

// TestIdlePowersOff: a host nobody uses asks to power off once, Idle after
// its start, with a request file (0600, JSON: who, why, when) and the stop
// recorded in the state file first.
func TestIdlePowersOff(t *testing.T) {
	t.Parallel()
	h := newHarness(t, clocktest.New(t0), "", nil)
	e := h.started()
	assert.Nil(t, e.PrevStop)
	assert.True(t, e.PrevStarted.IsZero())
	assert.Equal(t, "jump host up (outage mode), first start", e.String())
	assert.Equal(t, t0.Add(idle), h.armed(), "the first idle period starts at Run")
	st := h.k.Status()
	assert.True(t, st.On)
	assert.Equal(t, t0, st.IdleSince)
	assert.Equal(t, t0.Add(idle), st.PowerOffAt)
	assert.Empty(t, st.KeptUpBy())

	h.advance(idle - time.Second)
	h.quiet()
	assert.False(t, h.requestExists(), "no request before Idle")

	h.advance(time.Second)
	e = h.next()
	require.Equal(t, Stopping, e.Kind)
	assert.Equal(t, t0, e.IdleSince)
	assert.Equal(t, idle, e.Idle)
	assert.Contains(t, e.Reason, "idle for 30m0s since 2026-03-01T12:00:00Z (the start)")
	h.quiet()

	fi, err := os.Stat(h.req)
	require.NoError(t, err, "the request file")
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	data, err := os.ReadFile(h.req)
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(string(data), "}\n") && strings.Count(string(data), "\n") == 1, "one JSON line: %q", data)
	var req Stop
	require.NoError(t, json.Unmarshal(data, &req))
	assert.Equal(t, Stop{Time: t0.Add(idle), Reason: e.Reason, IdleSince: t0, Idle: idle, By: "lifeline-bastion", PID: os.Getpid()}, req)
	names, err := os.ReadDir(filepath.Dir(h.req))
	require.NoError(t, err)
	require.Len(t, names, 1, "exactly one file, no temporary left")

	s := h.readState()
	assert.Equal(t, t0, s.Started)
	require.NotNil(t, s.Stop, "the stop is recorded")
	assert.Equal(t, req, *s.Stop)
	assert.Equal(t, t0.Add(idle), h.k.Status().Requested)

	// Still up a while later: no second Stopping.
	h.advance(5 * time.Minute)
	h.quiet()
}

// TestOperatorBlocks: an open operator connection keeps the host up for as
// long as it is open; the idle period restarts when the last one closes.
func TestOperatorBlocks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, clocktest.New(t0), "", nil)
	h.started()
	h.advance(29 * time.Minute)
	h.k.Sessions(1)
	assert.True(t, h.armed().IsZero(), "no deadline while an operator is connected")
	assert.Zero(t, h.clk.Pending())
	assert.Equal(t, []string{"1 operator connection(s) open"}, h.k.Status().KeptUpBy())
	assert.True(t, h.k.Status().PowerOffAt.IsZero())
	h.advance(72 * time.Hour)
	h.k.Sessions(2)
	h.k.Sessions(1)
	h.advance(time.Hour)
	h.quiet()
	assert.False(t, h.requestExists())

	closed := h.clk.Now()
	h.k.Sessions(0)
	assert.Equal(t, closed.Add(idle), h.armed(), "the idle period starts at the close")
	assert.Equal(t, closed, h.k.Status().IdleSince)
	h.advance(idle)
	e := h.next()
	require.Equal(t, Stopping, e.Kind)
	assert.Equal(t, closed, e.IdleSince)
	assert.Contains(t, e.Reason, "the last operator connection closed")
	assert.True(t, h.requestExists())
}

// TestMainLinkBlocks: a connected site reporting its main link down keeps
// the host up; the link back, or the agent gone, starts the idle period.
func TestMainLinkBlocks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, clocktest.New(t0), "", nil)
	h.started()
	h.k.AgentSeen("pi")
	e := h.next()
	assert.Equal(t, Ready, e.Kind)
	assert.Equal(t, "pi", e.Site)
	h.k.AgentSeen("nuc")
	h.k.AgentSeen("pi")
	h.quiet() // Ready once: the first agent since the start
	h.k.MainLink("nuc", false)
	assert.Equal(t, t0.Add(idle), h.armed(), "a site whose main link is up keeps nothing up")

	h.k.MainLink("pi", true)
	assert.True(t, h.armed().IsZero())
	h.advance(48 * time.Hour)
	h.quiet()
	back := h.clk.Now()
	h.k.MainLink("pi", false)
	assert.Equal(t, back.Add(idle), h.armed(), "main back starts the idle period")

	h.advance(10 * time.Minute)
	h.k.MainLink("pi", true)
	h.k.MainLink("nuc", true)
	h.k.AgentGone("pi")
	assert.True(t, h.armed().IsZero(), "nuc still down")
	st := h.k.Status()
	assert.Equal(t, []string{"nuc"}, st.SitesDown)
	assert.Equal(t, []string{"nuc"}, st.Sites)
	assert.Equal(t, []string{"site nuc reports its main link down"}, st.KeptUpBy())
	h.advance(time.Hour)
	gone := h.clk.Now()
	h.k.AgentGone("nuc")
	assert.Equal(t, gone.Add(idle), h.armed(), "AgentGone releases the site's block")
	assert.Empty(t, h.k.Status().Sites)
	h.k.AgentGone("nuc") // twice: nothing changes
	assert.Equal(t, gone.Add(idle), h.armed())
	h.advance(idle)
	e = h.next()
	require.Equal(t, Stopping, e.Kind)
	assert.Contains(t, e.Reason, "site nuc's agent left while its main link was down")
}

// TestHold: a hold keeps the host up past Idle; the idle period starts when
// it runs out or is released; a hold above the maximum is refused.
func TestHold(t *testing.T) {
	t.Parallel()
	h := newHarness(t, clocktest.New(t0), "", nil)
	h.started()

	_, err := h.k.Hold(25*time.Hour, "alice")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "maximum 24h0m0s")
	_, err = h.k.Hold(-time.Minute, "alice")
	assert.Error(t, err)
	until, err := h.k.Hold(0, "alice")
	require.NoError(t, err, "hold 0 without a hold")
	assert.True(t, until.IsZero())
	h.quiet()

	until, err = h.k.Hold(2*time.Hour, "alice")
	require.NoError(t, err)
	assert.Equal(t, t0.Add(2*time.Hour), until)
	e := h.next()
	assert.Equal(t, Held, e.Kind)
	assert.Equal(t, until, e.Until)
	assert.Equal(t, "alice", e.By)
	assert.Equal(t, until, h.armed())
	st := h.k.Status()
	assert.Equal(t, until, st.HoldUntil)
	assert.Equal(t, "alice", st.HoldBy)

	h.advance(idle)
	h.quiet()
	h.advance(2*time.Hour - idle)
	e = h.next()
	assert.Equal(t, Released, e.Kind)
	assert.Empty(t, e.By, "ran out")
	assert.Equal(t, until.Add(idle), h.armed(), "the idle period starts at the hold's end")
	assert.True(t, h.k.Status().HoldUntil.IsZero())
	h.advance(idle)
	e = h.next()
	require.Equal(t, Stopping, e.Kind)
	assert.Contains(t, e.Reason, "the hold by alice ran out")
}

func TestHoldRelease(t *testing.T) {
	t.Parallel()
	h := newHarness(t, clocktest.New(t0), "", func(c *Config) { c.MaxHold = 3 * time.Hour })
	h.started()
	_, err := h.k.Hold(4*time.Hour, "alice")
	assert.ErrorContains(t, err, "maximum 3h0m0s")
	_, err = h.k.Hold(3*time.Hour, "alice")
	require.NoError(t, err)
	assert.Equal(t, Held, h.next().Kind)
	until, err := h.k.Hold(time.Hour, "carol") // replaces, shorter
	require.NoError(t, err)
	assert.Equal(t, t0.Add(time.Hour), until)
	assert.Equal(t, "carol", h.next().By)
	assert.Equal(t, until, h.armed())

	h.advance(10 * time.Minute)
	released := h.clk.Now()
	until, err = h.k.Hold(0, "bob")
	require.NoError(t, err)
	assert.True(t, until.IsZero())
	e := h.next()
	assert.Equal(t, Released, e.Kind)
	assert.Equal(t, "bob", e.By)
	assert.Equal(t, released.Add(idle), h.armed())
	_, err = h.k.Hold(0, "bob")
	require.NoError(t, err)
	h.quiet() // released once
}

// TestRequestWriteFails: a request that cannot be written is retried with
// a growing delay (never a tight loop), notified once, and goes through
// once the folder is there.
func TestRequestWriteFails(t *testing.T) {
	t.Parallel()
	// A missing folder (the RuntimeDirectory gone): a read-only one does
	// not stop root, who runs the tests here.
	missing := filepath.Join(t.TempDir(), "gone")
	h := newHarness(t, clocktest.New(t0), "", func(c *Config) { c.RequestPath = filepath.Join(missing, "poweroff") })
	h.started()
	h.advance(idle)
	assert.Equal(t, Stopping, h.next().Kind)
	e := h.next()
	require.Equal(t, RequestFailed, e.Kind)
	assert.ErrorContains(t, e.Err, "gone")
	assert.True(t, h.k.Status().Failing)

	delay := RetryMin
	for range 8 {
		assert.Equal(t, h.clk.Now().Add(delay), h.armed(), "the next try waits %s", delay)
		h.advance(delay)
		h.quiet() // notified once
		delay = min(2*delay, RetryMax)
	}
	assert.Equal(t, RetryMax, delay, "the backoff reached its cap")

	require.NoError(t, os.Mkdir(missing, 0o700))
	h.advance(delay)
	h.quiet()
	assert.True(t, h.requestExists(), "written on the next try")
	st := h.k.Status()
	assert.False(t, st.Failing)
	assert.Equal(t, h.clk.Now(), st.Requested)
}

// TestNotStopped: a host still up after its request says so once and writes
// the request again.
func TestNotStopped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, clocktest.New(t0), "", nil)
	h.started()
	h.advance(idle)
	assert.Equal(t, Stopping, h.next().Kind)
	require.True(t, h.requestExists())
	require.NoError(t, os.Remove(h.req)) // as lifeline-poweroff.service would

	h.advance(NotStoppedAfter)
	e := h.next()
	require.Equal(t, NotStopped, e.Kind)
	assert.Equal(t, t0.Add(idle), e.Requested)
	assert.Contains(t, e.String(), "still up 10m0s")
	var req Stop
	data, err := os.ReadFile(h.req)
	require.NoError(t, err, "written again")
	require.NoError(t, json.Unmarshal(data, &req))
	assert.Equal(t, h.clk.Now(), req.Time)

	h.advance(NotStoppedAfter)
	h.quiet()
}

// TestWithdraw: an operator connecting after the request was written
// withdraws it: the file goes, the stop record is undone, and the host never
// powers off while the connection is open.
func TestWithdraw(t *testing.T) {
	t.Parallel()
	h := newHarness(t, clocktest.New(t0), "", nil)
	h.started()
	h.advance(idle)
	assert.Equal(t, Stopping, h.next().Kind)
	require.True(t, h.requestExists())
	h.k.Sessions(1)
	h.settle()
	assert.False(t, h.requestExists(), "withdrawn")
	assert.Nil(t, h.readState().Stop, "the stop record is undone")
	assert.True(t, h.armed().IsZero())
	h.advance(NotStoppedAfter)
	h.quiet()

	h.k.Sessions(0)
	assert.Equal(t, h.clk.Now().Add(idle), h.armed())
	h.advance(idle)
	assert.Equal(t, Stopping, h.next().Kind, "a new idle period, a new Stopping")
}

// TestOpenOperatorsVeto: Config.OpenOperators is asked before the request;
// a connection it reports that Sessions missed cancels the power-off and
// starts a new idle period.
func TestOpenOperatorsVeto(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	open := 1
	h := newHarness(t, clocktest.New(t0), "", func(c *Config) {
		c.OpenOperators = func() int { mu.Lock(); defer mu.Unlock(); return open }
	})
	h.started()
	h.advance(idle)
	h.quiet()
	assert.False(t, h.requestExists())
	assert.Equal(t, h.clk.Now().Add(idle), h.armed())
	mu.Lock()
	open = 0
	mu.Unlock()
	h.advance(idle)
	assert.Equal(t, Stopping, h.next().Kind)
	assert.True(t, h.requestExists())
}

// TestStateCarriesOver: the next start's Started event says when and why
// the host last powered itself off; a run that did not is told apart; a
// request file left behind is removed.
func TestStateCarriesOver(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(t0)
	sdir := t.TempDir()
	h := newHarness(t, clk, sdir, nil)
	h.started()
	h.advance(idle)
	stopping := h.next()
	require.Equal(t, Stopping, stopping.Kind)
	h.stop()

	clk.Advance(6 * time.Hour) // off, then started again
	second := clk.Now()
	h2 := newHarness(t, clk, sdir, func(c *Config) { c.RequestPath = h.req })
	e := h2.started()
	require.NotNil(t, e.PrevStop)
	assert.Equal(t, t0, e.PrevStarted)
	assert.Equal(t, t0.Add(idle), e.PrevStop.Time)
	assert.Equal(t, stopping.Reason, e.PrevStop.Reason)
	assert.Equal(t, "jump host up (outage mode); it last powered itself off at 2026-03-01 12:30 UTC: "+stopping.Reason, e.String())
	assert.Equal(t, e.PrevStop, h2.k.Status().PrevStop)
	h2.settle()
	assert.False(t, h2.requestExists(), "the earlier run's request is removed")
	assert.Equal(t, state{Started: second}, h2.readState())
	h2.stop()

	// This run ended without powering off (restart, stopped by hand).
	clk.Advance(time.Minute)
	h3 := newHarness(t, clk, sdir, nil)
	e = h3.started()
	assert.Nil(t, e.PrevStop)
	assert.Equal(t, second, e.PrevStarted)
	assert.Contains(t, e.String(), "ended without powering itself off")
}

// TestCorruptState: an unreadable stop record is logged and ignored.
func TestCorruptState(t *testing.T) {
	t.Parallel()
	sdir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(sdir, StateFile), []byte("{not json"), 0o600))
	h := newHarness(t, clocktest.New(t0), sdir, nil)
	e := h.started()
	assert.Nil(t, e.PrevStop)
	assert.True(t, e.PrevStarted.IsZero())
	assert.Equal(t, t0.Add(idle), h.armed())
}

// TestOff: Idle zero does nothing: no timer, no file, no event, Hold
// refused; Run waits for its context.
func TestOff(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(t0)
	h := newHarness(t, clk, "", func(c *Config) { c.Idle = 0; c.StateDir = "" })
	h.k.AgentSeen("pi")
	h.k.MainLink("pi", false)
	h.k.AgentGone("pi")
	h.k.Sessions(0)
	_, err := h.k.Hold(time.Hour, "alice")
	assert.ErrorIs(t, err, ErrOff)
	clk.Advance(1000 * time.Hour)
	assert.Zero(t, clk.Pending())
	assert.Equal(t, Status{}, h.k.Status())
	assert.False(t, h.requestExists())
	names, err := os.ReadDir(filepath.Dir(h.req))
	require.NoError(t, err)
	assert.Empty(t, names)
	h.stop()
	select {
	case e := <-h.events:
		t.Fatalf("event with outage mode off: %s", e)
	default:
	}
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	h := newHarness(t, clocktest.New(t0), "", nil)
	h.started()
	assert.Error(t, h.k.Run(context.Background()))
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := New(Config{Idle: time.Minute, MaxHold: -1, RequestPath: "run/poweroff"})
	require.Error(t, err)
	for _, want := range []string{"no logger", "below the minimum 5m0s", "maximum hold -1ns is negative", `"run/poweroff" is not absolute`, "no state directory"} {
		assert.ErrorContains(t, err, want)
	}
	_, err = New(Config{Idle: -time.Minute, Log: slog.New(slog.DiscardHandler)})
	assert.ErrorContains(t, err, "negative")
	k, err := New(Config{Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err, "off needs nothing but a logger")
	assert.Equal(t, DefaultRequestPath, k.cfg.RequestPath)
	assert.Equal(t, DefaultMaxHold, k.cfg.MaxHold)
}

func TestParseHold(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"2h", 2 * time.Hour, ""},
		{" 90m ", 90 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"0", 0, ""},
		{"off", 0, ""},
		{"Release", 0, ""},
		{"", 0, "say for how long"},
		{"-1h", 0, "negative"},
		{"2", 0, "not a duration"},
		{"tomorrow", 0, "not a duration"},
	} {
		got, err := ParseHold(tt.in)
		if tt.err != "" {
			assert.ErrorContains(t, err, tt.err, "%q", tt.in)
			continue
		}
		if assert.NoError(t, err, "%q", tt.in) {
			assert.Equal(t, tt.want, got, "%q", tt.in)
		}
	}
}

func TestEventStrings(t *testing.T) {
	t.Parallel()
	for _, k := range []Kind{Started, Ready, Stopping, Held, Released, RequestFailed, NotStopped} {
		assert.NotContains(t, k.String(), "kind(")
		assert.NotEmpty(t, Event{Kind: k, Err: errors.New("x")}.String())
	}
	assert.Equal(t, "kind(99)", Kind(99).String())
}
