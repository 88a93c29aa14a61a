package mainwatch

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/report"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

const wait = 20 * time.Second // for conditions; never slept

// closedPort is a 127.0.0.1 port nothing listens on (UDP and TCP).
func closedPort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	return port
}

// tcpTarget listens on 127.0.0.1 (the kernel completes handshakes; nothing
// needs accepting) until the test ends.
func tcpTarget(t *testing.T) Target {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return Target{Kind: TCP, Addr: l.Addr().(*net.TCPAddr).AddrPort()}
}

// probeOnce probes tg with a fake clock; if advance, it waits until the
// probe is parked on its deadline and, once ready says so, moves the clock
// past it.
func probeOnce(t *testing.T, tg Target, advance bool, ready func() bool) Result {
	t.Helper()
	clk := clocktest.New(t0)
	w, err := New(Config{Targets: []Target{tg}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	p := &prober{w: w, buf: make([]byte, maxDatagram)}
	done := make(chan Result, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r, err := p.probe(context.Background(), tg)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	t.Cleanup(wg.Wait)
	if advance {
		sshtest.Eventually(t, wait, func() bool { return clk.Pending() == 1 && (ready == nil || ready()) }, "the probe to wait")
		clk.Advance(DefaultTimeout)
	}
	select {
	case r := <-done:
		if clk.Pending() != 0 {
			t.Errorf("%d timers left by the probe", clk.Pending())
		}
		return r
	case <-time.After(wait):
		t.Fatal("the probe outlived its deadline")
		return Result{}
	}
}

// TestProbeDNS: what a DNS probe makes of each kind of reply.
func TestProbeDNS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode   mode
		ok     bool
		code   string
		reason string
		ignore bool // the reply is ignored: only the deadline ends the probe
	}{
		{mode: answer, ok: true},
		{mode: nxdomain, ok: true},
		{mode: servfail, code: report.CodeMainDNSServfail, reason: "SERVFAIL"},
		{mode: refused, code: report.CodeMainDNSRefused, reason: "REFUSED"},
		{mode: formerr, code: report.CodeMainDNSError, reason: "DNS answer FORMATERROR"},
		{mode: silent, ignore: true},
		{mode: garbage, ignore: true},
		{mode: wrongID, ignore: true},
		{mode: wrongIDAndGood, ok: true},
		{mode: wrongQuestion, ignore: true},
		{mode: truncated, ignore: true},
		{mode: notResponse, ignore: true},
		{mode: spoofed, ignore: true},
		{mode: huge, ignore: true},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSpace(modeName[tc.mode]), func(t *testing.T) {
			t.Parallel()
			rs := newResponder(t, tc.mode)
			var ready func() bool
			if tc.ignore {
				want := int64(1)
				switch tc.mode {
				case silent:
					want = 0
				case huge:
					want = hugeCount
				}
				ready = func() bool { return rs.queries.Load() == 1 && rs.sent.Load() >= want }
			}
			r := probeOnce(t, rs.target(), tc.ignore, ready)
			if tc.ignore {
				tc.code, tc.reason = report.CodeMainUnreachable, rs.target().String()+": no answer within 3s"
			}
			if r.OK != tc.ok || r.Code != tc.code || !strings.Contains(r.Reason, tc.reason) || r.Target != rs.target() {
				t.Errorf("probe = %+v, want ok %v, code %q, reason with %q", r, tc.ok, tc.code, tc.reason)
			}
			if rs.queries.Load() != 1 {
				t.Errorf("%d queries, want 1", rs.queries.Load())
			}
			if r.Bytes < 28+36 {
				t.Errorf("%d bytes counted", r.Bytes)
			}
			if tc.mode == huge && r.Bytes < 60000 {
				t.Errorf("a huge reply counted as %d bytes", r.Bytes)
			}
		})
	}
}

var modeName = map[mode]string{answer: "answer", nxdomain: "nxdomain", servfail: "servfail", refused: "refused", formerr: "formerr",
	silent: "silent", garbage: "garbage", wrongID: "wrong ID", wrongIDAndGood: "wrong ID then good", wrongQuestion: "wrong question",
	truncated: "truncated", notResponse: "not a response", spoofed: "spoofed source port", huge: "huge"}

// TestProbeRealClock: with the real clock, a probe of a responder that never
// answers, or floods garbage, ends at its deadline.
func TestProbeRealClock(t *testing.T) {
	t.Parallel()
	for _, m := range []mode{silent, huge} {
		rs := newResponder(t, m)
		w, err := New(Config{Targets: []Target{rs.target()}, Timeout: 200 * time.Millisecond, Clock: clock.Real{}})
		if err != nil {
			t.Fatal(err)
		}
		p := &prober{w: w, buf: make([]byte, maxDatagram)}
		start := time.Now()
		r, err := p.probe(context.Background(), rs.target())
		if err != nil || r.OK || !strings.Contains(r.Reason, "no answer within 200ms") {
			t.Errorf("%s: %+v, %v", modeName[m], r, err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: a 200ms probe took %s", modeName[m], took)
		}
	}
}

func TestProbeDNSPortClosed(t *testing.T) {
	t.Parallel()
	tg := Target{Kind: DNS}
	tg.Addr = netipAddrPort(closedPort(t))
	r := probeOnce(t, tg, false, nil)
	if r.OK || r.Code != report.CodeMainUnreachable || !strings.Contains(r.Reason, "port unreachable") {
		t.Errorf("probe of a closed port = %+v", r)
	}
}

// TestProbeTCP: a completed handshake is up (and costs what the estimate
// says); a refused connection is a failure.
func TestProbeTCP(t *testing.T) {
	t.Parallel()
	r := probeOnce(t, tcpTarget(t), false, nil)
	if !r.OK || r.Bytes != 2*60+5*52 {
		t.Errorf("probe of a listener = %+v", r)
	}
	tg := Target{Kind: TCP, Addr: netipAddrPort(closedPort(t))}
	r = probeOnce(t, tg, false, nil)
	if r.OK || r.Code != report.CodeMainTCPRefused || !strings.Contains(r.Reason, tg.String()+": connection refused") || r.Bytes != 100 {
		t.Errorf("probe of a closed port = %+v", r)
	}
}

// harness runs a Watcher on a fake clock and records its events.
type harness struct {
	t   *testing.T
	clk *clocktest.Fake
	w   *Watcher
	mu  sync.Mutex
	evs []Event
}

func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, clk: clocktest.New(t0)}
	cfg.Clock = h.clk
	cfg.OnEvent = func(_ context.Context, e Event) {
		h.mu.Lock()
		h.evs = append(h.evs, e)
		h.mu.Unlock()
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := w.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return h
}

func (h *harness) events() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.evs...)
}

// round runs round n (from 0) of a watch whose rounds are Every apart:
// moves the clock to its start, moves it past the deadline of each of the
// first timeouts probes (which must be left unanswered), and waits until
// the round is judged and Run waits for the next.
func (h *harness) round(n, timeouts int) {
	h.t.Helper()
	// Run is parked (or has not begun): every probe begun is judged.
	begun := h.w.Status().Probes
	if d := t0.Add(time.Duration(n) * h.w.every).Sub(h.clk.Now()); d > 0 {
		h.clk.Advance(d)
	}
	for i := range int64(timeouts) {
		sshtest.Eventually(h.t, wait, func() bool { return h.w.started.Load() == begun+i+1 && h.clk.Pending() == 1 }, "probe %d of round %d to wait", begun+i+1, n)
		h.clk.Advance(h.w.timeout)
	}
	h.judged(n)
}

// roundParked is round for targets that fail at once and silent ones: for
// each parked in turn, it waits until it says the probe is parked (a
// responder got its query), then moves the clock past the deadline.
func (h *harness) roundParked(n int, parked ...func() bool) {
	h.t.Helper()
	h.clk.Advance(t0.Add(time.Duration(n) * h.w.every).Sub(h.clk.Now()))
	for i, p := range parked {
		sshtest.Eventually(h.t, wait, func() bool { return p() && h.clk.Pending() == 1 }, "silent target %d of round %d to be asked", i, n)
		h.clk.Advance(h.w.timeout)
	}
	h.judged(n)
}

// judged waits until round n is judged and Run waits for the next.
func (h *harness) judged(n int) {
	h.t.Helper()
	sshtest.Eventually(h.t, wait, func() bool { return h.w.Status().Rounds == int64(n+1) && h.clk.Pending() == 1 }, "round %d to end", n)
}

// TestDownExactlyAfterDownAfter: failing from the start, the link is down
// after exactly DownAfter (not a round before), with one Down; back after
// UpAfter good rounds, with one Up that has the outage.
func TestDownExactlyAfterDownAfter(t *testing.T) {
	t.Parallel()
	rs := newResponder(t, servfail)
	h := start(t, Config{Targets: []Target{rs.target()}})
	last := int(DefaultDownAfter / DefaultEvery) // round 10 starts at 5m
	for n := 0; n < last; n++ {
		h.round(n, 0)
		if ev := h.events(); len(ev) != 0 {
			t.Fatalf("round %d at %s: events %v before DownAfter", n, h.clk.Now().Sub(t0), ev)
		}
	}
	if st := h.w.Status(); st.State != StateUnknown || !st.FailingSince.Equal(t0) || st.LastCode != report.CodeMainDNSServfail {
		t.Errorf("status before DownAfter %+v", st)
	}
	h.round(last, 0)
	want := Down{Since: t0, At: t0.Add(DefaultDownAfter), Reason: rs.target().String() + ": DNS answer SERVFAIL (a forwarder whose upstream is gone answers so)", Code: report.CodeMainDNSServfail}
	if ev := h.events(); len(ev) != 1 || ev[0] != want {
		t.Fatalf("events %v, want %v", ev, want)
	}
	for n := last + 1; n < last+4; n++ {
		h.round(n, 0)
	}
	rs.set(answer)
	back := last + 4
	h.round(back, 0)
	if st := h.w.Status(); st.State != StateDown || !st.Since.Equal(t0) || !st.LastOK || st.Answered != rs.target() {
		t.Errorf("after one good round %+v", st)
	}
	h.round(back+1, 0)
	backAt := t0.Add(time.Duration(back) * DefaultEvery)
	wantUp := Up{Since: t0, Back: backAt, Outage: backAt.Sub(t0)}
	if ev := h.events(); len(ev) != 2 || ev[1] != wantUp {
		t.Fatalf("events %v, want Down then %v", ev, wantUp)
	}
	for n := back + 2; n < back+5; n++ {
		h.round(n, 0)
	}
	if len(h.events()) != 2 {
		t.Errorf("events after the link is up: %v", h.events())
	}
	st := h.w.Status()
	if st.State != StateUp || !st.Since.Equal(backAt) || st.Rounds != int64(back+5) || st.Probes != st.Rounds {
		t.Errorf("status %+v", st)
	}
	// The events make valid main-link reports, of version 2.
	for _, e := range h.events() {
		b, err := report.Encode(e.Report())
		if err != nil || !strings.Contains(string(b), `"v":2,`) || !strings.Contains(string(b), `"link":"main"`) {
			t.Errorf("%T report %s, %v", e, b, err)
		}
	}
}

// TestFlappingSendsNothing: runs of failures shorter than DownAfter, broken
// by good rounds, never make an event; nor does the start (no "back").
func TestFlappingSendsNothing(t *testing.T) {
	t.Parallel()
	rs := newResponder(t, answer)
	h := start(t, Config{Targets: []Target{rs.target()}})
	h.round(0, 0)
	h.round(1, 0)
	if st := h.w.Status(); st.State != StateUp || !st.Since.Equal(t0) {
		t.Fatalf("status after two good rounds %+v", st)
	}
	n := 2
	for range 3 {
		rs.set(silent)
		for range int(DefaultDownAfter/DefaultEvery) - 0 { // 10 failed rounds: 4m30s from the first
			h.round(n, 1)
			n++
		}
		rs.set(answer)
		h.round(n, 0)
		n++
	}
	if ev := h.events(); len(ev) != 0 {
		t.Errorf("flapping made events %v", ev)
	}
	if st := h.w.Status(); st.State != StateUp || !st.FailingSince.IsZero() {
		t.Errorf("status %+v", st)
	}
}

// TestDownAtStart: a link that never answers, from the start, is reported
// down after DownAfter; probes end at their deadlines.
func TestDownAtStart(t *testing.T) {
	t.Parallel()
	rs := newResponder(t, silent)
	h := start(t, Config{Targets: []Target{rs.target()}, DownAfter: time.Minute})
	h.round(0, 1)
	h.round(1, 1)
	if len(h.events()) != 0 {
		t.Fatal("down before DownAfter")
	}
	h.round(2, 1)
	ev := h.events()
	if len(ev) != 1 {
		t.Fatalf("events %v", ev)
	}
	d := ev[0].(Down)
	if !d.Since.Equal(t0) || d.Code != report.CodeMainUnreachable || d.Reason != rs.target().String()+": no answer within 3s" {
		t.Errorf("down %+v", d)
	}
}

// TestFallback: the first target failing and the second answering is up,
// two probes; the first answering costs one probe, the others none.
func TestFallback(t *testing.T) {
	t.Parallel()
	first, second, third := newResponder(t, silent), newResponder(t, answer), newResponder(t, answer)
	closed := Target{Kind: TCP, Addr: netipAddrPort(closedPort(t))}
	h := start(t, Config{Targets: []Target{first.target(), closed, second.target(), third.target()}})
	h.round(0, 1)
	h.round(1, 1)
	st := h.w.Status()
	if st.State != StateUp || st.Answered != second.target() || st.Probes != 6 || third.queries.Load() != 0 {
		t.Errorf("status %+v, third target asked %d times", st, third.queries.Load())
	}
	first.set(answer)
	h.round(2, 0)
	if st := h.w.Status(); st.Probes != 7 || st.Answered != first.target() || second.queries.Load() != 2 {
		t.Errorf("status %+v", st)
	}
	// A round fails only when all fail; the code is the most telling.
	first.set(silent)
	second.set(servfail)
	third.set(silent)
	q1, q3 := first.queries.Load(), third.queries.Load()
	h.roundParked(3, func() bool { return first.queries.Load() == q1+1 }, func() bool { return third.queries.Load() == q3+1 })
	st = h.w.Status()
	if st.LastOK || st.LastCode != report.CodeMainDNSServfail || strings.Count(st.LastReason, "; ") != 3 || !strings.Contains(st.LastReason, closed.String()+": connection refused") {
		t.Errorf("status %+v", st)
	}
	if len(h.events()) != 0 {
		t.Errorf("events %v", h.events())
	}
}

// TestHealthyDayBytes: what a healthy day costs with the defaults (the
// first default target answers every round), from the probes' own counters.
func TestHealthyDayBytes(t *testing.T) {
	t.Parallel()
	rs := newResponder(t, answer)
	h := start(t, Config{Targets: []Target{rs.target()}})
	const rounds = 20
	for n := range rounds {
		h.round(n, 0)
	}
	st := h.w.Status()
	perRound := float64(st.Bytes) / float64(st.Rounds)
	perDay := perRound * float64(24*time.Hour/DefaultEvery)
	t.Logf("healthy day with the defaults: %.0f bytes per round (one DNS query and its answer), %.0f rounds/day, %.0f bytes/day (%.2f MB)",
		perRound, float64(24*time.Hour/DefaultEvery), perDay, perDay/1e6)
	if perDay >= 1e6 {
		t.Errorf("a healthy day costs %.0f bytes: over 1 MB", perDay)
	}
	// For comparison: a TCP target first.
	h2 := start(t, Config{Targets: []Target{tcpTarget(t)}})
	for n := range rounds {
		h2.round(n, 0)
	}
	st = h2.w.Status()
	t.Logf("with a TCP target first: %.0f bytes per round, %.0f bytes/day", float64(st.Bytes)/rounds, float64(st.Bytes)/rounds*float64(24*time.Hour/DefaultEvery))
}

// TestRunEnds: Run returns when ctx ends, during a probe or between rounds,
// and leaves no timer behind.
func TestRunEnds(t *testing.T) {
	t.Parallel()
	rs := newResponder(t, silent)
	for _, during := range []bool{true, false} {
		clk := clocktest.New(t0)
		w, err := New(Config{Targets: []Target{rs.target()}, Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		sshtest.Eventually(t, wait, func() bool { return w.started.Load() == 1 && clk.Pending() == 1 }, "the probe")
		if !during {
			clk.Advance(DefaultTimeout)
			sshtest.Eventually(t, wait, func() bool { return w.Status().Rounds == 1 && clk.Pending() == 1 }, "the round")
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(wait):
			t.Fatal("Run did not return")
		}
		if clk.Pending() != 0 {
			t.Errorf("%d timers left", clk.Pending())
		}
		if err := w.Run(context.Background()); err == nil {
			t.Error("a second Run ran")
		}
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := New(Config{Every: -1, DownAfter: -1, UpAfter: -1, Timeout: -1, Targets: []Target{{Kind: 9}}})
	for _, want := range []string{"not valid", "LIFELINE_MAIN_EVERY", "LIFELINE_MAIN_DOWN_AFTER", "up after", "timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "no targets") {
		t.Errorf("no targets: %v", err)
	}
	ts, _ := ParseTargets(DefaultTargets)
	w, err := New(Config{Targets: ts, Every: time.Second})
	if err != nil || w.timeout != time.Second || w.downAfter != DefaultDownAfter || w.upAfter != DefaultUpAfter {
		t.Errorf("defaults: %+v, %v", w, err)
	}
}

// Reports of events carry codes and pass report validation, whatever the
// reason holds.
func TestEventReports(t *testing.T) {
	t.Parallel()
	d := Down{Since: t0, At: t0.Add(5 * time.Minute), Reason: "a\nb" + strings.Repeat("é", 400), Code: report.CodeMainUnreachable}
	r := d.Report()
	if _, err := report.Encode(r); err != nil || r.Codes[0] != report.CodeMainUnreachable || len(r.Reasons[0]) > 512 {
		t.Errorf("down report %+v: %v", r, err)
	}
	u := Up{Since: t0, Back: t0.Add(time.Hour), Outage: time.Hour}
	ur := u.Report()
	if s := ur.Summary(); s != "main link back at 2026-11-22T11:00:00Z after 1h0m0s (down since 2026-11-22T10:00:00Z)" {
		t.Errorf("up summary %q", s)
	}
}
