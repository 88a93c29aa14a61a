package upgrade

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
)

const (
	every = 30 * time.Second
	quiet = time.Minute
)

// connections is a hand-written stand-in for the tunnel's Activity.
type connections struct {
	clk        *clocktest.Fake
	mu         sync.Mutex
	open       int
	lastClosed time.Time
}

func (c *connections) Activity() (int, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open, c.lastClosed
}

func (c *connections) opened() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open++
}

func (c *connections) closed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
	c.lastClosed = c.clk.Now()
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// harness runs Wait on a real file in a temporary directory and a fake
// clock; the test moves time with advance.
type harness struct {
	t     *testing.T
	path  string
	clk   *clocktest.Fake
	conns *connections
	log   *logBuffer
	start time.Time
	done  chan error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, path: filepath.Join(t.TempDir(), "lifeline-agent"), log: &logBuffer{}, done: make(chan error, 1)}
	h.start = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	h.clk = clocktest.New(h.start)
	h.conns = &connections{clk: h.clk}
	if err := os.WriteFile(h.path, []byte("#!/bin/sh\necho old\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Path: h.path, Activity: h.conns.Activity, Every: every, Quiet: quiet, Clock: h.clk,
		Log: slog.New(slog.NewTextHandler(h.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { h.done <- w.Wait(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if t.Failed() {
			t.Logf("watcher log:\n%s", h.log.String())
		}
	})
	h.parked() // the first look is done: what the test changes now is seen at the next poll
	return h
}

// replace installs a new file the way dpkg does: written beside the old
// one, then renamed over it.
func (h *harness) replace(content string) {
	h.t.Helper()
	tmp := h.path + ".dpkg-new"
	if err := os.WriteFile(tmp, []byte(content), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(tmp, h.path); err != nil {
		h.t.Fatal(err)
	}
}

// parked waits until Wait sleeps on its timer (or has returned).
func (h *harness) parked() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.clk.Pending() == 0 && len(h.done) == 0 {
		if time.Now().After(deadline) {
			h.t.Fatal("the watcher never waited on its clock")
		}
		tm := time.NewTimer(time.Millisecond)
		<-tm.C
	}
}

// advance moves the clock by d once the watcher is parked, and waits for
// it to be parked again or to have returned.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.parked()
	h.clk.Advance(d)
	h.parked()
}

// restarted reports whether Wait returned nil (a restart is due); another
// result fails the test.
func (h *harness) restarted() bool {
	h.t.Helper()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Fatalf("Wait = %v, want nil", err)
		}
		h.done <- nil // keep the answer for later calls
		return true
	default:
		return false
	}
}

// elapsed is the fake time since the harness started.
func (h *harness) elapsed() time.Duration { return h.clk.Now().Sub(h.start) }

func TestChangedRestartsAfterQuiet(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.advance(every)
	if h.restarted() {
		t.Fatal("restart with nothing changed")
	}
	h.replace("#!/bin/sh\necho new\n")
	h.advance(every) // noticed at 1m
	want := "new lifeline-agent installed at " + h.path + ": restarting once no operator connection has been open for 1m0s (systemctl restart lifeline-agent restarts now)"
	if !strings.Contains(h.log.String(), want) {
		t.Fatalf("log lacks %q:\n%s", want, h.log.String())
	}
	// Nobody is connected, but the quiet period counts from when the new
	// file was noticed: the package manager has that long to finish.
	for h.elapsed() < 2*time.Minute-time.Second {
		h.advance(time.Second)
		if h.restarted() {
			t.Fatalf("restart after %s, before the quiet period since the change passed", h.elapsed())
		}
	}
	h.advance(time.Second)
	if !h.restarted() {
		t.Fatalf("no restart after %s", h.elapsed())
	}
	if strings.Count(h.log.String(), "installed at") != 1 {
		t.Errorf("the change was logged more than once:\n%s", h.log.String())
	}
	if !strings.Contains(h.log.String(), "no operator connection for 1m0s: stopping so that the new lifeline-agent starts") {
		t.Errorf("the restart is not logged:\n%s", h.log.String())
	}
}

func TestOpenConnectionKeepsWaiting(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.conns.opened()
	h.replace("new")
	for range 24 { // a day
		h.advance(time.Hour)
		if h.restarted() {
			t.Fatalf("restart after %s with an operator connected", h.elapsed())
		}
	}
	h.conns.closed()
	closed := h.clk.Now()
	for !h.restarted() {
		if h.clk.Now().Sub(closed) > quiet+every {
			t.Fatalf("no restart %s after the last connection closed", h.clk.Now().Sub(closed))
		}
		h.advance(time.Second)
	}
	if got := h.clk.Now().Sub(closed); got < quiet {
		t.Fatalf("restart %s after the last connection closed, before the quiet period %s", got, quiet)
	}
}

func TestClosingConnectionRestartsQuietPeriod(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.replace("new")
	h.advance(every) // noticed at 30s: due at 1m30s if nothing happens
	h.advance(45 * time.Second)
	// A short session at 1m15s: the quiet period starts again at its end.
	h.conns.opened()
	h.conns.closed()
	for h.elapsed() < 2*time.Minute+15*time.Second-time.Second {
		h.advance(time.Second)
		if h.restarted() {
			t.Fatalf("restart at %s, within the quiet period after the session that closed at 1m15s", h.elapsed())
		}
	}
	h.advance(time.Second)
	if !h.restarted() {
		t.Fatalf("no restart at %s, one quiet period after the last close", h.elapsed())
	}
}

func TestUnchangedFileNothingHappens(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for range 200 {
		h.advance(every)
	}
	if h.restarted() {
		t.Fatal("restart with the file unchanged")
	}
	if s := h.log.String(); s != "" {
		t.Errorf("an unchanged file was logged:\n%s", s)
	}
}

func TestVanishedFileNoRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.replace("new")
	h.advance(every) // the new file is noticed...
	if err := os.Remove(h.path); err != nil {
		t.Fatal(err)
	}
	// ...and the package removed before the quiet period ended: a restart
	// would only fail to start, again and again.
	for range 100 {
		h.advance(every)
		if h.restarted() {
			t.Fatalf("restart at %s with the executable gone", h.elapsed())
		}
	}
	if n := strings.Count(h.log.String(), h.path+" is gone (package removed?): not restarting"); n != 1 {
		t.Fatalf("the missing file was logged %d times, want once:\n%s", n, h.log.String())
	}
	// Installed again: a new file, so a restart once it is quiet.
	h.replace("reinstalled")
	h.advance(every)
	installed := h.clk.Now()
	for !h.restarted() {
		if h.clk.Now().Sub(installed) > quiet {
			t.Fatal("no restart after the package was installed again")
		}
		h.advance(time.Second)
	}
}

func TestStopsWithContext(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "lifeline-agent")
	if err := os.WriteFile(path, []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(time.Now())
	w, err := New(Config{Path: path, Activity: func() (int, time.Time) { return 1, time.Time{} }, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { done <- w.Wait(ctx) })
	t.Cleanup(wg.Wait)
	for clk.Pending() == 0 {
		tm := time.NewTimer(time.Millisecond)
		<-tm.C
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return when its context ended")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	act := func() (int, time.Time) { return 0, time.Time{} }
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "nothing", cfg: Config{}, want: []string{"no executable path", "no activity source"}},
		{name: "missing file", cfg: Config{Path: filepath.Join(t.TempDir(), "nope"), Activity: act}, want: []string{"no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.cfg)
			if err == nil {
				t.Fatal("New accepted it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestExecutableIsTheRunningFile(t *testing.T) {
	t.Parallel()
	path, running, err := Executable()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !same(fi, running) {
		t.Errorf("%s is not the file this test runs from", path)
	}
}
