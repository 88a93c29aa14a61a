package tunnel

import (
	"context"
	"sync"

	"github.com/lifeline-dev/lifeline/shared/wire"
)

// Site roles (wire.SiteRoleRequest): of the agent's bastions, one texts the
// site's events (the reporter) and the others only keep them, so that an
// event is texted once. The reporter is the first bastion of the list
// (LIFELINE_BASTION order) whose connection is up and has registered a
// name; while none has, the first one connected (so that a lone bastion
// whose registration is still pending is never told to keep quiet). A
// connection is told its role after connecting, before it registers
// names, and every connection is told again whenever the reporter changes.

// role is what a connection was last told.
type role int8

const (
	roleNone role = iota // not told yet
	roleReporter
	roleQuiet
)

// connRole is a connection's part of the site role protocol.
type connRole struct {
	mu          sync.Mutex // held while a role request is in flight: one at a time, in order
	sent        role
	unsupported bool // the bastion refused the request (older lifeline, OpenSSH)
}

// reporter is the link that should text the site's events now; nil when no
// bastion is connected.
func (t *Tunnels) reporter() *link {
	var first *link
	for _, l := range t.links {
		l.mu.Lock()
		up, registered := l.conn != nil, len(l.st.Registered) > 0
		l.mu.Unlock()
		if up && registered {
			return l
		}
		if up && first == nil {
			first = l
		}
	}
	return first
}

// rolesChanged wakes roleLoop: the reporter may have changed.
func (t *Tunnels) rolesChanged() {
	select {
	case t.roles <- struct{}{}:
	default:
	}
}

// roleLoop tells every connection its role each time rolesChanged is
// called, until ctx ends.
func (t *Tunnels) roleLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.roles:
		}
		t.reconcileRoles(ctx)
	}
}

// reconcileRoles tells the reporter first (so that, for a moment, two
// bastions may text an event but none misses it), then the others at once.
func (t *Tunnels) reconcileRoles(ctx context.Context) {
	rep := t.reporter()
	if rep != nil {
		if s := rep.current(); s != nil {
			t.sendRole(ctx, s)
		}
	}
	var wg sync.WaitGroup
	for _, l := range t.links {
		if l == rep {
			continue
		}
		if s := l.current(); s != nil {
			wg.Go(func() { t.sendRole(ctx, s) })
		}
	}
	wg.Wait()
}

// sendRole tells s its role as things are now, unless it was told so
// already or its bastion does not know roles. A request that gets no reply
// leaves the role untold, to be sent again at the next change.
func (t *Tunnels) sendRole(ctx context.Context, s *conn) {
	s.role.mu.Lock()
	defer s.role.mu.Unlock()
	if s.role.unsupported {
		return
	}
	want := roleQuiet
	if t.reporter() == s.l {
		want = roleReporter
	}
	if s.role.sent == want {
		return
	}
	ok, err := s.request(ctx, wire.SiteRoleRequest, wire.SiteRole{Reporter: want == roleReporter}.Marshal())
	switch {
	case err != nil:
		s.log.Warn("site role not delivered", "reporter", want == roleReporter, "err", err)
	case !ok:
		s.role.unsupported = true
		s.log.Info("bastion does not know site roles (an older lifeline or a stock sshd): it texts every site event itself")
	default:
		s.role.sent = want
		s.log.Info("site role", "reporter", want == roleReporter)
	}
}
