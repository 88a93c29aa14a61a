// Package wire holds what the agent and the bastion say to each other, so
// that both sides name it once: the port-forwarding payloads of RFC 4254
// (payload.go) and lifeline's own requests beyond stock SSH.
package wire

import (
	"fmt"

	"golang.org/x/crypto/ssh"
)

// CheckForwardRequest is the global request an agent's doctor sends to ask,
// without registering anything, whether its key may register a name. The
// payload is exactly that of tcpip-forward (string name, uint32 port). The
// bastion replies success with an empty payload when a tcpip-forward for
// it would be accepted on this connection, else failure whose payload is
// one SSH string saying why (CheckForwardReason). A bastion that does not
// know the request (an older lifeline, OpenSSH) replies failure with an
// empty payload.
//
// A real tcpip-forward is never sent to test: on lifeline's bastion the
// newest registration of a name wins, so it would take the name from the
// running agent.
const CheckForwardRequest = "lifeline-check-forward@lifeline"

// CheckForwardReason is the payload of a failed CheckForwardRequest reply.
type CheckForwardReason struct {
	Reason string
}

// Marshal encodes the reason as one SSH string.
func (r CheckForwardReason) Marshal() []byte { return ssh.Marshal(&r) }

// SiteRoleRequest is the global request an agent holding tunnels to
// several bastions sends each of them, so that a site event is texted once
// and not once per bastion. The payload is SiteRole. The agent names as
// its reporter the first bastion of its list (LIFELINE_BASTION order) it
// is connected to, and every other one not; it sends the request after
// connecting, before registering names, and again whenever the reporter
// changes (the reporter's connection was lost, or an earlier bastion came
// back).
//
// A bastion texts the start of a site's event (SITE DOWN, a link failure,
// main internet down) for an agent key only while that key's last word was
// Reporter true, and the end of an event (site back, link ok again, main
// internet back) only if it texted the start, whatever the role by then:
// a role that moves during an outage never leaves the owner with a "down"
// and no "back". It keeps and shows every report either way.
// A key that never sent the request (an older agent, a single bastion) is
// its bastion's to text. Logins are texted by the bastion that saw them,
// whatever the role.
//
// The bastion replies success with an empty payload. An older bastion
// replies failure: it texts everything, as before.
const SiteRoleRequest = "site-role@lifeline"

// SiteRole is the payload of SiteRoleRequest.
type SiteRole struct {
	Reporter bool
}

// Marshal encodes the role.
func (r SiteRole) Marshal() []byte { return ssh.Marshal(&r) }

// ParseSiteRole decodes a SiteRoleRequest payload strictly.
func ParseSiteRole(payload []byte) (SiteRole, error) {
	var r SiteRole
	if err := ssh.Unmarshal(payload, &r); err != nil {
		return SiteRole{}, fmt.Errorf("malformed %s request: %w", SiteRoleRequest, err)
	}
	return r, nil
}
