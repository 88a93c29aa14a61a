package tunnel

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// OnBastion hears of the first ready connection (after the latest reports
// were resent to it) and of the last one ending, once each, in order; a
// second bastion coming and going between says nothing.
func TestOnBastion(t *testing.T) {
	t.Parallel()
	agent := sshtest.NewKey(t, t.TempDir(), "agent").Signer
	a, b := startFakeBastion(t, agent.PublicKey()), startFakeBastion(t, agent.PublicKey())
	echo := echoServer(t)
	cfg := fakeAgentConfig(t, agent, a, b)
	cfg.Forwards = []forward.Forward{{Name: "pi", Port: 22, TargetHost: "127.0.0.1", TargetPort: uint16(echo)}}
	var (
		mu    sync.Mutex
		calls []bool
		// reports each bastion had received at each call
		seen [][2]int
	)
	count := func(fb *fakeBastion) int {
		fb.mu.Lock()
		defer fb.mu.Unlock()
		return len(fb.reports)
	}
	cfg.OnBastion = func(up bool, at time.Time) {
		if at.IsZero() {
			t.Error("OnBastion without a time")
		}
		mu.Lock()
		calls = append(calls, up)
		seen = append(seen, [2]int{count(a), count(b)})
		mu.Unlock()
	}
	got := func() []bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(calls)
	}
	tun, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A main-link report from before any connection: resent on connecting,
	// before OnBastion hears of it.
	since := time.Now().Add(-10 * time.Minute)
	tun.Publish(context.Background(), report.LinkReport{Link: report.LinkMain, Time: time.Now(), Since: since, Verdict: report.VerdictFailed,
		Reasons: []string{"no answer"}, Codes: []string{report.CodeMainUnreachable}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tun.Run(ctx) }()
	defer func() { cancel(); <-done }()

	sshtest.Eventually(t, 10*time.Second, func() bool { return a.Registered("pi:22") && b.Registered("pi:22") && count(a) == 1 && count(b) == 1 },
		"both bastions connected, each resent the report")
	sshtest.Eventually(t, 5*time.Second, func() bool { return slices.Equal(got(), []bool{true}) }, "one OnBastion(true)")
	mu.Lock()
	if s := seen[0]; s[0]+s[1] == 0 {
		t.Errorf("OnBastion(true) came before the report was resent: %v", s)
	}
	mu.Unlock()

	// Both hang up from now on: the last one to go says false, once.
	for _, fb := range []*fakeBastion{a, b} {
		fb.mu.Lock()
		fb.hangUp = true
		sc := fb.names["pi:22"]
		fb.mu.Unlock()
		sc.Close()
	}
	sshtest.Eventually(t, 10*time.Second, func() bool { return slices.Equal(got(), []bool{true, false}) }, "OnBastion(false) once the last is gone")
	a.mu.Lock()
	a.hangUp = false
	a.mu.Unlock()
	sshtest.Eventually(t, 20*time.Second, func() bool { return slices.Equal(got(), []bool{true, false, true}) }, "OnBastion(true) again")
	cancel()
	<-done
	if c := got(); !slices.Equal(c, []bool{true, false, true, false}) {
		t.Errorf("OnBastion calls %v, want the last connection's end on shutdown too", c)
	}
}
