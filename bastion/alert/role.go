package alert

import (
	"github.com/lifeline-dev/lifeline/bastion/audit"
)

// KindNotReporter is the audit reason of a site event this bastion did not
// text because the agent named another bastion its site's reporter
// (SiteRole): audited only, never texted. The message is the text that was
// not sent.
const KindNotReporter = "not_reporter"

// SiteRole records agent's last word on whether this bastion is its site's
// reporter (wire.SiteRoleRequest). An agent with tunnels to several
// bastions names one reporter, so that each site event is texted once and
// not once per bastion.
//
// The start of a site event is texted only while the key's last word was
// reporter true: "site down" when its timer fires, a link failure, "main
// internet down". Its end ("site back", "link ok again", "main internet
// back") is texted by the bastion that texted its start, whatever the role
// is by then, so that each outage reaches the owner as one down and one
// back from one bastion. A key that never called SiteRole (an older agent,
// a single bastion) is this bastion's to text. Logins are texted whatever
// the role. The role survives the agent's reconnects: the caller keeps
// calling SiteRole with what the agent says.
func (a *Alerter) SiteRole(agent Agent, reporter bool) {
	a.in.mu.Lock()
	a.in.roles[agent.key()] = reporter
	a.in.mu.Unlock()
}

// reporter is the site role of key: true unless its last word was false.
// The caller holds in.mu.
func (in *intake) reporter(key string) bool {
	r, ok := in.roles[key]
	return r || !ok
}

// notTexted audits e as not texted: another bastion reports its site.
func (a *Alerter) notTexted(e entry, ev audit.Event) {
	ev.Kind, ev.Reason = audit.KindAlert, KindNotReporter
	ev.Message = "not texted (another bastion is the site's reporter): " + e.Kind + ": " + e.Text
	a.record(ev)
}
