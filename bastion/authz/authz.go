// Package authz is the bastion's key policy: which keys may log in, in which
// role (agent or operator), and which targets each may register or reach.
//
// The policy is read from two files in OpenSSH's authorized_keys format
// (LIFELINE_AGENTS and LIFELINE_OPERATORS) and an optional revocation list
// (LIFELINE_REVOKED_KEYS). Only the options lifeline enforces are accepted;
// any other option is a load error, because an option that is silently
// ignored is a restriction that silently does not apply.
//
// Agent certificates. An agents-file line may be cert-authority, as in the
// operators file: a site is then paired by signing its key, with no change
// on the bastion:
//
//	ssh-keygen -s site_ca -I radio-pi -n pi:22,nuc:3389 -V +52w agent.pub
//
// The certificate's principals are the targets the agent may register:
// each must be a NAME:PORT target (ParseTarget), or the certificate is
// refused. The line's permitlisten= options, when given, are an allowlist:
// the agent may register the principals inside it, the others are ignored,
// and a certificate with none inside is refused by that line (the next line
// of the same CA is tried). Without permitlisten= the CA may certify any
// name. principals= is refused on agent lines (the principals are the
// targets), and the certificate needs the permit-port-forwarding extension,
// which ssh-keygen includes unless told -O clear. A CA may be listed in one
// file only: its file decides the role of every certificate it signs.
//
// Revocation. The revocation list is an OpenSSH KRL (ssh-keygen -k, the
// format of sshd's RevokedKeys; see RevocationList). A key, certificate or
// CA it revokes is refused in both roles, before the files are consulted;
// the bastion re-checks live connections on every reload, so revoking a key
// and reloading closes its sessions.
//
// Deviations from sshd, all in the direction of refusing more:
//   - from= is matched against the client's IP address only (no DNS). A
//     pattern that could only ever match a host name is a load error.
//   - A key may appear on only one plain line across both files; certificate
//     authorities may have several cert-authority lines (one per principal
//     group), tried in file order.
//   - A certificate is only ever checked against cert-authority lines, never
//     against a plain line for its certified key.
//   - Certificates without principals, signed with ssh-rsa (SHA-1), carrying
//     force-command or any critical option other than source-address are
//     refused. A certificate without the permit-port-forwarding extension
//     logs in but may not jump (Identity.NoPortForwarding).
//   - DSA keys, keys of unknown types, and RSA keys shorter than 2048 bits
//     are refused at load.
//   - permitlisten/permitopen name targets (NAME:PORT), never addresses, and
//     accept neither wildcards nor a missing host; a value may also hold a
//     comma-separated list of targets. Names are compared case-insensitively.
//   - restrict on an operator line forbids jumping unless the line also has
//     permitopen= (sshd would need port-forwarding too, which lifeline
//     refuses as redundant).
//   - A KRL with a signature section, an unknown section or a critical
//     extension is refused (sshd refuses the last two as well), and so is a
//     revocation list that is not a KRL (sshd would also read a plain list
//     of public keys); an empty file is an empty list.
//
// expiry-time= is read as sshd reads it: in the local time zone (TZ) unless
// suffixed with Z. Run the bastion with TZ=UTC, or write the Z, to make the
// files mean the same on every host.
package authz

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Role is what a key may do on the bastion. The zero value is no role.
type Role int

// Roles. A key's role is decided by the file it is listed in.
const (
	RoleAgent    Role = iota + 1 // listed in the agents file: registers targets
	RoleOperator                 // listed in the operators file: jumps to targets
)

func (r Role) String() string {
	switch r {
	case RoleAgent:
		return "agent"
	case RoleOperator:
		return "operator"
	default:
		return fmt.Sprintf("role(%d)", int(r))
	}
}

// Target is a registered name and port, as in permitlisten="pi:22" or a
// direct-tcpip request for pi:22. Host is a name, never an address; values
// made by ParseTarget are canonical (lower case).
type Target struct {
	Host string
	Port uint32
}

// String formats t as NAME:PORT.
func (t Target) String() string {
	return net.JoinHostPort(t.Host, strconv.FormatUint(uint64(t.Port), 10))
}

// ParseTarget parses "NAME:PORT". NAME is one or more DNS labels (letters,
// digits, hyphens; at most 63 bytes each, 253 in all), folded to lower case;
// it must not be an IP address, a number, or localhost. PORT is 1..65535 in
// decimal. The error names the input.
func ParseTarget(s string) (Target, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Target{}, fmt.Errorf("target %q: want NAME:PORT", s)
	}
	host, port := s[:i], s[i+1:]
	if err := checkName(host); err != nil {
		return Target{}, fmt.Errorf("target %q: %w", s, err)
	}
	p, err := parsePort(port)
	if err != nil {
		return Target{}, fmt.Errorf("target %q: %w", s, err)
	}
	return Target{Host: strings.ToLower(host), Port: p}, nil
}

// TargetFrom checks the host and port of a request (a direct-tcpip channel
// or a tcpip-forward global request) as ParseTarget does and returns the
// canonical Target. The error names the request's host and port.
func TargetFrom(host string, port uint32) (Target, error) {
	if err := checkName(host); err != nil {
		return Target{}, fmt.Errorf("target %q port %d: %w", host, port, err)
	}
	if port < 1 || port > 65535 {
		return Target{}, fmt.Errorf("target %q port %d: want 1..65535", host, port)
	}
	return Target{Host: strings.ToLower(host), Port: port}, nil
}

func parsePort(s string) (uint32, error) {
	if s == "*" {
		return 0, errors.New("wildcard port: name the port")
	}
	if s == "" || len(s) > 5 {
		return 0, fmt.Errorf("port %q: want 1..65535", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("port %q: want 1..65535", s)
		}
	}
	n, _ := strconv.Atoi(s)
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: want 1..65535", s)
	}
	return uint32(n), nil
}

// checkName reports why host is not a usable target name.
func checkName(host string) error {
	if host == "" {
		return errors.New("missing name")
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return fmt.Errorf("%q is an address: targets are registered names", host)
	}
	if strings.ContainsAny(host, ":[]") {
		return fmt.Errorf("%q is not a name: it must not contain ':', '[' or ']'", host)
	}
	if len(host) > 253 {
		return fmt.Errorf("name %.20q… is longer than 253 bytes", host)
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("name %q: each dot-separated label must be 1..63 bytes", host)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("name %q: a label must not start or end with '-'", host)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("name %q: only letters, digits, '-' and '.' are allowed", host)
			}
		}
	}
	if allDigits(labels[len(labels)-1]) {
		return fmt.Errorf("name %q looks like a number or an address: targets are registered names", host)
	}
	first, last := strings.ToLower(labels[0]), strings.ToLower(labels[len(labels)-1])
	if first == "localhost" || last == "localhost" {
		return fmt.Errorf("name %q: localhost is not a target", host)
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Identity is who logged in, as decided by Authenticate. Callers must treat
// it as read-only; every call to Authenticate returns a fresh copy.
type Identity struct {
	Role        Role
	Name        string   // key comment, or the certificate's KeyId (control characters replaced); never empty: falls back to Fingerprint
	Fingerprint string   // SHA256:… of the user's key (for a certificate: of the certified key)
	CA          string   // SHA256:… of the CA for certificate logins, else ""
	Principal   string   // operators: the certificate principal that matched, else ""
	Listen      []Target // agents: permitlisten entries, or the certificate's principals inside them (at least one)
	Open        []Target // operators: permitopen entries; nil = every registered target
	Source      string   // "file:line" of the authorizing entry, for the audit log
	// NoPortForwarding: an operator whose line carries no-port-forwarding,
	// or restrict without permitopen, or whose certificate lacks the
	// permit-port-forwarding extension. Such an operator may not jump.
	NoPortForwarding bool
	// Expires is when this login stops being valid: the line's expiry-time=
	// or the certificate's valid-before, whichever is sooner; zero = never.
	// The bastion closes a live connection at that moment.
	Expires time.Time
}

// MayListen reports whether id may register t (agents only). A nil
// identity may do nothing.
func (id *Identity) MayListen(t Target) bool {
	if id == nil || id.Role != RoleAgent {
		return false
	}
	return slices.ContainsFunc(id.Listen, func(l Target) bool { return sameTarget(l, t) })
}

// MayOpen reports whether id may open a channel to t (operators only): the
// operator may forward, t is a valid name (never an address), and t is in
// Open, or Open is nil. Whether t is registered is the caller's check. A
// nil identity may do nothing.
func (id *Identity) MayOpen(t Target) bool {
	if id == nil || id.Role != RoleOperator || id.NoPortForwarding {
		return false
	}
	if checkName(t.Host) != nil || t.Port < 1 || t.Port > 65535 {
		return false
	}
	if id.Open == nil {
		return true
	}
	return slices.ContainsFunc(id.Open, func(o Target) bool { return sameTarget(o, t) })
}

func sameTarget(a, b Target) bool {
	return a.Port == b.Port && asciiEqualFold(a.Host, b.Host)
}

// asciiEqualFold compares names by ASCII case folding only: strings.EqualFold
// folds Unicode too, which makes "ſpare" (long s) equal "spare".
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
