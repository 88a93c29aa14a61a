package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/netbind"
)

// conn is one authenticated connection, agent or operator. (In this
// package "session" means only the SSH session channel; audit events and
// logs keep calling a connection's id its session, as operators know it.)
type conn struct {
	s      *Server
	id     string
	sc     *ssh.ServerConn
	nc     net.Conn
	key    ssh.PublicKey // the key (or certificate) that logged in, for re-checks
	remote netip.AddrPort
	start  time.Time

	// ident is replaced when a reload re-checks the connection; the role
	// and fingerprint never change (a change of role closes it).
	ident atomic.Pointer[authz.Identity]
	// changed wakes the watch loop when ident or the channel count changed.
	changed chan struct{}

	rttNanos atomic.Int64 // round trip of the bastion's last keepalive, if any
	// heard is the connection as the SSH layer reads it: when the client
	// was last heard from. nil in tests that build a conn by hand.
	heard *heardConn

	// Guarded by s.mu.
	holdsNames bool
	chans      int       // channels open (operators)
	sessions   int       // session channels open (operators)
	idleSince  time.Time // when chans last dropped to 0

	bucket *bucket // shared by every connection of the key

	// helpHost is the jump host's name as the operator's ssh_config has it
	// (SetEnv LIFELINE_HOST=…), for the help; nil: the bastion's name.
	helpHost atomic.Pointer[string]

	closeOnce   sync.Once
	closeReason atomic.Pointer[string]
	wg          sync.WaitGroup
}

func (s *Server) newConn(sc *ssh.ServerConn, nc net.Conn, id *authz.Identity, key ssh.PublicKey, remote netip.AddrPort) *conn {
	now := s.cfg.Clock.Now()
	c := &conn{s: s, id: newID(), sc: sc, nc: nc, key: key, remote: remote, start: now, idleSince: now,
		changed: make(chan struct{}, 1)}
	c.ident.Store(id)
	return c
}

func (c *conn) identity() *authz.Identity { return c.ident.Load() }

// software is the client's identification line (control characters
// dropped, at most 100 bytes) and the cipher negotiated from it towards
// the bastion.
func (c *conn) software() (client, cipher string) {
	client = strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return -1
		}
		return r
	}, string(c.sc.ClientVersion()))
	client = truncate(client, 100)
	if a, ok := c.sc.Conn.(ssh.AlgorithmsConnMetadata); ok {
		r := a.Algorithms().Read
		cipher = r.Cipher
		if r.MAC != "" {
			cipher += " " + r.MAC
		}
	}
	return client, cipher
}

func (c *conn) event(kind string) audit.Event {
	id := c.identity()
	return audit.Event{
		Kind: kind, Session: c.id, Role: id.Role.String(), User: c.sc.User(),
		Key: id.Name, Fingerprint: id.Fingerprint, Source: c.remote.String(),
	}
}

func (c *conn) isAgent() bool { return c.identity().Role == authz.RoleAgent }

// close ends the connection once, remembering why.
func (c *conn) close(reason string) {
	c.closeOnce.Do(func() {
		c.closeReason.Store(&reason)
		c.sc.Close()
	})
}

func (c *conn) kick() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *conn) run(ctx context.Context, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	s := c.s
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	id := c.identity()
	ev := c.event(audit.KindLogin)
	ev.Reason = "authorized by " + id.Source
	if id.CA != "" {
		ev.Message = "certificate signed by " + id.CA + " for principal " + id.Principal + "; "
	}
	client, cipher := c.software()
	ev.Message += fmt.Sprintf("client %q, cipher %s", client, cipher)
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("login", "role", id.Role.String(), "key", id.Name, "fingerprint", id.Fingerprint, "remote", c.remote, "session", c.id,
		"client", client, "cipher", cipher)
	if !c.isAgent() && s.cfg.Events != nil {
		s.cfg.Events.OperatorLogin(id, c.sc.User(), c.remote)
	}
	if c.isAgent() {
		// The kernel finds a dead agent: unacknowledged data and
		// unanswered TCP keepalive probes end the connection after
		// AgentDeadAfter; the keepalive loop asks only a quiet agent.
		if err := errors.Join(netbind.SetUserTimeout(c.nc, s.cfg.AgentDeadAfter),
			netbind.SetKeepAlive(c.nc, agentKeepAlive(s.cfg.AgentDeadAfter))); err != nil {
			s.cfg.Log.Warn("cannot bound a silent agent connection", "remote", c.remote, "err", err)
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.keepalive(ctx)
		}()
	}
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.watch(ctx)
	}()
	go func() {
		defer c.wg.Done()
		for nc := range chans {
			c.handleChannel(ctx, nc)
		}
	}()
	for req := range reqs {
		if !c.allow() {
			c.refuseGlobal(req, fmt.Sprintf("more than %d requests a second (LIFELINE_REQUESTS_PER_SECOND)", s.cfg.Limits.RequestsPerSecond))
			continue
		}
		c.handleGlobal(req)
	}
	// The connection is gone: unwind.
	cancel()
	why := "closed by the client"
	if err := c.sc.Wait(); err != nil && !errors.Is(err, io.EOF) {
		why = "connection lost: " + err.Error()
	}
	c.close(why)
	c.wg.Wait()
	c.dropNames()
	end := c.event(audit.KindDisconnect)
	end.DurationMS = s.cfg.Clock.Now().Sub(c.start).Milliseconds()
	if r := c.closeReason.Load(); r != nil {
		end.Reason = *r
	}
	s.cfg.Audit.Record(end)
	s.cfg.Log.Info("disconnected", "role", id.Role.String(), "key", id.Name, "remote", c.remote, "after", time.Duration(end.DurationMS)*time.Millisecond, "why", end.Reason)
}

// allow takes one request from the key's budget (all its connections share
// it). A key that keeps flooding past it has every connection closed and
// its logins refused for floodPenalty.
func (c *conn) allow() bool {
	s := c.s
	now := s.cfg.Clock.Now()
	ok, flooding := c.bucket.take(now)
	if flooding {
		s.penalise(c.identity(), now)
	}
	return ok
}

// watch closes the connection when its login expires (certificate
// valid-before, expiry-time=) and, for operators, when no channel has been
// open for IdleTimeout.
func (c *conn) watch(ctx context.Context) {
	s := c.s
	for {
		id := c.identity()
		now := s.cfg.Clock.Now()
		var deadline time.Time
		var why string
		if !id.Expires.IsZero() {
			deadline, why = id.Expires, "login expired at "+id.Expires.UTC().Format(time.RFC3339)+" (certificate valid-before or expiry-time)"
		}
		if !c.isAgent() {
			s.mu.Lock()
			busy, since := c.chans > 0, c.idleSince
			s.mu.Unlock()
			if idle := since.Add(s.cfg.Limits.IdleTimeout); !busy && (deadline.IsZero() || idle.Before(deadline)) {
				deadline, why = idle, fmt.Sprintf("no channel open for %s (LIFELINE_IDLE_TIMEOUT)", s.cfg.Limits.IdleTimeout)
			}
		}
		if !deadline.IsZero() && !now.Before(deadline) {
			ev := c.event(audit.KindRefused)
			ev.Reason = "closed: " + why
			s.cfg.Audit.Record(ev)
			c.close(why)
			return
		}
		var timeout <-chan time.Time
		var t clock.Timer
		if !deadline.IsZero() {
			t = s.cfg.Clock.NewTimer(deadline.Sub(now))
			timeout = t.C()
		}
		select {
		case <-ctx.Done():
		case <-c.changed:
		case <-timeout:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// recheck authenticates the connection's key again under the current
// policy. A connection no longer admitted is closed and recheck returns
// false; otherwise its identity is updated, and names its agent key may no
// longer hold are released.
func (c *conn) recheck(why string) bool {
	s := c.s
	old := c.identity()
	id, err := s.policy.Load().Authenticate(c.sc.User(), c.remote.Addr(), c.key, s.cfg.Clock.Now())
	if err == nil && (id.Role != old.Role || id.Fingerprint != old.Fingerprint) {
		err = fmt.Errorf("key is now in the %s file, not the %s file", id.Role, old.Role)
	}
	if err != nil {
		reason := fmt.Sprintf("no longer authorized (%s): %s", why, redact(err.Error()))
		ev := c.event(audit.KindRefused)
		ev.Reason = fmt.Sprintf("closed: no longer authorized (%s): %v", why, err) // the audit log keeps the file and line
		s.cfg.Audit.Record(ev)
		s.cfg.Log.Warn("closing a connection whose key is no longer authorized", "key", old.Name, "remote", c.remote, "err", err)
		c.close(reason)
		return false
	}
	c.ident.Store(id)
	c.kick()
	if id.Role == authz.RoleAgent {
		for _, b := range s.reg.Of(c) {
			t := authz.Target{Host: b.Name, Port: b.Port}
			if !id.MayListen(t) {
				c.unregister(b.Name, b.Port, "no longer in the key's permitlisten after a reload")
			}
		}
	}
	return true
}

// describe names a key in messages: comment and fingerprint.
func describe(id *authz.Identity) string {
	return strings.TrimSpace(id.Name + " (" + id.Fingerprint + ")")
}

// redact cuts the file:line references of the bastion's key files out of a
// policy error shown to a client or kept in a close reason: the audit log
// has them, a client must not learn server paths.
func redact(s string) string {
	for {
		i := strings.Index(s, " (/")
		if i < 0 {
			return s
		}
		j := strings.IndexByte(s[i:], ')')
		if j < 0 {
			return s
		}
		s = s[:i] + s[i+j+1:]
	}
}
