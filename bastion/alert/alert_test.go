package alert

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func TestLoginTextsOnceWithFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		login Login
		want  []string
	}{
		{"key", login("alice@laptop", "203.0.113.5:50022"),
			[]string{"bast1", "login alice@laptop", "key SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s", "from 203.0.113.5:50022", "user ops"}},
		{"certificate", Login{Operator: "bob-cert-id", Fingerprint: "SHA256:abc", Certificate: true, Source: netip.MustParseAddrPort("[2001:db8::7]:4022")},
			[]string{"bast1", "login bob-cert-id", "cert SHA256:abc", "from [2001:db8::7]:4022"}},
		{"ipv4-mapped source is shown as IPv4", login("carol", "[::ffff:198.51.100.20]:2200"),
			[]string{"from 198.51.100.20:2200"}},
		{"hostile comment is cleaned and cut", login("eve\x1b[31m"+strings.Repeat("x", 200), "203.0.113.9:1"),
			[]string{"login eve?(31m", "..", "from 203.0.113.9:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startFake(t)
			a := mustNew(t, testConfig(t, twilioFor(t, srv, nil)))
			run(t, a)
			a.Login(tt.login)
			sshtest.Eventually(t, 10*time.Second, func() bool { return srv.Count() == 1 && a.Status().Pending == 0 }, "one SMS")
			m := srv.Messages()[0]
			for _, w := range tt.want {
				if !strings.Contains(m.Body, w) {
					t.Errorf("SMS %q does not contain %q", m.Body, w)
				}
			}
			if m.To != testTo || m.From != testFrom {
				t.Errorf("SMS from %s to %s, want from %s to %s", m.From, m.To, testFrom, testTo)
			}
			if m.Segments != 1 {
				t.Errorf("SMS %q takes %d segments, want 1", m.Body, m.Segments)
			}
			if st := a.Status(); st.Sent != 1 || st.Sender != "twilio" {
				t.Errorf("status %+v: want Sent 1 through twilio", st)
			}
		})
	}
}

func TestLoginReturnsWhileAPIHangs(t *testing.T) {
	t.Parallel()
	srv := startFake(t)
	srv.Hang()
	a := mustNew(t, testConfig(t, twilioFor(t, srv, nil)))
	run(t, a)
	a.Login(login("alice", "203.0.113.5:1"))
	sshtest.Eventually(t, 10*time.Second, func() bool { return srv.Requests() == 1 }, "the sender is stuck in the API")
	// The API still hangs: these must return without it.
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		for i := 0; i < 20; i++ {
			a.Login(login("bob", "203.0.113.6:1"))
		}
	}()
	sshtest.Eventually(t, 10*time.Second, func() bool {
		select {
		case <-returned:
			return true
		default:
			return false
		}
	}, "Login returns while the API hangs")
	if srv.Count() != 0 {
		t.Fatalf("the API accepted %d messages while hanging", srv.Count())
	}
	if got := a.Status().Pending; got != 21 {
		t.Errorf("pending %d, want 21", got)
	}
	srv.Release()
	defer func() { t.Logf("status %+v bodies %q req %d", a.Status(), bodies(srv), srv.Requests()) }()
	sshtest.Eventually(t, 10*time.Second, func() bool {
		st := a.Status()
		return st.Pending == 0 && countContaining(bodies(srv), ": login ")+st.RateLimited == 21
	}, "all alerts accounted for")
}

func TestTransientFailureDeliversExactlyOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		fail   int
		status int
		hang   int
	}{
		{name: "three 503s", fail: 3, status: 503},
		{name: "one 500", fail: 1, status: 500},
		{name: "request timeout", hang: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startFake(t)
			srv.FailNext(tt.fail, tt.status)
			srv.HangNext(tt.hang)
			cfg := testConfig(t, twilioFor(t, srv, func(c *TwilioConfig) { c.Timeout = 200 * time.Millisecond }))
			a := mustNew(t, cfg)
			run(t, a)
			a.Login(login("alice", "203.0.113.5:1"))
			sshtest.Eventually(t, 10*time.Second, func() bool { return a.Status().Pending == 0 }, "delivery")
			if n := srv.Count(); n != 1 {
				t.Fatalf("delivered %d times, want exactly 1", n)
			}
			if want := tt.fail + tt.hang + 1; srv.Requests() != want {
				t.Errorf("%d requests, want %d", srv.Requests(), want)
			}
			st := a.Status()
			if st.LastError != "" || st.Permanent != 0 || st.Sent != 1 {
				t.Errorf("status %+v: want sent 1, no error left", st)
			}
			if _, err := os.Stat(filepath.Join(cfg.Dir, "alerts")); err != nil {
				t.Fatal(err)
			}
			if files := spoolFiles(t, cfg.Dir); len(files) != 0 {
				t.Errorf("spool still holds %v after delivery", files)
			}
		})
	}
}

func spoolFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "alerts", "*", "*.json")) // every channel's folder
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRestartDeliversPending(t *testing.T) {
	t.Parallel()
	srv := startFake(t)
	srv.Hang()
	cfg := testConfig(t, twilioFor(t, srv, nil))
	a := mustNew(t, cfg)
	stop := run(t, a)
	a.Login(login("alice", "203.0.113.5:1"))
	a.AgentDown(Agent{Name: "pi-agent"}) // not yet due: no alert
	sshtest.Eventually(t, 10*time.Second, func() bool { return srv.Requests() == 1 }, "the sender is stuck in the API")
	stop() // the bastion stops while the API hangs
	if files := spoolFiles(t, cfg.Dir); len(files) != 1 {
		t.Fatalf("spool holds %v, want the one undelivered alert", files)
	}
	fi, err := os.Stat(filepath.Join(cfg.Dir, "alerts"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("spool directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	sshtest.Eventually(t, 10*time.Second, func() bool { return srv.Hung() == 0 }, "the API sees the hang-up")
	srv.Release()

	b := mustNew(t, cfg) // the restarted bastion
	if got := b.Status().Pending; got != 1 {
		t.Fatalf("after restart pending %d, want 1", got)
	}
	run(t, b)
	defer func() { t.Logf("status %+v bodies %q req %d", b.Status(), bodies(srv), srv.Requests()) }()
	sshtest.Eventually(t, 10*time.Second, func() bool { return srv.Count() == 1 && b.Status().Pending == 0 }, "delivery after restart")
	if body := srv.Messages()[0].Body; !strings.Contains(body, "login alice") {
		t.Errorf("delivered %q, want the login", body)
	}
	if files := spoolFiles(t, cfg.Dir); len(files) != 0 {
		t.Errorf("spool still holds %v", files)
	}
}

func TestQuietFrom(t *testing.T) {
	t.Parallel()
	srv := startFake(t)
	rec := &auditLog{}
	cfg := testConfig(t, twilioFor(t, srv, nil))
	cfg.Audit = rec
	var err error
	cfg.QuietFrom, err = ParseCIDRs("10.0.0.0/8, 2001:db8:1::/48")
	if err != nil {
		t.Fatal(err)
	}
	a := mustNew(t, cfg)
	run(t, a)
	a.Login(login("office", "10.1.2.3:22"))
	a.Login(login("office6", "[2001:db8:1::5]:22"))
	a.Login(login("mapped", "[::ffff:10.9.9.9]:22"))
	a.Login(login("stranger", "203.0.113.5:1"))
	sshtest.Eventually(t, 10*time.Second, func() bool { return srv.Count() == 1 && a.Status().Pending == 0 }, "the stranger's SMS")
	if body := srv.Messages()[0].Body; !strings.Contains(body, "stranger") {
		t.Errorf("texted %q, want only the stranger", body)
	}
	st := a.Status()
	if st.Quiet != 3 || !strings.Contains(st.LastQuiet, "mapped") {
		t.Errorf("status quiet %d last %q, want 3 and the mapped login", st.Quiet, st.LastQuiet)
	}
	if q := rec.withReason(KindQuietLogin); len(q) != 3 {
		t.Errorf("%d quiet audit events, want 3", len(q))
	}
	if l := rec.withReason(KindLogin); len(l) != 1 || l[0].Source != "203.0.113.5:1" || l[0].Key != "stranger" {
		t.Errorf("login audit events %+v, want the stranger's", l)
	}
}

// fakeClockAlerter runs an Alerter on a fake clock against a fake API.
func fakeClockAlerter(t *testing.T, mod func(*Config)) (*Alerter, *clocktest.Fake, *auditLog, func() []string) {
	t.Helper()
	srv := startFake(t)
	clk := clocktest.New(t0)
	rec := &auditLog{}
	cfg := testConfig(t, twilioFor(t, srv, nil))
	cfg.Clock, cfg.Audit = clk, rec
	if mod != nil {
		mod(&cfg)
	}
	a := mustNew(t, cfg)
	run(t, a)
	return a, clk, rec, func() []string { return bodies(srv) }
}

// barrier sends a login and waits for it: everything enqueued before it
// has then been delivered.
func barrier(t *testing.T, a *Alerter, texts func() []string) []string {
	t.Helper()
	a.Login(login("barrier", "203.0.113.99:1"))
	sshtest.Eventually(t, 10*time.Second, func() bool { return countContaining(texts(), "barrier") == 1 && a.Status().Pending == 0 }, "the barrier login")
	return texts()
}

func TestAgentDownHysteresis(t *testing.T) {
	t.Parallel()
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi"}}

	t.Run("blip sends nothing", func(t *testing.T) {
		t.Parallel()
		a, clk, _, texts := fakeClockAlerter(t, nil)
		a.AgentDown(pi)
		sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "down timer armed")
		clk.Advance(4 * time.Minute)
		a.AgentUp(pi)
		sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 0 }, "down timer cancelled")
		clk.Advance(time.Hour)
		if got := barrier(t, a, texts); len(got) != 1 {
			t.Errorf("texts %q, want only the barrier", got)
		}
	})

	t.Run("down then back", func(t *testing.T) {
		t.Parallel()
		a, clk, rec, texts := fakeClockAlerter(t, nil)
		a.AgentUp(pi) // first connection: not texted
		a.AgentDown(pi)
		sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "down timer armed")
		clk.Advance(5*time.Minute - time.Second)
		a.AgentDown(pi) // a repeated down does not restart the clock
		clk.Advance(time.Second)
		sshtest.Eventually(t, 10*time.Second, func() bool { return len(texts()) == 1 }, "site down")
		if got := texts()[0]; !strings.Contains(got, "SITE DOWN") || !strings.Contains(got, "pi-agent (pi)") || !strings.Contains(got, "bast1") {
			t.Errorf("down text %q", got)
		}
		clk.Advance(7 * time.Minute)
		a.AgentDown(pi) // still down: nothing new
		a.AgentUp(pi)
		sshtest.Eventually(t, 10*time.Second, func() bool { return len(texts()) == 2 }, "site back")
		if got := texts()[1]; !strings.Contains(got, "site back") || !strings.Contains(got, "12m0s") {
			t.Errorf("back text %q, want the 12m0s outage", got)
		}
		a.AgentUp(pi) // already up: nothing
		if got := barrier(t, a, texts); len(got) != 3 {
			t.Errorf("texts %q, want down, back, barrier", got)
		}
		if n := len(rec.withReason(KindAgentDown)) + len(rec.withReason(KindAgentBack)); n != 2 {
			t.Errorf("%d agent audit events, want 2", n)
		}
	})
}

func TestFailedLoginBurstOneSummary(t *testing.T) {
	t.Parallel()
	a, clk, _, texts := fakeClockAlerter(t, nil)
	srcs := []netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.2")}
	for i := 0; i < 50; i++ {
		src := srcs[0]
		if i%10 == 0 {
			src = srcs[1+i/10%2]
		}
		a.AuthFailed(src, "root")
	}
	sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "summary timer armed")
	clk.Advance(15 * time.Minute)
	sshtest.Eventually(t, 10*time.Second, func() bool { return len(texts()) == 1 }, "one summary")
	got := texts()[0]
	for _, w := range []string{"bast1", "50 failed logins", "3 sources", "198.51.100.7 x45", "192.0.2.1 x3", "192.0.2.2 x2"} {
		if !strings.Contains(got, w) {
			t.Errorf("summary %q lacks %q", got, w)
		}
	}
	// A trickle below the minimum in the next interval is not texted.
	for i := 0; i < 9; i++ {
		a.AuthFailed(srcs[0], "root")
	}
	sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "second window armed")
	clk.Advance(15 * time.Minute)
	sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 0 }, "second window closed")
	if got := barrier(t, a, texts); len(got) != 2 {
		t.Errorf("texts %q, want the one summary and the barrier", got)
	}
}

func TestPermanentFailureNotRetried(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		mod  func(*TwilioConfig)
		code string
	}{
		{"bad credentials", func(c *TwilioConfig) { c.AuthToken = "wrongtoken0" }, "20003"},
		{"bad number", func(c *TwilioConfig) { c.To = []string{"+19999999999"} }, "21211"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startFake(t)
			srv.RejectNumber("+19999999999")
			rec := &auditLog{}
			cfg := testConfig(t, twilioFor(t, srv, tt.mod))
			cfg.Audit = rec
			a := mustNew(t, cfg)
			run(t, a)
			a.Login(login("alice", "203.0.113.5:1"))
			sshtest.Eventually(t, 10*time.Second, func() bool { return a.Status().Permanent == 1 }, "permanent failure in status")
			st := a.Status()
			if st.Pending != 0 || !strings.Contains(st.LastPermanent, tt.code) {
				t.Errorf("status %+v: want nothing pending and error %s", st, tt.code)
			}
			if srv.Requests() != 1 || srv.Count() != 0 {
				t.Errorf("%d requests, %d accepted: want one refused attempt", srv.Requests(), srv.Count())
			}
			failed, _ := filepath.Glob(filepath.Join(cfg.Dir, "alerts", "twilio", "failed", "*.json"))
			if len(failed) != 1 || len(spoolFiles(t, cfg.Dir)) != 0 {
				t.Errorf("failed/ holds %v, spool %v: want the alert set aside", failed, spoolFiles(t, cfg.Dir))
			}
			if ev := rec.withReason(KindUndelivered); len(ev) != 1 || !strings.Contains(ev[0].Message, "login alice") {
				t.Errorf("undelivered audit events %+v", ev)
			}
			// A restart still shows it.
			if b := mustNew(t, cfg); b.Status().Permanent != 1 {
				t.Errorf("after restart permanent %d, want 1", b.Status().Permanent)
			}
		})
	}
}

func TestRateLimitSummarises(t *testing.T) {
	t.Parallel()
	srv := startFake(t)
	clk := clocktest.New(t0)
	rec := &auditLog{}
	cfg := testConfig(t, twilioFor(t, srv, nil))
	cfg.Clock, cfg.Audit, cfg.PerMinute = clk, rec, 3
	a := mustNew(t, cfg)
	for i := 0; i < 10; i++ { // queued before Run: a deterministic burst
		op := "alice"
		if i%3 == 2 {
			op = "bob"
		}
		a.Login(login(op, "203.0.113.5:1"))
	}
	run(t, a)
	sshtest.Eventually(t, 10*time.Second, func() bool { return srv.Count() == 3 && a.Status().Pending == 0 }, "three texts")
	got := bodies(srv)
	if countContaining(got[:2], ": login ") != 2 {
		t.Errorf("first texts %q, want two logins", got[:2])
	}
	for _, w := range []string{"8 alerts held back", "8 login", "alice x5", "bob x3"} {
		if !strings.Contains(got[2], w) {
			t.Errorf("summary %q lacks %q", got[2], w)
		}
	}
	st := a.Status()
	if st.Sent != 3 || st.RateLimited != 8 {
		t.Errorf("status %+v: want sent 3, rate-limited 8", st)
	}
	if n := len(rec.withReason("rate_limited")); n != 8 {
		t.Errorf("%d rate_limited audit events, want 8 (one per held-back alert)", n)
	}
	// The minute is used up: the next alert waits for it.
	a.Login(login("carol", "203.0.113.5:1"))
	sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "sender waits for the rate window")
	if srv.Count() != 3 {
		t.Fatalf("sent during a full minute")
	}
	clk.Advance(time.Minute)
	sshtest.Eventually(t, 10*time.Second, func() bool { return srv.Count() == 4 }, "carol's text")
	if got := bodies(srv)[3]; !strings.Contains(got, "login carol") {
		t.Errorf("text %q, want carol's login", got)
	}
}

func TestSpoolCapSummarisesOverflow(t *testing.T) {
	t.Parallel()
	srv := startFake(t)
	rec := &auditLog{}
	cfg := testConfig(t, twilioFor(t, srv, nil))
	cfg.MaxSpool, cfg.PerMinute, cfg.Audit = 5, 100, rec
	first := cfg
	first.Channels = []Channel{{Sender: failing{}, Name: "twilio"}} // the first run delivers nothing
	a := mustNew(t, first)
	for i := 0; i < 12; i++ {
		a.Login(login("mallory", "203.0.113.5:1"))
	}
	if st := a.Status(); st.Pending != 5 || st.Overflow != 7 {
		t.Fatalf("status %+v: want 5 pending, 7 overflow", st)
	}
	if n := len(spoolFiles(t, cfg.Dir)); n != 5 {
		t.Errorf("%d spool files, want 5", n)
	}
	// The send loop is the only writer of the overflow count.
	stop := run(t, a)
	sshtest.Eventually(t, 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(cfg.Dir, "alerts", "twilio", overflowFile))
		return err == nil && a.Status().LastError != ""
	}, "overflow count saved by the send loop")
	stop()
	b := mustNew(t, cfg) // the overflow count survives a restart
	if st := b.Status(); st.Pending != 5 || st.Overflow != 7 {
		t.Fatalf("after restart %+v: want 5 pending, 7 overflow", st)
	}
	run(t, b)
	sshtest.Eventually(t, 10*time.Second, func() bool { st := b.Status(); return st.Pending == 0 && st.Overflow == 0 }, "summary")
	got := bodies(srv)
	if len(got) != 1 || !strings.Contains(got[0], "12 alerts held back") {
		t.Errorf("texts %q, want one summary of 12", got)
	}
	if st := b.Status(); st.RateLimited != 12 {
		t.Errorf("rate-limited %d, want 12", st.RateLimited)
	}
	if n := len(rec.withReason(KindLogin)); n != 12 {
		t.Errorf("%d login audit events, want all 12", n)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "alerts", "twilio", overflowFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("overflow file still there after the summary: %v", err)
	}
}

func TestLinkVerdictChanges(t *testing.T) {
	t.Parallel()
	a, _, _, texts := fakeClockAlerter(t, nil)
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi"}}
	ok := report.LinkReport{Version: 1, Time: t0, ISP: "T-Mobile", DownloadBps: 42e6, LatencyMS: 48, Verdict: report.VerdictOK}
	bad := ok
	bad.Verdict, bad.DownloadBps, bad.Reasons = report.VerdictFailed, 0.4e6, []string{"download 0.4 Mbit/s below 5"}
	var prev report.LinkReport // the caller keeps the last report
	for _, r := range []report.LinkReport{ok, bad, bad, bad, ok, ok} {
		a.LinkReport(pi, prev, r)
		prev = r
	}
	got := barrier(t, a, texts)
	if len(got) != 3 {
		t.Fatalf("texts %q, want failed, ok again, barrier", got)
	}
	if !strings.Contains(got[0], "LINK FAILED") || !strings.Contains(got[0], "below 5") || !strings.Contains(got[1], "link ok again") {
		t.Errorf("texts %q", got)
	}
}

// A failed link that fails for another reason is texted again (a test error
// while the route flips, then the wrong ISP: the owner needs the ISP), with
// the reason kept even when it is long; the same reasons with new figures
// are not.
func TestLinkFailureReasonChanges(t *testing.T) {
	t.Parallel()
	a, _, _, texts := fakeClockAlerter(t, nil)
	pi := Agent{Name: "lifeline-agent@site-gateway", Fingerprint: "SHA256:pi", Names: []string{"nuc:3389", "pi:22"}}
	testErr := report.LinkReport{Version: 1, Time: t0, ISP: "Carrier Mobile", Verdict: report.VerdictFailed,
		Reasons: []string{`speed test: latency to lifeline fake (203.0.113.20:8080): Get "http://203.0.113.20:8080/speedtest/latency.txt": net/http: timeout awaiting response headers`}}
	wrongISP := report.LinkReport{Version: 1, Time: t0, ISP: "Main Street Broadband", DownloadBps: 95e6, LatencyMS: 1, Verdict: report.VerdictFailed,
		Reasons: []string{`wrong ISP "Main Street Broadband", expected "carrier": traffic may be leaving by another link`}}
	wrongISP2 := wrongISP
	wrongISP2.DownloadBps = 90e6
	var prev report.LinkReport // the caller keeps the last report
	for _, r := range []report.LinkReport{testErr, wrongISP, wrongISP2} {
		a.LinkReport(pi, prev, r)
		prev = r
	}
	got := barrier(t, a, texts)
	if len(got) != 3 {
		t.Fatalf("texts %q, want the test error, the wrong ISP, barrier", got)
	}
	if !strings.Contains(got[0], "speed test: latency") {
		t.Errorf("long reason dropped from %q", got[0])
	}
	if !strings.Contains(got[1], "wrong ISP") || !strings.Contains(got[1], "Main Street") {
		t.Errorf("second text %q does not name the wrong ISP", got[1])
	}
	for _, text := range got[:2] {
		if len(text) > smsLimit {
			t.Errorf("text of %d characters: %q", len(text), text)
		}
	}
}

func TestCorruptSpoolFileSetAside(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "alerts"), 0o700); err != nil {
		t.Fatal(err)
	}
	name := "0000000000000001-000001-00000001.json"
	if err := os.WriteFile(filepath.Join(dir, "alerts", name), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts", ".tmp-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Dir: dir, Sender: NewLogSender(slog.New(slog.DiscardHandler)), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.Pending != 0 || st.Permanent != 1 {
		t.Errorf("status %+v: want the corrupt file counted as permanent", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "alerts", "log", "failed", "unreadable-"+name)); err != nil {
		t.Errorf("corrupt file not set aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "alerts", ".tmp-123")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp file left: %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	_, err := New(Config{DownAfter: -time.Second, PerMinute: -1})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	for _, w := range []string{"state directory", "sender", "logger", "agent down-after", "SMS per minute"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %s", err, w)
		}
	}
}

func TestRunTwiceIsRefused(t *testing.T) {
	t.Parallel()
	a := mustNew(t, testConfig(t, NewLogSender(slog.New(slog.DiscardHandler))))
	run(t, a)
	sshtest.Eventually(t, 10*time.Second, func() bool { return a.running.Load() }, "first Run started")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Run(ctx); err == nil {
		t.Error("a second concurrent Run was accepted")
	}
}

func TestLogSenderAndStatusString(t *testing.T) {
	t.Parallel()
	buf := &syncWriter{w: &strings.Builder{}}
	log := slog.New(slog.NewTextHandler(buf, nil))
	a := mustNew(t, testConfig(t, NewLogSender(log)))
	run(t, a)
	a.Login(login("alice", "203.0.113.5:1"))
	sshtest.Eventually(t, 10*time.Second, func() bool { return a.Status().Sent == 1 }, "logged")
	st := a.Status()
	if !strings.Contains(st.String(), "alerts via log: 0 pending, 1 texts sent") {
		t.Errorf("status text %q", st.String())
	}
	if out := buf.String(); !strings.Contains(out, "login alice") || !strings.Contains(out, "not texted") {
		t.Errorf("log %q lacks the alert", out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := NewLogSender(log).Send(ctx, Message{Text: "x"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Send on a done context: %v", err)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// failing is a Sender whose every delivery fails transiently.
type failing struct{}

func (failing) Name() string                        { return "failing" }
func (failing) Send(context.Context, Message) error { return errors.New("try again later") }

// Detail has what the SMS text cuts: every reason of a failed link, every
// alert a summary covers.
func TestDetailTellsMore(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("the speed test server did not answer in time; ", 6)
	r := report.LinkReport{Version: 1, Time: t0, ISP: "Carrier", Verdict: report.VerdictFailed, Reasons: []string{long}}
	text, detail := linkFailedText("bast1", Agent{Name: "pi-agent", Names: []string{"pi:22"}}, r)
	if len(text) > smsLimit || !strings.Contains(detail, strings.TrimSpace(long)) || !strings.Contains(detail, "isp Carrier") {
		t.Errorf("link failed: text %q (%d), detail %q", text, len(text), detail)
	}
	held := []entry{{Message: Message{Kind: KindLogin, Text: "bast1: login alice", Created: t0}, Subject: "alice"},
		{Message: Message{Kind: KindLogin, Text: "bast1: login bob", Created: t0}, Subject: "bob"}}
	text, detail = summaryText("bast1", held, map[string]int{KindLogin: 3})
	for _, w := range []string{text, "login alice", "login bob", "3 more"} {
		if !strings.Contains(detail, w) {
			t.Errorf("summary detail %q lacks %q", detail, w)
		}
	}
}

// An alert spooled by a version without Message.Detail is delivered.
func TestSpoolOfOlderVersionDelivered(t *testing.T) {
	t.Parallel()
	srv := startFake(t)
	cfg := testConfig(t, twilioFor(t, srv, nil))
	dir := filepath.Join(cfg.Dir, "alerts")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	id := "0000000000000001-000001-00000001"
	old := `{"v":1,"message":{"id":"` + id + `","kind":"login","text":"bast1: login old-alice","created":"2026-11-22T10:00:00Z"},"subject":"old-alice"}`
	if err := os.WriteFile(filepath.Join(dir, id+".json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	a := mustNew(t, cfg)
	run(t, a)
	sshtest.Eventually(t, 10*time.Second, func() bool { return srv.Count() == 1 && a.Status().Pending == 0 }, "the old alert delivered")
	if got := bodies(srv)[0]; got != "bast1: login old-alice" {
		t.Errorf("text %q", got)
	}
}
