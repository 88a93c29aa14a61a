package server

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/bastion/registry"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/wire"
)

func (c *conn) refuseGlobal(req *ssh.Request, reason string) {
	ev := c.event(audit.KindRefused)
	ev.Reason = req.Type + ": " + reason
	c.s.cfg.Audit.Record(ev)
	c.s.cfg.Log.Debug("refused request", "type", req.Type, "key", c.identity().Name, "remote", c.remote, "reason", reason)
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

func (c *conn) handleGlobal(req *ssh.Request) {
	switch req.Type {
	case "tcpip-forward":
		c.register(req)
	case wire.CheckForwardRequest:
		c.checkForward(req)
	case "cancel-tcpip-forward":
		if !c.isAgent() {
			c.refuseGlobal(req, "operators hold no names")
			return
		}
		c.cancel(req)
	case report.RequestType:
		if !c.isAgent() {
			c.refuseGlobal(req, "link reports come from agents only")
			return
		}
		c.linkReport(req)
	case wire.SiteRoleRequest:
		if !c.isAgent() {
			c.refuseGlobal(req, "site roles come from agents only")
			return
		}
		c.siteRole(req)
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
func (c *conn) mayRegister(payload []byte) (wire.Forward, authz.Target, string) {
	s := c.s
	id := c.identity()
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
	if n := s.reg.Holds(c); n >= s.cfg.Limits.MaxNamesPerConn && !s.reg.Registered(fw.BindAddr, fw.BindPort, c) {
		return fw, t, fmt.Sprintf("this connection already holds %d names (LIFELINE_MAX_NAMES_PER_CONN)", n)
	}
	return fw, t, ""
}

// checkForward answers wire.CheckForwardRequest: whether a tcpip-forward
// with this payload would be accepted on this connection. Nothing is
// registered and the name's holder is left alone; a refusal is logged, not
// audited (nothing was attempted).
func (c *conn) checkForward(req *ssh.Request) {
	fw, _, why := c.mayRegister(req.Payload)
	id := c.identity()
	c.s.cfg.Log.Info("registration checked (dry run)", "name", fw.BindAddr, "port", fw.BindPort, "key", id.Name, "remote", c.remote,
		"session", c.id, "permitted", why == "", "why", why)
	if !req.WantReply {
		return
	}
	if why == "" {
		req.Reply(true, nil)
		return
	}
	req.Reply(false, wire.CheckForwardReason{Reason: why}.Marshal())
}

func (c *conn) register(req *ssh.Request) {
	s := c.s
	fw, t, why := c.mayRegister(req.Payload)
	if why != "" {
		if t.Host != "" {
			why = "name " + t.String() + ": " + why
		}
		c.refuseGlobal(req, why)
		return
	}
	id := c.identity()
	now := s.cfg.Clock.Now()
	prev, replaced := s.reg.Register(fw.BindAddr, fw.BindPort, c, now)
	s.mu.Lock()
	delete(s.departed, targetKey(fw.BindAddr, fw.BindPort))
	s.mu.Unlock()
	c.markHolding()
	ev := c.event(audit.KindRegister)
	ev.Target = t.String()
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("registered", "target", t.String(), "key", id.Name, "remote", c.remote, "session", c.id)
	if req.WantReply {
		req.Reply(true, nil)
	}
	if !replaced {
		return
	}
	pid := prev.identity()
	tk := c.event(audit.KindTakeover)
	tk.Target = t.String()
	if pid.Fingerprint == id.Fingerprint {
		// The same agent reconnected: the old connection is stale.
		tk.Reason = fmt.Sprintf("replaces session %s of the same key from %s", prev.id, prev.remote)
		s.cfg.Audit.Record(tk)
		s.cfg.Log.Info("replacing stale connection", "target", t.String(), "old_remote", prev.remote, "new_remote", c.remote)
		prev.close("replaced by a newer connection of the same agent from " + c.remote.String())
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

func (c *conn) cancel(req *ssh.Request) {
	fw, err := wire.ParseForward(req.Payload)
	if err != nil {
		c.refuseGlobal(req, err.Error())
		return
	}
	ok := c.unregister(fw.BindAddr, fw.BindPort, "cancelled by the agent")
	if req.WantReply {
		req.Reply(ok, nil)
	}
}

// unregister drops one registration of this connection, hands the name
// back to an earlier holder if there is one, and raises AgentDown when it
// was the connection's last.
func (c *conn) unregister(name string, port uint32, why string) bool {
	s := c.s
	ok, mv := s.reg.Unregister(name, port, c)
	if !ok {
		return false
	}
	ev := c.event(audit.KindUnregister)
	ev.Target = fmt.Sprintf("%s:%d", name, port)
	ev.Reason = why
	s.cfg.Audit.Record(ev)
	if mv != nil {
		s.handBack(*mv)
	} else if _, held := s.reg.Lookup(name, port); !held {
		c.departed(authz.Target{Host: name, Port: port}, why)
	}
	c.releaseIfEmpty(ev.Target)
	return true
}

// departed remembers that this connection was the last to hold t.
func (c *conn) departed(t authz.Target, why string) {
	s := c.s
	id := c.identity()
	d := departure{target: t, agent: id.Name, fingerprint: id.Fingerprint, from: c.remote, since: s.cfg.Clock.Now(), reason: clip(why, 120)}
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
func (s *Server) handBack(mv registry.Move[*conn]) {
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

func (c *conn) linkReport(req *ssh.Request) {
	s := c.s
	r, err := report.Decode(req.Payload)
	if err != nil {
		c.refuseGlobal(req, err.Error())
		return
	}
	// A main-link report is kept apart from the backup link's, under an
	// allowance of its own, so it never changes that link's state or
	// verdicts.
	main := r.LinkKind() == report.LinkMain
	what, budgets, reports := "link", s.reportAt, s.reports
	if main {
		what, budgets, reports = "main-link", s.mainAt, s.mains
	}
	id := c.identity()
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	b, seen := budgets[id.Fingerprint]
	if !seen {
		b = &reportBudget{tokens: reportBurst, last: now}
		budgets[id.Fingerprint] = b
	}
	ok := b.take(now, s.cfg.Limits.ReportEvery)
	prev := reports[id.Fingerprint]
	if ok {
		reports[id.Fingerprint] = r
	}
	s.mu.Unlock()
	if !ok {
		c.refuseGlobal(req, fmt.Sprintf("more than %d %s reports in %s from this agent key (LIFELINE_REPORT_EVERY); the last one taken stands", reportBurst, what, reportBurst*s.cfg.Limits.ReportEvery))
		return
	}
	ev := c.event(audit.KindReport)
	ev.Message = r.Summary()
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info(what+" report", "key", id.Name, "verdict", r.Verdict, "summary", r.Summary())
	switch {
	case s.cfg.Events == nil:
	case main:
		// A main-link report may come before the names are registered
		// (the agent re-sends it first on connecting): the key's
		// permitted names stand in.
		names := c.names()
		if len(names) == 0 {
			for _, t := range id.Listen {
				names = append(names, t.String())
			}
		}
		s.cfg.Events.MainLink(id, names, r)
	default:
		s.cfg.Events.LinkReport(id, c.names(), prev, r)
	}
	if req.WantReply {
		req.Reply(true, nil)
	}
}

// names lists the targets this connection has registered.
func (c *conn) names() []string {
	var out []string
	for _, b := range c.s.reg.Of(c) {
		out = append(out, b.Target())
	}
	return out
}

// markHolding records that this connection holds a name; the first such
// connection of an agent key raises AgentUp.
func (c *conn) markHolding() {
	s := c.s
	fp := c.identity().Fingerprint
	s.mu.Lock()
	if c.holdsNames {
		s.mu.Unlock()
		return
	}
	c.holdsNames = true
	s.agents[fp]++
	first := s.agents[fp] == 1
	s.mu.Unlock()
	if first && s.cfg.Events != nil {
		s.cfg.Events.AgentUp(c.identity(), c.names())
	}
}

// releaseIfEmpty is called when this connection dropped the registration
// of target and may have held no other; the last connection of an agent
// key to hold none raises AgentDown, naming target (the alert says which
// site went). A name standing by counts as held: the agent is connected.
func (c *conn) releaseIfEmpty(target string) {
	if c.s.reg.Holds(c) > 0 {
		return
	}
	c.release([]string{target})
}

func (c *conn) release(held []string) {
	s := c.s
	fp := c.identity().Fingerprint
	s.mu.Lock()
	if !c.holdsNames {
		s.mu.Unlock()
		return
	}
	c.holdsNames = false
	s.agents[fp]--
	last := s.agents[fp] <= 0
	if last {
		delete(s.agents, fp)
	}
	s.mu.Unlock()
	if last && s.cfg.Events != nil {
		s.cfg.Events.AgentDown(c.identity(), held)
	}
}

// dropNames unregisters everything this connection still holds, handing
// names back to earlier holders still connected.
func (c *conn) dropNames() {
	s := c.s
	gone, moves := s.reg.RemoveSession(c)
	held := make([]string, 0, len(gone)+len(moves))
	why := "connection closed"
	if r := c.closeReason.Load(); r != nil {
		why = *r
	}
	for _, b := range gone {
		ev := c.event(audit.KindUnregister)
		ev.Target = b.Target()
		ev.Reason = "agent disconnected"
		s.cfg.Audit.Record(ev)
		held = append(held, b.Target())
		c.departed(authz.Target{Host: b.Name, Port: b.Port}, why)
	}
	for _, mv := range moves {
		s.handBack(mv)
		held = append(held, mv.From.Target())
	}
	c.release(held)
}
