package authz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// sshKeygen runs the real ssh-keygen in dir, or skips the test when it is
// not installed.
func sshKeygen(t *testing.T, dir string, args ...string) {
	t.Helper()
	path, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Skip("ssh-keygen not installed (Debian package openssh-client): cannot check interop with real OpenSSH certificates")
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func readPub(t *testing.T, path string) (ssh.PublicKey, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, comment, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return pub, comment
}

// TestSSHKeygenCertificates signs certificates with the real ssh-keygen and
// checks that Authenticate judges them as sshd would.
func TestSSHKeygenCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sshKeygen(t, dir, "-q", "-t", "ed25519", "-N", "", "-C", "Corp user CA", "-f", "ca")
	sshKeygen(t, dir, "-q", "-t", "rsa", "-b", "3072", "-N", "", "-C", "RSA CA", "-f", "rsaca")
	sshKeygen(t, dir, "-q", "-t", "ed25519", "-N", "", "-C", "Alice Example laptop", "-f", "alice")
	sshKeygen(t, dir, "-q", "-t", "ecdsa", "-N", "", "-C", "pi agent", "-f", "agent")

	caPub, _ := readPub(t, filepath.Join(dir, "ca.pub"))
	alicePub, aliceComment := readPub(t, filepath.Join(dir, "alice.pub"))
	if aliceComment != "Alice Example laptop" {
		t.Fatalf("comment = %q", aliceComment)
	}
	caLine, _ := os.ReadFile(filepath.Join(dir, "ca.pub"))
	rsaCALine, _ := os.ReadFile(filepath.Join(dir, "rsaca.pub"))
	agentLine, _ := os.ReadFile(filepath.Join(dir, "agent.pub"))
	aliceLine, _ := os.ReadFile(filepath.Join(dir, "alice.pub"))

	// The .pub files as ssh-keygen wrote them (comments with spaces) load.
	agents := `permitlisten="pi:22" ` + string(agentLine)
	operators := `cert-authority,principals="ops,admins",permitopen="pi:22" ` + string(caLine) +
		"cert-authority " + string(rsaCALine) +
		`from="127.0.0.0/8" ` + string(aliceLine)
	a, o := writeFiles(t, agents, operators)
	p, err := load(a, o, time.Local)
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddr("127.0.0.1")
	id, err := p.Authenticate("alice", local, alicePub, time.Now())
	if err != nil || id.Name != "Alice Example laptop" || id.Role != RoleOperator {
		t.Fatalf("plain ssh-keygen key: %+v, %v", id, err)
	}

	tests := []struct {
		name    string
		ca      string
		args    []string
		user    string
		remote  string
		want    *Identity
		wantErr string
	}{
		{name: "valid", ca: "ca", args: []string{"-n", "ops,alice", "-V", "-5m:+1h"},
			want: &Identity{Name: "alice-id", Principal: "ops", Open: []Target{{"pi", 22}}}},
		{name: "no principals=: user name", ca: "rsaca", args: []string{"-n", "alice", "-V", "-5m:+1h"}, user: "alice",
			want: &Identity{Name: "alice-id", Principal: "alice"}},
		{name: "rsa CA with ssh-rsa signature", ca: "rsaca", args: []string{"-t", "ssh-rsa", "-n", "alice", "-V", "-5m:+1h"}, user: "alice",
			wantErr: "signed with ssh-rsa (SHA-1)"},
		{name: "principal not allowed", ca: "ca", args: []string{"-n", "alice", "-V", "-5m:+1h"},
			wantErr: `none of the certificate's principals ["alice"] is allowed`},
		{name: "expired", ca: "ca", args: []string{"-n", "ops", "-V", "20200101:20200102"}, wantErr: "expired at 2020-01-0"},
		{name: "not yet valid", ca: "ca", args: []string{"-n", "ops", "-V", "+1d:+2d"}, wantErr: "not valid before"},
		{name: "source-address allows", ca: "ca", args: []string{"-n", "ops", "-V", "-5m:+1h", "-O", "source-address=10.0.0.0/8,127.0.0.1/32"},
			want: &Identity{Name: "alice-id", Principal: "ops", Open: []Target{{"pi", 22}}}},
		{name: "source-address refuses", ca: "ca", args: []string{"-n", "ops", "-V", "-5m:+1h", "-O", "source-address=10.0.0.0/8"},
			wantErr: "not allowed by the certificate's source-address"},
		{name: "source-address from a v6 client", ca: "ca", args: []string{"-n", "ops", "-V", "-5m:+1h", "-O", "source-address=2001:db8::/32"},
			remote: "2001:db8::7", want: &Identity{Name: "alice-id", Principal: "ops", Open: []Target{{"pi", 22}}}},
		{name: "force-command", ca: "ca", args: []string{"-n", "ops", "-V", "-5m:+1h", "-O", "force-command=/bin/true"},
			wantErr: "certificate forces a command"},
		{name: "verify-required", ca: "ca", args: []string{"-n", "ops", "-V", "-5m:+1h", "-O", "verify-required"},
			wantErr: `unsupported critical option "verify-required"`},
		{name: "no extensions: may not jump", ca: "ca", args: []string{"-n", "ops", "-V", "-5m:+1h", "-O", "clear"},
			want: &Identity{Name: "alice-id", Principal: "ops", Open: []Target{{"pi", 22}}, NoPortForwarding: true}},
		{name: "host certificate", ca: "ca", args: []string{"-h", "-n", "ops", "-V", "-5m:+1h"}, wantErr: "not a user certificate"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sub := t.TempDir()
			// Each case certifies its own copy of alice's public key.
			if err := os.WriteFile(filepath.Join(sub, "alice.pub"), aliceLine, 0o600); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"-q", "-s", filepath.Join(dir, tc.ca), "-I", "alice-id", "-z", fmt.Sprint(i + 1)}, tc.args...)
			sshKeygen(t, sub, append(args, "alice.pub")...)
			pub, _ := readPub(t, filepath.Join(sub, "alice-cert.pub"))
			cert, ok := pub.(*ssh.Certificate)
			if !ok {
				t.Fatalf("ssh-keygen made a %T", pub)
			}
			user, remote := tc.user, local
			if user == "" {
				user = "root"
			}
			if tc.remote != "" {
				remote = netip.MustParseAddr(tc.remote)
			}
			id, err := p.Authenticate(user, remote, cert, time.Now())
			if tc.wantErr != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrRefused containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			want := *tc.want
			want.Role = RoleOperator
			want.Fingerprint = ssh.FingerprintSHA256(alicePub)
			want.CA = ssh.FingerprintSHA256(cert.SignatureKey)
			want.Source = id.Source // checked below
			if tc.ca == "ca" && id.Source != o+":1" || tc.ca == "rsaca" && id.Source != o+":2" {
				t.Errorf("Source = %q", id.Source)
			}
			if tc.ca == "ca" && want.CA != ssh.FingerprintSHA256(caPub) {
				t.Errorf("CA = %s, want %s", want.CA, ssh.FingerprintSHA256(caPub))
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

// TestOverSSH plugs Authenticate into a real x/crypto SSH server on
// 127.0.0.1:0 and logs in with plain keys and certificates, proving that
// the keys the server hands over (and the address it reports) are judged
// as in the table tests.
func TestOverSSH(t *testing.T) {
	t.Parallel()
	k := makeKeys(t)
	p := mustLoad(t,
		k.expand(`permitlisten="pi:22" {agent} pi`),
		k.expand(`from="127.0.0.0/8" {op} alice`+"\n"+`from="10.0.0.0/8" {op2} bob`+"\n"+`cert-authority,principals="ops" {ca}`))
	srv := startServer(t, p)

	certUser := newSigner(t, "ed25519")
	cert := signCert(t, k.ca, certUser.PublicKey(), certOpts{principals: []string{"ops"}, validAfter: time.Now().Add(-time.Minute), validBefore: time.Now().Add(time.Hour)})
	certSigner, err := ssh.NewCertSigner(cert, certUser)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		user   string
		signer ssh.Signer
		role   Role
		ok     bool
		err    error // the refusal the server must have seen
	}{
		{"agent", "agent", k.agent, RoleAgent, true, nil},
		{"operator", "alice", k.op, RoleOperator, true, nil},
		{"operator from wrong network", "bob", k.op2, 0, false, ErrRefused},
		{"certificate", "anyone", certSigner, RoleOperator, true, nil},
		{"stranger", "eve", k.stranger, 0, false, ErrUnknownKey},
		{"CA key itself", "ops", k.ca, 0, false, ErrUnknownKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := &ssh.ClientConfig{
				Config:            sshalgo.Config(),
				User:              tc.user,
				Auth:              []ssh.AuthMethod{ssh.PublicKeys(tc.signer)},
				HostKeyCallback:   ssh.FixedHostKey(srv.hostKey),
				HostKeyAlgorithms: sshalgo.HostKeyAlgorithms(),
				Timeout:           10 * time.Second,
			}
			c, err := ssh.Dial("tcp", srv.addr, cfg)
			if !tc.ok {
				if err == nil {
					c.Close()
					t.Fatal("login succeeded, want refusal")
				}
				errs := srv.refused(tc.user)
				if len(errs) == 0 || !errors.Is(errs[0], tc.err) {
					t.Fatalf("server refusals for %s = %v, want %v (client saw %v)", tc.user, errs, tc.err, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			defer c.Close()
			var got *Identity
			sshtest.Eventually(t, 5*time.Second, func() bool {
				got = srv.identity(string(c.SessionID()))
				return got != nil
			}, "server recorded the identity")
			if got.Role != tc.role {
				t.Errorf("role = %v, want %v", got.Role, tc.role)
			}
			if tc.signer == certSigner && (got.Principal != "ops" || got.Name != "alice@laptop") {
				t.Errorf("certificate identity = %+v", got)
			}
		})
	}
}

type testServer struct {
	addr     string
	hostKey  ssh.PublicKey
	mu       sync.Mutex
	ids      map[string]*Identity // by session ID
	refusals map[string][]error   // by user name
}

func (s *testServer) refused(user string) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusals[user]
}

func (s *testServer) identity(session string) *Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[session]
}

// startServer runs an SSH server on 127.0.0.1:0 whose public key callback
// is p.Authenticate; the server and its goroutines end with the test.
func startServer(t *testing.T, p *Policy) *testServer {
	t.Helper()
	hostKey := newSigner(t, "ed25519")
	srv := &testServer{hostKey: hostKey.PublicKey(), ids: map[string]*Identity{}, refusals: map[string][]error{}}
	cfg := &ssh.ServerConfig{
		Config:                  sshalgo.Config(),
		PublicKeyAuthAlgorithms: sshalgo.PublicKeyAuthAlgorithms(),
		PublicKeyCallback: func(conn ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			ap, err := netip.ParseAddrPort(conn.RemoteAddr().String())
			if err != nil {
				return nil, err
			}
			id, err := p.Authenticate(conn.User(), ap.Addr(), key, time.Now())
			if err != nil {
				srv.mu.Lock()
				srv.refusals[conn.User()] = append(srv.refusals[conn.User()], err)
				srv.mu.Unlock()
				return nil, err
			}
			srv.mu.Lock()
			srv.ids[string(conn.SessionID())] = id
			srv.mu.Unlock()
			return &ssh.Permissions{Extensions: map[string]string{"role": id.Role.String()}}, nil
		},
	}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				stop := context.AfterFunc(ctx, func() { nc.Close() })
				defer stop()
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				conn, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				_ = nc.SetDeadline(time.Time{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					ssh.DiscardRequests(reqs)
				}()
				for ch := range chans {
					_ = ch.Reject(ssh.Prohibited, "test server")
				}
				conn.Close()
			}()
		}
	}()
	return srv
}

// TestSSHKeygenAgentCertificates pairs a site the way the README says, by
// signing its key with the real ssh-keygen (-n pi:22,nuc:3389 -V +52w), and
// revokes it again with ssh-keygen -k: no line of the agents file changes.
func TestSSHKeygenAgentCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sshKeygen(t, dir, "-q", "-t", "ed25519", "-N", "", "-C", "site CA", "-f", "site_ca")
	sshKeygen(t, dir, "-q", "-t", "ed25519", "-N", "", "-C", "radio pi", "-f", "agent")
	sshKeygen(t, dir, "-q", "-s", "site_ca", "-I", "radio-pi", "-z", "17", "-n", "pi:22,nuc:3389", "-V", "+52w", "agent.pub")
	sshKeygen(t, dir, "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", "other")
	sshKeygen(t, dir, "-q", "-s", "site_ca", "-I", "cabin", "-z", "18", "-n", "cam:80", "-V", "+52w", "other.pub")
	otherLine, _ := os.ReadFile(filepath.Join(dir, "other.pub"))
	os.WriteFile(filepath.Join(dir, "clear.pub"), otherLine, 0o600)
	sshKeygen(t, dir, "-q", "-s", "site_ca", "-I", "bad", "-z", "19", "-n", "pi:22", "-O", "clear", "-V", "+52w", "clear.pub")
	caLine, _ := os.ReadFile(filepath.Join(dir, "site_ca.pub"))
	agentPub, _ := readPub(t, filepath.Join(dir, "agent.pub"))
	cert, _ := readPub(t, filepath.Join(dir, "agent-cert.pub"))
	other, _ := readPub(t, filepath.Join(dir, "other-cert.pub"))

	files := Files{Agents: filepath.Join(dir, "agents"), Operators: filepath.Join(dir, "operators"), RevokedKeys: filepath.Join(dir, "revoked_keys")}
	os.WriteFile(files.Agents, append([]byte(`cert-authority,permitlisten="pi:22,nuc:3389,cam:80" `), caLine...), 0o600)
	os.WriteFile(files.Operators, nil, 0o600)
	os.WriteFile(files.RevokedKeys, nil, 0o600) // empty: nothing revoked yet
	p, err := LoadFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddr("127.0.0.1")
	id, err := p.Authenticate("lifeline-agent", local, cert, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if id.Role != RoleAgent || id.Name != "radio-pi" || !reflect.DeepEqual(id.Listen, []Target{{"pi", 22}, {"nuc", 3389}}) ||
		id.Fingerprint != ssh.FingerprintSHA256(agentPub) || id.Expires.Before(time.Now().AddDate(0, 0, 360)) {
		t.Fatalf("identity %+v", id)
	}
	if _, err := p.Authenticate("x", local, other, time.Now()); err != nil {
		t.Fatalf("second site: %v", err)
	}
	// Revoke the first certificate by serial and key ID with the real
	// ssh-keygen; the other site stays paired.
	os.WriteFile(filepath.Join(dir, "spec"), []byte("serial: 17\n"), 0o600)
	sshKeygen(t, dir, "-k", "-f", "revoked_keys", "-s", "site_ca.pub", "spec")
	p, err = LoadFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Authenticate("x", local, cert, time.Now()); !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), "serial 17") {
		t.Fatalf("revoked certificate: %v", err)
	}
	if _, err := p.Authenticate("x", local, other, time.Now()); err != nil {
		t.Fatalf("the other site lost its pairing: %v", err)
	}
	noPF, _ := readPub(t, filepath.Join(dir, "clear-cert.pub"))
	if _, err := p.Authenticate("x", local, noPF, time.Now()); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "permit-port-forwarding") {
		t.Fatalf("certificate made with -O clear: %v", err)
	}
}
