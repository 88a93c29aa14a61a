package server

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// keepaliveAgent connects as key, registers name:port and counts the
// keepalives the bastion sends; it answers them only when answer is set.
func keepaliveAgent(t *testing.T, w *world, key sshtest.Key, name string, port uint32, answer bool) *atomic.Int32 {
	t.Helper()
	nc, err := net.DialTimeout("tcp", w.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, w.addr, &ssh.ClientConfig{
		Config: sshalgo.Config(), User: "agent", Auth: []ssh.AuthMethod{ssh.PublicKeys(key.Signer)},
		HostKeyCallback: ssh.FixedHostKey(w.hostKey.Signer.PublicKey()), HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	go func() {
		for c := range chans {
			c.Reject(ssh.Prohibited, "test")
		}
	}()
	asked := &atomic.Int32{}
	go func() {
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				asked.Add(1)
			}
			if answer {
				r.Reply(false, nil)
			}
		}
	}()
	if ok, _, err := sc.SendRequest("tcpip-forward", true, ssh.Marshal(struct {
		A string
		P uint32
	}{name, port})); !ok || err != nil {
		t.Fatalf("register: %v %v", ok, err)
	}
	return asked
}

// heardNow reports whether the agent holding target was last heard at the
// fake clock's now.
func heardNow(w *world, clk *clocktest.Fake, target string) bool {
	for _, b := range w.srv.reg.Snapshot() {
		if b.Target() == target {
			return b.Session.lastHeard().Equal(clk.Now())
		}
	}
	return false
}

// The keepalive loop on a fake clock: an agent quiet for AgentQuiet is
// asked once, and one that answers is kept (and asked again a quiet period
// after its answer); one that does not is closed AgentDeadAfter later.
func TestKeepaliveOnFakeClock(t *testing.T) {
	t.Parallel()
	const quiet = time.Minute // AgentDeadAfter is 3 minutes
	t.Run("answers", func(t *testing.T) {
		t.Parallel()
		clk := clocktest.New(time.Now())
		w := newWorld(t, worldOpts{keepalive: quiet, clock: clk})
		asked := keepaliveAgent(t, w, w.agent, "pi", 22, true)
		w.waitRegistered("pi:22")
		for i := int32(1); i <= 3; i++ {
			// Parked on its quiet timer, having heard from the agent now.
			sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 && heardNow(w, clk, "pi:22") },
				"keepalive loop not parked (%d timers)", clk.Pending())
			if n := asked.Load(); n != i-1 {
				t.Fatalf("asked %d times before quiet period %d", n, i)
			}
			clk.Advance(quiet)
			sshtest.Eventually(t, 10*time.Second, func() bool { return asked.Load() == i }, "not asked after quiet period %d", i)
		}
		sshtest.Eventually(t, 10*time.Second, func() bool { return heardNow(w, clk, "pi:22") }, "no answer heard")
		if len(w.srv.Snapshot(nil).Targets) != 1 || w.rec.has(audit.KindDisconnect, "keepalive") {
			t.Errorf("an agent that answers was dropped:\n%s", w.rec.dump())
		}
	})
	t.Run("silent", func(t *testing.T) {
		t.Parallel()
		clk := clocktest.New(time.Now())
		w := newWorld(t, worldOpts{keepalive: quiet, clock: clk})
		asked := keepaliveAgent(t, w, w.agent2, "cam", 80, false)
		w.waitRegistered("cam:80")
		sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "keepalive loop not parked")
		clk.Advance(quiet - time.Second)
		if asked.Load() != 0 {
			t.Fatal("asked before the quiet period ended")
		}
		clk.Advance(time.Second)
		// Asked once, then waiting for the answer on the reply deadline.
		sshtest.Eventually(t, 10*time.Second, func() bool { return asked.Load() == 1 && clk.Pending() == 1 }, "not asked once")
		clk.Advance(3*quiet - time.Second)
		if asked.Load() != 1 || len(w.srv.Snapshot(nil).Targets) != 1 {
			t.Fatalf("asked %d times, or closed before the reply deadline:\n%s", asked.Load(), w.rec.dump())
		}
		clk.Advance(time.Second)
		sshtest.Eventually(t, 10*time.Second, func() bool { return len(w.srv.Snapshot(nil).Targets) == 0 }, "a silent agent was kept")
		sshtest.Eventually(t, 10*time.Second, func() bool { return w.rec.has(audit.KindDisconnect, "no keepalive reply") }, "no disconnect audited:\n%s", w.rec.dump())
		if n := asked.Load(); n != 1 {
			t.Errorf("asked %d times, want once", n)
		}
	})
}
