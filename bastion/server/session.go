package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/bastion/wire"
	"github.com/lifeline-dev/lifeline/shared/netbind"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// session is one authenticated connection, agent or operator.
type session struct {
	s      *Server
	id     string
	conn   *ssh.ServerConn
	nc     net.Conn
	ident  *authz.Identity
	remote netip.AddrPort
	start  time.Time

	rttNanos  atomic.Int64
	lastAlive atomic.Int64 // unix nanos of the last keepalive reply

	closeOnce   sync.Once
	closeReason atomic.Pointer[string]
	holdsNames  bool // guarded by s.mu
	wg          sync.WaitGroup
}

func (s *Server) newSession(conn *ssh.ServerConn, nc net.Conn, id *authz.Identity, remote netip.AddrPort) *session {
	return &session{s: s, id: newID(), conn: conn, nc: nc, ident: id, remote: remote, start: s.cfg.Now()}
}

func (ss *session) event(kind string) audit.Event {
	return audit.Event{
		Kind: kind, Session: ss.id, Role: ss.ident.Role.String(), User: ss.conn.User(),
		Key: ss.ident.Name, Fingerprint: ss.ident.Fingerprint, Source: ss.remote.String(),
	}
}

func (ss *session) isAgent() bool { return ss.ident.Role == authz.RoleAgent }

// close ends the connection once, remembering why.
func (ss *session) close(reason string) {
	ss.closeOnce.Do(func() {
		ss.closeReason.Store(&reason)
		ss.conn.Close()
	})
}

func (ss *session) run(ctx context.Context, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	s := ss.s
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ev := ss.event(audit.KindLogin)
	ev.Reason = "authorized by " + ss.ident.Source
	if ss.ident.CA != "" {
		ev.Message = "certificate signed by " + ss.ident.CA + " for principal " + ss.ident.Principal
	}
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("login", "role", ss.ident.Role.String(), "key", ss.ident.Name, "fingerprint", ss.ident.Fingerprint, "remote", ss.remote, "session", ss.id)
	if !ss.isAgent() && s.cfg.Events != nil {
		s.cfg.Events.OperatorLogin(ss.ident, ss.conn.User(), ss.remote)
	}
	if ss.isAgent() {
		// Bound unacknowledged writes to a dead agent; keepalives catch the rest.
		if err := netbind.SetUserTimeout(ss.nc, s.cfg.Keepalive*time.Duration(s.cfg.KeepaliveMisses+1)); err != nil {
			s.cfg.Log.Warn("cannot bound unacknowledged writes", "remote", ss.remote, "err", err)
		}
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			ss.keepalive(ctx)
		}()
	}
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		for nc := range chans {
			ss.handleChannel(ctx, nc)
		}
	}()
	for req := range reqs {
		ss.handleGlobal(req)
	}
	// The connection is gone: unwind.
	cancel()
	ss.close("connection closed")
	ss.wg.Wait()
	ss.dropNames()
	end := ss.event(audit.KindDisconnect)
	end.DurationMS = s.cfg.Now().Sub(ss.start).Milliseconds()
	if r := ss.closeReason.Load(); r != nil {
		end.Reason = *r
	}
	s.cfg.Audit.Record(end)
	s.cfg.Log.Info("disconnected", "role", ss.ident.Role.String(), "key", ss.ident.Name, "remote", ss.remote, "after", time.Duration(end.DurationMS)*time.Millisecond, "why", end.Reason)
}

func (ss *session) refuseGlobal(req *ssh.Request, reason string) {
	ev := ss.event(audit.KindRefused)
	ev.Reason = req.Type + ": " + reason
	ss.s.cfg.Audit.Record(ev)
	ss.s.cfg.Log.Info("refused request", "type", req.Type, "key", ss.ident.Name, "remote", ss.remote, "reason", reason)
	if req.WantReply {
		req.Reply(false, nil)
	}
}

func (ss *session) handleGlobal(req *ssh.Request) {
	switch req.Type {
	case "tcpip-forward":
		if !ss.isAgent() {
			ss.refuseGlobal(req, "operators may not register names (remote forwarding is for agent keys)")
			return
		}
		ss.register(req)
	case "cancel-tcpip-forward":
		if !ss.isAgent() {
			ss.refuseGlobal(req, "operators hold no names")
			return
		}
		ss.cancel(req)
	case report.RequestType:
		if !ss.isAgent() {
			ss.refuseGlobal(req, "link reports come from agents only")
			return
		}
		ss.linkReport(req)
	default:
		// keepalive@openssh.com, no-more-sessions@openssh.com and anything
		// unknown: answer "no", as OpenSSH does.
		if req.WantReply {
			req.Reply(false, nil)
		}
	}
}

func (ss *session) register(req *ssh.Request) {
	s := ss.s
	fw, err := wire.ParseForward(req.Payload)
	if err != nil {
		ss.refuseGlobal(req, err.Error())
		return
	}
	t := authz.Target{Host: fw.BindAddr, Port: fw.BindPort}
	if !ss.ident.MayListen(t) {
		ss.refuseGlobal(req, fmt.Sprintf("name %s is not permitted for this key (permitlisten in %s)", t, ss.ident.Source))
		return
	}
	now := s.cfg.Now()
	prev, replaced := s.reg.Register(fw.BindAddr, fw.BindPort, ss, now)
	ss.markHolding()
	ev := ss.event(audit.KindRegister)
	ev.Target = t.String()
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("registered", "target", t.String(), "key", ss.ident.Name, "remote", ss.remote, "session", ss.id)
	if req.WantReply {
		req.Reply(true, nil)
	}
	if replaced {
		tk := ss.event(audit.KindTakeover)
		tk.Target = t.String()
		tk.Reason = fmt.Sprintf("replaces session %s from %s", prev.id, prev.remote)
		s.cfg.Audit.Record(tk)
		if prev.ident.Fingerprint == ss.ident.Fingerprint {
			// The same agent reconnected: the old connection is stale.
			s.cfg.Log.Info("replacing stale connection", "target", t.String(), "old_remote", prev.remote, "new_remote", ss.remote)
			prev.close("replaced by a newer connection of the same agent from " + ss.remote.String())
		} else {
			s.cfg.Log.Warn("name moved to another agent key", "target", t.String(), "old_key", prev.ident.Name, "new_key", ss.ident.Name)
			prev.releaseIfEmpty()
		}
	}
}

func (ss *session) cancel(req *ssh.Request) {
	s := ss.s
	fw, err := wire.ParseForward(req.Payload)
	if err != nil {
		ss.refuseGlobal(req, err.Error())
		return
	}
	ok := s.reg.Unregister(fw.BindAddr, fw.BindPort, ss)
	if ok {
		ev := ss.event(audit.KindUnregister)
		ev.Target = fmt.Sprintf("%s:%d", fw.BindAddr, fw.BindPort)
		ev.Reason = "cancelled by the agent"
		s.cfg.Audit.Record(ev)
		ss.releaseIfEmpty()
	}
	if req.WantReply {
		req.Reply(ok, nil)
	}
}

func (ss *session) linkReport(req *ssh.Request) {
	s := ss.s
	r, err := report.Decode(req.Payload)
	if err != nil {
		ss.refuseGlobal(req, err.Error())
		return
	}
	s.mu.Lock()
	s.reports[ss.ident.Fingerprint] = r
	s.mu.Unlock()
	ev := ss.event(audit.KindReport)
	ev.Message = r.Summary()
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("link report", "key", ss.ident.Name, "verdict", r.Verdict, "summary", r.Summary())
	if s.cfg.Events != nil {
		s.cfg.Events.LinkReport(ss.ident, ss.names(), r)
	}
	if req.WantReply {
		req.Reply(true, nil)
	}
}

// names lists the targets this connection holds.
func (ss *session) names() []string {
	var out []string
	for _, b := range ss.s.reg.Of(ss) {
		out = append(out, b.Target())
	}
	return out
}

// markHolding records that this connection holds a name; the first such
// connection of an agent key raises AgentUp.
func (ss *session) markHolding() {
	s := ss.s
	s.mu.Lock()
	if ss.holdsNames {
		s.mu.Unlock()
		return
	}
	ss.holdsNames = true
	s.agents[ss.ident.Fingerprint]++
	first := s.agents[ss.ident.Fingerprint] == 1
	s.mu.Unlock()
	if first && s.cfg.Events != nil {
		s.cfg.Events.AgentUp(ss.ident, ss.names())
	}
}

// releaseIfEmpty is called when this connection may have lost its last
// name; the last connection of an agent key to do so raises AgentDown.
func (ss *session) releaseIfEmpty() {
	if ss.s.reg.Holds(ss) > 0 {
		return
	}
	ss.release(nil)
}

func (ss *session) release(held []string) {
	s := ss.s
	s.mu.Lock()
	if !ss.holdsNames {
		s.mu.Unlock()
		return
	}
	ss.holdsNames = false
	s.agents[ss.ident.Fingerprint]--
	last := s.agents[ss.ident.Fingerprint] <= 0
	if last {
		delete(s.agents, ss.ident.Fingerprint)
	}
	s.mu.Unlock()
	if last && s.cfg.Events != nil {
		s.cfg.Events.AgentDown(ss.ident, held)
	}
}

// dropNames unregisters everything this connection still holds.
func (ss *session) dropNames() {
	s := ss.s
	gone := s.reg.RemoveSession(ss)
	held := make([]string, 0, len(gone))
	for _, b := range gone {
		ev := ss.event(audit.KindUnregister)
		ev.Target = b.Target()
		ev.Reason = "agent disconnected"
		s.cfg.Audit.Record(ev)
		held = append(held, b.Target())
	}
	ss.release(held)
}

func (ss *session) keepalive(ctx context.Context) {
	s := ss.s
	t := time.NewTicker(s.cfg.Keepalive)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		if ok := ss.ping(ctx, s.cfg.Keepalive); ok {
			misses = 0
			ss.rttNanos.Store(int64(time.Since(start)))
			ss.lastAlive.Store(s.cfg.Now().UnixNano())
			continue
		}
		if ctx.Err() != nil {
			return
		}
		misses++
		s.cfg.Log.Debug("agent keepalive missed", "key", ss.ident.Name, "remote", ss.remote, "misses", misses)
		if misses >= s.cfg.KeepaliveMisses {
			ss.close(fmt.Sprintf("no keepalive reply %d times in a row (every %s): link dead", misses, s.cfg.Keepalive))
			return
		}
	}
}

// ping sends one keepalive and waits at most d for any reply.
func (ss *session) ping(ctx context.Context, d time.Duration) bool {
	done := make(chan error, 1)
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		// SendRequest blocks until a reply or the connection closes; the
		// connection is closed on shutdown or after too many misses.
		_, _, err := ss.conn.SendRequest("keepalive@openssh.com", true, nil)
		done <- err
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-done:
		return err == nil
	case <-timer.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// describeOperator names the operator in messages shown to agents' peers.
func describe(id *authz.Identity) string {
	return strings.TrimSpace(id.Name + " (" + id.Fingerprint + ")")
}
