package authz

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// keys shared by the table tests (read-only).
type testKeys struct {
	agent, agent2, op, op2, ecdsa, rsa, stranger, ca, ca2 ssh.Signer
}

func makeKeys(t testing.TB) testKeys {
	return testKeys{
		agent:    newSigner(t, "ed25519"),
		agent2:   newSigner(t, "ed25519"),
		op:       newSigner(t, "ed25519"),
		op2:      newSigner(t, "ed25519"),
		ecdsa:    newSigner(t, "ecdsa"),
		rsa:      newSigner(t, "rsa"),
		stranger: newSigner(t, "ed25519"),
		ca:       newSigner(t, "ed25519"),
		ca2:      newSigner(t, "ecdsa384"),
	}
}

// expand replaces {agent}, {op}, … with "type base64" of those keys.
func (k testKeys) expand(s string) string {
	return strings.NewReplacer(
		"{agent}", keyText(k.agent.PublicKey()),
		"{agent2}", keyText(k.agent2.PublicKey()),
		"{op}", keyText(k.op.PublicKey()),
		"{op2}", keyText(k.op2.PublicKey()),
		"{ecdsa}", keyText(k.ecdsa.PublicKey()),
		"{rsa}", keyText(k.rsa.PublicKey()),
		"{ca}", keyText(k.ca.PublicKey()),
		"{ca2}", keyText(k.ca2.PublicKey()),
	).Replace(s)
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	tests := []struct {
		name      string
		agents    string
		operators string
		want      []string // each must appear in the error; "A:" / "O:" stand for the file paths
	}{
		{name: "agent without permitlisten", agents: "# c\n\n{agent} pi\n",
			want: []string{`A:3: agent key without permitlisten`}},
		{name: "agent with bad permitlisten", agents: `permitlisten="10.0.0.1:22" {agent}`,
			want: []string{`A:1: option permitlisten: target "10.0.0.1:22"`}},
		{name: "agent permitlisten without host", agents: `permitlisten="22" {agent}`,
			want: []string{`A:1: option permitlisten: target "22": want NAME:PORT`}},
		{name: "agent permitlisten localhost", agents: `permitlisten="localhost:22" {agent}`,
			want: []string{`A:1: option permitlisten`, "localhost"}},
		{name: "agent permitlisten no value", agents: `permitlisten {agent}`,
			want: []string{`A:1: option permitlisten: needs a value`}},
		{name: "agent cert-authority with principals=", agents: `cert-authority,principals="pi:22" {ca}`,
			want: []string{`A:1: option principals: not used on agent lines`}},
		{name: "CA in both files", agents: `cert-authority {ca}`, operators: "cert-authority,principals=\"ops\" {ca}\n",
			want: []string{`O:1: certificate authority SHA256:`, `is also an agent CA at A:1`}},
		{name: "operator key is an agent CA", agents: `cert-authority {ca}`, operators: "{ca} oops\n",
			want: []string{`O:1: key SHA256:`, `is also an agent CA at A:1`}},
		{name: "agent permitopen", agents: `permitopen="pi:22",permitlisten="pi:22" {agent}`,
			want: []string{`A:1: option permitopen: not allowed on agent keys`}},
		{name: "agent no-port-forwarding", agents: `no-port-forwarding,permitlisten="pi:22" {agent}`,
			want: []string{`A:1: option no-port-forwarding: not allowed on agent keys`}},
		{name: "command refused", operators: `command="/bin/true" {op}`,
			want: []string{`O:1: option command: not supported: the bastion runs no commands`}},
		{name: "environment refused", operators: `environment="A=b" {op}`,
			want: []string{`O:1: option environment: not supported`}},
		{name: "tunnel refused", operators: `tunnel="1" {op}`,
			want: []string{`O:1: option tunnel: not supported`}},
		{name: "port-forwarding refused", operators: `restrict,port-forwarding {op}`,
			want: []string{`O:1: option port-forwarding: not supported`}},
		{name: "unknown option", operators: `frm="10.0.0.1" {op}`,
			want: []string{`O:1: option frm: unknown option`}},
		{name: "operator permitlisten", operators: `permitlisten="pi:22" {op}`,
			want: []string{`O:1: option permitlisten: not allowed on operator keys`}},
		{name: "principals without cert-authority", operators: `principals="alice" {op}`,
			want: []string{`O:1: option principals: only valid together with cert-authority`}},
		{name: "empty principal", operators: `cert-authority,principals="alice,,bob" {ca}`,
			want: []string{`O:1: option principals: bad principal ""`}},
		{name: "flag with value", operators: `no-pty="yes" {op}`,
			want: []string{`O:1: option no-pty: takes no value`}},
		{name: "from twice", operators: `from="10.0.0.1",from="10.0.0.2" {op}`,
			want: []string{`O:1: option from: given twice`}},
		{name: "bad from", operators: `from="*.example.com" {op}`,
			want: []string{`O:1: option from: pattern "*.example.com" can only match a host name`}},
		{name: "bad expiry", operators: `expiry-time="2026" {op}`,
			want: []string{`O:1: option expiry-time: "2026"`}},
		{name: "permitopen address", operators: `permitopen="192.168.1.100:22" {op}`,
			want: []string{`O:1: option permitopen: target "192.168.1.100:22"`, "is an address"}},
		{name: "permitopen wildcard port", operators: `permitopen="pi:*" {op}`,
			want: []string{`O:1: option permitopen`, "wildcard port"}},
		{name: "malformed line", operators: "{op} ok\nthis is not a key\n",
			want: []string{`O:2: unknown key type "is" (want [options] keytype base64 [comment])`}},
		{name: "dsa", operators: "ssh-dss AAAAB3NzaC1kc3MAAACBAP alice\n",
			want: []string{`O:1: DSA keys are refused`}},
		{name: "key in both files", agents: `permitlisten="pi:22" {agent}`, operators: "{op}\n{agent} oops\n",
			want: []string{`O:2: key SHA256:`, `is also listed at A:1: a key in both files`}},
		{name: "CA is an agent key", agents: `permitlisten="pi:22" {agent}`, operators: "cert-authority {agent}\n",
			want: []string{`O:1: key SHA256:`, `is also an agent key at A:1`}},
		{name: "key twice in one file", operators: "{op} a\n\n{op} b\n",
			want: []string{`O:3: key SHA256:`, `already listed at O:1`}},
		{name: "every problem reported", agents: "{agent}\n", operators: "bogus\n" + `command="x" {op}` + "\n" + `from="" {op2}`,
			want: []string{"A:1: agent key without permitlisten", "O:1: no key on the line", "O:2: option command", "O:3: option from: empty pattern list"}},
		{name: "several problems on one line", operators: `command="x",frm="y",permitopen="10.0.0.1:1" {op}`,
			want: []string{"O:1: option command", "O:1: option frm", "O:1: option permitopen"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, o := writeFiles(t, k.expand(tc.agents), k.expand(tc.operators))
			p, err := load(a, o, time.Local)
			if err == nil {
				t.Fatalf("Load succeeded (%d/%d entries), want an error", p.agents, p.operators)
			}
			msg := err.Error()
			for _, w := range tc.want {
				w = strings.NewReplacer("A:", a+":", "O:", o+":").Replace(w)
				if !strings.Contains(msg, w) {
					t.Errorf("error does not contain %q:\n%s", w, msg)
				}
			}
		})
	}
}

func TestLoadUnreadable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, o := writeFiles(t, "", "")
	missing := filepath.Join(dir, "nope")
	for _, tc := range []struct{ agents, operators, want string }{
		{missing, o, "read agent file: open " + missing},
		{a, missing, "read operator file: open " + missing},
		{dir, o, "read agent file: read " + dir},
	} {
		_, err := load(tc.agents, tc.operators, time.Local)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s, %s) = %v, want error containing %q", tc.agents, tc.operators, err, tc.want)
		}
	}
	if _, err := load(missing, missing, time.Local); err == nil || strings.Count(err.Error(), missing) != 2 {
		t.Errorf("both files missing: want both named, got %v", err)
	}
}

func TestLoadCountsAndReload(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	agents := k.expand("# agents\n" + `permitlisten="pi:22",permitlisten="nuc:22" {agent} pi agent` + "\n" +
		`restrict,no-pty,no-agent-forwarding,no-X11-forwarding,no-user-rc,permitlisten="pi2:22,pi3:22" {agent2}` + "\n")
	operators := k.expand("{op} alice\r\n" + `cert-authority,principals="ops" {ca} corp CA` + "\n" + `cert-authority,principals="guest",permitopen="pi:22" {ca}` + "\n")
	a, o := writeFiles(t, agents, operators)
	p1, err := load(a, o, time.Local)
	if err != nil {
		t.Fatal(err)
	}
	if ag, op := p1.Counts(); ag != 2 || op != 3 {
		t.Errorf("Counts() = %d, %d; want 2, 3", ag, op)
	}
	// A reload is a second Load: same files, equivalent policy; the first
	// stays usable and unchanged.
	p2, err := load(a, o, time.Local)
	if err != nil {
		t.Fatal(err)
	}
	id1, err1 := p1.Authenticate("x", netip.MustParseAddr("127.0.0.1"), k.agent.PublicKey(), testNow)
	id2, err2 := p2.Authenticate("x", netip.MustParseAddr("127.0.0.1"), k.agent.PublicKey(), testNow)
	if err1 != nil || err2 != nil || !reflect.DeepEqual(id1, id2) {
		t.Fatalf("reload differs: %+v %v / %+v %v", id1, err1, id2, err2)
	}
	// Changing the file and reloading: the new policy sees the change, the
	// old one does not.
	if err := os.WriteFile(o, []byte(k.expand("{op2} bob\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	p3, err := load(a, o, time.Local)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p3.Authenticate("x", netip.MustParseAddr("127.0.0.1"), k.op.PublicKey(), testNow); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("removed key after reload: err = %v, want ErrUnknownKey", err)
	}
	if _, err := p1.Authenticate("x", netip.MustParseAddr("127.0.0.1"), k.op.PublicKey(), testNow); err != nil {
		t.Errorf("old policy changed by reload: %v", err)
	}
	if ag, op := p3.Counts(); ag != 2 || op != 1 {
		t.Errorf("Counts() after reload = %d, %d; want 2, 1", ag, op)
	}
	var nilPolicy *Policy
	if ag, op := nilPolicy.Counts(); ag != 0 || op != 0 {
		t.Errorf("nil Counts() = %d, %d", ag, op)
	}
	if _, err := nilPolicy.Authenticate("x", netip.MustParseAddr("127.0.0.1"), k.op.PublicKey(), testNow); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("nil policy: err = %v, want ErrUnknownKey", err)
	}
}

func TestLoadEmptyFiles(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, "", "# nobody yet\n\n")
	if ag, op := p.Counts(); ag != 0 || op != 0 {
		t.Errorf("Counts() = %d, %d", ag, op)
	}
	if _, err := p.Authenticate("x", netip.MustParseAddr("127.0.0.1"), newSigner(t, "ed25519").PublicKey(), testNow); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("err = %v, want ErrUnknownKey", err)
	}
}

func TestAuthenticateKeys(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	local := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name      string
		agents    string
		operators string
		key       ssh.Signer
		remote    string // default 127.0.0.1
		now       time.Time
		want      *Identity // Fingerprint and Source filled in by the test
		wantErr   error
		errHas    string
	}{
		{name: "agent", agents: `permitlisten="pi:22",permitlisten="NUC:2222" {agent} pi agent`, key: k.agent,
			want: &Identity{Role: RoleAgent, Name: "pi agent", Listen: []Target{{"pi", 22}, {"nuc", 2222}}}},
		{name: "agent comma list and duplicates", agents: `restrict,permitlisten="pi:22,nuc:22",permitlisten="pi:22" {agent}`, key: k.agent,
			want: &Identity{Role: RoleAgent, Listen: []Target{{"pi", 22}, {"nuc", 22}}}},
		{name: "operator may open all", operators: "{op} alice@laptop", key: k.op,
			want: &Identity{Role: RoleOperator, Name: "alice@laptop"}},
		{name: "operator permitopen", operators: `permitopen="pi:22",permitopen="nuc:22" {op} alice`, key: k.op,
			want: &Identity{Role: RoleOperator, Name: "alice", Open: []Target{{"pi", 22}, {"nuc", 22}}}},
		{name: "operator no-port-forwarding", operators: `no-port-forwarding {op} alice`, key: k.op,
			want: &Identity{Role: RoleOperator, Name: "alice", NoPortForwarding: true}},
		{name: "operator restrict without permitopen", operators: `restrict {op} alice`, key: k.op,
			want: &Identity{Role: RoleOperator, Name: "alice", NoPortForwarding: true}},
		{name: "operator restrict with permitopen", operators: `restrict,permitopen="pi:22" {op} alice`, key: k.op,
			want: &Identity{Role: RoleOperator, Name: "alice", Open: []Target{{"pi", 22}}}},
		{name: "harmless options", operators: `no-pty,no-agent-forwarding,no-x11-forwarding,no-user-rc {op} alice`, key: k.op,
			want: &Identity{Role: RoleOperator, Name: "alice"}},
		{name: "ecdsa operator", operators: "{ecdsa} e", key: k.ecdsa, want: &Identity{Role: RoleOperator, Name: "e"}},
		{name: "rsa operator", operators: "{rsa} r", key: k.rsa, want: &Identity{Role: RoleOperator, Name: "r"}},
		{name: "no comment: name is fingerprint", operators: "{op}", key: k.op, want: &Identity{Role: RoleOperator}},
		{name: "comment sanitized", operators: "{op} alice\x1b[2J", key: k.op, want: &Identity{Role: RoleOperator, Name: "alice?[2J"}},
		{name: "unknown key", operators: "{op}", key: k.stranger, wantErr: ErrUnknownKey, errHas: "is in neither"},
		{name: "from allows", operators: `from="127.0.0.0/8" {op} a`, key: k.op, want: &Identity{Role: RoleOperator, Name: "a"}},
		{name: "from refuses", operators: `from="10.0.0.0/8,192.0.2.*" {op} a`, key: k.op,
			wantErr: ErrRefused, errHas: `source 127.0.0.1 not allowed by from="10.0.0.0/8,192.0.2.*" (O:1)`},
		{name: "from negation refuses", operators: `from="*,!127.0.0.1" {op} a`, key: k.op, wantErr: ErrRefused, errHas: "not allowed by from="},
		{name: "from wildcard allows", operators: `from="!10.*,127.0.0.?" {op} a`, key: k.op, want: &Identity{Role: RoleOperator, Name: "a"}},
		{name: "from v4-mapped v6 remote", operators: `from="192.0.2.0/24" {op} a`, key: k.op, remote: "::ffff:192.0.2.9",
			want: &Identity{Role: RoleOperator, Name: "a"}},
		{name: "from v6", operators: `from="2001:db8::/32" {op} a`, key: k.op, remote: "2001:db8::5", want: &Identity{Role: RoleOperator, Name: "a"}},
		{name: "from on agent", agents: `from="10.0.0.1",permitlisten="pi:22" {agent}`, key: k.agent, wantErr: ErrRefused, errHas: "agent key"},
		{name: "expiry in future", operators: `expiry-time="20260601120000Z" {op} a`, key: k.op, want: &Identity{Role: RoleOperator, Name: "a", Expires: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}},
		{name: "expiry passed", operators: `expiry-time="20260601115959Z" {op} a`, key: k.op,
			wantErr: ErrRefused, errHas: "expired at 2026-06-01T11:59:59Z (expiry-time, O:1)"},
		{name: "expiry date only", operators: `expiry-time="20260601" {op} a`, key: k.op, wantErr: ErrRefused, errHas: "expired"},
		{name: "expiry on agent", agents: `expiry-time="20200101",permitlisten="pi:22" {agent}`, key: k.agent, wantErr: ErrRefused, errHas: "expired"},
		{name: "plain key never matches a CA line", operators: "cert-authority {ca}", key: k.ca, wantErr: ErrUnknownKey},
		{name: "invalid remote", operators: "{op}", key: k.op, remote: "invalid", wantErr: ErrRefused, errHas: "unknown remote address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, o := writeFiles(t, k.expand(tc.agents), k.expand(tc.operators))
			p, err := load(a, o, time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			remote := local
			switch tc.remote {
			case "":
			case "invalid":
				remote = netip.Addr{}
			default:
				remote = netip.MustParseAddr(tc.remote)
			}
			now := tc.now
			if now.IsZero() {
				now = testNow
			}
			id, err := p.Authenticate("ignored-user", remote, tc.key.PublicKey(), now)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if h := strings.NewReplacer("A:", a+":", "O:", o+":").Replace(tc.errHas); !strings.Contains(err.Error(), h) {
					t.Errorf("error %q does not contain %q", err, h)
				}
				if id != nil {
					t.Errorf("identity returned with error: %+v", id)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			want := *tc.want
			want.Fingerprint = ssh.FingerprintSHA256(tc.key.PublicKey())
			if want.Name == "" {
				want.Name = want.Fingerprint
			}
			want.Source = o + ":1"
			if want.Role == RoleAgent {
				want.Source = a + ":1"
			}
			if !reflect.DeepEqual(id, &want) {
				t.Errorf("identity\n got %+v\nwant %+v", id, &want)
			}
		})
	}
}

// TestIdentityIsACopy proves that callers cannot change the policy through
// the Identity they got.
func TestIdentityIsACopy(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	p := mustLoad(t, k.expand(`permitlisten="pi:22" {agent}`), k.expand(`permitopen="pi:22" {op}`))
	local := netip.MustParseAddr("127.0.0.1")
	id, err := p.Authenticate("", local, k.agent.PublicKey(), testNow)
	if err != nil {
		t.Fatal(err)
	}
	id.Listen[0] = Target{"evil", 1}
	id, _ = p.Authenticate("", local, k.agent.PublicKey(), testNow)
	if id.Listen[0] != (Target{"pi", 22}) {
		t.Errorf("policy changed through an Identity: %v", id.Listen)
	}
	op, _ := p.Authenticate("", local, k.op.PublicKey(), testNow)
	op.Open[0] = Target{"evil", 1}
	op, _ = p.Authenticate("", local, k.op.PublicKey(), testNow)
	if op.Open[0] != (Target{"pi", 22}) {
		t.Errorf("policy changed through an Identity: %v", op.Open)
	}
}

func TestAuthenticateCertificates(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	user := newSigner(t, "ed25519")
	rsaUser := newSigner(t, "rsa")
	weakUser := newSigner(t, "rsa1024")
	otherCA := newSigner(t, "ed25519")
	local := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name      string
		operators string
		ca        ssh.Signer // default k.ca
		userKey   ssh.Signer // default user
		opts      certOpts
		user      string // default "alice"
		remote    string
		now       time.Time
		tamper    func(*ssh.Certificate)
		want      *Identity // Fingerprint, CA, Source, Name filled in by the test when empty
		wantLine  int
		wantErr   error
		errHas    string
	}{
		{name: "user name is the principal", operators: "cert-authority {ca} corp",
			want: &Identity{Principal: "alice"}},
		{name: "principals option", operators: `cert-authority,principals="ops,admins" {ca}`, user: "root",
			opts: certOpts{principals: []string{"alice", "admins"}}, want: &Identity{Principal: "admins"}},
		{name: "principals option refuses", operators: `cert-authority,principals="ops" {ca}`,
			wantErr: ErrRefused, errHas: `none of the certificate's principals ["alice"] is allowed by principals="ops" (O:1)`},
		{name: "user not a principal", operators: "cert-authority {ca}", user: "bob",
			wantErr: ErrRefused, errHas: `user "bob" is not among the certificate's principals`},
		{name: "no principals", operators: "cert-authority {ca}", opts: certOpts{principals: []string{}},
			wantErr: ErrRefused, errHas: "certificate lists no principals"},
		{name: "second CA line matches", operators: `cert-authority,principals="ops" {ca}` + "\n" + `cert-authority,principals="alice",permitopen="pi:22" {ca}`,
			want: &Identity{Principal: "alice", Open: []Target{{"pi", 22}}}, wantLine: 2},
		{name: "all CA lines refuse, reasons joined", operators: `cert-authority,principals="ops" {ca}` + "\n" + `cert-authority,from="10.0.0.0/8" {ca}`,
			wantErr: ErrRefused, errHas: `(O:1); source 127.0.0.1 not allowed by from="10.0.0.0/8" (O:2)`},
		{name: "permitopen and from on CA line", operators: `cert-authority,from="127.0.0.1",permitopen="pi:22" {ca}`,
			want: &Identity{Principal: "alice", Open: []Target{{"pi", 22}}}},
		{name: "expiry-time on CA line", operators: `cert-authority,expiry-time="20260101Z" {ca}`,
			wantErr: ErrRefused, errHas: "expired at 2026-01-01T00:00:00Z (expiry-time, O:1)"},
		{name: "restrict on CA line", operators: `cert-authority,restrict {ca}`,
			want: &Identity{Principal: "alice", NoPortForwarding: true}},
		{name: "no-port-forwarding on CA line", operators: `cert-authority,no-port-forwarding,permitopen="pi:22" {ca}`,
			want: &Identity{Principal: "alice", Open: []Target{{"pi", 22}}, NoPortForwarding: true}},
		{name: "certificate without permit-port-forwarding", operators: "cert-authority {ca}",
			opts: certOpts{extensions: map[string]string{"permit-pty": ""}}, want: &Identity{Principal: "alice", NoPortForwarding: true}},
		{name: "empty key id: name is fingerprint", operators: "cert-authority {ca}", opts: certOpts{keyID: " "},
			want: &Identity{Principal: "alice"}},
		{name: "key id sanitized", operators: "cert-authority {ca}", opts: certOpts{keyID: "alice\nroot logged in"},
			want: &Identity{Principal: "alice", Name: "alice?root logged in"}},
		{name: "ecdsa-384 CA", operators: "cert-authority {ca2}", ca: k.ca2, want: &Identity{Principal: "alice"}},
		{name: "rsa CA and rsa user key", operators: "cert-authority {rsa}", ca: k.rsa, userKey: rsaUser, want: &Identity{Principal: "alice"}},
		{name: "weak rsa certified key", operators: "cert-authority {ca}", userKey: weakUser, wantErr: ErrRefused, errHas: "1024 bits"},
		{name: "unknown CA", operators: "cert-authority {ca}", ca: otherCA, wantErr: ErrUnknownKey, errHas: "certificate signed by unknown authority"},
		{name: "CA listed as plain key only", operators: "{ca}", wantErr: ErrUnknownKey},
		{name: "certified key listed as plain key only", operators: "cert-authority {op2}\n{op}", userKey: k.op, wantErr: ErrUnknownKey},
		{name: "host certificate", operators: "cert-authority {ca}", opts: certOpts{certType: ssh.HostCert},
			wantErr: ErrRefused, errHas: "not a user certificate"},
		{name: "not yet valid", operators: "cert-authority {ca}", opts: certOpts{validAfter: testNow.Add(time.Second)},
			wantErr: ErrRefused, errHas: "not valid before 2026-06-01T12:00:01Z"},
		{name: "valid from now", operators: "cert-authority {ca}", opts: certOpts{validAfter: testNow}, want: &Identity{Principal: "alice"}},
		{name: "expired", operators: "cert-authority {ca}", opts: certOpts{validBefore: testNow},
			wantErr: ErrRefused, errHas: "expired at 2026-06-01T12:00:00Z"},
		{name: "valid forever", operators: "cert-authority {ca}", opts: certOpts{forever: true}, now: testNow.AddDate(50, 0, 0),
			want: &Identity{Principal: "alice"}},
		{name: "source-address matches", operators: "cert-authority {ca}", opts: certOpts{critical: map[string]string{"source-address": "10.0.0.0/8,127.0.0.1"}},
			want: &Identity{Principal: "alice"}},
		{name: "source-address refuses", operators: "cert-authority {ca}", opts: certOpts{critical: map[string]string{"source-address": "10.0.0.0/8"}},
			wantErr: ErrRefused, errHas: `source 127.0.0.1 not allowed by the certificate's source-address "10.0.0.0/8"`},
		{name: "source-address malformed", operators: "cert-authority {ca}", opts: certOpts{critical: map[string]string{"source-address": "10.0.0.*"}},
			wantErr: ErrRefused, errHas: `bad source-address entry "10.0.0.*"`},
		{name: "force-command refused", operators: "cert-authority {ca}", opts: certOpts{critical: map[string]string{"force-command": "/bin/true"}},
			wantErr: ErrRefused, errHas: "certificate forces a command"},
		{name: "unknown critical option refused", operators: "cert-authority {ca}", opts: certOpts{critical: map[string]string{"verify-required": ""}},
			wantErr: ErrRefused, errHas: `unsupported critical option "verify-required"`},
		{name: "bad signature", operators: "cert-authority {ca}", tamper: func(c *ssh.Certificate) { c.ValidPrincipals = []string{"alice", "root"} },
			wantErr: ErrRefused, errHas: "certificate signature does not verify"},
		{name: "ssh-rsa (SHA-1) signature refused", operators: "cert-authority {rsa}", ca: sha1Signer(t, k.rsa),
			wantErr: ErrRefused, errHas: "signed with ssh-rsa (SHA-1)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := mustLoad(t, "", k.expand(tc.operators))
			ca, userKey, name, remote, now := tc.ca, tc.userKey, tc.user, local, tc.now
			if ca == nil {
				ca = k.ca
			}
			if userKey == nil {
				userKey = user
			}
			if name == "" {
				name = "alice"
			}
			if tc.remote != "" {
				remote = netip.MustParseAddr(tc.remote)
			}
			if now.IsZero() {
				now = testNow
			}
			cert := signCert(t, ca, userKey.PublicKey(), tc.opts)
			if tc.tamper != nil {
				tc.tamper(cert)
			}
			id, err := p.Authenticate(name, remote, cert, now)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if h := strings.NewReplacer("O:", p.sourceFile()+":").Replace(tc.errHas); !strings.Contains(err.Error(), h) {
					t.Errorf("error %q does not contain %q", err, h)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			want := *tc.want
			want.Role = RoleOperator
			want.Fingerprint = ssh.FingerprintSHA256(userKey.PublicKey())
			want.CA = ssh.FingerprintSHA256(ca.PublicKey())
			line := tc.wantLine
			if line == 0 {
				line = 1
			}
			want.Source = p.sourceFile() + ":" + string(rune('0'+line))
			if want.Name == "" {
				want.Name = cert.KeyId
				if strings.TrimSpace(want.Name) == "" {
					want.Name = want.Fingerprint
				}
			}
			if cert.ValidBefore != ssh.CertTimeInfinity {
				want.Expires = time.Unix(int64(cert.ValidBefore), 0)
			}
			if !reflect.DeepEqual(id, &want) {
				t.Errorf("identity\n got %+v\nwant %+v", id, &want)
			}
		})
	}
}

// sourceFile is the operators path of a test policy (from any CA entry).
func (p *Policy) sourceFile() string {
	for _, es := range p.cas {
		return es[0].source[:strings.LastIndexByte(es[0].source, ':')]
	}
	for _, e := range p.keys {
		return e.source[:strings.LastIndexByte(e.source, ':')]
	}
	return ""
}

// sha1Signer signs certificates with ssh-rsa (SHA-1), as old CAs did.
func sha1Signer(t testing.TB, s ssh.Signer) ssh.Signer {
	t.Helper()
	ms, err := ssh.NewSignerWithAlgorithms(s.(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSA})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestAuthenticateConcurrent runs many logins at once on one policy (run
// with -race).
func TestAuthenticateConcurrent(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	p := mustLoad(t, k.expand(`permitlisten="pi:22" {agent}`), k.expand("{op}\ncert-authority {ca}"))
	cert := signCert(t, k.ca, k.op2.PublicKey(), certOpts{})
	local := netip.MustParseAddr("127.0.0.1")
	var wg sync.WaitGroup
	errs := make(chan error, 3*8)
	for range 8 {
		for _, key := range []ssh.PublicKey{k.agent.PublicKey(), k.op.PublicKey(), cert} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					if _, err := p.Authenticate("alice", local, key, testNow); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestOptionsPerRole pins, for each role, which options load and which are
// refused, so that no option is ever silently accepted.
func TestOptionsPerRole(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	type row struct {
		opt              string
		agentOK, opOK    bool
		agentErr, opErrS string
	}
	const notSupported, notAllowed, unknown = "not supported", "not allowed on", "unknown option"
	rows := []row{
		{opt: `restrict`, agentOK: true, opOK: true},
		{opt: `no-pty`, agentOK: true, opOK: true},
		{opt: `no-agent-forwarding`, agentOK: true, opOK: true},
		{opt: `no-X11-forwarding`, agentOK: true, opOK: true},
		{opt: `no-user-rc`, agentOK: true, opOK: true},
		{opt: `from="127.0.0.1"`, agentOK: true, opOK: true},
		{opt: `expiry-time="20300101"`, agentOK: true, opOK: true},
		{opt: `no-port-forwarding`, agentErr: notAllowed, opOK: true},
		{opt: `permitopen="pi:22"`, agentErr: notAllowed, opOK: true},
		{opt: `cert-authority`, agentOK: true, opOK: true},
		{opt: `permitlisten="pi:22"`, agentOK: true, opErrS: notAllowed},
		{opt: `principals="ops"`, agentErr: "an agent certificate's principals are the NAME:PORT targets", opErrS: "only valid together with cert-authority"},
		{opt: `command="/bin/sh"`, agentErr: notSupported, opErrS: notSupported},
		{opt: `environment="PATH=/tmp"`, agentErr: notSupported, opErrS: notSupported},
		{opt: `tunnel="0"`, agentErr: notSupported, opErrS: notSupported},
		{opt: `port-forwarding`, agentErr: notSupported, opErrS: notSupported},
		{opt: `agent-forwarding`, agentErr: notSupported, opErrS: notSupported},
		{opt: `x11-forwarding`, agentErr: notSupported, opErrS: notSupported},
		{opt: `pty`, agentErr: notSupported, opErrS: notSupported},
		{opt: `user-rc`, agentErr: notSupported, opErrS: notSupported},
		{opt: `no-touch-required`, agentErr: notSupported, opErrS: notSupported},
		{opt: `verify-required`, agentErr: notSupported, opErrS: notSupported},
		{opt: `permitlisten2="pi:22"`, agentErr: unknown, opErrS: unknown},
		{opt: `x-lifeline`, agentErr: unknown, opErrS: unknown},
	}
	for _, r := range rows {
		t.Run(r.opt, func(t *testing.T) {
			t.Parallel()
			for _, role := range []Role{RoleAgent, RoleOperator} {
				opts := r.opt
				if role == RoleAgent && !strings.HasPrefix(r.opt, "permitlisten=") {
					opts += `,permitlisten="pi:22"`
				}
				line := opts + " " + keyText(k.op.PublicKey())
				_, err := parseEntry(line, role, "f:7", time.UTC)
				ok, want := r.agentOK, r.agentErr
				if role == RoleOperator {
					ok, want = r.opOK, r.opErrS
				}
				if ok {
					if err != nil {
						t.Errorf("%s: %v", role, err)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "f:7: ") {
					t.Errorf("%s: err = %v, want \"f:7: …%s…\"", role, err, want)
				}
			}
		})
	}
}
