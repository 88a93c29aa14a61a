package alert

import (
	"time"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// Alert kinds of the site's main internet link (agent/mainwatch), beside
// those of sender.go.
const (
	KindMainDown = "main_down"
	KindMainBack = "main_back"
)

// mainState is what an agent key's main-link reports said.
type mainState struct {
	since  time.Time // the main link is down since (the latest down report's Since)
	texted bool      // this bastion texted a "down" of this outage: "back" is due
	// jumpCodes are the failure codes of starting the jump host (the
	// report's Jump) already texted for this outage (since).
	jumpCodes map[string]bool
}

// MainLink texts an agent's main-link report (r.LinkKind() is
// report.LinkMain; other reports are ignored): the site's main internet is
// down while its backup link, which carries the report, is up; or it is
// back. The caller keeps the reports; they never touch the backup link's
// verdicts (LinkReport).
//
// A down is texted once per outage start (r.Since): the same down again,
// as an agent resends it after a reconnect, sends nothing. It is texted
// only while the key is its site's reporter (SiteRole). A back is texted
// when this bastion texted the down, whatever the role is by then, and
// only once; a back without a known down (a resend, or a down from before
// this bastion started) sends nothing. What is not texted is audited.
//
// In outage mode a down report carries what the agent did to start the
// jump host (r.Jump): a down text that comes with a successful start says
// so, and when it is ready (the down is still texted once per outage: a
// start reported after it adds nothing). A failed start (a code other
// than "ok" and no start yet) is texted once per outage and code, under
// the same role rule as the down.
func (a *Alerter) MainLink(agent Agent, r report.LinkReport) {
	if r.LinkKind() != report.LinkMain {
		return
	}
	now := a.cfg.Clock.Now()
	if r.Verdict == report.VerdictFailed {
		a.mainDown(agent, r, now)
		return
	}
	k := agent.key()
	a.in.mu.Lock()
	m := a.in.main[k]
	if m == nil {
		a.in.mu.Unlock()
		return
	}
	delete(a.in.main, k)
	a.in.mu.Unlock()
	if r.Since.IsZero() {
		r.Since = m.since
	}
	e := entry{Message: Message{Kind: KindMainBack, Created: now}, Subject: clean(agent.Name, 32)}
	e.Text, e.Detail = mainBackText(agent, r)
	ev := audit.Event{Time: now, Agent: agent.Name, Fingerprint: agent.Fingerprint, DurationMS: r.Time.Sub(r.Since).Milliseconds()}
	a.send(e, ev, m.texted)
}

// mainDown is MainLink for a down report: the down text once per outage
// (r.Since), and a failed start of the jump host once per outage and code.
func (a *Alerter) mainDown(agent Agent, r report.LinkReport, now time.Time) {
	k := agent.key()
	a.in.mu.Lock()
	reporter := a.in.reporter(k)
	m := a.in.main[k]
	same := m != nil && m.since.Equal(r.Since)
	if !same {
		if m == nil {
			m = &mainState{}
			a.in.main[k] = m
		}
		m.since, m.texted, m.jumpCodes = r.Since, m.texted || reporter, nil
	}
	j := r.Jump
	failed := j != nil && j.StartedAt.IsZero() && j.LastCode != "" && j.LastCode != "ok" && !m.jumpCodes[j.LastCode]
	if failed {
		if m.jumpCodes == nil {
			m.jumpCodes = map[string]bool{}
		}
		m.jumpCodes[j.LastCode] = true
	}
	a.in.mu.Unlock()
	ev := audit.Event{Time: now, Agent: agent.Name, Fingerprint: agent.Fingerprint}
	if !same {
		e := entry{Message: Message{Kind: KindMainDown, Created: now}, Subject: clean(agent.Name, 32)}
		e.Text, e.Detail = mainDownText(a.cfg.BastionName, agent, r)
		a.send(e, ev, reporter)
	}
	if failed {
		e := entry{Message: Message{Kind: KindJumpStartFailed, Created: now}, Subject: clean(agent.Name, 32)}
		e.Text, e.Detail = jumpFailedText(agent, r)
		a.send(e, ev, reporter)
	}
}

// send enqueues e when texted, else audits it as not texted (another
// bastion is the site's reporter).
func (a *Alerter) send(e entry, ev audit.Event, texted bool) {
	if !texted {
		a.notTexted(e, ev)
		return
	}
	a.enqueue(e, ev)
}
