package alert

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"

	"github.com/lifeline-dev/lifeline/bastion/audit"
)

const (
	testFrom = "+15005550006"
	testTo   = "+15551230001"
)

// auditLog is a hand-written audit.Recorder that keeps every event.
type auditLog struct {
	mu     sync.Mutex
	events []audit.Event
}

func (l *auditLog) Record(e audit.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

// withReason returns the events whose Reason is reason.
func (l *auditLog) withReason(reason string) []audit.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []audit.Event
	for _, e := range l.events {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// startFake starts a fake Twilio API on loopback, closed at cleanup.
func startFake(t testing.TB) *twiliofake.Server {
	t.Helper()
	srv, err := twiliofake.Start("127.0.0.1:0", twiliofake.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// twilioFor returns the real twilio-go Sender pointed at srv.
func twilioFor(t testing.TB, srv *twiliofake.Server, mod func(*TwilioConfig)) Sender {
	t.Helper()
	cfg := TwilioConfig{AccountSID: srv.AccountSID(), AuthToken: srv.AuthToken(), From: testFrom, To: []string{testTo}, BaseURL: srv.URL(), Timeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	n, err := NewTwilio(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// testConfig is a Config with fast retries, a temp dir and a discarding log.
func testConfig(t testing.TB, n Sender) Config {
	return Config{
		Dir:         t.TempDir(),
		Sender:      n,
		Log:         slog.New(slog.DiscardHandler),
		BastionName: "bast1",
		RetryMin:    5 * time.Millisecond,
		RetryMax:    50 * time.Millisecond,
		SendTimeout: 5 * time.Second,
	}
}

// run starts a.Run; the returned stop cancels it and waits for it to return.
func run(t testing.TB, a *Alerter) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func mustNew(t testing.TB, cfg Config) *Alerter {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func login(op string, src string) Login {
	return Login{Operator: op, Fingerprint: "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s", User: "ops", Source: netip.MustParseAddrPort(src)}
}

func bodies(srv *twiliofake.Server) []string {
	var out []string
	for _, m := range srv.Messages() {
		out = append(out, m.Body)
	}
	return out
}

func countContaining(ss []string, sub string) int {
	n := 0
	for _, s := range ss {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}
