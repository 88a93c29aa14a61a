package tunnel

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// The watchdog pings systemd only while every loop shows progress; a
// wedged loop makes it stop, so systemd restarts the agent.
func TestWatchdogWithheldWhenALoopIsWedged(t *testing.T) {
	t.Parallel()
	fake := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	n := &recordingSystemd{}
	signer := sshtest.NewKey(t, t.TempDir(), "agent").Signer
	log, logs := sshtest.Logger(t)
	tun, err := New(Config{
		Bastions:      []string{"a:22", "b:22"},
		Signer:        signer,
		HostKeys:      pinNothing{},
		Forwards:      []forward.Forward{{Name: "pi", Port: 22, TargetHost: "127.0.0.1", TargetPort: 22}},
		Systemd:       n,
		WatchdogEvery: 10 * time.Second,
		Clock:         fake,
		Log:           log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { tun.watchdog(ctx) }) // the loops themselves are not started
	defer func() { cancel(); wg.Wait() }()

	tick := func() {
		t.Helper()
		sshtest.Eventually(t, 5*time.Second, func() bool { return fake.Pending() == 1 }, "watchdog parked on its timer")
		fake.Advance(10 * time.Second)
	}
	// Both loops beat: pings.
	for range 3 {
		for _, l := range tun.links {
			l.heartbeat()
		}
		tick()
	}
	sshtest.Eventually(t, 5*time.Second, func() bool { return n.count("WATCHDOG=1") == 3 }, "three pings")

	// Loop b stops beating; once it is older than healthyWithin, no pings.
	for i := 0; i < 8; i++ {
		tun.links[0].heartbeat()
		tick()
	}
	sshtest.Eventually(t, 5*time.Second, func() bool { return logs.Contains("tunnel loop wedged") && logs.Contains("b:22") }, "wedge reported")
	before := n.count("WATCHDOG=1")
	tun.links[0].heartbeat()
	tick()
	sshtest.Eventually(t, 5*time.Second, func() bool { return fake.Pending() == 1 }, "watchdog parked again")
	if after := n.count("WATCHDOG=1"); after != before {
		t.Errorf("watchdog pinged although loop b is wedged (%d -> %d)", before, after)
	}
	if before >= 3+8 {
		t.Errorf("every interval was pinged: %d", before)
	}
}

// pinNothing refuses every host key (for tests that never connect).
type pinNothing struct{}

func (pinNothing) HostKeyCallback(string) ssh.HostKeyCallback {
	return func(string, net.Addr, ssh.PublicKey) error { return errors.New("no key is pinned") }
}

func (pinNothing) Algorithms(string) []string { return nil }
