// Package wire holds what the agent and the bastion say to each other, so
// that both sides name it once: the port-forwarding payloads of RFC 4254
// (payload.go) and lifeline's own requests beyond stock SSH.
package wire

import "golang.org/x/crypto/ssh"

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
