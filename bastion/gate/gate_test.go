package gate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/ban"
)

func TestNewDefaultsAndValidation(t *testing.T) {
	t.Parallel()
	g, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	got := g.cfg
	want := Config{
		MaxPending: 64, MaxPendingPerSource: 4, HelloTimeout: 5 * time.Second, LoginGrace: 20 * time.Second,
		ThrottleAfter: 20, ThrottleWindow: time.Minute, ThrottleFor: 5 * time.Minute, TrustFor: 24 * time.Hour,
	}
	got.Clock, got.Exempt = nil, nil
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("defaults = %+v\nwant       %+v", got, want)
	}

	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // every one must appear in the error
	}{
		{"negative caps", Config{MaxPending: -1, MaxPendingPerSource: -2}, []string{"LIFELINE_MAX_PENDING: -1", "LIFELINE_MAX_PENDING_PER_SOURCE: -2"}},
		{"per source above global", Config{MaxPending: 8, MaxPendingPerSource: 9}, []string{"LIFELINE_MAX_PENDING_PER_SOURCE: 9 exceeds LIFELINE_MAX_PENDING (8)"}},
		{"per source above default global", Config{MaxPendingPerSource: 65}, []string{"LIFELINE_MAX_PENDING_PER_SOURCE: 65 exceeds LIFELINE_MAX_PENDING (64)"}},
		{"hello above grace", Config{HelloTimeout: 30 * time.Second}, []string{"LIFELINE_HELLO_TIMEOUT: 30s exceeds LIFELINE_LOGIN_GRACE (20s)"}},
		{"negative durations", Config{HelloTimeout: -1, ThrottleWindow: -time.Second, ThrottleFor: -time.Minute, LoginGrace: -time.Hour},
			[]string{"LIFELINE_HELLO_TIMEOUT", "LIFELINE_THROTTLE_WINDOW", "LIFELINE_THROTTLE_FOR", "LIFELINE_LOGIN_GRACE"}},
		{"invalid exempt prefix", Config{Exempt: []netip.Prefix{{}}}, []string{"LIFELINE_BAN_EXEMPT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.cfg)
			if err == nil {
				t.Fatal("New accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestPerSourceCap: a source is an IPv4 address or an IPv6 /64, with
// IPv4-mapped addresses counted as their IPv4 address.
func TestPerSourceCap(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fill  []string // four connections from one source
		extra string   // refused: same source
		other string   // admitted: another source
		msg   string   // in the refusal
	}{
		{"ipv4", []string{"198.51.100.7", "198.51.100.7", "198.51.100.7", "198.51.100.7"}, "198.51.100.7", "198.51.100.8",
			"198.51.100.7 already has 4 connections authenticating (LIFELINE_MAX_PENDING_PER_SOURCE)"},
		{"ipv6 /64", []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::1", "2001:db8:1:2::4"}, "2001:db8:1:2:abcd::9", "2001:db8:1:3::1",
			"2001:db8:1:2:abcd::9 (2001:db8:1:2::/64) already has 4 connections"},
		{"v4-mapped unmapped", []string{"::ffff:203.0.113.9", "203.0.113.9", "::ffff:203.0.113.9", "203.0.113.9"}, "::ffff:203.0.113.9", "::ffff:203.0.113.10",
			"203.0.113.9 already has 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g, _ := newTestGate(t, Config{MaxPending: 64, MaxPendingPerSource: 4})
			for _, a := range tc.fill {
				mustAdmit(t, g, a)
			}
			r := mustRefuse(t, g, tc.extra, ReasonPerSource)
			if !strings.Contains(r.Error(), tc.msg) {
				t.Errorf("refusal %q does not say %q", r, tc.msg)
			}
			mustAdmit(t, g, tc.other)
			if st := g.Stats(); st.Pending != 5 || st.Sources != 2 || st.Refused[ReasonPerSource] != 1 {
				t.Errorf("stats = %+v, want 5 pending from 2 sources, 1 per-source refusal", st)
			}
		})
	}
}

// TestPerSourceBeforeGlobal: a source at its cap is refused for that, even
// when the bastion is full too.
func TestPerSourceBeforeGlobal(t *testing.T) {
	t.Parallel()
	g, _ := newTestGate(t, Config{MaxPending: 4, MaxPendingPerSource: 2})
	for _, a := range []string{"192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.2"} {
		mustAdmit(t, g, a)
	}
	mustRefuse(t, g, "192.0.2.1", ReasonPerSource)
}

// TestEvictionFairness walks scenarios on a full bastion: which newcomer
// gets in, and whose connection it takes.
func TestEvictionFairness(t *testing.T) {
	t.Parallel()
	const a, b, c = "192.0.2.1", "192.0.2.2", "192.0.2.3"
	type step struct {
		from    string
		evicts  int    // index into the admitted connections, or -1
		refused Reason // "" = admitted
	}
	for _, tc := range []struct {
		name          string
		max, perSrc   int
		fill          []string
		steps         []step
		wantPendingOf map[string]int
	}{
		{
			name: "third source evicts the heavier source's oldest", max: 8, perSrc: 5,
			fill:          []string{a, a, a, a, a, b, b, b}, // a 5, b 3
			steps:         []step{{from: c, evicts: 0}},
			wantPendingOf: map[string]int{a: 4, b: 3, c: 1},
		},
		{
			name: "equal counts: ties go to the oldest", max: 8, perSrc: 4,
			fill:          []string{b, a, a, a, a, b, b, b},
			steps:         []step{{from: c, evicts: 0}, {from: c, evicts: 1}},
			wantPendingOf: map[string]int{a: 3, b: 3, c: 2},
		},
		{
			name: "as heavy as the heaviest: refused", max: 4, perSrc: 4,
			fill:          []string{a, a, b, b},
			steps:         []step{{from: a, evicts: -1, refused: ReasonFull}, {from: b, evicts: -1, refused: ReasonFull}},
			wantPendingOf: map[string]int{a: 2, b: 2},
		},
		{
			name: "one slot each: a brand-new source still gets in", max: 2, perSrc: 2,
			fill:          []string{a, b},
			steps:         []step{{from: c, evicts: 0}, {from: c, evicts: -1, refused: ReasonFull}},
			wantPendingOf: map[string]int{a: 0, b: 1, c: 1},
		},
		{
			name: "lighter but not new", max: 6, perSrc: 4,
			fill:          []string{a, a, a, a, b, b},
			steps:         []step{{from: b, evicts: 0}, {from: b, evicts: -1, refused: ReasonFull}},
			wantPendingOf: map[string]int{a: 3, b: 3},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g, _ := newTestGate(t, Config{MaxPending: tc.max, MaxPendingPerSource: tc.perSrc})
			var all []admitted
			for _, addr := range tc.fill {
				all = append(all, mustAdmit(t, g, addr))
			}
			evictions := 0
			for i, s := range tc.steps {
				if s.refused != "" {
					mustRefuse(t, g, s.from, s.refused)
					continue
				}
				all = append(all, mustAdmit(t, g, s.from))
				if s.evicts >= 0 {
					evictions++
					v := all[s.evicts]
					if !v.nc.isClosed() || !v.t.Evicted() {
						t.Fatalf("step %d: connection %d (%s) was not evicted", i, s.evicts, tc.fill[s.evicts])
					}
				}
			}
			for addr, n := range tc.wantPendingOf {
				if got := pendingOf(g, addr); got != n {
					t.Errorf("%s holds %d pending, want %d", addr, got, n)
				}
			}
			if st := g.Stats(); st.Pending != tc.max || st.Evictions != uint64(evictions) {
				t.Errorf("stats = %+v, want %d pending, %d evictions", st, tc.max, evictions)
			}
			closed := 0
			for _, x := range all {
				if x.nc.isClosed() {
					closed++
				} else if x.t.Evicted() {
					t.Errorf("ticket %v reports evicted but its conn is open", x.t.src)
				}
				x.t.Done() // works on evicted and live tickets alike
			}
			if closed != evictions {
				t.Errorf("%d connections closed, want %d", closed, evictions)
			}
			if st := g.Stats(); st.Pending != 0 || st.Sources != 0 {
				t.Errorf("after Done: stats = %+v", st)
			}
		})
	}
}

// TestNewSourceAlwaysGetsIn drives random traffic at a small full gate and
// checks the promise after every arrival: a source holding nothing is
// admitted whenever another source holds more than one slot, and a source
// never exceeds its cap.
func TestNewSourceAlwaysGetsIn(t *testing.T) {
	t.Parallel()
	g, _ := newTestGate(t, Config{MaxPending: 16, MaxPendingPerSource: 4, ThrottleAfter: -1})
	rng := rand.New(rand.NewPCG(1, 2))
	var live []admitted
	for range 5000 {
		if len(live) > 0 && rng.IntN(3) == 0 {
			i := rng.IntN(len(live))
			live[i].t.Done()
			live = append(live[:i], live[i+1:]...)
			continue
		}
		addr := fmt.Sprintf("192.0.2.%d", rng.IntN(12))
		held := pendingOf(g, addr)
		heaviest := 0
		g.mu.Lock()
		for _, ts := range g.pending {
			heaviest = max(heaviest, len(ts))
		}
		full := g.total >= g.cfg.MaxPending
		g.mu.Unlock()
		tk, err := g.Admit(newFakeConn(addr))
		switch {
		case held == 0 && heaviest > 1 && err != nil:
			t.Fatalf("new source %s refused while another holds %d: %v", addr, heaviest, err)
		case held >= 4 && err == nil:
			t.Fatalf("%s admitted beyond its cap", addr)
		case full && held < heaviest && err != nil:
			t.Fatalf("%s (holding %d < %d) refused: %v", addr, held, heaviest, err)
		}
		if err == nil {
			live = append(live, admitted{t: tk})
		}
		if st := g.Stats(); st.Pending > 16 {
			t.Fatalf("pending %d > MaxPending", st.Pending)
		}
	}
	if g.Stats().Evictions == 0 {
		t.Fatal("the traffic never filled the gate: the test proves nothing")
	}
}

func TestThrottle(t *testing.T) {
	t.Parallel()
	const src = "198.51.100.7"
	newGate := func(t *testing.T) (*Gate, func(time.Duration), func(n int)) {
		g, fc := newTestGate(t, Config{ThrottleAfter: 3, ThrottleWindow: time.Minute, ThrottleFor: 5 * time.Minute})
		return g, fc.Advance, func(n int) {
			for range n {
				mustAdmit(t, g, src).t.Done()
			}
		}
	}
	t.Run("ends spread wider than the window", func(t *testing.T) {
		t.Parallel()
		g, advance, churn := newGate(t)
		churn(2)
		advance(61 * time.Second)
		churn(2)
		if st := g.Stats(); st.Throttled != 0 {
			t.Fatalf("stats = %+v: throttled by slow churn", st)
		}
	})
	t.Run("throttled then expires", func(t *testing.T) {
		t.Parallel()
		g, advance, churn := newGate(t)
		churn(3)
		if st := g.Stats(); st.Throttled != 1 {
			t.Fatalf("stats = %+v, want one throttled source", st)
		}
		first := mustAdmit(t, g, src)
		r := mustRefuse(t, g, src, ReasonThrottled)
		for _, w := range []string{"198.51.100.7 is throttled to 1 connection", "until 2026-03-01T12:05:00Z", "LIFELINE_THROTTLE_AFTER"} {
			if !strings.Contains(r.Error(), w) {
				t.Errorf("refusal %q does not say %q", r, w)
			}
		}
		mustAdmit(t, g, "198.51.100.8") // others are not affected
		first.t.Done()                  // ends while throttled do not extend it

		advance(5*time.Minute - time.Second)
		mustAdmit(t, g, src)
		mustRefuse(t, g, src, ReasonThrottled)
		advance(time.Second)
		for range 3 { // back to the full per-source cap, one already pending
			mustAdmit(t, g, src)
		}
		mustRefuse(t, g, src, ReasonPerSource)
		if st := g.Stats(); st.Throttled != 0 || st.Refused[ReasonThrottled] != 2 {
			t.Fatalf("stats = %+v", st)
		}
	})
	t.Run("authenticating clears the count", func(t *testing.T) {
		t.Parallel()
		g, _, churn := newGate(t)
		churn(2)
		mustAdmit(t, g, src).t.Authenticated()
		churn(5) // trusted now: ends do not count
		if st := g.Stats(); st.Throttled != 0 {
			t.Fatalf("stats = %+v: a trusted source was throttled", st)
		}
	})
}

// TestThrottledEvictedFirst: on a full bastion a throttled source loses its
// slot before a heavier one, and a throttled newcomer never evicts.
func TestThrottledEvictedFirst(t *testing.T) {
	t.Parallel()
	const bad, heavy, fresh = "203.0.113.66", "192.0.2.1", "192.0.2.2"
	g, _ := newTestGate(t, Config{MaxPending: 4, MaxPendingPerSource: 4, ThrottleAfter: 2})
	mustAdmit(t, g, bad).t.Done()
	mustAdmit(t, g, bad).t.Done()
	throttled := mustAdmit(t, g, bad)
	for range 3 {
		mustAdmit(t, g, heavy)
	}
	mustAdmit(t, g, fresh)
	if !throttled.nc.isClosed() {
		t.Fatal("the throttled source's connection was not evicted first")
	}
	throttled.t.Done()
	r := mustRefuse(t, g, bad, ReasonThrottled) // holds 0, heavy holds 3: still no
	if !strings.Contains(r.Error(), "may not take another source's slot") {
		t.Errorf("refusal %q does not say why", r)
	}
}

func TestBansAndTrust(t *testing.T) {
	t.Parallel()
	const (
		agent    = "100.64.0.9" // behind a carrier NAT, shared with strangers
		stranger = "100.64.0.9"
		office   = "198.51.100.20"
		other    = "192.0.2.50"
	)
	newGate := func(t *testing.T) (*Gate, *ban.List, func(time.Duration)) {
		g, fc := newTestGate(t, Config{
			MaxPendingPerSource: 2, ThrottleAfter: 3, TrustFor: time.Hour,
			Exempt: []netip.Prefix{netip.MustParsePrefix("::ffff:198.51.100.0/120")},
		})
		bans := ban.New(2, time.Minute, 10*time.Minute, fc)
		g.cfg.Bans = bans
		return g, bans, fc.Advance
	}
	fail := func(g *Gate, addr string) bool { return g.Failed(netip.MustParseAddr(addr)) }
	// fed reports whether bans held a failure of addr (it bans after two):
	// addr is banned, or one more failure bans it. It adds that failure.
	fed := func(bans *ban.List, addr string) bool {
		a := netip.MustParseAddr(addr)
		banned, _ := bans.Banned(a)
		return banned || bans.Fail(a)
	}

	t.Run("untrusted source is banned", func(t *testing.T) {
		t.Parallel()
		g, _, _ := newGate(t)
		if fail(g, other) || !fail(g, other) {
			t.Fatal("two failures did not start a ban")
		}
		r := mustRefuse(t, g, other, ReasonBanned)
		if want := "192.0.2.50 is banned until 2026-03-01T12:10:00Z"; !strings.Contains(r.Error(), want) {
			t.Errorf("refusal %q does not say %q", r, want)
		}
	})
	t.Run("exempt prefix", func(t *testing.T) {
		t.Parallel()
		g, bans, _ := newGate(t)
		for range 5 {
			if fail(g, office) {
				t.Fatal("an exempt address was banned")
			}
		}
		if fed(bans, office) {
			t.Fatal("exempt failures reached the ban list")
		}
		bans.Fail(netip.MustParseAddr(office)) // with fed's, banned by someone else's feed
		for range 10 {
			mustAdmit(t, g, office).t.Done()
		}
		mustAdmit(t, g, office)
		mustAdmit(t, g, office)
		mustRefuse(t, g, office, ReasonPerSource) // exempt is no larger cap
		if g.Stats().Throttled != 0 {
			t.Fatal("an exempt address was throttled")
		}
	})
	t.Run("trusted source", func(t *testing.T) {
		t.Parallel()
		g, bans, advance := newGate(t)
		mustAdmit(t, g, stranger).t.Done()
		mustAdmit(t, g, agent).t.Authenticated()
		if !g.Trusted(netip.MustParseAddr("::ffff:" + agent)) {
			t.Fatal("source not trusted after authenticating")
		}
		for range 10 {
			if fail(g, stranger) {
				t.Fatal("strangers got the agent's address banned")
			}
			mustAdmit(t, g, stranger).t.Done()
		}
		if fed(bans, stranger) || g.Stats().Throttled != 0 {
			t.Fatalf("trusted source fed bans or was throttled (%+v)", g.Stats())
		}
		for range TrustedCapFactor * 2 {
			mustAdmit(t, g, stranger)
		}
		r := mustRefuse(t, g, agent, ReasonPerSource)
		if r.Limit != 8 {
			t.Errorf("trusted cap = %d, want 8", r.Limit)
		}
		if st := g.Stats(); st.Trusted != 1 {
			t.Errorf("stats = %+v, want one trusted source", st)
		}

		advance(time.Hour) // trust lapses: back to the ordinary rules
		if g.Trusted(netip.MustParseAddr(agent)) {
			t.Fatal("trust did not expire")
		}
		if fail(g, stranger) || !fail(g, stranger) {
			t.Fatal("failures after trust expired did not ban")
		}
		mustRefuse(t, g, stranger, ReasonBanned)
	})
	t.Run("trusted source enters while banned", func(t *testing.T) {
		t.Parallel()
		g, bans, _ := newGate(t)
		mustAdmit(t, g, agent).t.Authenticated()
		bans.Fail(netip.MustParseAddr(agent))
		bans.Fail(netip.MustParseAddr(agent))
		mustAdmit(t, g, agent)
	})
}

func TestDoneAndAuthenticatedIdempotent(t *testing.T) {
	t.Parallel()
	const src = "192.0.2.9"
	g, _ := newTestGate(t, Config{ThrottleAfter: 2, TrustFor: -1})
	x := mustAdmit(t, g, src)
	x.t.Done()
	x.t.Done()
	x.t.Authenticated() // after Done: nothing
	if st := g.Stats(); st.Pending != 0 || st.Throttled != 0 || st.Trusted != 0 {
		t.Fatalf("after Done twice: stats = %+v (one end must count once)", st)
	}
	y := mustAdmit(t, g, src)
	y.t.Authenticated()
	y.t.Authenticated()
	y.t.Done() // after Authenticated: nothing, counts no end
	if st := g.Stats(); st.Pending != 0 || st.Throttled != 0 {
		t.Fatalf("after Authenticated then Done: stats = %+v", st)
	}
	mustAdmit(t, g, src).t.Done() // the second end
	if st := g.Stats(); st.Throttled != 1 {
		t.Fatalf("stats = %+v, want throttled after two ends", st)
	}
}

// TestBoundedMaps floods the gate from more sources than it tracks: the
// throttle and trust maps stay within bounds and recent state survives.
func TestBoundedMaps(t *testing.T) {
	t.Parallel()
	addr := func(net, i int) string { return fmt.Sprintf("2001:%x:%x:%x::1", net, i>>16, i&0xffff) }
	for _, tc := range []struct {
		name       string
		maxTracked int
		sources    int
	}{
		{"small", 500, 3000},
		{"MaxTracked", MaxTracked, MaxTracked + 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.maxTracked == MaxTracked && testing.Short() {
				t.Skip("slow")
			}
			g, fc := newTestGate(t, Config{ThrottleAfter: 1})
			g.maxTracked = tc.maxTracked
			for i := range tc.sources {
				mustAdmit(t, g, addr(0xdb8, i)).t.Done()          // throttles: ThrottleAfter 1
				mustAdmit(t, g, addr(0xdb9, i)).t.Authenticated() // trusts
				if i%97 == 0 {
					fc.Advance(time.Millisecond)
				}
			}
			g.mu.Lock()
			ends, trust := len(g.ends), len(g.trust)
			g.mu.Unlock()
			if ends > tc.maxTracked || trust > tc.maxTracked {
				t.Fatalf("maps hold %d throttle and %d trust entries, cap %d", ends, trust, tc.maxTracked)
			}
			if !g.Trusted(netip.MustParseAddr(addr(0xdb9, tc.sources-1))) {
				t.Error("the newest trust was pruned")
			}
			if th, _ := g.throttledLocked(ban.Source(netip.MustParseAddr(addr(0xdb8, tc.sources-1))), fc.Now()); !th {
				t.Error("the newest throttle was pruned")
			}
			if ends < tc.maxTracked/2 || trust < tc.maxTracked/2 {
				t.Errorf("maps hold %d throttle and %d trust entries: pruned far below the cap %d", ends, trust, tc.maxTracked)
			}
		})
	}
}

// TestBoundedThrottleFlood: sources that only ever end unauthenticated (a
// scan) keep the throttle map bounded, pruning counts before throttles.
func TestBoundedThrottleFlood(t *testing.T) {
	t.Parallel()
	g, fc := newTestGate(t, Config{ThrottleAfter: 2})
	g.maxTracked = 1000
	throttled := "192.0.2.1"
	mustAdmit(t, g, throttled).t.Done()
	mustAdmit(t, g, throttled).t.Done()
	for i := range 5000 {
		mustAdmit(t, g, fmt.Sprintf("2001:db8:%x::1", i)).t.Done()
		fc.Advance(time.Millisecond)
		g.mu.Lock()
		n := len(g.ends)
		g.mu.Unlock()
		if n > 1000 {
			t.Fatalf("throttle map holds %d > 1000", n)
		}
	}
	if st := g.Stats(); st.Throttled != 1 {
		t.Fatalf("stats = %+v: the throttle was pruned before counting entries", st)
	}
}
