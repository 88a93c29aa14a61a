package authz

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestAuthenticateAgentCertificates: an agent CA line admits certificates
// whose principals are NAME:PORT targets; permitlisten= narrows them.
func TestAuthenticateAgentCertificates(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	user := newSigner(t, "ed25519")
	local := netip.MustParseAddr("127.0.0.1")
	pf := map[string]string{"permit-port-forwarding": ""}
	tests := []struct {
		name     string
		agents   string
		opts     certOpts
		remote   string
		listen   []Target
		wantLine int
		wantErr  error
		errHas   string
	}{
		{name: "principals are the targets", agents: "cert-authority {ca} site CA",
			opts: certOpts{principals: []string{"pi:22", "NUC:3389"}}, listen: []Target{{"pi", 22}, {"nuc", 3389}}},
		{name: "permitlisten narrows", agents: `cert-authority,permitlisten="pi:22",permitlisten="cam:80" {ca}`,
			opts: certOpts{principals: []string{"pi:22", "nuc:3389"}}, listen: []Target{{"pi", 22}}},
		{name: "nothing inside permitlisten", agents: `cert-authority,permitlisten="cam:80" {ca}`,
			opts: certOpts{principals: []string{"pi:22"}}, wantErr: ErrRefused, errHas: `none of the certificate's principals ["pi:22"] is allowed by permitlisten="cam:80" (A:1)`},
		{name: "second line admits", agents: `cert-authority,permitlisten="cam:80" {ca}` + "\n" + `cert-authority,from="127.0.0.0/8" {ca}`,
			opts: certOpts{principals: []string{"pi:22"}}, listen: []Target{{"pi", 22}}, wantLine: 2},
		{name: "from= refuses", agents: `cert-authority,from="10.0.0.0/8" {ca}`,
			opts: certOpts{principals: []string{"pi:22"}}, wantErr: ErrRefused, errHas: "not allowed by from="},
		{name: "principal not a target", agents: "cert-authority {ca}",
			opts: certOpts{principals: []string{"pi:22", "alice"}}, wantErr: ErrRefused, errHas: `principal "alice" is not a NAME:PORT target`},
		{name: "principal an address", agents: "cert-authority {ca}",
			opts: certOpts{principals: []string{"10.0.0.1:22"}}, wantErr: ErrRefused, errHas: "is an address"},
		{name: "no port forwarding extension", agents: "cert-authority {ca}",
			opts: certOpts{principals: []string{"pi:22"}, extensions: map[string]string{"permit-pty": ""}}, wantErr: ErrRefused, errHas: "permit-port-forwarding"},
		{name: "expired", agents: "cert-authority {ca}",
			opts: certOpts{principals: []string{"pi:22"}, validBefore: testNow}, wantErr: ErrRefused, errHas: "expired at"},
		{name: "force-command", agents: "cert-authority {ca}",
			opts: certOpts{principals: []string{"pi:22"}, critical: map[string]string{"force-command": "x"}}, wantErr: ErrRefused, errHas: "forces a command"},
		{name: "unknown CA", agents: "cert-authority {ca2}",
			opts: certOpts{principals: []string{"pi:22"}}, wantErr: ErrUnknownKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, o := writeFiles(t, k.expand(tc.agents), k.expand("{op} alice\n"))
			p, err := load(a, o, time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			if tc.opts.extensions == nil {
				tc.opts.extensions = pf
			}
			tc.opts.keyID = "radio-pi"
			cert := signCert(t, k.ca, user.PublicKey(), tc.opts)
			remote := local
			if tc.remote != "" {
				remote = netip.MustParseAddr(tc.remote)
			}
			id, err := p.Authenticate("lifeline-agent", remote, cert, testNow)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), strings.ReplaceAll(tc.errHas, "A:", a+":")) {
					t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			line := tc.wantLine
			if line == 0 {
				line = 1
			}
			want := &Identity{
				Role: RoleAgent, Name: "radio-pi", Fingerprint: ssh.FingerprintSHA256(user.PublicKey()),
				CA: ssh.FingerprintSHA256(k.ca.PublicKey()), Listen: tc.listen, Source: fmt.Sprintf("%s:%d", a, line),
				Expires: time.Unix(int64(cert.ValidBefore), 0),
			}
			if !reflect.DeepEqual(id, want) {
				t.Errorf("identity\n got %+v\nwant %+v", id, want)
			}
			for _, tg := range tc.listen {
				if !id.MayListen(tg) || id.MayOpen(tg) {
					t.Errorf("%v: an agent certificate identity must listen, never open", tg)
				}
			}
		})
	}
	// The plain agent keys the daemon expects do not include CA lines.
	p := mustLoad(t, k.expand("cert-authority {ca}\n"+`permitlisten="pi:22" {agent} pi`), k.expand("{op}"))
	if got := p.AgentKeys(); len(got) != 1 || got[0].Name != "pi" {
		t.Errorf("AgentKeys = %+v", got)
	}
	if a, o := p.Counts(); a != 2 || o != 1 {
		t.Errorf("Counts = %d, %d", a, o)
	}
}

// TestRevokedKeysRefusedInBothRoles: a KRL refuses a plain key, a
// certificate and every certificate of a CA, for agents and operators.
func TestRevokedKeysRefusedInBothRoles(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	user := newSigner(t, "ed25519")
	hAgent := sha256.Sum256(k.agent.PublicKey().Marshal())
	krl := newKRL(3, "").
		section(krlSectionSHA256, strs(string(hAgent[:]))).
		section(krlSectionExplicitKey, strs(string(k.op.PublicKey().Marshal()), string(k.ca2.PublicKey().Marshal()))).
		section(krlSectionCertificates, certSection(k.ca.PublicKey(), byte(krlCertSerialList), serials(13))).
		bytes()
	dir := t.TempDir()
	files := Files{Agents: filepath.Join(dir, "agents"), Operators: filepath.Join(dir, "operators"), RevokedKeys: filepath.Join(dir, "revoked_keys")}
	os.WriteFile(files.Agents, []byte(k.expand(`permitlisten="pi:22" {agent} pi`+"\n"+`permitlisten="cam:80" {agent2} cam`+"\ncert-authority {ca2}\n")), 0o600)
	os.WriteFile(files.Operators, []byte(k.expand("{op} alice\n{op2} bob\ncert-authority {ca}\n")), 0o600)
	os.WriteFile(files.RevokedKeys, krl, 0o600)
	p, err := loadFiles(files, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddr("127.0.0.1")
	opCert := func(serial uint64) *ssh.Certificate {
		c := signCert(t, k.ca, user.PublicKey(), certOpts{})
		c.Serial = serial
		if err := c.SignCert(rand.Reader, k.ca); err != nil {
			t.Fatal(err)
		}
		return c
	}
	agentCert := signCert(t, k.ca2, user.PublicKey(), certOpts{principals: []string{"pi:22"}})
	tests := []struct {
		name    string
		key     ssh.PublicKey
		revoked string
	}{
		{"agent key by hash", k.agent.PublicKey(), "SHA-256 hash"},
		{"operator key", k.op.PublicKey(), "is revoked"},
		{"operator certificate serial", opCert(13), "serial 13"},
		{"agent certificate of a revoked CA", agentCert, "its CA"},
		{"other agent", k.agent2.PublicKey(), ""},
		{"other operator", k.op2.PublicKey(), ""},
		{"other serial", opCert(14), ""},
	}
	for _, tc := range tests {
		_, err := p.Authenticate("alice", local, tc.key, testNow)
		if tc.revoked == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), tc.revoked) || !strings.Contains(err.Error(), "(revoked keys)") {
			t.Errorf("%s: err = %v, want ErrRevoked containing %q", tc.name, err, tc.revoked)
		}
	}

	// A broken KRL is reported with the problems of the other files.
	os.WriteFile(files.RevokedKeys, []byte("SSHKRL\n\x00junk"), 0o600)
	os.WriteFile(files.Operators, []byte("nonsense\n"), 0o600)
	_, err = loadFiles(files, time.UTC)
	if err == nil || !strings.Contains(err.Error(), files.RevokedKeys) || !strings.Contains(err.Error(), files.Operators+":1") {
		t.Errorf("LoadFiles error must name both files: %v", err)
	}
	files.RevokedKeys = filepath.Join(dir, "missing")
	if _, err := LoadFiles(files); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a missing KRL must be an error (it is configured): %v", err)
	}
}

// TestChanges lists what a reload changes, for its audit event.
func TestChanges(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	before := mustLoad(t, k.expand(`permitlisten="pi:22" {agent} pi`+"\n"+`permitlisten="cam:80" {agent2} cam`), k.expand("{op} alice\ncert-authority {ca} corp"))
	after := mustLoad(t, k.expand(`permitlisten="pi:22",permitlisten="nuc:3389" {agent} pi`+"\ncert-authority {ca2} sites"), k.expand("{op} alice\n{op2} bob\ncert-authority {ca} corp"))
	got := after.Changes(before)
	fp := func(s ssh.Signer) string { return ssh.FingerprintSHA256(s.PublicKey()) }
	want := []string{
		`added agent CA "sites" ` + fp(k.ca2),
		`added operator key "bob" ` + fp(k.op2),
		`changed agent key "pi" ` + fp(k.agent),
		`removed agent key "cam" ` + fp(k.agent2),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Changes\n got %q\nwant %q", got, want)
	}
	if c := after.Changes(after); len(c) != 0 {
		t.Errorf("no change: %q", c)
	}
	if c := before.Changes(nil); len(c) != 4 {
		t.Errorf("from nothing: %q", c)
	}
}
