package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/bastion/registry"
	"github.com/lifeline-dev/lifeline/shared/netbind"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/wire"
)

// session is one authenticated connection, agent or operator.
type session struct {
	s      *Server
	id     string
	conn   *ssh.ServerConn
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
	// was last heard from. nil in tests that build a session by hand.
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

func (s *Server) newSession(conn *ssh.ServerConn, nc net.Conn, id *authz.Identity, key ssh.PublicKey, remote netip.AddrPort) *session {
	now := s.cfg.Now()
	ss := &session{s: s, id: newID(), conn: conn, nc: nc, key: key, remote: remote, start: now, idleSince: now,
		changed: make(chan struct{}, 1)}
	ss.ident.Store(id)
	return ss
}

func (ss *session) identity() *authz.Identity { return ss.ident.Load() }

// software is the client's identification line (control characters
// dropped, at most 100 bytes) and the cipher negotiated from it towards
// the bastion.
func (ss *session) software() (client, cipher string) {
	client = strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return -1
		}
		return r
	}, string(ss.conn.ClientVersion()))
	client = truncate(client, 100)
	if a, ok := ss.conn.Conn.(ssh.AlgorithmsConnMetadata); ok {
		r := a.Algorithms().Read
		cipher = r.Cipher
		if r.MAC != "" {
			cipher += " " + r.MAC
		}
	}
	return client, cipher
}

func (ss *session) event(kind string) audit.Event {
	id := ss.identity()
	return audit.Event{
		Kind: kind, Session: ss.id, Role: id.Role.String(), User: ss.conn.User(),
		Key: id.Name, Fingerprint: id.Fingerprint, Source: ss.remote.String(),
	}
}

func (ss *session) isAgent() bool { return ss.identity().Role == authz.RoleAgent }

// close ends the connection once, remembering why.
func (ss *session) close(reason string) {
	ss.closeOnce.Do(func() {
		ss.closeReason.Store(&reason)
		ss.conn.Close()
	})
}

func (ss *session) kick() {
	select {
	case ss.changed <- struct{}{}:
	default:
	}
}

func (ss *session) run(ctx context.Context, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	s := ss.s
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	id := ss.identity()
	ev := ss.event(audit.KindLogin)
	ev.Reason = "authorized by " + id.Source
	if id.CA != "" {
		ev.Message = "certificate signed by " + id.CA + " for principal " + id.Principal + "; "
	}
	client, cipher := ss.software()
	ev.Message += fmt.Sprintf("client %q, cipher %s", client, cipher)
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("login", "role", id.Role.String(), "key", id.Name, "fingerprint", id.Fingerprint, "remote", ss.remote, "session", ss.id,
		"client", client, "cipher", cipher)
	if !ss.isAgent() && s.cfg.Events != nil {
		s.cfg.Events.OperatorLogin(id, ss.conn.User(), ss.remote)
	}
	if ss.isAgent() {
		// The kernel finds a dead agent: unacknowledged data and
		// unanswered TCP keepalive probes end the connection after
		// AgentDeadAfter; the keepalive loop asks only a quiet agent.
		if err := errors.Join(netbind.SetUserTimeout(ss.nc, s.cfg.AgentDeadAfter),
			netbind.SetKeepAlive(ss.nc, agentKeepAlive(s.cfg.AgentDeadAfter))); err != nil {
			s.cfg.Log.Warn("cannot bound a silent agent connection", "remote", ss.remote, "err", err)
		}
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			ss.keepalive(ctx)
		}()
	}
	ss.wg.Add(2)
	go func() {
		defer ss.wg.Done()
		ss.watch(ctx)
	}()
	go func() {
		defer ss.wg.Done()
		for nc := range chans {
			ss.handleChannel(ctx, nc)
		}
	}()
	for req := range reqs {
		if !ss.allow() {
			ss.refuseGlobal(req, fmt.Sprintf("more than %d requests a second (LIFELINE_REQUESTS_PER_SECOND)", s.cfg.Limits.RequestsPerSecond))
			continue
		}
		ss.handleGlobal(req)
	}
	// The connection is gone: unwind.
	cancel()
	why := "closed by the client"
	if err := ss.conn.Wait(); err != nil && !errors.Is(err, io.EOF) {
		why = "connection lost: " + err.Error()
	}
	ss.close(why)
	ss.wg.Wait()
	ss.dropNames()
	end := ss.event(audit.KindDisconnect)
	end.DurationMS = s.cfg.Now().Sub(ss.start).Milliseconds()
	if r := ss.closeReason.Load(); r != nil {
		end.Reason = *r
	}
	s.cfg.Audit.Record(end)
	s.cfg.Log.Info("disconnected", "role", id.Role.String(), "key", id.Name, "remote", ss.remote, "after", time.Duration(end.DurationMS)*time.Millisecond, "why", end.Reason)
}

// allow takes one request from the key's budget (all its connections share
// it). A key that keeps flooding past it has every connection closed and
// its logins refused for floodPenalty.
func (ss *session) allow() bool {
	s := ss.s
	now := s.cfg.Now()
	ok, flooding := ss.bucket.take(now)
	if flooding {
		s.penalise(ss.identity(), now)
	}
	return ok
}

// watch closes the connection when its login expires (certificate
// valid-before, expiry-time=) and, for operators, when no channel has been
// open for IdleTimeout.
func (ss *session) watch(ctx context.Context) {
	s := ss.s
	for {
		id := ss.identity()
		now := s.cfg.Now()
		var deadline time.Time
		var why string
		if !id.Expires.IsZero() {
			deadline, why = id.Expires, "login expired at "+id.Expires.UTC().Format(time.RFC3339)+" (certificate valid-before or expiry-time)"
		}
		if !ss.isAgent() {
			s.mu.Lock()
			busy, since := ss.chans > 0, ss.idleSince
			s.mu.Unlock()
			if idle := since.Add(s.cfg.Limits.IdleTimeout); !busy && (deadline.IsZero() || idle.Before(deadline)) {
				deadline, why = idle, fmt.Sprintf("no channel open for %s (LIFELINE_IDLE_TIMEOUT)", s.cfg.Limits.IdleTimeout)
			}
		}
		if !deadline.IsZero() && !now.Before(deadline) {
			ev := ss.event(audit.KindRefused)
			ev.Reason = "closed: " + why
			s.cfg.Audit.Record(ev)
			ss.close(why)
			return
		}
		var timeout <-chan time.Time
		if !deadline.IsZero() {
			t := time.NewTimer(deadline.Sub(now))
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-ss.changed:
		case <-timeout:
		}
	}
}

// recheck authenticates the connection's key again under the current
// policy. A connection no longer admitted is closed and recheck returns
// false; otherwise its identity is updated, and names its agent key may no
// longer hold are released.
func (ss *session) recheck(why string) bool {
	s := ss.s
	old := ss.identity()
	id, err := s.policy.Load().Authenticate(ss.conn.User(), ss.remote.Addr(), ss.key, s.cfg.Now())
	if err == nil && (id.Role != old.Role || id.Fingerprint != old.Fingerprint) {
		err = fmt.Errorf("key is now in the %s file, not the %s file", id.Role, old.Role)
	}
	if err != nil {
		reason := fmt.Sprintf("no longer authorized (%s): %s", why, redact(err.Error()))
		ev := ss.event(audit.KindRefused)
		ev.Reason = fmt.Sprintf("closed: no longer authorized (%s): %v", why, err) // the audit log keeps the file and line
		s.cfg.Audit.Record(ev)
		s.cfg.Log.Warn("closing a connection whose key is no longer authorized", "key", old.Name, "remote", ss.remote, "err", err)
		ss.close(reason)
		return false
	}
	ss.ident.Store(id)
	ss.kick()
	if id.Role == authz.RoleAgent {
		for _, b := range s.reg.Of(ss) {
			t := authz.Target{Host: b.Name, Port: b.Port}
			if !id.MayListen(t) {
				ss.unregister(b.Name, b.Port, "no longer in the key's permitlisten after a reload")
			}
		}
	}
	return true
}

func (ss *session) refuseGlobal(req *ssh.Request, reason string) {
	ev := ss.event(audit.KindRefused)
	ev.Reason = req.Type + ": " + reason
	ss.s.cfg.Audit.Record(ev)
	ss.s.cfg.Log.Debug("refused request", "type", req.Type, "key", ss.identity().Name, "remote", ss.remote, "reason", reason)
	if !req.WantReply {
		return
	}
	if req.Type == wire.CheckForwardRequest {
		// The doctor that asked shows why (a rate limit, too).
		req.Reply(false, wire.CheckForwardReason{Reason: reason}.Marshal())
		return
	}
	req.Reply(false, nil)
}

func (ss *session) handleGlobal(req *ssh.Request) {
	switch req.Type {
	case "tcpip-forward":
		ss.register(req)
	case wire.CheckForwardRequest:
		ss.checkForward(req)
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

// mayRegister decides a tcpip-forward payload for this connection: the
// name and target it would register, or why it may not ("" = it may).
// It changes nothing: register and checkForward both ask it.
func (ss *session) mayRegister(payload []byte) (wire.Forward, authz.Target, string) {
	s := ss.s
	id := ss.identity()
	if id.Role != authz.RoleAgent {
		return wire.Forward{}, authz.Target{}, "this key is an operator's, not an agent's: only keys of the agents file (LIFELINE_AGENTS) may register names"
	}
	fw, err := wire.ParseForward(payload)
	if err != nil {
		return wire.Forward{}, authz.Target{}, err.Error()
	}
	// TargetFrom refuses what is not an ASCII DNS-style name, so no name
	// can match a permit by Unicode case folding.
	t, err := authz.TargetFrom(fw.BindAddr, fw.BindPort)
	if err != nil {
		return fw, authz.Target{}, err.Error()
	}
	if !id.MayListen(t) {
		names := make([]string, 0, len(id.Listen))
		for _, l := range id.Listen {
			names = append(names, l.String())
		}
		whose := "this key's permitlisten is"
		if id.CA != "" {
			whose = "this certificate's names (its principals within the CA line's permitlisten) are"
		}
		return fw, t, fmt.Sprintf("not permitted: %s %q", whose, strings.Join(names, ","))
	}
	if n := s.reg.Holds(ss); n >= s.cfg.Limits.MaxNamesPerConn && !s.reg.Registered(fw.BindAddr, fw.BindPort, ss) {
		return fw, t, fmt.Sprintf("this connection already holds %d names (LIFELINE_MAX_NAMES_PER_CONN)", n)
	}
	return fw, t, ""
}

// checkForward answers wire.CheckForwardRequest: whether a tcpip-forward
// with this payload would be accepted on this connection. Nothing is
// registered and the name's holder is left alone; a refusal is logged, not
// audited (nothing was attempted).
func (ss *session) checkForward(req *ssh.Request) {
	fw, _, why := ss.mayRegister(req.Payload)
	id := ss.identity()
	ss.s.cfg.Log.Info("registration checked (dry run)", "name", fw.BindAddr, "port", fw.BindPort, "key", id.Name, "remote", ss.remote,
		"session", ss.id, "permitted", why == "", "why", why)
	if !req.WantReply {
		return
	}
	if why == "" {
		req.Reply(true, nil)
		return
	}
	req.Reply(false, wire.CheckForwardReason{Reason: why}.Marshal())
}

func (ss *session) register(req *ssh.Request) {
	s := ss.s
	fw, t, why := ss.mayRegister(req.Payload)
	if why != "" {
		if t.Host != "" {
			why = "name " + t.String() + ": " + why
		}
		ss.refuseGlobal(req, why)
		return
	}
	id := ss.identity()
	now := s.cfg.Now()
	prev, replaced := s.reg.Register(fw.BindAddr, fw.BindPort, ss, now)
	s.mu.Lock()
	delete(s.departed, targetKey(fw.BindAddr, fw.BindPort))
	s.mu.Unlock()
	ss.markHolding()
	ev := ss.event(audit.KindRegister)
	ev.Target = t.String()
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("registered", "target", t.String(), "key", id.Name, "remote", ss.remote, "session", ss.id)
	if req.WantReply {
		req.Reply(true, nil)
	}
	if !replaced {
		return
	}
	pid := prev.identity()
	tk := ss.event(audit.KindTakeover)
	tk.Target = t.String()
	if pid.Fingerprint == id.Fingerprint {
		// The same agent reconnected: the old connection is stale.
		tk.Reason = fmt.Sprintf("replaces session %s of the same key from %s", prev.id, prev.remote)
		s.cfg.Audit.Record(tk)
		s.cfg.Log.Info("replacing stale connection", "target", t.String(), "old_remote", prev.remote, "new_remote", ss.remote)
		prev.close("replaced by a newer connection of the same agent from " + ss.remote.String())
		return
	}
	// Another key permitted the same name: the newest registration wins,
	// the earlier holder stands by and gets the name back when this one
	// leaves. The owner is told: connections now reach another machine.
	tk.Reason = fmt.Sprintf("taken over from key %s (session %s from %s); it stands by", describe(pid), prev.id, prev.remote)
	s.cfg.Audit.Record(tk)
	s.cfg.Log.Warn("name taken over by another agent key", "target", t.String(), "old_key", pid.Name, "new_key", id.Name)
	if s.cfg.Events != nil {
		s.cfg.Events.NameMoved(t.String(), id, pid, true)
	}
}

func (ss *session) cancel(req *ssh.Request) {
	fw, err := wire.ParseForward(req.Payload)
	if err != nil {
		ss.refuseGlobal(req, err.Error())
		return
	}
	ok := ss.unregister(fw.BindAddr, fw.BindPort, "cancelled by the agent")
	if req.WantReply {
		req.Reply(ok, nil)
	}
}

// unregister drops one registration of this connection, hands the name
// back to an earlier holder if there is one, and raises AgentDown when it
// was the connection's last.
func (ss *session) unregister(name string, port uint32, why string) bool {
	s := ss.s
	ok, mv := s.reg.Unregister(name, port, ss)
	if !ok {
		return false
	}
	ev := ss.event(audit.KindUnregister)
	ev.Target = fmt.Sprintf("%s:%d", name, port)
	ev.Reason = why
	s.cfg.Audit.Record(ev)
	if mv != nil {
		s.handBack(*mv)
	} else if _, held := s.reg.Lookup(name, port); !held {
		ss.departed(authz.Target{Host: name, Port: port}, why)
	}
	ss.releaseIfEmpty()
	return true
}

// departed remembers that this connection was the last to hold t.
func (ss *session) departed(t authz.Target, why string) {
	s := ss.s
	id := ss.identity()
	d := departure{target: t, agent: id.Name, fingerprint: id.Fingerprint, from: ss.remote, since: s.cfg.Now(), reason: clip(why, 120)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.departed) >= maxDeparted {
		oldest := make([]string, 0, len(s.departed))
		for k := range s.departed {
			oldest = append(oldest, k)
		}
		slices.SortFunc(oldest, func(a, b string) int { return s.departed[a].since.Compare(s.departed[b].since) })
		for _, k := range oldest[:len(oldest)/10+1] {
			delete(s.departed, k)
		}
	}
	s.departed[targetKey(t.Host, t.Port)] = d
}

// handBack records that a name went back to an earlier holder.
func (s *Server) handBack(mv registry.Move[*session]) {
	to, from := mv.To.Session, mv.From.Session
	ev := to.event(audit.KindTakeover)
	ev.Target = mv.To.Target()
	ev.Reason = fmt.Sprintf("back with this session after session %s (key %s) left", from.id, describe(from.identity()))
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("name handed back to an earlier holder", "target", mv.To.Target(), "key", to.identity().Name, "from_key", from.identity().Name)
	if s.cfg.Events != nil && to.identity().Fingerprint != from.identity().Fingerprint {
		s.cfg.Events.NameMoved(mv.To.Target(), to.identity(), from.identity(), false)
	}
}

func (ss *session) linkReport(req *ssh.Request) {
	s := ss.s
	r, err := report.Decode(req.Payload)
	if err != nil {
		ss.refuseGlobal(req, err.Error())
		return
	}
	id := ss.identity()
	now := s.cfg.Now()
	s.mu.Lock()
	b, seen := s.reportAt[id.Fingerprint]
	if !seen {
		b = &reportBudget{tokens: reportBurst, last: now}
		s.reportAt[id.Fingerprint] = b
	}
	ok := b.take(now, s.cfg.Limits.ReportEvery)
	if ok {
		s.reports[id.Fingerprint] = r
	}
	s.mu.Unlock()
	if !ok {
		ss.refuseGlobal(req, fmt.Sprintf("more than %d link reports in %s from this agent key (LIFELINE_REPORT_EVERY); the last one taken stands", reportBurst, reportBurst*s.cfg.Limits.ReportEvery))
		return
	}
	ev := ss.event(audit.KindReport)
	ev.Message = r.Summary()
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("link report", "key", id.Name, "verdict", r.Verdict, "summary", r.Summary())
	if s.cfg.Events != nil {
		s.cfg.Events.LinkReport(id, ss.names(), r)
	}
	if req.WantReply {
		req.Reply(true, nil)
	}
}

// names lists the targets this connection has registered.
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
	fp := ss.identity().Fingerprint
	s.mu.Lock()
	if ss.holdsNames {
		s.mu.Unlock()
		return
	}
	ss.holdsNames = true
	s.agents[fp]++
	first := s.agents[fp] == 1
	s.mu.Unlock()
	if first && s.cfg.Events != nil {
		s.cfg.Events.AgentUp(ss.identity(), ss.names())
	}
}

// releaseIfEmpty is called when this connection may have lost its last
// registration; the last connection of an agent key to do so raises
// AgentDown. A name standing by counts as held: the agent is connected.
func (ss *session) releaseIfEmpty() {
	if ss.s.reg.Holds(ss) > 0 {
		return
	}
	ss.release(nil)
}

func (ss *session) release(held []string) {
	s := ss.s
	fp := ss.identity().Fingerprint
	s.mu.Lock()
	if !ss.holdsNames {
		s.mu.Unlock()
		return
	}
	ss.holdsNames = false
	s.agents[fp]--
	last := s.agents[fp] <= 0
	if last {
		delete(s.agents, fp)
	}
	s.mu.Unlock()
	if last && s.cfg.Events != nil {
		s.cfg.Events.AgentDown(ss.identity(), held)
	}
}

// dropNames unregisters everything this connection still holds, handing
// names back to earlier holders still connected.
func (ss *session) dropNames() {
	s := ss.s
	gone, moves := s.reg.RemoveSession(ss)
	held := make([]string, 0, len(gone)+len(moves))
	why := "connection closed"
	if r := ss.closeReason.Load(); r != nil {
		why = *r
	}
	for _, b := range gone {
		ev := ss.event(audit.KindUnregister)
		ev.Target = b.Target()
		ev.Reason = "agent disconnected"
		s.cfg.Audit.Record(ev)
		held = append(held, b.Target())
		ss.departed(authz.Target{Host: b.Name, Port: b.Port}, why)
	}
	for _, mv := range moves {
		s.handBack(mv)
		held = append(held, mv.From.Target())
	}
	ss.release(held)
}

// acquire reserves a channel of this operator connection: a relay
// (direct-tcpip) or the session channel. It returns the release func, or
// why the channel is refused.
// acquire reserves a channel of this operator connection: a relay to the
// agent session agent (direct-tcpip), or the session channel (agent nil).
// It returns the release func, or why the channel is refused.
func (ss *session) acquire(agent *session) (release func(), reason string) {
	s := ss.s
	lim := s.cfg.Limits
	relay := agent != nil
	fp := ss.identity().Fingerprint
	ka := keyAgent{fp, agent}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case ss.chans >= lim.MaxChannelsPerConn:
		return nil, fmt.Sprintf("this connection already has %d channels open (LIFELINE_MAX_CHANNELS_PER_CONN)", ss.chans)
	case !relay && ss.sessions >= 1:
		return nil, "one session channel at a time: only `status` runs here"
	case s.keyChans[fp] >= lim.MaxChannelsPerKey:
		return nil, fmt.Sprintf("this key already has %d channels open over all its connections (LIFELINE_MAX_CHANNELS_PER_KEY)", s.keyChans[fp])
	case relay && s.keyAgentChans[ka] >= lim.MaxChannelsPerAgent:
		return nil, fmt.Sprintf("this key already has %d connections open to this site's agent (LIFELINE_MAX_CHANNELS_PER_AGENT): others may need it too", s.keyAgentChans[ka])
	case relay && s.relays >= lim.MaxChannels:
		return nil, fmt.Sprintf("the jump host has %d relayed connections open, its limit (LIFELINE_MAX_CHANNELS): try again shortly", s.relays)
	}
	ss.chans++
	s.keyChans[fp]++
	if relay {
		s.keyAgentChans[ka]++
		s.relays++
		s.peak = max(s.peak, s.relays)
	} else {
		ss.sessions++
	}
	ss.kick()
	var once sync.Once
	return func() { once.Do(func() { ss.releaseChannel(ka) }) }, ""
}

// keyAgent is one operator key's relays to one agent connection.
type keyAgent struct {
	fingerprint string
	agent       *session
}

func (ss *session) releaseChannel(ka keyAgent) {
	s := ss.s
	relay := ka.agent != nil
	fp := ka.fingerprint
	s.mu.Lock()
	ss.chans--
	if ss.chans == 0 {
		ss.idleSince = s.cfg.Now()
	}
	if s.keyChans[fp]--; s.keyChans[fp] <= 0 {
		delete(s.keyChans, fp)
	}
	free := false
	if relay {
		if s.keyAgentChans[ka]--; s.keyAgentChans[ka] <= 0 {
			delete(s.keyAgentChans, ka)
		}
		s.relays--
		// Relays that stalled hold up to a window each; once they are all
		// gone, give the memory back to the system instead of keeping the
		// peak for the next GC cycles.
		now := s.cfg.Now()
		if s.relays == 0 && s.peak >= freeAfterRelays && now.Sub(s.freedAt) > 10*time.Second {
			free, s.peak, s.freedAt = true, 0, now
		}
	} else {
		ss.sessions--
	}
	s.mu.Unlock()
	ss.kick()
	if free {
		debug.FreeOSMemory()
	}
}

// freeAfterRelays: memory is returned at once after this many relays were
// open together (each may have buffered megabytes).
const freeAfterRelays = 4

func (ss *session) keepalive(ctx context.Context) {
	s := ss.s
	for {
		quiet := s.cfg.Now().Sub(ss.lastHeard())
		if quiet < s.cfg.AgentQuiet {
			t := time.NewTimer(s.cfg.AgentQuiet - quiet)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		start := time.Now()
		if ss.ping(ctx, s.cfg.AgentDeadAfter) {
			ss.rttNanos.Store(int64(time.Since(start)))
			continue
		}
		if ctx.Err() != nil {
			return
		}
		ss.close(fmt.Sprintf("keepalive timeout: nothing heard for %s and no keepalive reply within %s, agent dead",
			s.cfg.AgentQuiet, s.cfg.AgentDeadAfter))
		return
	}
}

// agentKeepAlive is the TCP keepalive of agent connections for a dead
// agent dropped after d: for 90s, the first probe after 60s idle and three
// chances 10s apart. An idle live agent costs one probe and its ACK a
// minute from this side: 0.19 MB a day on its link.
func agentKeepAlive(d time.Duration) net.KeepAliveConfig {
	return netbind.KeepAlive(d, 3, d/9)
}

// lastHeard is when the client last sent anything (the session's start
// when unknown).
func (ss *session) lastHeard() time.Time {
	if ss.heard != nil {
		if t := ss.heard.last(); !t.IsZero() {
			return t
		}
	}
	return ss.start
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

// bucket is a token bucket: rate requests a second, bursts of twice that.
// The global-request loop and the channel loop share it.
type bucket struct {
	mu      sync.Mutex
	rate    float64
	tokens  float64
	last    time.Time
	window  time.Time // start of the current 10 s flood window
	refused int       // refused in the current window
}

func newBucket(rate int, now time.Time) *bucket {
	return &bucket{rate: float64(rate), tokens: float64(2 * rate), last: now, window: now}
}

// reportBurst link reports may come at once (a reconnect resends the last
// one, and a new check may follow at once); then one per ReportEvery.
const reportBurst = 3

// reportBudget is an agent key's allowance of link reports.
type reportBudget struct {
	tokens float64
	last   time.Time
}

func (b *reportBudget) take(now time.Time, every time.Duration) bool {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.tokens+float64(d)/float64(every), reportBurst)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// floodWindow and floodFactor: a key refused more than floodFactor times
// its per-second allowance within one window is flooding, not bursting: a
// client that honours replies never gets there. floodPenalty: how long a
// flooding key's logins are then refused.
const (
	floodWindow  = 10 * time.Second
	floodFactor  = 5
	floodPenalty = time.Minute
)

// take reports whether a request may go ahead, and whether the key is
// flooding.
func (b *bucket) take(now time.Time) (ok, flooding bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.tokens+d.Seconds()*b.rate, 2*b.rate)
		b.last = now
	}
	if now.Sub(b.window) >= floodWindow {
		b.window, b.refused = now, 0
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, false
	}
	b.refused++
	return false, float64(b.refused) > floodFactor*b.rate
}
