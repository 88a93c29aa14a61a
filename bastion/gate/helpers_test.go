package gate

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
)

// t0 is where fake clocks start.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeConn is a net.Conn that is never read: the gate's bookkeeping only
// looks at its address, sets its deadlines and may close it.
type fakeConn struct {
	net.Conn // nil: any other method panics
	remote   net.Addr

	mu     sync.Mutex
	closed bool
}

func newFakeConn(addr string) *fakeConn {
	return &fakeConn{remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 40000))}
}

func (c *fakeConn) RemoteAddr() net.Addr             { return c.remote }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *fakeConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// newTestGate returns a gate on a fake clock.
func newTestGate(t testing.TB, cfg Config) (*Gate, *clocktest.Fake) {
	t.Helper()
	fc := clocktest.New(t0)
	if cfg.Clock == nil {
		cfg.Clock = fc
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return g, fc
}

// admitted is one admitted fake connection.
type admitted struct {
	t  *Ticket
	nc *fakeConn
}

// mustAdmit admits a connection from addr or fails the test.
func mustAdmit(t testing.TB, g *Gate, addr string) admitted {
	t.Helper()
	nc := newFakeConn(addr)
	tk, err := g.Admit(nc)
	if err != nil {
		t.Fatalf("Admit(%s): %v", addr, err)
	}
	return admitted{tk, nc}
}

// mustRefuse admits a connection from addr, expects a refusal for reason
// and returns it.
func mustRefuse(t testing.TB, g *Gate, addr string, reason Reason) *Refusal {
	t.Helper()
	tk, err := g.Admit(newFakeConn(addr))
	if err == nil {
		tk.Done()
		t.Fatalf("Admit(%s) admitted, want refusal %q", addr, reason)
	}
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("Admit(%s) = %v (%T), want *Refusal", addr, err, err)
	}
	if r.Reason != reason {
		t.Fatalf("Admit(%s) refused for %q (%v), want %q", addr, r.Reason, r, reason)
	}
	return r
}

// pendingOf counts g's pending connections from addr's source.
func pendingOf(g *Gate, addr string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := netip.MustParseAddr(addr)
	for src, ts := range g.pending {
		if src.Contains(a.Unmap()) {
			return len(ts)
		}
	}
	return 0
}
