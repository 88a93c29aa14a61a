package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// keygen runs the real ssh-keygen in dir.
func keygen(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("ssh-keygen", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCheckKeys: the check-keys subcommand loads the files exactly as a
// reload would, says ok with the counts, or exits 1 naming every problem.
func TestCheckKeys(t *testing.T) {
	t.Parallel()
	sshtest.Need(t, "ssh-keygen")
	f := newFiles(t)
	keygen(t, f.dir, "-q", "-t", "ed25519", "-N", "", "-f", "ca")
	krl := filepath.Join(f.dir, "revoked_keys")
	os.WriteFile(filepath.Join(f.dir, "spec"), []byte("serial: 9\n"), 0o600)
	keygen(t, f.dir, "-k", "-f", krl, "-s", "ca.pub", "-z", "5", "spec")
	agentsWithCA := filepath.Join(f.dir, "agents-ca")
	os.WriteFile(agentsWithCA, []byte(readFile(t, f.agents)+`cert-authority,permitlisten="nuc:3389" `+readFile(t, filepath.Join(f.dir, "ca.pub"))), 0o600)
	badOps := filepath.Join(f.dir, "bad-operators")
	os.WriteFile(badOps, []byte(f.operator.AuthorizedLine("", "alice")+"\n"+`command="x" `+f.other.AuthorizedLine("", "bob")+"\n"), 0o600)
	badKRL := filepath.Join(f.dir, "bad.krl")
	os.WriteFile(badKRL, []byte("not a krl"), 0o600)
	tests := []struct {
		name string
		env  []string
		code int
		want []string
	}{
		{"good", []string{"LIFELINE_AGENTS=" + agentsWithCA, "LIFELINE_REVOKED_KEYS=" + krl}, 0,
			[]string{"ok: " + agentsWithCA + ": 2 agent lines", f.operators + ": 1 operator lines", "KRL version 5"}},
		{"no revocation list", nil, 0, []string{"ok: "}},
		{"bad line", []string{"LIFELINE_OPERATORS=" + badOps}, 1, []string{badOps + ":2: option command", "would be refused"}},
		{"bad KRL and bad line together", []string{"LIFELINE_OPERATORS=" + badOps, "LIFELINE_REVOKED_KEYS=" + badKRL}, 1,
			[]string{badOps + ":2", badKRL, "not an OpenSSH KRL"}},
		{"missing KRL", []string{"LIFELINE_REVOKED_KEYS=" + filepath.Join(f.dir, "nope")}, 1, []string{filepath.Join(f.dir, "nope")}},
		{"relative KRL path", []string{"LIFELINE_REVOKED_KEYS=revoked"}, 2, []string{"LIFELINE_REVOKED_KEYS", "absolute"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, code := runBinary(t, f.env(tc.env...), "check-keys")
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(f.dir, "state")); err == nil {
		t.Error("check-keys created the state directory: it must touch nothing")
	}
}

// TestCertificatePairingAndRevocation runs the real bastion with an agents
// file that holds only a site CA. A site is paired by signing its key with
// the real ssh-keygen (principals pi:22,nuc:3389); stock OpenSSH `ssh -N -R`
// presents that certificate as the agent, and an operator jumps to it.
// Then the certificate and the operator's key are revoked with ssh-keygen -k
// and the bastion reloaded: both live connections are closed, the agent's
// reconnect is refused, and the audit log says why.
func TestCertificatePairingAndRevocation(t *testing.T) {
	t.Parallel()
	sshtest.Need(t, "ssh-keygen", "ssh")
	f := newFiles(t)
	keygen(t, f.dir, "-q", "-t", "ed25519", "-N", "", "-C", "site CA", "-f", "site_ca")
	keygen(t, f.dir, "-q", "-t", "ed25519", "-N", "", "-C", "radio pi", "-f", "pi_key")
	keygen(t, f.dir, "-q", "-s", "site_ca", "-I", "radio-pi", "-z", "31", "-n", "pi:22,nuc:3389", "-V", "-5m:+52w", "pi_key.pub")
	os.WriteFile(f.agents, []byte(`cert-authority,permitlisten="pi:22,nuc:3389,cam:80" `+readFile(t, filepath.Join(f.dir, "site_ca.pub"))), 0o600)
	krl := filepath.Join(f.dir, "revoked_keys")
	os.WriteFile(krl, nil, 0o600) // nothing revoked yet

	// The site's service: an echo server the agent forwards pi:22 to.
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	port := sshtest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p := sshtest.Start(t, f.env(fmt.Sprintf("LIFELINE_LISTEN=%s", addr), "LIFELINE_REVOKED_KEYS="+krl), binary)
	sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(p.Output(), "bastion listening") }, "not listening:\n%s", p.Output)
	hostSigner, err := ssh.ParsePrivateKey([]byte(readFile(t, filepath.Join(f.dir, "state", "host_key"))))
	if err != nil {
		t.Fatal(err)
	}
	knownHosts := filepath.Join(f.dir, "known_hosts")
	os.WriteFile(knownHosts, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", port, ssh.MarshalAuthorizedKey(hostSigner.PublicKey()))), 0o600)

	// Stock OpenSSH as the agent: it offers pi_key-cert.pub by itself.
	agentArgs := []string{"-N", "-F", "/dev/null", "-i", filepath.Join(f.dir, "pi_key"), "-p", fmt.Sprint(port),
		"-o", "UserKnownHostsFile=" + knownHosts, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=2",
		"-R", "pi:22:" + echo.Addr().String(), "-R", "nuc:3389:" + echo.Addr().String(), "lifeline-agent@127.0.0.1"}
	agent := sshtest.Start(t, nil, "ssh", agentArgs...)
	operatorCfg := &ssh.ClientConfig{Config: sshalgo.Config(), User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(f.operator.Signer)},
		HostKeyCallback: ssh.FixedHostKey(hostSigner.PublicKey()), Timeout: 5 * time.Second}
	op, err := ssh.Dial("tcp", addr, operatorCfg)
	if err != nil {
		t.Fatalf("operator login: %v\n%s", err, p.Output())
	}
	defer op.Close()
	jump := func(target string) error {
		c, err := op.Dial("tcp", target)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		buf := make([]byte, 5)
		_, err = io.ReadFull(c, buf)
		return err
	}
	sshtest.Eventually(t, 15*time.Second, func() bool { return jump("pi:22") == nil && jump("nuc:3389") == nil },
		"operator could not jump to the certificate agent's targets; agent: %s\nbastion: %s", agent.Output, p.Output)
	if err := jump("cam:80"); err == nil {
		t.Error("cam:80 is in permitlisten but not among the certificate's principals: it must not be reachable")
	}

	// Revoke the certificate (serial) and the operator's key, then reload.
	os.WriteFile(filepath.Join(f.dir, "spec"), []byte("serial: 31\nkey: "+f.operator.AuthorizedLine("", "alice")+"\n"), 0o600)
	keygen(t, f.dir, "-k", "-f", krl, "-s", "site_ca.pub", "-z", "2", "spec")
	p.Cmd.Process.Signal(syscall.SIGHUP)
	done := make(chan error, 1)
	go func() { done <- op.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the revoked operator's live connection stayed open:\n%s", p.Output())
	}
	agentGone := make(chan error, 1)
	go func() { agentGone <- agent.Cmd.Wait() }()
	select {
	case <-agentGone:
	case <-time.After(10 * time.Second):
		t.Fatalf("the revoked agent's live connection stayed open:\n%s", p.Output())
	}
	// A new connection with the revoked certificate is refused.
	out, err := sshtest.Run(t.Context(), 15*time.Second, nil, "ssh", agentArgs...)
	if err == nil {
		t.Fatalf("the revoked certificate logged in again:\n%s", out)
	}
	audit := readFile(t, filepath.Join(f.dir, "state", "audit.jsonl"))
	for _, want := range []string{"certificate serial 31 is revoked", "no longer authorized", `"event":"reload"`, "KRL version 2", "revoked keys"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log lacks %q:\n%s", want, audit)
		}
	}
}
