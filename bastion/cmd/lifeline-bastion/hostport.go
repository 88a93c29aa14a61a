package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// hostList is the --host flag of hostkey: names or addresses operators and
// agents dial, each with an optional port, repeatable and comma-separated.
type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }

func (h *hostList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			return fmt.Errorf("empty name in %q", v)
		}
		*h = append(*h, s)
	}
	return nil
}

// hostPort combines the bastion's name with the port it listens on, for
// the known_hosts line printed without --host.
func hostPort(name, listen string) string {
	_, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" {
		port = "2222"
	}
	return net.JoinHostPort(name, port)
}

// listenPort is the port of LIFELINE_LISTEN, the default of --host, or ""
// when it names no fixed port (":0", a service name).
func listenPort(listen string) string {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return ""
	}
	return port
}

// knownHostsAddr turns a --host value (NAME, NAME:PORT, an IPv4 address
// with or without port, [IPv6]:PORT, or a bare IPv6 address) into the
// host:port the known_hosts line is written for; defaultPort is used when
// the value has none. DNS names are folded to lower case, as ssh does
// before it looks the host up.
func knownHostsAddr(v, defaultPort string) (string, error) {
	host, port := v, ""
	switch {
	case strings.HasPrefix(v, "["):
		if h, p, err := net.SplitHostPort(v); err == nil {
			host, port = h, p
		} else if strings.HasSuffix(v, "]") {
			host = v[1 : len(v)-1]
		} else {
			return "", fmt.Errorf("--host %q: want [IPv6]:PORT", v)
		}
		if _, err := netip.ParseAddr(host); err != nil || strings.Contains(host, "%") {
			return "", fmt.Errorf("--host %q: %q is not an IPv6 address", v, host)
		}
	case strings.Count(v, ":") > 1: // a bare IPv6 address
		if _, err := netip.ParseAddr(v); err != nil || strings.Contains(v, "%") {
			return "", fmt.Errorf("--host %q is not an IPv6 address (with a port, write [ADDRESS]:PORT)", v)
		}
	case strings.Contains(v, ":"):
		h, p, err := net.SplitHostPort(v)
		if err != nil {
			return "", fmt.Errorf("--host %q: %w", v, err)
		}
		host, port = h, p
	}
	if port == "" {
		if defaultPort == "" {
			return "", fmt.Errorf("--host %q has no port and LIFELINE_LISTEN names none to default to: write %s:PORT", v, host)
		}
		port = defaultPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", fmt.Errorf("--host %q: port %q is not 1..65535", v, port)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if err := checkDNSName(host); err != nil {
			return "", fmt.Errorf("--host %q: %w", v, err)
		}
		host = strings.ToLower(host)
	}
	return net.JoinHostPort(host, port), nil
}

// checkDNSName accepts what ssh can dial by name: dot-separated labels of
// letters, digits and hyphens.
func checkDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("a host name must be 1 to 253 characters")
	}
	labels := strings.Split(name, ".")
	if last := labels[len(labels)-1]; last != "" && strings.Trim(last, "0123456789") == "" {
		return fmt.Errorf("%q is neither an IP address nor a host name (its last part is a number)", name)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%q is not a host name or an IP address", name)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not a host name or an IP address", name)
			}
		}
	}
	return nil
}
