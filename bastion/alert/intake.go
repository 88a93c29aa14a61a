package alert

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// maxFailSources bounds the sources remembered in a failed-login window;
// more are counted together.
const maxFailSources = 256

// Login is a successful operator authentication.
type Login struct {
	// Operator is the key comment or the certificate's key id.
	Operator    string
	Fingerprint string // SHA256:...
	User        string // the SSH user name asked for
	Source      netip.AddrPort
	Certificate bool
}

// Agent identifies a site agent. Fingerprint keys the agent's state (Name
// when Fingerprint is empty).
type Agent struct {
	Name        string // the key comment
	Fingerprint string
	Names       []string // the names it registers (pi, ...)
}

func (a Agent) key() string {
	if a.Fingerprint != "" {
		return a.Fingerprint
	}
	return a.Name
}

// intake is the state the event methods keep between events: the agents
// that are away (the caller says when an agent goes and comes back; the
// intake only times the outage), the open failed-login window, the
// quiet-login count, and per agent key its site role (role.go), its main
// link (main.go) and whether its link failure was texted.
//
// The maps by agent key are bounded by the keys that may log in as agents
// (the agents file): they are never swept.
type intake struct {
	wakeTimer chan struct{} // a deadline was set or cleared

	mu        sync.Mutex
	away      map[string]*absence // by Agent.key()
	fails     failWindow
	quiet     int
	lastQuiet string
	roles     map[string]bool       // by Agent.key(): the key's last site-role word; absent: reporter
	main      map[string]*mainState // by Agent.key(): what the main-link reports said (main.go)
	linkDown  map[string]bool       // by Agent.key(): a link failure was texted, "ok again" is due
}

// absence is an agent that went away: "site down" is due at deadline, or
// was decided (deadline zero): texted, or not because this bastion was not
// the site's reporter then (and then "site back" is not texted either).
type absence struct {
	agent    Agent
	since    time.Time
	deadline time.Time // zero: "down" was decided
	texted   bool      // "down" was texted by this bastion
}

type failWindow struct {
	end      time.Time // zero: no window open
	total    int
	bySource map[netip.Addr]int
	others   int
}

func (in *intake) init() {
	in.wakeTimer = make(chan struct{}, 1)
	in.away = map[string]*absence{}
	in.roles = map[string]bool{}
	in.main = map[string]*mainState{}
	in.linkDown = map[string]bool{}
}

func (in *intake) quietCount() (int, string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.quiet, in.lastQuiet
}

// Login texts an operator login, unless its source is in QuietFrom (then it
// is only audited and counted in Status).
func (a *Alerter) Login(l Login) {
	now := a.cfg.Clock.Now()
	text := loginText(a.cfg.BastionName, l)
	ev := audit.Event{Time: now, Key: l.Operator, Fingerprint: l.Fingerprint, User: l.User}
	if l.Source.IsValid() {
		ev.Source = addrString(l.Source)
	}
	if a.quiet(l.Source.Addr()) {
		ev.Kind, ev.Reason, ev.Message = audit.KindAlert, KindQuietLogin, "not texted ("+a.cfg.QuietSetting+"): "+text
		a.record(ev)
		a.in.mu.Lock()
		a.in.quiet++
		a.in.lastQuiet = text
		a.in.mu.Unlock()
		return
	}
	a.enqueue(entry{Message: Message{Kind: KindLogin, Text: text, Created: now}, Subject: clean(l.Operator, 32)}, ev)
}

func (a *Alerter) quiet(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range a.cfg.QuietFrom {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// AuthFailed counts a failed authentication. Failures are summarised at most
// once per FailedLoginEvery, and only when there were at least
// FailedLoginMin of them.
func (a *Alerter) AuthFailed(source netip.Addr, user string) {
	source = source.Unmap()
	now := a.cfg.Clock.Now()
	a.in.mu.Lock()
	defer a.in.mu.Unlock()
	w := &a.in.fails
	if w.end.IsZero() {
		*w = failWindow{end: now.Add(a.cfg.FailedLoginEvery), bySource: map[netip.Addr]int{}}
		wake(a.in.wakeTimer)
	}
	w.total++
	if _, ok := w.bySource[source]; ok || len(w.bySource) < maxFailSources {
		w.bySource[source]++
	} else {
		w.others++
	}
}

// AgentUp is told that agent is back: it has a connection holding names
// again. If this bastion texted "site down", it texts "site back" with the
// outage's length, whatever the key's site role is now: the bastion that
// texted the start of an outage texts its end. A "down" that was not
// texted (not the reporter then) is followed by no "back". A pending
// "down" is cancelled. The caller decides when an agent is up (the server
// counts its connections); AgentUp keeps no count.
func (a *Alerter) AgentUp(agent Agent) {
	now := a.cfg.Clock.Now()
	a.in.mu.Lock()
	ab := a.in.away[agent.key()]
	delete(a.in.away, agent.key())
	a.in.mu.Unlock()
	wake(a.in.wakeTimer)
	if ab == nil || !ab.deadline.IsZero() {
		return
	}
	text := backText(a.cfg.BastionName, agent, now.Sub(ab.since))
	e := entry{Message: Message{Kind: KindAgentBack, Text: text, Created: now}, Subject: clean(agent.Name, 32)}
	ev := audit.Event{Time: now, Agent: agent.Name, Fingerprint: agent.Fingerprint, DurationMS: now.Sub(ab.since).Milliseconds()}
	if !ab.texted {
		a.notTexted(e, ev)
		return
	}
	a.enqueue(e, ev)
}

// AgentDown is told that agent's last connection holding names is gone.
// "Site down", naming agent.Names, is texted only if no AgentUp follows
// within DownAfter. A repeated AgentDown changes nothing.
func (a *Alerter) AgentDown(agent Agent) {
	now := a.cfg.Clock.Now()
	a.in.mu.Lock()
	if _, ok := a.in.away[agent.key()]; !ok {
		a.in.away[agent.key()] = &absence{agent: agent, since: now, deadline: now.Add(a.cfg.DownAfter)}
	}
	a.in.mu.Unlock()
	wake(a.in.wakeTimer)
}

// NameMoved texts that the name target (NAME:PORT) is now served by agent
// to instead of from: taken over by a newer registration of another key
// (takeover), or handed back to an earlier holder after from left. Both
// mean that connections to the name reach another machine than before.
func (a *Alerter) NameMoved(target string, to, from Agent, takeover bool) {
	now := a.cfg.Clock.Now()
	text := nameMovedText(a.cfg.BastionName, target, to, from, takeover)
	a.enqueue(entry{Message: Message{Kind: KindNameMoved, Text: text, Created: now}, Subject: clean(to.Name, 32)},
		audit.Event{Time: now, Target: target, Agent: to.Name, Fingerprint: to.Fingerprint})
}

// LinkReport texts when an agent's backup-link verdict changes from prev,
// the agent's previous report (zero: none since the start), to r: failed
// (also as the first report), then ok again. Repeats send nothing. The
// caller keeps the reports; main-link reports go to MainLink, never here.
//
// A failure is texted only while the key is its site's reporter (role.go);
// "ok again" is texted when this bastion texted the failure, whatever the
// role is by then. What is not texted is audited as such.
func (a *Alerter) LinkReport(agent Agent, prev, r report.LinkReport) {
	now := a.cfg.Clock.Now()
	var e entry
	k := agent.key()
	a.in.mu.Lock()
	reporter, failTexted := a.in.reporter(k), a.in.linkDown[k]
	texted := false
	switch {
	// A new failure, or a failed link failing for another reason (a test
	// error, then the wrong ISP): the owner needs the new reason.
	case r.Verdict == report.VerdictFailed && (prev.Verdict != report.VerdictFailed || failureKinds(prev) != failureKinds(r)):
		e.Kind = KindLinkFailed
		e.Text, e.Detail = linkFailedText(a.cfg.BastionName, agent, r)
		if texted = reporter; texted {
			a.in.linkDown[k] = true
		}
	case r.Verdict == report.VerdictOK && prev.Verdict == report.VerdictFailed:
		e.Kind, e.Text = KindLinkOK, linkOKText(a.cfg.BastionName, agent, r)
		texted = failTexted
		delete(a.in.linkDown, k)
	default:
		if r.Verdict == report.VerdictOK {
			delete(a.in.linkDown, k)
		}
		a.in.mu.Unlock()
		return
	}
	a.in.mu.Unlock()
	e.Created, e.Subject = now, clean(agent.Name, 32)
	ev := audit.Event{Time: now, Agent: agent.Name, Fingerprint: agent.Fingerprint}
	if !texted {
		a.notTexted(e, ev)
		return
	}
	a.enqueue(e, ev)
}

// failureKinds names what kinds of failure a report has, ignoring the
// figures in its reasons: its failure codes (report.FailureCodes, which
// derives them from the reasons of an older agent's report), sorted and
// without repeats. A code this bastion does not know is a kind of its own;
// a reason of no known kind (report.CodeUnknown) is told apart by its
// first word, as before codes. Repeats of the same kinds are not texted.
func failureKinds(r report.LinkReport) string {
	if r.Verdict != report.VerdictFailed {
		return ""
	}
	codes := r.FailureCodes()
	kinds := make([]string, 0, len(codes))
	for i, code := range codes {
		if code == report.CodeUnknown {
			if f := strings.Fields(r.Reasons[i]); len(f) > 0 {
				code += ":" + strings.ToLower(strings.Trim(f[0], ":"))
			}
		}
		kinds = append(kinds, code)
	}
	slices.Sort(kinds)
	return strings.Join(slices.Compact(kinds), ",")
}

// timeLoop fires agent-down and failed-login deadlines.
func (a *Alerter) timeLoop(ctx context.Context) {
	for {
		next, ok := a.in.nextDeadline()
		var t clock.Timer
		var fire <-chan time.Time
		if ok {
			t = a.cfg.Clock.NewTimer(next.Sub(a.cfg.Clock.Now()))
			fire = t.C()
		}
		select {
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			return
		case <-a.in.wakeTimer:
			if t != nil {
				t.Stop()
			}
		case <-fire:
			a.fireDue()
		}
	}
}

func (in *intake) nextDeadline() (time.Time, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, ab := range in.away {
		consider(ab.deadline)
	}
	consider(in.fails.end)
	return next, !next.IsZero()
}

func (a *Alerter) fireDue() {
	now := a.cfg.Clock.Now()
	type due struct {
		e      entry
		ev     audit.Event
		silent bool // not texted: another bastion reports the site
	}
	var out []due
	a.in.mu.Lock()
	for _, ab := range a.in.away {
		if ab.deadline.IsZero() || ab.deadline.After(now) {
			continue
		}
		ab.deadline = time.Time{}
		ab.texted = a.in.reporter(ab.agent.key())
		ag := ab.agent
		var mainSince time.Time
		if m := a.in.main[ag.key()]; m != nil {
			mainSince = m.since
		}
		out = append(out, due{
			entry{Message: Message{Kind: KindAgentDown, Text: downText(a.cfg.BastionName, ag, ab.since, a.cfg.DownAfter, mainSince), Created: now}, Subject: clean(ag.Name, 32)},
			audit.Event{Time: now, Agent: ag.Name, Fingerprint: ag.Fingerprint, DurationMS: now.Sub(ab.since).Milliseconds()},
			!ab.texted,
		})
	}
	if w := a.in.fails; !w.end.IsZero() && !w.end.After(now) {
		if w.total >= a.cfg.FailedLoginMin {
			out = append(out, due{
				entry{Message: Message{Kind: KindAuthFailed, Text: failedLoginsText(a.cfg.BastionName, w.total, a.cfg.FailedLoginEvery, w.bySource, w.others), Created: now}},
				audit.Event{Time: now},
				false,
			})
		}
		a.in.fails = failWindow{}
	}
	a.in.mu.Unlock()
	for _, d := range out {
		if d.silent {
			a.notTexted(d.e, d.ev)
			continue
		}
		a.enqueue(d.e, d.ev)
	}
}
