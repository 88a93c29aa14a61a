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
func (a *Alerter) MainLink(agent Agent, r report.LinkReport) {
	if r.LinkKind() != report.LinkMain {
		return
	}
	now := a.cfg.Clock.Now()
	k := agent.key()
	var e entry
	var texted bool
	a.in.mu.Lock()
	m := a.in.main[k]
	if r.Verdict == report.VerdictFailed {
		if m != nil && m.since.Equal(r.Since) {
			a.in.mu.Unlock()
			return
		}
		if m == nil {
			m = &mainState{}
			a.in.main[k] = m
		}
		texted = a.in.reporter(k)
		m.since, m.texted = r.Since, m.texted || texted
		e.Kind = KindMainDown
		e.Text, e.Detail = mainDownText(a.cfg.BastionName, agent, r)
	} else {
		if m == nil {
			a.in.mu.Unlock()
			return
		}
		delete(a.in.main, k)
		texted = m.texted
		if r.Since.IsZero() {
			r.Since = m.since
		}
		e.Kind = KindMainBack
		e.Text, e.Detail = mainBackText(agent, r)
	}
	a.in.mu.Unlock()
	e.Created, e.Subject = now, clean(agent.Name, 32)
	ev := audit.Event{Time: now, Agent: agent.Name, Fingerprint: agent.Fingerprint}
	if e.Kind == KindMainBack {
		ev.DurationMS = r.Time.Sub(r.Since).Milliseconds()
	}
	if !texted {
		a.notTexted(e, ev)
		return
	}
	a.enqueue(e, ev)
}
