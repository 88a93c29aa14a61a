package authz

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// Errors returned (wrapped) by Authenticate. Every refusal wraps exactly
// one of them; the message says why, without secrets.
var (
	// ErrUnknownKey: the key (or the certificate's CA) is in neither file.
	ErrUnknownKey = errors.New("key not authorized")
	// ErrRefused: the key is listed but this login is not allowed (from=,
	// expiry-time=, certificate validity, principals, critical options).
	ErrRefused = errors.New("login refused")
	// ErrRevoked: the key, the certificate or its CA is in the revocation
	// list (LIFELINE_REVOKED_KEYS), whatever the two files say.
	ErrRevoked = errors.New("key revoked")
)

// entry is one line of a policy file. Entries are never modified after LoadFiles.
type entry struct {
	role        Role
	source      string // file:line
	text        string // the line as written (trimmed), to tell changes apart on reload
	blob        []byte // key.Marshal()
	fingerprint string
	name        string // sanitized comment, or fingerprint
	from        *patternList
	expiry      time.Time // zero: none
	listen      []Target
	open        []Target // nil: all
	certAuth    bool
	principals  []string // nil: principals= not given
	noPortFwd   bool
	restrict    bool
	permitOpen  bool // at least one permitopen= seen
}

// Policy is the set of keys allowed in, loaded from the agents and operators
// files and the revocation list. It is immutable after LoadFiles and safe for
// concurrent use. A nil *Policy refuses every key.
type Policy struct {
	keys      map[string]*entry   // plain keys by SHA256 fingerprint
	cas       map[string][]*entry // cert-authority lines by CA fingerprint, in file order (all of one role)
	revoked   *RevocationList     // nil: none
	agents    int
	operators int
}

// Files names the files a Policy is loaded from.
type Files struct {
	Agents      string // authorized_keys of agents (LIFELINE_AGENTS)
	Operators   string // authorized_keys of operators (LIFELINE_OPERATORS)
	RevokedKeys string // OpenSSH KRL (LIFELINE_REVOKED_KEYS); "" = none
}

// AgentKey is an agent the policy lets in: who the bastion should expect.
type AgentKey struct {
	Name        string
	Fingerprint string
	Listen      []Target
}

// AgentKeys lists the plain agent keys, sorted by name. A nil policy has none.
func (p *Policy) AgentKeys() []AgentKey {
	if p == nil {
		return nil
	}
	var out []AgentKey
	for _, e := range p.keys {
		if e.role == RoleAgent {
			out = append(out, AgentKey{Name: e.name, Fingerprint: e.fingerprint, Listen: slices.Clone(e.listen)})
		}
	}
	slices.SortFunc(out, func(a, b AgentKey) int { return strings.Compare(a.Name+a.Fingerprint, b.Name+b.Fingerprint) })
	return out
}

// LoadFiles reads the agents file and the operators file (OpenSSH
// authorized_keys format) into a Policy. Blank lines and lines starting
// with # are ignored. f.RevokedKeys, when not empty, is an OpenSSH KRL (see
// LoadRevocationList) whose keys and certificates are refused in both
// roles. Every problem is reported, each naming file and line, in one
// errors.Join: unreadable files, malformed lines, unknown or invalid
// options, options not allowed for the file's role, agent keys without
// permitlisten, a key listed twice or in both files, and the revocation
// list's. Times in expiry-time= are in the local time zone (time.Local,
// i.e. TZ) unless suffixed with Z, exactly as sshd reads them. LoadFiles
// has no side effects: calling it again is how a reload is done.
func LoadFiles(f Files) (*Policy, error) {
	return loadFiles(f, time.Local)
}

func loadFiles(f Files, loc *time.Location) (*Policy, error) {
	p := &Policy{keys: map[string]*entry{}, cas: map[string][]*entry{}}
	var errs []error
	agents, err := readFile(f.Agents, RoleAgent, loc)
	errs = append(errs, err)
	operators, err := readFile(f.Operators, RoleOperator, loc)
	errs = append(errs, err)
	if f.RevokedKeys != "" {
		p.revoked, err = LoadRevocationList(f.RevokedKeys)
		errs = append(errs, err)
	}
	// Agents come first, so a conflict is always reported on the operator line.
	for _, e := range append(agents, operators...) {
		if e.certAuth {
			if prev, ok := p.keys[e.fingerprint]; ok && prev.role != e.role {
				errs = append(errs, fmt.Errorf("%s: key %s is also an %s key at %s: a key in both files is a configuration error", e.source, e.fingerprint, prev.role, prev.source))
				continue
			}
			if prev := p.cas[e.fingerprint]; len(prev) > 0 && prev[0].role != e.role {
				errs = append(errs, fmt.Errorf("%s: certificate authority %s is also an %s CA at %s: a key in both files is a configuration error", e.source, e.fingerprint, prev[0].role, prev[0].source))
				continue
			}
			p.cas[e.fingerprint] = append(p.cas[e.fingerprint], e)
			continue
		}
		if prev := p.cas[e.fingerprint]; len(prev) > 0 && prev[0].role != e.role {
			errs = append(errs, fmt.Errorf("%s: key %s is also an %s CA at %s: a key in both files is a configuration error", e.source, e.fingerprint, prev[0].role, prev[0].source))
			continue
		}
		if prev, ok := p.keys[e.fingerprint]; ok {
			if prev.role != e.role {
				errs = append(errs, fmt.Errorf("%s: key %s is also listed at %s: a key in both files is a configuration error", e.source, e.fingerprint, prev.source))
			} else {
				errs = append(errs, fmt.Errorf("%s: key %s is already listed at %s: merge the two lines", e.source, e.fingerprint, prev.source))
			}
			continue
		}
		p.keys[e.fingerprint] = e
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	p.agents, p.operators = len(agents), len(operators)
	return p, nil
}

// RevocationList is the policy's revocation list; nil when none is
// configured.
func (p *Policy) RevocationList() *RevocationList {
	if p == nil {
		return nil
	}
	return p.revoked
}

// Changes lists what differs from old to p, one line each, for the audit
// log of a reload: keys and CA lines added, removed or changed (same key,
// other options), and a new revocation list. A nil old is an empty policy.
func (p *Policy) Changes(old *Policy) []string {
	type item struct{ desc, text string }
	index := func(q *Policy) map[string]item {
		m := map[string]item{}
		if q == nil {
			return m
		}
		for _, e := range q.keys {
			m[e.role.String()+" key "+e.fingerprint] = item{fmt.Sprintf("%s key %q %s", e.role, e.name, e.fingerprint), e.text}
		}
		for _, lines := range q.cas {
			for i, e := range lines {
				m[fmt.Sprintf("%s CA %s #%d", e.role, e.fingerprint, i)] = item{fmt.Sprintf("%s CA %q %s", e.role, e.name, e.fingerprint), e.text}
			}
		}
		return m
	}
	before, after := index(old), index(p)
	var out []string
	for k, a := range after {
		b, ok := before[k]
		switch {
		case !ok:
			out = append(out, "added "+a.desc)
		case b.text != a.text:
			out = append(out, "changed "+a.desc)
		}
	}
	for k, b := range before {
		if _, ok := after[k]; !ok {
			out = append(out, "removed "+b.desc)
		}
	}
	slices.Sort(out)
	oldKRL, newKRL := old.RevocationList(), p.RevocationList()
	if oldKRL.String() != newKRL.String() || oldKRL != nil && newKRL != nil && oldKRL.Generated != newKRL.Generated {
		out = append(out, "revoked keys: "+newKRL.String())
	}
	return out
}

// Counts reports how many lines each file contributed (cert-authority lines
// included).
func (p *Policy) Counts() (agents, operators int) {
	if p == nil {
		return 0, 0
	}
	return p.agents, p.operators
}

func readFile(path string, role Role, loc *time.Location) ([]*entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s file: %w", role, err)
	}
	var entries []*entry
	var errs []error
	for n, line := range strings.Split(string(data), "\n") {
		src := fmt.Sprintf("%s:%d", path, n+1)
		t := strings.Trim(line, " \t\r")
		if t == "" || t[0] == '#' {
			continue
		}
		e, err := parseEntry(t, role, src, loc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entries = append(entries, e)
	}
	return entries, errors.Join(errs...)
}

// parseEntry turns one line into an entry, checking every option against
// the role. All problems of the line are joined, each prefixed with src.
func parseEntry(line string, role Role, src string, loc *time.Location) (*entry, error) {
	kl, err := parseLine(line)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	e := &entry{
		role:        role,
		source:      src,
		text:        line,
		blob:        kl.key.Marshal(),
		fingerprint: ssh.FingerprintSHA256(kl.key),
	}
	e.name = sanitizeName(kl.comment)
	if e.name == "" {
		e.name = e.fingerprint
	}
	var errs []error
	seen := map[string]bool{}
	for _, o := range kl.options {
		if err := e.apply(o, role, seen, loc); err != nil {
			errs = append(errs, fmt.Errorf("%s: option %s: %w", src, o.name, err))
		}
	}
	if role == RoleAgent && !seen["permitlisten"] && !e.certAuth {
		errs = append(errs, fmt.Errorf(`%s: agent key without permitlisten="NAME:PORT": say which names it may register`, src))
	}
	if e.principals != nil && !e.certAuth {
		errs = append(errs, fmt.Errorf("%s: option principals: only valid together with cert-authority", src))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return e, nil
}

// Options sshd knows but lifeline refuses, with the reason given.
var refusedOptions = map[string]string{
	"command":             "the bastion runs no commands",
	"environment":         "the bastion runs no commands",
	"tunnel":              "the bastion does no tun forwarding",
	"agent-forwarding":    "the bastion never forwards agents",
	"x11-forwarding":      "the bastion never forwards X11",
	"pty":                 "the bastion never allocates a PTY",
	"user-rc":             "the bastion runs no commands",
	"port-forwarding":     "not needed: permitopen/permitlisten say what is allowed",
	"no-touch-required":   "lifeline does not relax FIDO checks",
	"verify-required":     "not enforced by lifeline",
	"permitlisten":        "",
	"permitopen":          "",
	"cert-authority":      "",
	"principals":          "",
	"no-port-forwarding":  "",
	"from":                "",
	"expiry-time":         "",
	"restrict":            "",
	"no-pty":              "",
	"no-agent-forwarding": "",
	"no-x11-forwarding":   "",
	"no-user-rc":          "",
}

// allowed lists the options each role accepts.
var allowed = map[Role]map[string]bool{
	RoleAgent: {
		"permitlisten": true, "from": true, "expiry-time": true, "cert-authority": true,
		"restrict": true, "no-pty": true, "no-agent-forwarding": true, "no-x11-forwarding": true, "no-user-rc": true,
	},
	RoleOperator: {
		"permitopen": true, "from": true, "expiry-time": true, "cert-authority": true, "principals": true,
		"no-port-forwarding": true,
		"restrict":           true, "no-pty": true, "no-agent-forwarding": true, "no-x11-forwarding": true, "no-user-rc": true,
	},
}

var withValue = map[string]bool{"permitlisten": true, "permitopen": true, "from": true, "expiry-time": true, "principals": true}

func (e *entry) apply(o option, role Role, seen map[string]bool, loc *time.Location) error {
	if role == RoleAgent && o.name == "principals" {
		return errors.New(`not used on agent lines: an agent certificate's principals are the NAME:PORT targets it may register (limit them with permitlisten="…")`)
	}
	if !allowed[role][o.name] {
		why, known := refusedOptions[o.name]
		switch {
		case known && why != "":
			return fmt.Errorf("not supported: %s", why)
		case known:
			return fmt.Errorf("not allowed on %s keys", role)
		default:
			return errors.New("unknown option (lifeline refuses options it would not enforce)")
		}
	}
	if withValue[o.name] != o.hasValue {
		if o.hasValue {
			return errors.New("takes no value")
		}
		return errors.New(`needs a value: name="…"`)
	}
	repeatable := o.name == "permitopen" || o.name == "permitlisten"
	if seen[o.name] && !repeatable {
		return errors.New("given twice")
	}
	seen[o.name] = true
	switch o.name {
	case "permitlisten", "permitopen":
		var ts []Target
		for _, s := range strings.Split(o.value, ",") {
			t, err := ParseTarget(s)
			if err != nil {
				return err
			}
			ts = append(ts, t)
		}
		if o.name == "permitlisten" {
			e.listen = appendUnique(e.listen, ts)
		} else {
			e.permitOpen = true
			e.open = appendUnique(e.open, ts)
		}
	case "from":
		l, err := parsePatternList(o.value)
		if err != nil {
			return err
		}
		e.from = l
	case "expiry-time":
		t, err := parseExpiry(o.value, loc)
		if err != nil {
			return err
		}
		e.expiry = t
	case "principals":
		ps := strings.Split(o.value, ",")
		for _, p := range ps {
			if p == "" || strings.ContainsFunc(p, unicode.IsSpace) {
				return fmt.Errorf("bad principal %q in %q", p, o.value)
			}
		}
		e.principals = ps
	case "cert-authority":
		e.certAuth = true
	case "no-port-forwarding":
		e.noPortFwd = true
	case "restrict":
		e.restrict = true
	}
	return nil
}

func appendUnique(dst, src []Target) []Target {
	for _, t := range src {
		if !slices.Contains(dst, t) {
			dst = append(dst, t)
		}
	}
	return dst
}

// parseExpiry parses sshd's expiry-time: YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z],
// in loc unless suffixed with Z (UTC).
func parseExpiry(s string, loc *time.Location) (time.Time, error) {
	v := s
	if strings.HasSuffix(v, "Z") || strings.HasSuffix(v, "z") {
		v, loc = v[:len(v)-1], time.UTC
	}
	var layout string
	switch len(v) {
	case 8:
		layout = "20060102"
	case 12:
		layout = "200601021504"
	case 14:
		layout = "20060102150405"
	default:
		return time.Time{}, fmt.Errorf("%q: want YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]", s)
	}
	if !allDigits(v) {
		return time.Time{}, fmt.Errorf("%q: want YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]", s)
	}
	t, err := time.ParseInLocation(layout, v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: not a valid time", s)
	}
	return t, nil
}

// sanitizeName replaces control characters and invalid UTF-8 with '?' and
// caps the length, so that names are safe in logs and text messages.
func sanitizeName(s string) string {
	const maxRunes = 128
	var b strings.Builder
	n := 0
	for i := 0; i < len(s) && n < maxRunes; {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r == utf8.RuneError && size <= 1 || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// Authenticate decides whether key may log in from remote at time now.
//
// A key, certificate or CA in the revocation list is refused first,
// whatever the files say. Plain keys are looked up in both files by
// fingerprint. For a certificate (*ssh.Certificate), the CA must be on a
// cert-authority line; the certificate must be a user certificate with at
// least one principal, within its validity window, correctly signed (not
// with ssh-rsa/SHA-1), and carry no critical option other than
// source-address, which must match remote.
//
// On an operator CA line, the principal must be on the line's principals=
// list, or, without principals=, equal to user (the SSH user name, used for
// nothing else). On an agent CA line, every principal must be a NAME:PORT
// target; those inside the line's permitlisten= (all of them when the line
// has none) are what the agent may register, and the certificate needs the
// permit-port-forwarding extension. Each line's from= is matched against
// remote's IP (IPv4-mapped IPv6 addresses are unmapped first; no DNS) and
// its expiry-time= against now. cert-authority lines of one CA are tried in
// file order; the first that admits the certificate decides.
//
// On success the Identity is a fresh copy the caller may keep. On refusal
// the error wraps ErrUnknownKey, ErrRefused or ErrRevoked and explains why,
// naming the file:line involved, fit for the audit log. An invalid remote
// is refused.
func (p *Policy) Authenticate(user string, remote netip.Addr, key ssh.PublicKey, now time.Time) (*Identity, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: no policy loaded", ErrUnknownKey)
	}
	if key == nil {
		return nil, fmt.Errorf("%w: no key", ErrUnknownKey)
	}
	if !remote.IsValid() {
		return nil, fmt.Errorf("%w: unknown remote address", ErrRefused)
	}
	remote = remote.Unmap().WithZone("")
	if why, revoked := p.revoked.Revoked(key); revoked {
		return nil, fmt.Errorf("%w: %s key %s: %s (revoked keys)", ErrRevoked, key.Type(), ssh.FingerprintSHA256(key), why)
	}
	if cert, ok := key.(*ssh.Certificate); ok {
		return p.authenticateCert(user, remote, cert, now)
	}
	fp := ssh.FingerprintSHA256(key)
	e := p.keys[fp]
	if e == nil || !bytes.Equal(e.blob, key.Marshal()) {
		return nil, fmt.Errorf("%w: %s key %s is in neither the agents nor the operators file", ErrUnknownKey, key.Type(), fp)
	}
	if err := e.admit(remote, now); err != nil {
		return nil, fmt.Errorf("%w: %s key %s: %v", ErrRefused, e.role, fp, err)
	}
	id := &Identity{
		Role:        e.role,
		Name:        e.name,
		Fingerprint: fp,
		Source:      e.source,
		Listen:      slices.Clone(e.listen),
		Open:        slices.Clone(e.open),
		Expires:     e.expiry,
	}
	if e.role == RoleOperator {
		id.NoPortForwarding = e.noPortFwd || (e.restrict && !e.permitOpen)
	}
	return id, nil
}

// admit checks the line's from= and expiry-time= options.
func (e *entry) admit(remote netip.Addr, now time.Time) error {
	if e.from != nil && !e.from.match(remote) {
		return fmt.Errorf("source %s not allowed by from=%q (%s)", remote, e.from.text, e.source)
	}
	if !e.expiry.IsZero() && now.Unix() > e.expiry.Unix() {
		return fmt.Errorf("expired at %s (expiry-time, %s)", e.expiry.Format(time.RFC3339), e.source)
	}
	return nil
}

func (p *Policy) authenticateCert(user string, remote netip.Addr, cert *ssh.Certificate, now time.Time) (*Identity, error) {
	caFP := ssh.FingerprintSHA256(cert.SignatureKey)
	lines := p.cas[caFP]
	if len(lines) == 0 || !bytes.Equal(lines[0].blob, cert.SignatureKey.Marshal()) {
		return nil, fmt.Errorf("%w: certificate signed by unknown authority %s", ErrUnknownKey, caFP)
	}
	userFP := ssh.FingerprintSHA256(cert.Key)
	refuse := func(format string, args ...any) (*Identity, error) {
		return nil, fmt.Errorf("%w: certificate %q (key %s, CA %s): %s", ErrRefused, sanitizeName(cert.KeyId), userFP, caFP, fmt.Sprintf(format, args...))
	}
	if err := checkCert(cert, remote, now); err != nil {
		return refuse("%v", err)
	}
	if lines[0].role == RoleAgent {
		return authenticateAgentCert(lines, remote, cert, now, refuse)
	}
	var reasons []string
	for _, e := range lines {
		if err := e.admit(remote, now); err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		principal, err := e.matchPrincipal(user, cert.ValidPrincipals)
		if err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		name := sanitizeName(cert.KeyId)
		if name == "" {
			name = userFP
		}
		_, permitPF := cert.Extensions["permit-port-forwarding"]
		return &Identity{
			Role:             RoleOperator,
			Name:             name,
			Fingerprint:      userFP,
			CA:               caFP,
			Principal:        principal,
			Open:             slices.Clone(e.open),
			Source:           e.source,
			NoPortForwarding: e.noPortFwd || (e.restrict && !e.permitOpen) || !permitPF,
			Expires:          certExpiry(cert, e.expiry),
		}, nil
	}
	return refuse("%s", strings.Join(reasons, "; "))
}

// authenticateAgentCert admits an agent certificate: its principals are the
// targets it may register, within each line's permitlisten allowlist.
func authenticateAgentCert(lines []*entry, remote netip.Addr, cert *ssh.Certificate, now time.Time, refuse func(string, ...any) (*Identity, error)) (*Identity, error) {
	userFP := ssh.FingerprintSHA256(cert.Key)
	var targets []Target
	for _, p := range cert.ValidPrincipals {
		t, err := ParseTarget(p)
		if err != nil {
			return refuse("principal %q is not a NAME:PORT target (an agent certificate's principals name what it may register, e.g. ssh-keygen -n pi:22,nuc:3389): %v", sanitizeName(p), err)
		}
		targets = appendUnique(targets, []Target{t})
	}
	if _, ok := cert.Extensions["permit-port-forwarding"]; !ok {
		return refuse("certificate lacks the permit-port-forwarding extension: an agent could register nothing (sign without -O clear)")
	}
	var reasons []string
	for _, e := range lines {
		if err := e.admit(remote, now); err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		listen := targets
		if len(e.listen) > 0 {
			listen = nil
			for _, t := range targets {
				if slices.ContainsFunc(e.listen, func(l Target) bool { return sameTarget(l, t) }) {
					listen = append(listen, t)
				}
			}
		}
		if len(listen) == 0 {
			reasons = append(reasons, fmt.Sprintf("none of the certificate's principals %q is allowed by permitlisten=%q (%s)", cert.ValidPrincipals, targetList(e.listen), e.source))
			continue
		}
		name := sanitizeName(cert.KeyId)
		if name == "" {
			name = userFP
		}
		return &Identity{
			Role:        RoleAgent,
			Name:        name,
			Fingerprint: userFP,
			CA:          ssh.FingerprintSHA256(cert.SignatureKey),
			Listen:      slices.Clone(listen),
			Source:      e.source,
			Expires:     certExpiry(cert, e.expiry),
		}, nil
	}
	return refuse("%s", strings.Join(reasons, "; "))
}

func targetList(ts []Target) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return strings.Join(s, ",")
}

// matchPrincipal returns the certificate principal that this line admits.
func (e *entry) matchPrincipal(user string, certPrincipals []string) (string, error) {
	if e.principals == nil {
		if slices.Contains(certPrincipals, user) {
			return user, nil
		}
		return "", fmt.Errorf("user %q is not among the certificate's principals %q (%s)", user, certPrincipals, e.source)
	}
	for _, cp := range certPrincipals {
		if slices.Contains(e.principals, cp) {
			return cp, nil
		}
	}
	return "", fmt.Errorf("none of the certificate's principals %q is allowed by principals=%q (%s)", certPrincipals, strings.Join(e.principals, ","), e.source)
}

// checkCert checks what does not depend on the cert-authority line: type,
// principals present, critical options, validity window, key and signature.
func checkCert(cert *ssh.Certificate, remote netip.Addr, now time.Time) error {
	if cert.CertType != ssh.UserCert {
		return fmt.Errorf("not a user certificate (type %d)", cert.CertType)
	}
	if len(cert.ValidPrincipals) == 0 {
		return errors.New("certificate lists no principals")
	}
	for name, value := range cert.CriticalOptions {
		switch name {
		case "source-address":
			prefixes, err := parseCIDRList(value)
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(remote) }) {
				return fmt.Errorf("source %s not allowed by the certificate's source-address %q", remote, value)
			}
		case "force-command":
			return errors.New("certificate forces a command: the bastion runs no commands")
		default:
			return fmt.Errorf("unsupported critical option %q", name)
		}
	}
	unixNow := now.Unix()
	if unixNow < 0 || uint64(unixNow) < cert.ValidAfter {
		return fmt.Errorf("not valid before %s", certTime(cert.ValidAfter))
	}
	if cert.ValidBefore != ssh.CertTimeInfinity && uint64(unixNow) >= cert.ValidBefore {
		return fmt.Errorf("expired at %s", certTime(cert.ValidBefore))
	}
	if cert.Signature == nil || cert.Signature.Format == ssh.KeyAlgoRSA {
		return errors.New("signed with ssh-rsa (SHA-1): re-sign with rsa-sha2-512 or an ed25519 CA")
	}
	if !keyTypes[cert.Key.Type()] {
		return fmt.Errorf("certified key type %s is refused", cert.Key.Type())
	}
	if err := checkKeyStrength(cert.Key); err != nil {
		return err
	}
	checker := ssh.CertChecker{
		SupportedCriticalOptions: []string{"source-address"},
		Clock:                    func() time.Time { return now },
	}
	if err := checker.CheckCert(cert.ValidPrincipals[0], cert); err != nil {
		return fmt.Errorf("certificate check: %w", err)
	}
	return nil
}

// certExpiry is the sooner of the certificate's valid-before and the
// line's expiry-time (zero = none).
func certExpiry(cert *ssh.Certificate, line time.Time) time.Time {
	if cert.ValidBefore == ssh.CertTimeInfinity || cert.ValidBefore > 1<<62 {
		return line
	}
	vb := time.Unix(int64(cert.ValidBefore), 0)
	if line.IsZero() || vb.Before(line) {
		return vb
	}
	return line
}

func certTime(t uint64) string {
	if t > 1<<62 {
		return "forever"
	}
	return time.Unix(int64(t), 0).UTC().Format(time.RFC3339)
}
