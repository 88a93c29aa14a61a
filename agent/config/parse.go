package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ParseBastions splits a comma-separated list of host:port (LIFELINE_BASTION;
// spaces around entries and empty entries are ignored), each with a host
// free of spaces and '/' and a port from 1 to 65535, none listed twice. It
// reports every bad entry at once; an empty list is an error.
func ParseBastions(s string) ([]string, error) {
	var (
		out  []string
		errs []error
		seen = map[string]bool{}
	)
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q: want host:port: %w", a, err))
			continue
		}
		if p, err := strconv.ParseUint(port, 10, 16); host == "" || strings.ContainsAny(host, " \t\n/") || err != nil || p == 0 {
			errs = append(errs, fmt.Errorf("%q: want a host and a port from 1 to 65535", a))
			continue
		}
		if seen[a] {
			errs = append(errs, fmt.Errorf("%q is listed twice", a))
			continue
		}
		seen[a] = true
		out = append(out, a)
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("required: the bastion's host:port (e.g. bastion.example.com:22)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// BastionHosts is the hosts of bastions (as ParseBastions returns them), in
// order, each once (a host listed with two ports is one host).
func BastionHosts(bastions []string) []string {
	var hosts []string
	seen := map[string]bool{}
	for _, b := range bastions {
		host, _, err := net.SplitHostPort(b)
		if err != nil || seen[host] {
			continue
		}
		seen[host] = true
		hosts = append(hosts, host)
	}
	return hosts
}

// ParseInterfaceName checks a Linux interface name the way the kernel does
// (dev_valid_name: 1 to 15 bytes, not "." or "..", no '/', ':' or
// whitespace). With wildcard, a trailing '+' (iptables style, e.g. "zt+")
// matches every interface whose name starts with what precedes it.
func ParseInterfaceName(name string, wildcard bool) error {
	base := name
	if wildcard && strings.HasSuffix(name, "+") {
		base = strings.TrimSuffix(name, "+")
		if base == "" {
			return errors.New("a wildcard needs a prefix before '+'")
		}
	}
	if base == "" {
		return errors.New("empty interface name")
	}
	if len(name) > 15 {
		return fmt.Errorf("longer than 15 bytes")
	}
	if base == "." || base == ".." {
		return errors.New("not a valid interface name")
	}
	for i := 0; i < len(base); i++ {
		c := base[i]
		if c == '/' || c == ':' || c == '+' || c <= ' ' || c == 0x7f || c >= 0x80 {
			return fmt.Errorf("character %q not allowed in an interface name", c)
		}
	}
	return nil
}

// CheckInterface checks LIFELINE_INTERFACE, the interface the tunnel and
// the link checks bind their sockets to: empty (any), or a name
// ParseInterfaceName accepts. The error names the variable.
func CheckInterface(name string) error {
	if name == "" {
		return nil
	}
	if err := ParseInterfaceName(name, false); err != nil {
		return fmt.Errorf("LIFELINE_INTERFACE=%q: not an interface name: %w", name, err)
	}
	return nil
}
