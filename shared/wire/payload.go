package wire

// The SSH payloads of port forwarding (RFC 4254 sections 7.1 and 7.2): the
// tcpip-forward global request agents send, the direct-tcpip channel-open
// of operators, and the forwarded-tcpip channel-open the bastion sends to
// agents. Every decoder is strict: trailing bytes, empty or oversized
// names, control characters and port 0 are errors that say what was wrong.

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// MaxHostLen bounds a host or name field (DNS names are at most 253 bytes).
const MaxHostLen = 255

// Forward is the payload of tcpip-forward and cancel-tcpip-forward.
type Forward struct {
	BindAddr string
	BindPort uint32
}

// DirectTCPIP is the payload of a direct-tcpip channel-open.
type DirectTCPIP struct {
	Host       string
	Port       uint32
	OriginAddr string
	OriginPort uint32
}

// ForwardedTCPIP is the payload of a forwarded-tcpip channel-open.
type ForwardedTCPIP struct {
	Addr       string
	Port       uint32
	OriginAddr string
	OriginPort uint32
}

// ParseForward decodes a tcpip-forward / cancel-tcpip-forward payload.
func ParseForward(payload []byte) (Forward, error) {
	var f Forward
	if err := ssh.Unmarshal(payload, &f); err != nil {
		return Forward{}, fmt.Errorf("malformed tcpip-forward request: %w", err)
	}
	if err := checkHost("bind address", f.BindAddr); err != nil {
		return Forward{}, err
	}
	if err := checkPort("bind port", f.BindPort); err != nil {
		return Forward{}, err
	}
	return f, nil
}

// ParseDirectTCPIP decodes a direct-tcpip channel-open payload. The origin
// is informational (the bastion uses the connection's real address) and is
// only checked for length.
func ParseDirectTCPIP(payload []byte) (DirectTCPIP, error) {
	var d DirectTCPIP
	if err := ssh.Unmarshal(payload, &d); err != nil {
		return DirectTCPIP{}, fmt.Errorf("malformed direct-tcpip request: %w", err)
	}
	if err := checkHost("target host", d.Host); err != nil {
		return DirectTCPIP{}, err
	}
	if err := checkPort("target port", d.Port); err != nil {
		return DirectTCPIP{}, err
	}
	if len(d.OriginAddr) > MaxHostLen {
		return DirectTCPIP{}, errors.New("originator address is longer than 255 bytes")
	}
	return d, nil
}

// ParseForwardedTCPIP decodes a forwarded-tcpip channel-open payload: the
// name and port that were connected (the agent's registration) and the
// operator's address, which is informational and only checked for length.
func ParseForwardedTCPIP(payload []byte) (ForwardedTCPIP, error) {
	var f ForwardedTCPIP
	if err := ssh.Unmarshal(payload, &f); err != nil {
		return ForwardedTCPIP{}, fmt.Errorf("malformed forwarded-tcpip request: %w", err)
	}
	if err := checkHost("forwarded name", f.Addr); err != nil {
		return ForwardedTCPIP{}, err
	}
	if err := checkPort("forwarded port", f.Port); err != nil {
		return ForwardedTCPIP{}, err
	}
	if len(f.OriginAddr) > MaxHostLen {
		return ForwardedTCPIP{}, errors.New("originator address is longer than 255 bytes")
	}
	return f, nil
}

// Marshal encodes a forwarded-tcpip channel-open payload.
func (f ForwardedTCPIP) Marshal() []byte { return ssh.Marshal(&f) }

// Marshal encodes a direct-tcpip channel-open payload.
func (d DirectTCPIP) Marshal() []byte { return ssh.Marshal(&d) }

// Marshal encodes a tcpip-forward payload.
func (f Forward) Marshal() []byte { return ssh.Marshal(&f) }

func checkHost(what, h string) error {
	switch {
	case h == "":
		return fmt.Errorf("%s is empty", what)
	case len(h) > MaxHostLen:
		return fmt.Errorf("%s is longer than %d bytes", what, MaxHostLen)
	case strings.ContainsFunc(h, func(r rune) bool { return r <= 0x20 || r == 0x7f }):
		return fmt.Errorf("%s %q contains spaces or control characters", what, h)
	}
	return nil
}

func checkPort(what string, p uint32) error {
	if p == 0 || p > 65535 {
		return fmt.Errorf("%s %d is not in 1..65535", what, p)
	}
	return nil
}
