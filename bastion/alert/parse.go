package alert

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

var e164 = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)

func checkNumber(n string) error {
	if !e164.MatchString(n) {
		return fmt.Errorf("%q is not an E.164 number (a + then 2 to 15 digits, no spaces, e.g. +15551234567)", n)
	}
	return nil
}

// SplitNumbers parses a comma-separated list of E.164 phone numbers
// (the recipients of texts). Spaces around elements are ignored;
// an empty or blank s gives nil. An empty element, a malformed number or a
// duplicate is an error naming the element.
func SplitNumbers(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []string
	seen := map[string]bool{}
	for i, f := range strings.Split(s, ",") {
		n := strings.TrimSpace(f)
		if n == "" {
			return nil, fmt.Errorf("number %d of %q is empty", i+1, s)
		}
		if err := checkNumber(n); err != nil {
			return nil, err
		}
		if seen[n] {
			return nil, fmt.Errorf("number %q is listed twice", n)
		}
		seen[n] = true
		out = append(out, n)
	}
	return out, nil
}

// ParseCIDRs parses a comma-separated list of CIDR prefixes
// (quiet sources, ban exemptions). A bare address is a /32 (IPv4) or /128 (IPv6)
// prefix; IPv4-mapped IPv6 addresses are unmapped; host bits are masked off.
// Spaces around elements are ignored; an empty or blank s gives nil. An
// empty or malformed element is an error naming it.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for i, f := range strings.Split(s, ",") {
		e := strings.TrimSpace(f)
		if e == "" {
			return nil, fmt.Errorf("element %d of %q is empty", i+1, s)
		}
		p, err := parsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR prefix nor an IP address: %w", e, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func parsePrefix(e string) (netip.Prefix, error) {
	if !strings.Contains(e, "/") {
		a, err := netip.ParseAddr(e)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("zone %q not allowed", a.Zone())
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(e)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a := p.Addr(); a.Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			return netip.Prefix{}, fmt.Errorf("IPv4-mapped prefix shorter than /96")
		}
		p = netip.PrefixFrom(a.Unmap(), bits)
	}
	return p.Masked(), nil
}
