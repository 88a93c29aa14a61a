package authz

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; the f.Add seeds below
// cover the shapes the parsers must never crash on.

// FuzzParseLine feeds arbitrary authorized_keys lines to the line parser
// and to the option checks of both roles. A line that parses must print
// back to a line that parses to the same thing.
func FuzzParseLine(f *testing.F) {
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm2y3Uu0pKVSkUXRGTw3S0b5nvA7dV9uJ0sRhDPiI0n"
	for _, s := range []string{
		key,
		key + " alice@laptop",
		`restrict,permitlisten="pi:22" ` + key + " pi",
		`from="10.0.0.0/8,!10.0.0.1",permitopen="pi:22",expiry-time="20261231Z" ` + key,
		`cert-authority,principals="ops,admins" ` + key + " CA",
		`command="echo \"x\"" ` + key,
		`from="` + key,
		`,,, ` + key,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		for _, role := range []Role{RoleAgent, RoleOperator} {
			e, err := parseEntry(line, role, "fuzz:1", time.UTC)
			// An agent's plain key line must name what it may register; a
			// cert-authority line takes the names from each certificate's
			// principals (permitlisten there is only an allowlist).
			if err == nil && (e.fingerprint == "" || e.name == "" || (role == RoleAgent && !e.certAuth && len(e.listen) == 0)) {
				t.Fatalf("entry accepted incomplete: %+v", e)
			}
		}
		kl, err := parseLine(line)
		if err != nil {
			return
		}
		var parts []string
		if len(kl.options) > 0 {
			var opts []string
			for _, o := range kl.options {
				opts = append(opts, quoteOption(o))
			}
			parts = append(parts, strings.Join(opts, ","))
		}
		parts = append(parts, kl.key.Type(), base64.StdEncoding.EncodeToString(kl.key.Marshal()))
		if kl.comment != "" {
			parts = append(parts, kl.comment)
		}
		again, err := parseLine(strings.Join(parts, " "))
		if err != nil {
			t.Fatalf("reprinted line %q does not parse: %v", strings.Join(parts, " "), err)
		}
		if !reflect.DeepEqual(again.options, kl.options) || again.comment != kl.comment || !bytes.Equal(again.key.Marshal(), kl.key.Marshal()) {
			t.Fatalf("round trip changed the line:\n%+v\n%+v", kl, again)
		}
	})
}

// FuzzFromPattern checks the from= parser and matcher: no panics, a
// negated entry for the address always refuses it, "*" admits every
// address unless negated, and the wildcard matcher agrees with a regexp.
func FuzzFromPattern(f *testing.F) {
	for _, s := range []struct {
		list string
		addr []byte
	}{
		{"10.0.0.0/8", []byte{10, 1, 2, 3}},
		{"*,!192.0.2.*", []byte{192, 0, 2, 1}},
		{"2001:db8::/32", []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}},
		{"1?.*.*.*", []byte{12, 0, 0, 1}},
		{"!*", []byte{1, 1, 1, 1}},
	} {
		f.Add(s.list, s.addr)
	}
	f.Fuzz(func(t *testing.T, list string, raw []byte) {
		var addr netip.Addr
		switch {
		case len(raw) >= 16:
			addr = netip.AddrFrom16([16]byte(raw[:16]))
		case len(raw) >= 4:
			addr = netip.AddrFrom4([4]byte(raw[:4]))
		default:
			return
		}
		l, err := parsePatternList(list)
		if err != nil {
			return
		}
		got := l.match(addr)
		text := addr.Unmap().String()
		neg, _ := parsePatternList(list + ",!" + text)
		if neg == nil || neg.match(addr) {
			t.Fatalf("%q plus !%s still matches", list, text)
		}
		star, _ := parsePatternList(list + ",*")
		anyNeg := false
		for _, p := range l.entries {
			if p.neg && entryMatches(p, addr.Unmap()) {
				anyNeg = true
			}
			if p.glob != "" && globMatch(p.glob, text) != globRegexp(p.glob).MatchString(text) {
				t.Fatalf("globMatch(%q, %q) disagrees with the regexp", p.glob, text)
			}
		}
		if star.match(addr) == anyNeg {
			t.Fatalf("%q,* match = %v with negated match %v", list, star.match(addr), anyNeg)
		}
		if got && anyNeg {
			t.Fatalf("%q matched %s despite a negated entry", list, text)
		}
	})
}

func entryMatches(p pattern, a netip.Addr) bool {
	if p.glob != "" {
		return globMatch(p.glob, a.String())
	}
	return p.prefix.Contains(a)
}

// globRegexp is a reference implementation of globMatch.
func globRegexp(glob string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`^(?s:`)
	for _, c := range glob {
		switch c {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`)$`)
	return regexp.MustCompile(b.String())
}

// FuzzParseTarget: accepted targets are canonical names, never addresses,
// with a port in range, and print back to themselves.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"pi:22", "PI:22", "nuc-1.home:8080", "10.0.0.1:22", "[::1]:22", "localhost:22", "pi:0", "pi:99999", "a.b.c:1", ":", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseTarget(s)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("error %q does not name the input %q", err, s)
			}
			return
		}
		if tg.Port < 1 || tg.Port > 65535 {
			t.Fatalf("port %d out of range", tg.Port)
		}
		if _, err := netip.ParseAddr(tg.Host); err == nil {
			t.Fatalf("address %q accepted as a name", tg.Host)
		}
		if tg.Host != strings.ToLower(tg.Host) || tg.Host == "localhost" || strings.HasPrefix(tg.Host, "localhost.") || strings.HasSuffix(tg.Host, ".localhost") {
			t.Fatalf("host %q not canonical or localhost", tg.Host)
		}
		again, err := ParseTarget(tg.String())
		if err != nil || again != tg {
			t.Fatalf("ParseTarget(%q) = %v, %v; want %v", tg.String(), again, err, tg)
		}
		if !(&Identity{Role: RoleOperator}).MayOpen(tg) {
			t.Fatalf("MayOpen refuses the valid target %v", tg)
		}
	})
}

// FuzzParseRevocationList feeds arbitrary bytes to the KRL parser. It must
// never panic nor take long; a list that parses has merged, sorted serial
// ranges whose ends it reports as revoked, checks keys and certificates
// without panicking, and parses again to the same verdicts.
func FuzzParseRevocationList(f *testing.F) {
	ca := newSigner(f, "ed25519")
	user := newSigner(f, "ed25519")
	h := sha256.Sum256(user.PublicKey().Marshal())
	f.Add(newKRL(1, "").bytes())
	f.Add(newKRL(2, "seed").
		section(krlSectionSHA256, strs(string(h[:]))).
		section(krlSectionExplicitKey, strs(string(ca.PublicKey().Marshal()))).
		section(krlSectionExtension, ext("x@example.org", false)).
		section(krlSectionCertificates, certSection(ca.PublicKey(),
			byte(krlCertSerialList), serials(1, 7),
			byte(krlCertSerialRange), serials(10, 20),
			byte(krlCertSerialBitmap), bitmap(30, []byte{0x05}),
			byte(krlCertKeyID), strs("alice"))).
		section(krlSectionCertificates, certSection(nil, byte(krlCertKeyID), strs("bob"))).
		bytes())
	f.Add([]byte("SSHKRL\n\x00\x00\x00\x00\x01"))
	cert := signCert(f, ca, user.PublicKey(), certOpts{keyID: "alice"})
	probes := []ssh.PublicKey{user.PublicKey(), ca.PublicKey(), cert}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseRevocationList(data)
		if err != nil {
			if l != nil {
				t.Fatal("a list and an error")
			}
			return
		}
		for _, rc := range l.certs {
			for i, r := range rc.serials {
				if r.lo == 0 || r.lo > r.hi || i > 0 && r.lo <= rc.serials[i-1].hi+1 {
					t.Fatalf("serial ranges not merged: %v", rc.serials)
				}
				if !rc.hasSerial(r.lo) || !rc.hasSerial(r.hi) || rc.hasSerial(r.lo-1) && (i == 0 || rc.serials[i-1].hi != r.lo-1) {
					t.Fatalf("lookup disagrees with range %v of %v", r, rc.serials)
				}
			}
		}
		again, err := ParseRevocationList(data)
		if err != nil {
			t.Fatalf("second parse failed: %v", err)
		}
		for _, k := range probes {
			w1, r1 := l.Revoked(k)
			w2, r2 := again.Revoked(k)
			if r1 != r2 || w1 != w2 {
				t.Fatalf("verdicts differ between parses: %v %q / %v %q", r1, w1, r2, w2)
			}
		}
		_ = l.String()
	})
}
