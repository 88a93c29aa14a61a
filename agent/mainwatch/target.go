package mainwatch

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Kind is how a target is probed.
type Kind int

const (
	// DNS sends one DNS query over UDP and waits for its answer.
	DNS Kind = iota + 1
	// TCP opens a TCP connection and closes it.
	TCP
)

func (k Kind) String() string {
	switch k {
	case DNS:
		return "dns"
	case TCP:
		return "tcp"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Target is one address the watch probes. The zero Target is "no target".
type Target struct {
	Kind Kind
	// Addr is an IP literal (never a name: see ParseTargets) and a port;
	// IPv4 addresses are never IPv4-mapped IPv6 ones, and carry no zone.
	Addr netip.AddrPort
}

// String is the target as ParseTargets reads it: dns://1.0.0.1:53,
// tcp://[2606:4700::1111]:443. The zero Target is "".
func (t Target) String() string {
	if t.Kind == 0 {
		return ""
	}
	return t.Kind.String() + "://" + t.Addr.String()
}

// MaxTargets bounds a target list.
const MaxTargets = 8

// accepted says what ParseTargets accepts, for its errors.
const accepted = "want dns://IP[:port] (a DNS query over UDP, port 53 by default) or tcp://IP:port (a TCP connect), IP an IPv4 or IPv6 address ([brackets] with a port)"

// ParseTargets parses a comma-separated list of targets, in the order they
// are to be probed (LIFELINE_MAIN_TARGETS):
//
//	dns://IP[:port]   one DNS query over UDP (port 53 if none is given)
//	tcp://IP:port     one TCP connect, closed at once
//
// IP is an IPv4 or IPv6 literal; an IPv6 address with a port is written in
// brackets ("dns://[2620:fe::fe]:53", "dns://2620:fe::fe" without one).
// Host names are refused: the agent's netsetup installs a host route to
// each target's address through the main gateway (see Addrs), which is how
// the unprivileged agent's probes leave by the main link without any
// capability, so the addresses must be known before anything resolves a
// name (and a name would need DNS, over a link that may be down).
// Spaces around entries are ignored. An empty s, an empty entry, a
// duplicate, a port 0, an unspecified or multicast address, a zone, or more
// than MaxTargets entries are errors that name the entry and say what is
// accepted.
func ParseTargets(s string) ([]Target, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("no targets: " + accepted)
	}
	fields := strings.Split(s, ",")
	if len(fields) > MaxTargets {
		return nil, fmt.Errorf("%d targets: at most %d", len(fields), MaxTargets)
	}
	out := make([]Target, 0, len(fields))
	seen := map[Target]bool{}
	for i, f := range fields {
		e := strings.TrimSpace(f)
		if e == "" {
			return nil, fmt.Errorf("target %d of %q is empty: %s", i+1, s, accepted)
		}
		t, err := parseTarget(e)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", e, err)
		}
		if seen[t] {
			return nil, fmt.Errorf("target %q is listed twice", e)
		}
		seen[t] = true
		out = append(out, t)
	}
	return out, nil
}

func parseTarget(e string) (Target, error) {
	scheme, rest, ok := strings.Cut(e, "://")
	if !ok {
		return Target{}, errors.New("no scheme: " + accepted)
	}
	var t Target
	switch strings.ToLower(scheme) {
	case "dns":
		t.Kind = DNS
	case "tcp":
		t.Kind = TCP
	default:
		return Target{}, fmt.Errorf("scheme %q is neither dns nor tcp (ICMP is not offered: carriers throttle it): %s", scheme, accepted)
	}
	ap, err := parseAddrPort(t.Kind, rest)
	if err != nil {
		return Target{}, err
	}
	t.Addr = ap
	return t, nil
}

func parseAddrPort(k Kind, s string) (netip.AddrPort, error) {
	host, port, hasPort := s, "", false
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return netip.AddrPort{}, errors.New("missing ]: " + accepted)
		}
		host, port = s[1:end], s[end+1:]
		if port != "" {
			if !strings.HasPrefix(port, ":") {
				return netip.AddrPort{}, fmt.Errorf("%q after ]: %s", port, accepted)
			}
			port, hasPort = port[1:], true
		}
		if !strings.Contains(host, ":") {
			return netip.AddrPort{}, fmt.Errorf("%q in brackets is not an IPv6 address: %s", host, accepted)
		}
	case strings.Count(s, ":") == 1:
		host, port, _ = strings.Cut(s, ":")
		hasPort = true
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		if host != "" && !strings.Contains(host, ":") && strings.ContainsFunc(host, isLetter) {
			return netip.AddrPort{}, fmt.Errorf("%q is a host name, not an IP address: targets must be IP literals, because the agent routes each target's address through the main gateway (a host route per target) and cannot resolve a name while the link may be down", host)
		}
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address: %s", host, accepted)
	}
	if a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("address %q has a zone: a target needs a routable address", host)
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.AddrPort{}, fmt.Errorf("address %s cannot be probed (unspecified, multicast or broadcast)", a)
	}
	var p uint64 = 53
	switch {
	case hasPort:
		p, err = strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return netip.AddrPort{}, fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
	case k == TCP:
		return netip.AddrPort{}, errors.New("a tcp target needs a port (tcp://IP:port)")
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

func isLetter(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || r == '-' || r == '_'
}

// Addrs are the distinct addresses of targets, in order: where the agent's
// netsetup must install host routes through the main gateway before the
// watch starts. Without them the probes leave by the default route (the
// backup link) and the watch would call a dead main link up.
func Addrs(targets []Target) []netip.Addr {
	var out []netip.Addr
	for _, t := range targets {
		a := t.Addr.Addr()
		dup := false
		for _, o := range out {
			dup = dup || o == a
		}
		if !dup {
			out = append(out, a)
		}
	}
	return out
}
