// Package forward parses LIFELINE_FORWARDS: the reverse forwards an agent
// registers on its bastion and the local targets their connections are
// dialled to.
//
// A spec is a comma-separated list of NAME:PORT=HOST:PORT. NAME:PORT is what
// the agent asks the server to listen on, exactly as `ssh -R NAME:PORT:HOST:PORT`
// would: on lifeline's bastion NAME is a registered name ("pi"), on a stock
// sshd it is a bind address sshd understands ("localhost"). HOST:PORT is the
// target the agent dials for every connection (the Pi's own sshd, a LAN device).
package forward

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Forward is one reverse forward.
type Forward struct {
	// Name is the bind address sent in the tcpip-forward request.
	Name string
	// Port is the port sent in the tcpip-forward request (1-65535).
	Port uint16
	// TargetHost and TargetPort are dialled for every forwarded connection.
	TargetHost string
	TargetPort uint16
}

// Listen is NAME:PORT as sent to the server (and as written in permitlisten).
func (f Forward) Listen() string {
	return net.JoinHostPort(f.Name, strconv.Itoa(int(f.Port)))
}

// Target is HOST:PORT, ready for net.Dial.
func (f Forward) Target() string {
	return net.JoinHostPort(f.TargetHost, strconv.Itoa(int(f.TargetPort)))
}

// String is the forward in spec form; Parse(f.String()) returns f.
func (f Forward) String() string { return f.Listen() + "=" + f.Target() }

// Parse parses a comma-separated spec. Blank entries are ignored; an empty
// spec is an error (an agent without forwards has nothing to do). Duplicate
// NAME:PORT entries are an error. Every problem is reported at once.
func Parse(spec string) ([]Forward, error) {
	var (
		out  []Forward
		errs []error
		seen = map[string]bool{}
	)
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f, err := ParseOne(part)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		key := strings.ToLower(f.Listen())
		if seen[key] {
			errs = append(errs, fmt.Errorf("forward %q: %s is listed twice", part, f.Listen()))
			continue
		}
		seen[key] = true
		out = append(out, f)
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no forward given: use NAME:PORT=HOST:PORT, e.g. pi:22=127.0.0.1:22"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// ParseOne parses a single NAME:PORT=HOST:PORT.
func ParseOne(s string) (Forward, error) {
	listen, target, ok := strings.Cut(s, "=")
	if !ok {
		return Forward{}, fmt.Errorf("forward %q: want NAME:PORT=HOST:PORT", s)
	}
	name, port, err := hostPort(listen)
	if err != nil {
		return Forward{}, fmt.Errorf("forward %q: listen side %q: %w", s, listen, err)
	}
	th, tp, err := hostPort(target)
	if err != nil {
		return Forward{}, fmt.Errorf("forward %q: target %q: %w", s, target, err)
	}
	return Forward{Name: name, Port: port, TargetHost: th, TargetPort: tp}, nil
}

func hostPort(s string) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(strings.TrimSpace(s))
	if err != nil {
		return "", 0, fmt.Errorf("want HOST:PORT: %w", err)
	}
	if err := checkHost(host); err != nil {
		return "", 0, err
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || p == 0 || ps != strconv.FormatUint(p, 10) {
		return "", 0, fmt.Errorf("port %q: want a number from 1 to 65535", ps)
	}
	return host, uint16(p), nil
}

// checkHost accepts an IP address or a host name of letters, digits, '-',
// '_' and '.' (at most 253 bytes), which is what a bastion name, a bind
// address and a LAN host name look like.
func checkHost(h string) error {
	if h == "" {
		return errors.New("host is empty")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return fmt.Errorf("host %q: zoned addresses are not supported", h)
		}
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("host %q is longer than 253 bytes", h)
	}
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return fmt.Errorf("host %q: %q is not allowed (letters, digits, '-', '_', '.' or an IP address)", h, r)
		}
	}
	return nil
}

// PermitListen formats the authorized_keys options that allow exactly fs to
// be registered: permitlisten="pi:22",permitlisten="nuc:3389".
func PermitListen(fs []Forward) string {
	opts := make([]string, 0, len(fs))
	for _, f := range fs {
		opts = append(opts, fmt.Sprintf("permitlisten=%q", f.Listen()))
	}
	return strings.Join(opts, ",")
}
