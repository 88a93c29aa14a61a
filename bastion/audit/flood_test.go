package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// floodSource returns the source of the i-th refused connection of a flood
// from 300 sources that are 200 addresses: 100 IPv4 hosts (also seen
// v4-mapped) and 100 IPv6 /64s, each from many ports and interface ids.
func floodSource(i int) string {
	port := 1024 + i%60000
	switch h := i % 300; {
	case h < 100:
		return fmt.Sprintf("198.51.100.%d:%d", h, port)
	case h < 200:
		return fmt.Sprintf("[::ffff:198.51.100.%d]:%d", h-100, port)
	default:
		return fmt.Sprintf("[2001:db8:0:%x::%x]:%d", h-200, i%65536, port)
	}
}

// TestFloodKeepsLogin: a million refused connections after one login, through
// a Summarizer, write a few hundred lines, and the login stays in
// access.jsonl.
func TestFloodKeepsLogin(t *testing.T) {
	t.Parallel()
	dir := stateDir(t)
	clk := clocktest.New(day0)
	var errs errorList
	l, err := OpenWith(Options{Path: filepath.Join(dir, "audit.jsonl"), Clock: clk, OnError: errs.onError, OnWarn: errs.onWarn})
	if err != nil {
		t.Fatal(err)
	}
	s := NewSummarizer(l, SummaryOptions{Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})

	login := Event{Kind: KindLogin, Session: "c0ffee", Role: "operator", Key: "alice@laptop", Source: "192.0.2.10:50000", Reason: "authorized by operators:1"}
	s.Record(login)
	fi, err := os.Stat(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	before := fi.Size()

	const n = 1_000_000
	sources := make([]string, 6000) // a multiple of the 300 sources of floodSource
	for i := range sources {
		sources[i] = floodSource(i)
	}
	sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "Run waits on its timer")
	for i := range n {
		if i == n/2 { // one interval ends mid-flood
			clk.Advance(SummaryInterval)
			sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "Run waits on its next timer")
		}
		s.Record(Event{Kind: KindRefused, Source: sources[i%len(sources)], Reason: "more than 64 connections pending authentication"})
	}
	clk.Advance(20 * time.Second)
	cancel()
	<-finished
	s.Flush() // after the server stopped: nothing left, but the daemon must call it
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	fi, err = os.Stat(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	events := readEvents(t, filepath.Join(dir, "audit.jsonl"))
	flood := fi.Size() - before
	t.Logf("%d refused connections wrote %d bytes in %d lines", n, flood, len(events)-1)
	// 200 addresses, two intervals: one line in full and one summary each.
	if len(events)-1 > 800 || flood > 200<<10 {
		t.Errorf("the flood wrote %d bytes in %d lines; want a few hundred lines", flood, len(events)-1)
	}
	if events[0].Kind != KindLogin || events[0].Key != login.Key {
		t.Errorf("audit.jsonl starts with %+v", events[0])
	}
	var total, summaries int64
	for _, e := range events[1:] {
		if e.Kind != KindRefused {
			t.Fatalf("unexpected %+v", e)
		}
		total += max(e.Count, 1)
		if e.Count == 0 {
			continue
		}
		summaries++
		if strings.Contains(e.Source, "]:") || strings.Count(e.Source, ":") == 1 || strings.HasPrefix(e.Source, "::ffff:") {
			t.Errorf("summary source %q has a port or is v4-mapped", e.Source)
		}
		if !strings.Contains(e.Reason, "more refusals like this from "+e.Source) || !strings.Contains(e.Reason, "(last: more than 64 connections") {
			t.Errorf("summary reason %q", e.Reason)
		}
	}
	if total != n {
		t.Errorf("full events and counts add up to %d, want %d", total, n)
	}
	if summaries != 400 {
		t.Errorf("%d summaries, want 400 (200 addresses, two intervals)", summaries)
	}
	acc := readEvents(t, filepath.Join(dir, AccessFile))
	if len(acc) != 1 || acc[0].Kind != KindLogin || acc[0].Key != login.Key || acc[0].Session != login.Session {
		t.Errorf("access.jsonl holds %+v; want the login alone", acc)
	}
	if e := errs.list(); len(e) != 0 {
		t.Errorf("errors reported: %q", e)
	}
}

// TestUnsummarisedFloodCannotFlushAccess: even refusals written one by one,
// which push the login out of every audit.jsonl file, leave access.jsonl
// alone.
func TestUnsummarisedFloodCannotFlushAccess(t *testing.T) {
	t.Parallel()
	dir := stateDir(t)
	l, err := OpenWith(Options{Path: filepath.Join(dir, "audit.jsonl"), MaxBytes: 8 << 10, Clock: clocktest.New(day0),
		OnError: func(err error) { t.Errorf("audit error: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Kind: KindJump, Key: "alice@laptop", Target: "pi:22", Source: "192.0.2.10:50000"})
	for i := range 5000 {
		l.Record(Event{Kind: KindRefused, Source: floodSource(i), Reason: "more than 64 connections pending authentication"})
	}
	l.Close()
	for _, name := range []string{"audit.jsonl", "audit.jsonl.1", "audit.jsonl.5"} {
		for _, e := range readEvents(t, filepath.Join(dir, name)) {
			if e.Kind == KindJump {
				t.Fatalf("the jump is still in %s: the flood did not flush audit.jsonl", name)
			}
		}
	}
	acc := readEvents(t, filepath.Join(dir, AccessFile))
	if len(acc) != 1 || acc[0].Kind != KindJump || acc[0].Target != "pi:22" {
		t.Errorf("access.jsonl holds %+v; want the jump alone", acc)
	}
}
