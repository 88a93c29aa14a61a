package server

import (
	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/shared/wire"
)

// siteRole answers wire.SiteRoleRequest (agents only; the caller checked):
// it keeps the key's last word, by key and not by connection, so that it
// outlives the agent's reconnects (the bastion that texted "site down"
// texts "site back"), tells Events before replying, and audits a change.
// The map is bounded by the agent keys that may log in. A malformed
// payload is refused (reply false) and changes nothing.
func (c *conn) siteRole(req *ssh.Request) {
	s := c.s
	role, err := wire.ParseSiteRole(req.Payload)
	if err != nil {
		c.refuseGlobal(req, err.Error())
		return
	}
	id := c.identity()
	s.mu.Lock()
	old, seen := s.roles[id.Fingerprint]
	s.roles[id.Fingerprint] = role.Reporter
	s.mu.Unlock()
	if !seen || old != role.Reporter {
		ev := c.event(audit.KindSiteRole)
		ev.Reason, ev.Message = roleWord(role.Reporter), "this bastion texts the site's events"
		if !role.Reporter {
			ev.Message = "another bastion texts the site's events; this one keeps its reports"
		}
		s.cfg.Audit.Record(ev)
		s.cfg.Log.Info("site role", "key", id.Name, "remote", c.remote, "session", c.id, "reporter", role.Reporter)
	}
	if s.cfg.Events != nil {
		s.cfg.Events.SiteRole(id, role.Reporter)
	}
	if req.WantReply {
		req.Reply(true, nil)
	}
}

func roleWord(reporter bool) string {
	if reporter {
		return "reporter"
	}
	return "not reporter"
}
