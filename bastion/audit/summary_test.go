package audit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// memRecorder keeps every event it is given.
type memRecorder struct {
	mu     sync.Mutex
	events []Event
}

func (m *memRecorder) Record(e Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, e)
}

func (m *memRecorder) all() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.events)
}

func (m *memRecorder) summaries() []Event {
	var out []Event
	for _, e := range m.all() {
		if e.Count > 0 {
			out = append(out, e)
		}
	}
	return out
}

// brief is an event reduced to what the table compares.
func brief(e Event) string {
	s := e.Kind + " " + e.Source
	if e.Session != "" {
		s += " s=" + e.Session
	}
	if e.Key != "" {
		s += " k=" + e.Key
	}
	if e.Count > 0 {
		s += fmt.Sprintf(" n=%d: %s", e.Count, e.Reason)
	} else if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// TestSummarizer: what passes through in full, what is counted, and what the
// summaries at the end of the interval say.
func TestSummarizer(t *testing.T) {
	t.Parallel()
	refused := func(src, reason string) Event { return Event{Kind: KindRefused, Source: src, Reason: reason} }
	for _, tc := range []struct {
		name string
		in   []Event
		want []string
	}{
		{
			name: "other kinds pass unchanged and in order",
			in: []Event{
				{Kind: KindLogin, Key: "alice", Source: "198.51.100.7:1"},
				refused("198.51.100.7:2", "a"),
				{Kind: KindJump, Key: "alice", Source: "198.51.100.7:1"},
				refused("198.51.100.7:3", "b"),
				{Kind: KindReport, Agent: "pi", Source: "198.51.100.7:1"},
				{Kind: KindDisconnect, Key: "alice", Source: "198.51.100.7:1"},
			},
			want: []string{
				"login 198.51.100.7:1 k=alice",
				"refused 198.51.100.7:2: a",
				"jump 198.51.100.7:1 k=alice",
				"link_report 198.51.100.7:1",
				"disconnect 198.51.100.7:1 k=alice",
				"refused 198.51.100.7 n=1: 1 more refusal like this from 198.51.100.7 in 1m0s (last: b)",
			},
		},
		{
			name: "one source, many ports, v4-mapped",
			in: []Event{
				refused("198.51.100.7:1", "first"),
				refused("198.51.100.7:2", "x"),
				refused("[::ffff:198.51.100.7]:3", "y"),
				refused("198.51.100.8:1", "other host"),
			},
			want: []string{
				"refused 198.51.100.7:1: first",
				"refused 198.51.100.8:1: other host",
				"refused 198.51.100.7 n=2: 2 more refusals like this from 198.51.100.7 in 1m0s (last: y)",
			},
		},
		{
			name: "IPv6 by /64",
			in: []Event{
				refused("[2001:db8:1:2::1]:22", "a"),
				refused("[2001:db8:1:2:ffff::9]:23", "b"),
				refused("[2001:db8:1:3::1]:22", "c"),
				refused("[fe80::1%eth0]:22", "d"),
				refused("[fe80::2%eth1]:22", "e"),
			},
			want: []string{
				"refused [2001:db8:1:2::1]:22: a",
				"refused [2001:db8:1:3::1]:22: c",
				"refused [fe80::1%eth0]:22: d",
				"refused 2001:db8:1:2::/64 n=1: 1 more refusal like this from 2001:db8:1:2::/64 in 1m0s (last: b)",
				"refused fe80::/64 n=1: 1 more refusal like this from fe80::/64 in 1m0s (last: e)",
			},
		},
		{
			name: "per kind",
			in: []Event{
				{Kind: KindAuthFailed, Source: "203.0.113.9:1", User: "root", Reason: "no such key"},
				{Kind: KindAuthFailed, Source: "203.0.113.9:2", User: "admin", Reason: "no such key"},
				{Kind: KindBanned, Source: "203.0.113.9:3", Reason: "repeated authentication failures"},
				refused("203.0.113.9:4", "banned"),
				refused("203.0.113.9:5", "banned"),
				{Kind: KindBanned, Source: "203.0.113.9:6", Reason: "again"},
			},
			want: []string{
				"auth_failed 203.0.113.9:1: no such key",
				"banned 203.0.113.9:3: repeated authentication failures",
				"refused 203.0.113.9:4: banned",
				"auth_failed 203.0.113.9 n=1: 1 more failed login like this from 203.0.113.9 in 1m0s (last: no such key)",
				"banned 203.0.113.9 n=1: 1 more ban like this from 203.0.113.9 in 1m0s (last: again)",
				"refused 203.0.113.9 n=1: 1 more refusal like this from 203.0.113.9 in 1m0s (last: banned)",
			},
		},
		{
			name: "per session",
			in: []Event{
				{Kind: KindRefused, Session: "s1", Key: "alice", Source: "198.51.100.7:1", Reason: "shell: this is a jump host"},
				{Kind: KindRefused, Session: "s2", Key: "bob", Source: "198.51.100.7:2", Reason: "shell: this is a jump host"},
				{Kind: KindRefused, Session: "s1", Key: "alice", Source: "198.51.100.7:1", Reason: "exec \"ls\""},
				{Kind: KindRefused, Session: "s1", Key: "alice", Source: "198.51.100.7:1", Reason: "exec \"id\""},
				refused("198.51.100.7:3", "not a session"),
			},
			want: []string{
				"refused 198.51.100.7:1 s=s1 k=alice: shell: this is a jump host",
				"refused 198.51.100.7:2 s=s2 k=bob: shell: this is a jump host",
				"refused 198.51.100.7:3: not a session",
				"refused 198.51.100.7 s=s1 k=alice n=2: 2 more refusals like this in session s1 from 198.51.100.7 in 1m0s (last: exec \"id\")",
			},
		},
		{
			name: "odd sources",
			in: []Event{
				refused("", "no source"),
				refused("", "still none"),
				refused("pipe", "not an address"),
				refused("pipe", ""),
				refused("192.0.2.1", "no port"),
				refused("192.0.2.1:9", ""),
			},
			want: []string{
				"refused : no source",
				"refused pipe: not an address",
				"refused 192.0.2.1: no port",
				"refused  n=1: 1 more refusal like this from an unknown source in 1m0s (last: still none)",
				"refused pipe n=1: 1 more refusal like this from pipe in 1m0s",
				"refused 192.0.2.1 n=1: 1 more refusal like this from 192.0.2.1 in 1m0s",
			},
		},
		{
			name: "summaries pass through",
			in: []Event{
				refused("192.0.2.1:1", "a"),
				{Kind: KindRefused, Source: "192.0.2.1", Count: 7, Reason: "from elsewhere"},
			},
			want: []string{
				"refused 192.0.2.1:1: a",
				"refused 192.0.2.1 n=7: from elsewhere",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := clocktest.New(day0)
			var out memRecorder
			s := NewSummarizer(&out, SummaryOptions{Clock: clk})
			for _, e := range tc.in {
				s.Record(e)
			}
			clk.Advance(time.Minute)
			s.Flush()
			s.Flush() // nothing left: writes nothing
			var got []string
			for _, e := range out.all() {
				got = append(got, brief(e))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(tc.want, "\n\t"))
			}
			for _, e := range out.summaries() {
				if e.Reason == "from elsewhere" {
					continue // not written by this Summarizer
				}
				if !e.Time.Equal(clk.Now()) || e.DurationMS != time.Minute.Milliseconds() {
					t.Errorf("summary at %s over %d ms", e.Time, e.DurationMS)
				}
			}
		})
	}
}

// TestSummarizerLastReasonCut: the reason quoted from the last event is at
// most 200 bytes.
func TestSummarizerLastReasonCut(t *testing.T) {
	t.Parallel()
	var out memRecorder
	s := NewSummarizer(&out, SummaryOptions{Clock: clocktest.New(day0)})
	long := strings.Repeat("r", 5000)
	s.Record(Event{Kind: KindRefused, Source: "192.0.2.1:1", Reason: long})
	s.Record(Event{Kind: KindRefused, Source: "192.0.2.1:1", Reason: long})
	s.Flush()
	sum := out.summaries()
	if len(sum) != 1 {
		t.Fatalf("%d summaries", len(sum))
	}
	_, last, _ := strings.Cut(sum[0].Reason, "(last: ")
	if len(last) > lastReasonBytes+1 || !strings.HasSuffix(last, "…)") {
		t.Errorf("last reason quoted with %d bytes: %q", len(last), sum[0].Reason)
	}
}

// TestSummarizerBoundedKeys: past MaxKeys sources, events are counted in one
// bucket per kind, and the sources in it are counted exactly up to MaxKeys.
func TestSummarizerBoundedKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		maxKeys int
		sources int
		want    []string
	}{
		{
			name: "under the limit", maxKeys: 10, sources: 3,
			want: []string{
				"refused 10.0.0.0 n=1: 1 more refusal like this from 10.0.0.0 in 1m0s (last: second from 10.0.0.0)",
				"refused 10.0.0.1 n=1: 1 more refusal like this from 10.0.0.1 in 1m0s (last: second from 10.0.0.1)",
				"refused 10.0.0.2 n=1: 1 more refusal like this from 10.0.0.2 in 1m0s (last: second from 10.0.0.2)",
			},
		},
		{
			name: "over the limit", maxKeys: 3, sources: 6,
			want: []string{
				"refused 10.0.0.0 n=1: 1 more refusal like this from 10.0.0.0 in 1m0s (last: second from 10.0.0.0)",
				"refused 10.0.0.1 n=1: 1 more refusal like this from 10.0.0.1 in 1m0s (last: second from 10.0.0.1)",
				"refused 10.0.0.2 n=1: 1 more refusal like this from 10.0.0.2 in 1m0s (last: second from 10.0.0.2)",
				"refused  n=6: 6 refusals from 3 other sources in 1m0s (past the limit of 3 sources tracked one by one; last: second from 10.0.0.5)",
			},
		},
		{
			name: "far over the limit", maxKeys: 2, sources: 10,
			want: []string{
				"refused 10.0.0.0 n=1: 1 more refusal like this from 10.0.0.0 in 1m0s (last: second from 10.0.0.0)",
				"refused 10.0.0.1 n=1: 1 more refusal like this from 10.0.0.1 in 1m0s (last: second from 10.0.0.1)",
				"refused  n=16: 16 refusals from more than 2 other sources in 1m0s (past the limit of 2 sources tracked one by one; last: second from 10.0.0.9)",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := clocktest.New(day0)
			var out memRecorder
			s := NewSummarizer(&out, SummaryOptions{Clock: clk, MaxKeys: tc.maxKeys})
			for _, round := range []string{"first", "second"} {
				for i := range tc.sources {
					s.Record(Event{Kind: KindRefused, Source: fmt.Sprintf("10.0.0.%d:%d", i, 1000+i), Reason: round + " from 10.0.0." + fmt.Sprint(i)})
				}
			}
			s.mu.Lock()
			tracked, seen := len(s.tallies), len(s.otherSeen)
			s.mu.Unlock()
			if tracked > tc.maxKeys || seen > tc.maxKeys {
				t.Errorf("tracking %d + %d keys, over %d", tracked, seen, tc.maxKeys)
			}
			clk.Advance(time.Minute)
			s.Flush()
			all := out.all()
			if full := len(all) - len(out.summaries()); full != min(tc.sources, tc.maxKeys) {
				t.Errorf("%d events passed in full, want one per tracked source", full)
			}
			var got []string
			var total int64
			for _, e := range all {
				total += max(e.Count, 1)
				if e.Count > 0 {
					got = append(got, brief(e))
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(tc.want, "\n\t"))
			}
			if total != int64(2*tc.sources) {
				t.Errorf("events and counts add up to %d, want %d", total, 2*tc.sources)
			}
		})
	}
}

// TestSummarizerRun: Run writes the summaries at the end of each interval,
// starts a new one (the next event from a source passes in full again), and
// writes what is left when its context ends; Flush after that catches events
// recorded later.
func TestSummarizerRun(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(day0)
	var out memRecorder
	s := NewSummarizer(&out, SummaryOptions{Clock: clk, Interval: 30 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		runErr = s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	flood := func(n int, reason string) {
		for range n {
			s.Record(Event{Kind: KindAuthFailed, Source: "198.51.100.7:40000", Reason: reason})
		}
	}

	sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "Run waits on its timer")
	flood(5, "one")
	if n := len(out.all()); n != 1 {
		t.Fatalf("%d events before the interval ended, want the first only", n)
	}
	clk.Advance(30 * time.Second)
	sshtest.Eventually(t, 10*time.Second, func() bool { return len(out.summaries()) == 1 }, "first summary")
	if e := out.summaries()[0]; e.Count != 4 || e.Reason != "4 more failed logins like this from 198.51.100.7 in 30s (last: one)" {
		t.Errorf("first summary: %+v", e)
	}

	sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "Run waits on its next timer")
	clk.Advance(10 * time.Second)
	flood(3, "two")
	if n := len(out.all()); n != 3 {
		t.Fatalf("%d events; want the first of the new interval in full", n)
	}
	clk.Advance(5 * time.Second)
	cancel()
	<-finished
	if runErr != nil {
		t.Fatalf("Run: %v", runErr)
	}
	sums := out.summaries()
	if len(sums) != 2 || sums[1].Count != 2 || sums[1].Reason != "2 more failed logins like this from 198.51.100.7 in 5s (last: two)" {
		t.Fatalf("summaries after Run ended: %+v", sums)
	}

	// After Run: counted still, written by Flush at shutdown.
	flood(4, "three")
	s.Flush()
	all := out.all()
	if last := all[len(all)-1]; len(all) != 6 || last.Count != 3 || !strings.HasSuffix(last.Reason, "(last: three)") {
		t.Fatalf("after Flush: %d events, last %+v", len(all), last)
	}
	var total int64
	for _, e := range all {
		total += max(e.Count, 1)
	}
	if total != 12 {
		t.Errorf("events and counts add up to %d, want 12", total)
	}
}

// TestSummarizerConcurrent: under concurrent Records and Flushes no event is
// lost and no count is counted twice.
func TestSummarizerConcurrent(t *testing.T) {
	t.Parallel()
	var out memRecorder
	s := NewSummarizer(&out, SummaryOptions{Clock: clocktest.New(day0), MaxKeys: 50})
	var wg sync.WaitGroup
	const writers, each = 8, 5000
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				s.Record(Event{Kind: KindRefused, Source: fmt.Sprintf("10.%d.0.%d:1", w, i%20)})
				if i%1000 == 0 {
					s.Flush()
				}
			}
		}()
	}
	wg.Wait()
	s.Flush()
	var total int64
	for _, e := range out.all() {
		total += max(e.Count, 1)
	}
	if total != writers*each {
		t.Errorf("events and counts add up to %d, want %d", total, writers*each)
	}
}

func TestSourceGroup(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"198.51.100.7:22":               "198.51.100.7",
		"198.51.100.7":                  "198.51.100.7",
		"[::ffff:198.51.100.7]:22":      "198.51.100.7",
		"::ffff:198.51.100.7":           "198.51.100.7",
		"[2001:db8:a:b:c:d:e:f]:22":     "2001:db8:a:b::/64",
		"[2001:db8:a:b::1%eth0]:22":     "2001:db8:a:b::/64",
		"2001:db8::1":                   "2001:db8::/64",
		"":                              "",
		"not-an-address":                "not-an-address",
		strings.Repeat("h", 100) + ":1": strings.Repeat("h", 61) + "…",
	} {
		if got := sourceGroup(in); got != want {
			t.Errorf("sourceGroup(%q) = %q, want %q", in, got, want)
		}
	}
}
