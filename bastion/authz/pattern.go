package authz

import (
	"fmt"
	"net/netip"
	"strings"
)

// patternList is a parsed from="…" value: OpenSSH's pattern-list of
// addresses, CIDRs and address wildcards (* and ?), each optionally negated
// with !. It matches when at least one positive entry matches and no negated
// entry does (sshd's addr_match_list; the order of entries does not matter).
type patternList struct {
	text    string
	entries []pattern
}

type pattern struct {
	neg    bool
	prefix netip.Prefix // valid for address and CIDR entries
	glob   string       // lower case, for wildcard entries
}

// parsePatternList parses a from= value. Because lifeline matches only the
// client's IP address (no DNS), an entry that could only match a host name
// is an error, as are empty entries, zones, and CIDRs with host bits set.
func parsePatternList(s string) (*patternList, error) {
	if s == "" {
		return nil, fmt.Errorf("empty pattern list")
	}
	l := &patternList{text: s}
	for _, e := range strings.Split(s, ",") {
		p, err := parsePattern(e)
		if err != nil {
			return nil, err
		}
		l.entries = append(l.entries, p)
	}
	return l, nil
}

func parsePattern(e string) (pattern, error) {
	var p pattern
	raw := e
	if strings.HasPrefix(e, "!") {
		p.neg, e = true, e[1:]
	}
	if e == "" {
		return p, fmt.Errorf("empty entry %q in pattern list", raw)
	}
	if strings.ContainsAny(e, "*?") {
		for i := 0; i < len(e); i++ {
			c := e[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '.' || c == ':' || c == '*' || c == '?') {
				return p, fmt.Errorf("pattern %q can only match a host name: lifeline matches from= against the client's IP address (no DNS)", raw)
			}
		}
		p.glob = strings.ToLower(e)
		return p, nil
	}
	if strings.Contains(e, "/") {
		pr, err := netip.ParsePrefix(e)
		if err != nil {
			return p, fmt.Errorf("pattern %q: %w", raw, err)
		}
		if pr.Masked() != pr {
			return p, fmt.Errorf("pattern %q: address has bits set beyond the /%d mask (did you mean %s?)", raw, pr.Bits(), pr.Masked())
		}
		p.prefix = pr
		return p, nil
	}
	a, err := netip.ParseAddr(e)
	if err != nil || a.Zone() != "" {
		return p, fmt.Errorf("pattern %q is not an address, a CIDR or an address wildcard: lifeline matches from= against the client's IP address (no DNS)", raw)
	}
	p.prefix = netip.PrefixFrom(a, a.BitLen())
	return p, nil
}

// match reports whether addr is allowed. An invalid addr never matches.
func (l *patternList) match(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	var text string
	ok := false
	for _, p := range l.entries {
		var m bool
		if p.glob != "" {
			if text == "" {
				text = addr.String()
			}
			m = globMatch(p.glob, text)
		} else {
			m = p.prefix.Contains(addr)
		}
		if m {
			if p.neg {
				return false
			}
			ok = true
		}
	}
	return ok
}

// globMatch reports whether s matches pattern, where * matches any run of
// bytes and ? exactly one (OpenSSH's match_pattern). It runs in
// O(len(pattern)*len(s)) time at worst, never exponential.
func globMatch(pattern, s string) bool {
	px, sx := 0, 0
	starPx, starSx := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pattern) && (pattern[px] == '?' || pattern[px] == s[sx]):
			px++
			sx++
		case px < len(pattern) && pattern[px] == '*':
			starPx, starSx = px, sx
			px++
		case starPx >= 0:
			starSx++
			px, sx = starPx+1, starSx
		default:
			return false
		}
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// parseCIDRList parses a certificate's source-address critical option:
// comma-separated addresses and CIDRs only (sshd's addr_match_cidr_list).
func parseCIDRList(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range strings.Split(s, ",") {
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil || p.Masked() != p {
				return nil, fmt.Errorf("bad source-address entry %q", e)
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("bad source-address entry %q", e)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
