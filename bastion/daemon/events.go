package daemon

import (
	"net/netip"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// events adapts the alert queue to the server's Events seam.
type events struct{ a *alert.Alerter }

func agentOf(id *authz.Identity, names []string) alert.Agent {
	return alert.Agent{Name: id.Name, Fingerprint: id.Fingerprint, Names: names}
}

func (e events) OperatorLogin(id *authz.Identity, user string, src netip.AddrPort) {
	e.a.Login(alert.Login{Operator: id.Name, Fingerprint: id.Fingerprint, User: user, Source: src, Certificate: id.CA != ""})
}
func (e events) AuthFailed(src netip.Addr, user string) { e.a.AuthFailed(src, user) }
func (e events) AgentUp(id *authz.Identity, names []string) {
	e.a.AgentUp(agentOf(id, names))
}
func (e events) AgentDown(id *authz.Identity, names []string) {
	e.a.AgentDown(agentOf(id, names))
}
func (e events) LinkReport(id *authz.Identity, names []string, prev, r report.LinkReport) {
	e.a.LinkReport(agentOf(id, names), prev, r)
}
func (e events) MainLink(id *authz.Identity, names []string, r report.LinkReport) {
	e.a.MainLink(agentOf(id, names), r)
}
func (e events) SiteRole(id *authz.Identity, reporter bool) {
	e.a.SiteRole(agentOf(id, nil), reporter)
}
func (e events) NameMoved(target string, to, from *authz.Identity, takeover bool) {
	e.a.NameMoved(target, agentOf(to, nil), agentOf(from, nil), takeover)
}
