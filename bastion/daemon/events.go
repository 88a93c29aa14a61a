package daemon

import (
	"net/netip"
	"sync"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/bastion/outage"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// events adapts the alert queue and outage mode's keeper to the server's
// Events seam, and the keeper's events to texts and audit events (notify).
// Sites are known to the keeper by their agent key's fingerprint.
type events struct {
	a     *alert.Alerter
	k     *outage.Keeper
	audit audit.Recorder

	mu    sync.Mutex
	names map[string]string // agent fingerprint -> key name, for the texts (bounded by the agents file)
}

func newEvents(a *alert.Alerter, rec audit.Recorder) *events {
	return &events{a: a, audit: rec, names: map[string]string{}}
}

func agentOf(id *authz.Identity, names []string) alert.Agent {
	return alert.Agent{Name: id.Name, Fingerprint: id.Fingerprint, Names: names}
}

func (e *events) OperatorLogin(id *authz.Identity, user string, src netip.AddrPort) {
	e.a.Login(alert.Login{Operator: id.Name, Fingerprint: id.Fingerprint, User: user, Source: src, Certificate: id.CA != ""})
}
func (e *events) AuthFailed(src netip.Addr, user string) { e.a.AuthFailed(src, user) }
func (e *events) AgentUp(id *authz.Identity, names []string) {
	e.a.AgentUp(agentOf(id, names))
	if id.Name != "" {
		e.mu.Lock()
		e.names[id.Fingerprint] = id.Name
		e.mu.Unlock()
	}
	e.k.AgentSeen(id.Fingerprint)
}
func (e *events) AgentDown(id *authz.Identity, names []string) {
	e.a.AgentDown(agentOf(id, names))
	e.k.AgentGone(id.Fingerprint)
}
func (e *events) LinkReport(id *authz.Identity, names []string, prev, r report.LinkReport) {
	e.a.LinkReport(agentOf(id, names), prev, r)
}
func (e *events) MainLink(id *authz.Identity, names []string, r report.LinkReport) {
	e.a.MainLink(agentOf(id, names), r)
	e.k.MainLink(id.Fingerprint, r.Verdict == report.VerdictFailed)
}
func (e *events) SiteRole(id *authz.Identity, reporter bool) {
	e.a.SiteRole(agentOf(id, nil), reporter)
}
func (e *events) NameMoved(target string, to, from *authz.Identity, takeover bool) {
	e.a.NameMoved(target, agentOf(to, nil), agentOf(from, nil), takeover)
}

// outageKinds are the audit kinds of the keeper's events.
var outageKinds = map[outage.Kind]string{
	outage.Started: audit.KindOutageStarted, outage.Ready: audit.KindOutageReady, outage.Stopping: audit.KindOutageStopping,
	outage.Held: audit.KindOutageHeld, outage.Released: audit.KindOutageReleased,
	outage.RequestFailed: audit.KindOutageRequestFailed, outage.NotStopped: audit.KindOutageNotStopped,
}

// notify is the keeper's Notify: one text (the alert queue, which audits
// it as an alert) and one audit event of the event's own kind. Both return
// at once (the alert is spooled, not sent), as Notify must.
func (e *events) notify(ev outage.Event) {
	fp := ev.Site
	if ev.Kind == outage.Ready {
		e.mu.Lock()
		if name, ok := e.names[fp]; ok {
			ev.Site = name
		}
		e.mu.Unlock()
	}
	e.a.Outage(ev)
	rec := audit.Event{Time: ev.Time, Kind: outageKinds[ev.Kind], Key: ev.By, Message: ev.String()}
	switch ev.Kind {
	case outage.Ready:
		rec.Agent, rec.Fingerprint = ev.Site, fp
	case outage.Stopping:
		rec.Reason, rec.DurationMS = ev.Reason, ev.Idle.Milliseconds()
	case outage.RequestFailed:
		rec.Reason = ev.Err.Error()
	}
	if rec.Kind == "" {
		rec.Kind = audit.KindAlert // a kind this bastion does not know yet
	}
	e.audit.Record(rec)
}
