package authz

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseTarget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Target
		wantErr string
	}{
		{in: "pi:22", want: Target{"pi", 22}},
		{in: "PI:22", want: Target{"pi", 22}},
		{in: "nuc-1.site:8080", want: Target{"nuc-1.site", 8080}},
		{in: "a:1", want: Target{"a", 1}},
		{in: "x1:65535", want: Target{"x1", 65535}},
		{in: "pi", wantErr: "want NAME:PORT"},
		{in: ":22", wantErr: "missing name"},
		{in: "pi:", wantErr: `port ""`},
		{in: "pi:0", wantErr: "1..65535"},
		{in: "pi:65536", wantErr: "1..65535"},
		{in: "pi:+22", wantErr: "1..65535"},
		{in: "pi:22 ", wantErr: "1..65535"},
		{in: "pi:*", wantErr: "wildcard port"},
		{in: "pi:0x16", wantErr: "1..65535"},
		{in: "10.0.0.1:22", wantErr: "is an address"},
		{in: "127.1:22", wantErr: "looks like a number"},
		{in: "1234:22", wantErr: "looks like a number"},
		{in: "[::1]:22", wantErr: "is an address"},
		{in: "::1:22", wantErr: "is an address"},
		{in: "localhost:22", wantErr: "localhost"},
		{in: "LocalHost:22", wantErr: "localhost"},
		{in: "a.localhost:22", wantErr: "localhost"},
		{in: "-pi:22", wantErr: "must not start or end"},
		{in: "pi-:22", wantErr: "must not start or end"},
		{in: "pi..x:22", wantErr: "1..63"},
		{in: "pi.:22", wantErr: "1..63"},
		{in: "p_i:22", wantErr: "only letters"},
		{in: "pi pi:22", wantErr: "only letters"},
		{in: "pï:22", wantErr: "only letters"},
		{in: strings.Repeat("a", 64) + ":22", wantErr: "1..63"},
		{in: strings.Repeat("a.", 127) + "ab:22", wantErr: "longer than 253"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseTarget(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseTarget(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.in) {
					t.Errorf("error %q does not name the input %q", err, tc.in)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseTarget(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if s := got.String(); s != strings.ToLower(tc.in) {
				t.Errorf("String() = %q, want %q", s, strings.ToLower(tc.in))
			}
		})
	}
}

func TestTargetFrom(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host    string
		port    uint32
		want    Target
		wantErr string
	}{
		{host: "pi", port: 22, want: Target{"pi", 22}},
		{host: "Pi.Home", port: 65535, want: Target{"pi.home", 65535}},
		{host: "pi", port: 0, wantErr: `target "pi" port 0: want 1..65535`},
		{host: "pi", port: 70000, wantErr: "want 1..65535"},
		{host: "127.0.0.1", port: 22, wantErr: "is an address"},
		{host: "::1", port: 22, wantErr: "is an address"},
		{host: "pi:22", port: 22, wantErr: "must not contain ':'"},
		{host: "localhost", port: 22, wantErr: "localhost"},
		{host: "", port: 22, wantErr: "missing name"},
	}
	for _, tc := range tests {
		got, err := TargetFrom(tc.host, tc.port)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("TargetFrom(%q, %d) = %v, %v; want error containing %q", tc.host, tc.port, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("TargetFrom(%q, %d) = %v, %v; want %v", tc.host, tc.port, got, err, tc.want)
		}
	}
}

func TestRoleString(t *testing.T) {
	t.Parallel()
	for r, want := range map[Role]string{RoleAgent: "agent", RoleOperator: "operator", 0: "role(0)"} {
		if got := r.String(); got != want {
			t.Errorf("Role(%d).String() = %q, want %q", int(r), got, want)
		}
	}
}

func TestMayListenMayOpen(t *testing.T) {
	t.Parallel()
	pi, nuc, other := Target{"pi", 22}, Target{"nuc", 22}, Target{"other", 22}
	agent := &Identity{Role: RoleAgent, Listen: []Target{pi, nuc}}
	opAll := &Identity{Role: RoleOperator}
	opPi := &Identity{Role: RoleOperator, Open: []Target{pi}}
	opNone := &Identity{Role: RoleOperator, Open: []Target{}}
	opNoPF := &Identity{Role: RoleOperator, NoPortForwarding: true}
	tests := []struct {
		name         string
		id           *Identity
		t            Target
		listen, open bool
	}{
		{"agent listens on its name", agent, pi, true, false},
		{"agent listens case-insensitively", agent, Target{"PI", 22}, true, false},
		{"agent other port", agent, Target{"pi", 2222}, false, false},
		{"agent other name", agent, other, false, false},
		{"agent never opens", agent, pi, true, false},
		{"operator without permitopen opens any name", opAll, other, false, true},
		{"operator never listens", opAll, pi, false, true},
		{"operator never opens an address", opAll, Target{"10.0.0.1", 22}, false, false},
		{"operator never opens localhost", opAll, Target{"localhost", 22}, false, false},
		{"operator never opens port 0", opAll, Target{"pi", 0}, false, false},
		{"permitopen allows its target", opPi, pi, false, true},
		{"permitopen refuses others", opPi, nuc, false, false},
		{"empty permitopen refuses all", opNone, pi, false, false},
		{"no-port-forwarding refuses all", opNoPF, pi, false, false},
		{"nil identity", nil, pi, false, false},
		{"zero role", &Identity{Listen: []Target{pi}}, pi, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.id.MayListen(tc.t); got != tc.listen {
				t.Errorf("MayListen(%v) = %v, want %v", tc.t, got, tc.listen)
			}
			if got := tc.id.MayOpen(tc.t); got != tc.open {
				t.Errorf("MayOpen(%v) = %v, want %v", tc.t, got, tc.open)
			}
		})
	}
}

func TestParseLine(t *testing.T) {
	t.Parallel()
	ed := keyText(newSigner(t, "ed25519").PublicKey())
	ec := keyText(newSigner(t, "ecdsa").PublicKey())
	rsa := keyText(newSigner(t, "rsa").PublicKey())
	weak := keyText(newSigner(t, "rsa1024").PublicKey())
	edType, edB64, _ := strings.Cut(ed, " ")
	tests := []struct {
		name    string
		line    string
		opts    []option
		comment string
		wantErr string
	}{
		{name: "bare key", line: ed},
		{name: "comment with spaces", line: ed + "  Alice Example (laptop) ", comment: "Alice Example (laptop)"},
		{name: "tab separated", line: edType + "\t" + edB64 + "\tbob", comment: "bob"},
		{name: "ecdsa", line: ec + " e", comment: "e"},
		{name: "rsa", line: rsa, comment: ""},
		{name: "leading spaces and CR", line: "   " + ed + " c\r", comment: "c"},
		{name: "flag option", line: "restrict " + ed, opts: []option{{name: "restrict"}}},
		{name: "option names are case-insensitive", line: "No-PTY,RESTRICT " + ed, opts: []option{{name: "no-pty"}, {name: "restrict"}}},
		{name: "quoted value with spaces and comma", line: `from="10.0.0.0/8, 1.2.3.4",no-pty ` + ed,
			opts: []option{{name: "from", value: "10.0.0.0/8, 1.2.3.4", hasValue: true}, {name: "no-pty"}}},
		{name: "escaped quote", line: `command="echo \"hi\"" ` + ed, opts: []option{{name: "command", value: `echo "hi"`, hasValue: true}}},
		{name: "backslash kept", line: `command="a\b" ` + ed, opts: []option{{name: "command", value: `a\b`, hasValue: true}}},
		{name: "empty value", line: `from="" ` + ed, opts: []option{{name: "from", value: "", hasValue: true}}},
		{name: "repeated option", line: `permitlisten="a:1",permitlisten="b:2" ` + ed + " x",
			opts: []option{{name: "permitlisten", value: "a:1", hasValue: true}, {name: "permitlisten", value: "b:2", hasValue: true}}, comment: "x"},
		{name: "missing closing quote", line: `from="10.0.0.1 ` + ed, wantErr: "missing closing quote"},
		{name: "unquoted value", line: `from=10.0.0.1 ` + ed, wantErr: "double quotes"},
		{name: "space after comma", line: `no-pty, restrict ` + ed, wantErr: "comma ends the options"},
		{name: "trailing comma", line: `no-pty,` + ed, wantErr: "unknown key type"},
		{name: "junk after value", line: `from="a"x ` + ed, wantErr: "unexpected 'x'"},
		{name: "options but no key", line: `restrict`, wantErr: "no key on the line"},
		{name: "options then garbage", line: `restrict nonsense`, wantErr: "unknown key type"},
		{name: "no key data", line: edType, wantErr: "missing base64"},
		{name: "bad base64", line: edType + " !!!!", wantErr: "bad base64"},
		{name: "truncated key", line: edType + " " + edB64[:20], wantErr: "ssh-ed25519 key"},
		{name: "type mismatch", line: "ecdsa-sha2-nistp256 " + edB64, wantErr: "does not match"},
		{name: "dsa refused", line: "ssh-dss AAAAB3NzaC1kc3MAAACBAP", wantErr: "DSA keys are refused"},
		{name: "certificate refused", line: "ssh-ed25519-cert-v01@openssh.com AAAA", wantErr: "cert-authority"},
		{name: "unknown type", line: "ssh-foo AAAA", wantErr: "unknown key type"},
		{name: "weak rsa", line: weak, wantErr: "1024 bits"},
		{name: "options before unknown type", line: "restrict ssh-foo AAAA", wantErr: `unknown key type "ssh-foo"`},
		{name: "empty option name", line: `,restrict ` + ed, wantErr: "unknown key type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kl, err := parseLine(tc.line)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseLine = %v; want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseLine: %v", err)
			}
			if !reflect.DeepEqual(kl.options, tc.opts) {
				t.Errorf("options = %#v, want %#v", kl.options, tc.opts)
			}
			if kl.comment != tc.comment {
				t.Errorf("comment = %q, want %q", kl.comment, tc.comment)
			}
		})
	}
}

func TestPatternList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		list    string
		match   []string
		nomatch []string
		wantErr string
	}{
		{list: "10.0.0.0/8", match: []string{"10.1.2.3", "::ffff:10.0.0.1"}, nomatch: []string{"11.0.0.1", "127.0.0.1"}},
		{list: "192.0.2.7", match: []string{"192.0.2.7"}, nomatch: []string{"192.0.2.8"}},
		{list: "192.0.2.*", match: []string{"192.0.2.1", "192.0.2.255"}, nomatch: []string{"192.0.3.1"}},
		{list: "192.0.2.?", match: []string{"192.0.2.1"}, nomatch: []string{"192.0.2.10"}},
		{list: "*", match: []string{"1.2.3.4", "2001:db8::1"}},
		{list: "*,!10.0.0.0/8", match: []string{"1.2.3.4"}, nomatch: []string{"10.9.9.9"}},
		{list: "!10.0.0.0/8,*", match: []string{"1.2.3.4"}, nomatch: []string{"10.9.9.9"}},
		{list: "10.0.0.0/8,!10.0.0.1", match: []string{"10.0.0.2"}, nomatch: []string{"10.0.0.1"}},
		{list: "!10.0.0.1", nomatch: []string{"10.0.0.1", "10.0.0.2"}}, // only negative: nothing matches, as in sshd
		{list: "2001:db8::/32", match: []string{"2001:db8::1", "2001:DB8:ffff::1"}, nomatch: []string{"2001:db9::1", "10.0.0.1"}},
		{list: "2001:DB8::*", match: []string{"2001:db8::42"}, nomatch: []string{"2001:db9::42"}},
		{list: "0.0.0.0/0", match: []string{"8.8.8.8"}, nomatch: []string{"::1"}},
		{list: "::/0", match: []string{"::1"}, nomatch: []string{"8.8.8.8"}},
		{list: "", wantErr: "empty pattern list"},
		{list: "10.0.0.1,", wantErr: "empty entry"},
		{list: "!", wantErr: "empty entry"},
		{list: "10.0.0.1/8", wantErr: "did you mean 10.0.0.0/8"},
		{list: "10.0.0.0/33", wantErr: "10.0.0.0/33"},
		{list: "*.example.com", wantErr: "host name"},
		{list: "!bad.example.com", wantErr: "no DNS"},
		{list: "host", wantErr: "no DNS"},
		{list: "10.1", wantErr: "no DNS"},
		{list: "fe80::1%eth0", wantErr: "no DNS"},
		{list: " 10.0.0.1", wantErr: "no DNS"},
	}
	for _, tc := range tests {
		t.Run(tc.list, func(t *testing.T) {
			t.Parallel()
			l, err := parsePatternList(tc.list)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parsePatternList(%q) = %v; want error containing %q", tc.list, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parsePatternList(%q): %v", tc.list, err)
			}
			for _, a := range tc.match {
				if !l.match(netip.MustParseAddr(a)) {
					t.Errorf("%q should match %s", tc.list, a)
				}
			}
			for _, a := range tc.nomatch {
				if l.match(netip.MustParseAddr(a)) {
					t.Errorf("%q should not match %s", tc.list, a)
				}
			}
			if l.match(netip.Addr{}) {
				t.Errorf("%q matches the invalid address", tc.list)
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"a*", "a", true},
		{"*a", "ba", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*1*2*3", "10203", true},
		{"*1*2*3", "10230", false},
		{"1.2.*.4", "1.2.33.4", true},
		{"**", "xyz", true},
		{strings.Repeat("*a", 30) + "b", strings.Repeat("a", 100), false}, // must not be exponential
	}
	for _, tc := range tests {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func TestParseExpiry(t *testing.T) {
	t.Parallel()
	berlin := time.FixedZone("UTC+2", 2*3600)
	tests := []struct {
		in      string
		loc     *time.Location
		want    time.Time
		wantErr bool
	}{
		{in: "20261231", loc: time.UTC, want: time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)},
		{in: "20261231Z", loc: berlin, want: time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)},
		{in: "20261231", loc: berlin, want: time.Date(2026, 12, 30, 22, 0, 0, 0, time.UTC)},
		{in: "202612311530", loc: time.UTC, want: time.Date(2026, 12, 31, 15, 30, 0, 0, time.UTC)},
		{in: "20261231153045Z", loc: berlin, want: time.Date(2026, 12, 31, 15, 30, 45, 0, time.UTC)},
		{in: "2026123", wantErr: true},
		{in: "2026123115", wantErr: true},
		{in: "20261331", wantErr: true},
		{in: "20260230", wantErr: true},
		{in: "2026-1231", wantErr: true},
		{in: "20261231ZZ", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		loc := tc.loc
		if loc == nil {
			loc = time.UTC
		}
		got, err := parseExpiry(tc.in, loc)
		if tc.wantErr {
			if err == nil {
				t.Errorf("parseExpiry(%q) = %v, want error", tc.in, got)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseExpiry(%q, %v) = %v, %v; want %v", tc.in, loc, got, err, tc.want)
		}
	}
}

func TestSanitizeName(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"alice@laptop":           "alice@laptop",
		"Alice Example":          "Alice Example",
		"evil\nlogin ok":         "evil?login ok",
		"bell\a\x1b[31m":         "bell??[31m",
		"bad\xffutf8":            "bad?utf8",
		"line\u2028sep":          "line?sep",
		strings.Repeat("x", 300): strings.Repeat("x", 128),
	}
	for in, want := range tests {
		if got := sanitizeName(in); got != want {
			t.Errorf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}
