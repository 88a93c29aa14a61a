package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// paired is a site whose key the fake bastion lets in, whose known_hosts
// pins it, and whose Pi's sshd (a listener saying an SSH version) answers.
func paired(t *testing.T, o bastionOpts, forwards func(sshPort int) string) (*site, *fakeBastion) {
	t.Helper()
	sshPort := targetListener(t, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
	// The key must exist before the bastion that accepts it.
	s := newSite(t, "", forwards(sshPort))
	if o.accept == nil {
		o.accept = s.signer.PublicKey()
	}
	b := startBastion(t, o)
	s.cfg.Agent.Bastion = b.addr
	s.pin(t, b.addr, b.hostKey.PublicKey())
	return s, b
}

func piOnly(p int) string { return fmt.Sprintf("pi:22=127.0.0.1:%d", p) }

func TestBastionAllPass(t *testing.T) {
	t.Parallel()
	s, b := paired(t, bastionOpts{permit: []string{"pi:22"}}, piOnly)
	out, n := s.run(t)
	if n != 0 {
		t.Fatalf("%d failures:\n%s", n, out)
	}
	fp := keyfile.Fingerprint(s.signer.PublicKey())
	want(t, out, ": an address, no name to look up", "✓")
	want(t, out, ": TCP connection", "✓", "to "+b.addr)
	want(t, out, ": host key", "✓", keyfile.Fingerprint(b.hostKey.PublicKey()), "SSH-2.0-lifeline")
	want(t, out, ": login with the agent key", "✓", fp, "accepted")
	want(t, out, ": may register pi:22", "✓", "yes")
	want(t, out, "target of pi:22", "✓", "SSH-2.0-OpenSSH_9.2p1")
	want(t, out, "known_hosts", "✓", "pins "+b.addr)
	want(t, out, "key "+s.key, "✓", "mode 0600")
	if !strings.Contains(out, "no problem found") {
		t.Errorf("no summary:\n%s", out)
	}
	if got := b.sent(); slices.Contains(got, "tcpip-forward") || !slices.Contains(got, CheckForwardRequest) {
		t.Errorf("requests sent: %v; want %s and never tcpip-forward", got, CheckForwardRequest)
	}
}

func TestBastionRefusesForward(t *testing.T) {
	t.Parallel()
	s, _ := paired(t, bastionOpts{permit: []string{"pi:22"}}, func(p int) string { return piOnly(p) + ",nuc:3389=127.0.0.1:" + fmt.Sprint(p) })
	out, n := s.run(t)
	if n != 1 {
		t.Errorf("%d failures, want 1:\n%s", n, out)
	}
	want(t, out, "may register pi:22", "✓")
	want(t, out, "may register nuc:3389", "✗", `the bastion says: not permitted: this key's permitlisten is "pi:22"`,
		`fix: the key's line in the bastion's agents file needs permitlisten="nuc:3389"`,
		`permitlisten="pi:22",permitlisten="nuc:3389" `+keyfile.AuthorizedLine(s.signer.PublicKey(), "lifeline-agent@test"))
}

func TestBastionWithoutCheckRequest(t *testing.T) {
	t.Parallel()
	s, _ := paired(t, bastionOpts{old: true}, piOnly)
	out, n := s.run(t)
	if n != 0 {
		t.Errorf("%d failures:\n%s", n, out)
	}
	want(t, out, "may register pi:22", "-", "does not know "+CheckForwardRequest)
}

func TestBastionStallsOnCheck(t *testing.T) {
	t.Parallel()
	s, _ := paired(t, bastionOpts{stall: true}, func(p int) string { return piOnly(p) + ",web:80=127.0.0.1:" + fmt.Sprint(p) })
	s.cfg.StepTimeout = 300 * time.Millisecond
	out, _ := s.run(t)
	want(t, out, "may register pi:22", "✗", "no answer within 300ms")
	want(t, out, "may register web:80", "-", "not tried: the bastion did not answer")
}

func TestStockSSHD(t *testing.T) {
	t.Parallel()
	s, b := paired(t, bastionOpts{version: "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"}, piOnly)
	out, n := s.run(t)
	if n != 0 {
		t.Errorf("%d failures:\n%s", n, out)
	}
	want(t, out, "may register pi:22", "-", "not lifeline's bastion", "would take the name from the running agent")
	if slices.Contains(b.sent(), "tcpip-forward") {
		t.Error("sent a tcpip-forward to a stock sshd")
	}

	// A refused login there is about LIFELINE_USER.
	s2, _ := paired(t, bastionOpts{version: "SSH-2.0-OpenSSH_9.2p1", accept: sshtest.NewKey(t, t.TempDir(), "other").Signer.PublicKey()}, piOnly)
	out, _ = s2.run(t)
	want(t, out, "login with the agent key", "✗", `as user "lifeline-agent"`, "LIFELINE_USER must be the account whose ~/.ssh/authorized_keys holds this line")
}

func TestLoginRefused(t *testing.T) {
	t.Parallel()
	other := sshtest.NewKey(t, t.TempDir(), "other")
	s, _ := paired(t, bastionOpts{accept: other.Signer.PublicKey()}, func(p int) string { return piOnly(p) + ",nuc:3389=127.0.0.1:" + fmt.Sprint(p) })
	out, n := s.run(t)
	if n != 1 {
		t.Errorf("%d failures, want 1:\n%s", n, out)
	}
	line := `permitlisten="pi:22",permitlisten="nuc:3389" ` + keyfile.AuthorizedLine(s.signer.PublicKey(), "lifeline-agent@test")
	want(t, out, "login with the agent key", "✗", "the bastion refused it", "unable to authenticate", "not in its agents file",
		"the Terraform variable agents", "/etc/lifeline/agents", line)
	want(t, out, "may register pi:22", "-", "not tried: the login failed")
	want(t, out, "may register nuc:3389", "-", "not tried: the login failed")
}

func TestHostKeyMismatch(t *testing.T) {
	t.Parallel()
	s, b := paired(t, bastionOpts{}, piOnly)
	impostor := sshtest.NewKey(t, t.TempDir(), "impostor")
	s.pin(t, b.addr, impostor.Signer.PublicKey())
	out, n := s.run(t)
	if n != 1 {
		t.Errorf("%d failures, want 1:\n%s", n, out)
	}
	want(t, out, ": host key", "✗", "MISMATCH", keyfile.Fingerprint(b.hostKey.PublicKey()), "pins ssh-ed25519 "+keyfile.Fingerprint(impostor.Signer.PublicKey()), "someone may be in the middle",
		"fix: compare with terraform output host_key_fingerprint", "replace its line in "+s.known)
	want(t, out, "login with the agent key", "-", "not tried: the host key does not match")
	want(t, out, "known_hosts", "✓") // it has a line: the key is what is wrong
}

func TestHostKeyNotPinned(t *testing.T) {
	t.Parallel()
	s, b := paired(t, bastionOpts{permit: []string{"pi:22"}}, piOnly)
	os.WriteFile(s.known, nil, 0o644)
	out, n := s.run(t)
	if n != 2 {
		t.Errorf("%d failures, want 2:\n%s", n, out)
	}
	want(t, out, "known_hosts", "✗", "no line for "+b.addr, "terraform output -raw known_hosts_line", "lifeline-bastion hostkey --host "+b.addr, "["+strings.Replace(b.addr, ":", "]:", 1))
	want(t, out, ": host key", "✗", "not pinned", keyfile.Fingerprint(b.hostKey.PublicKey()))

	// Trust on first use: the agent would record it, so the doctor goes
	// on (recording nothing itself).
	s.cfg.Agent.TrustNewBastion = true
	out, n = s.run(t)
	if n != 0 {
		t.Errorf("%d failures with TOFU:\n%s", n, out)
	}
	want(t, out, ": host key", "-", "the agent will record it on first use")
	want(t, out, "login with the agent key", "✓")
	if data, _ := os.ReadFile(s.known); len(data) != 0 {
		t.Errorf("the doctor wrote known_hosts: %q", data)
	}

	os.Remove(s.known)
	s.cfg.Agent.TrustNewBastion = false
	out, _ = s.run(t)
	want(t, out, "known_hosts", "✗", "missing")
}

func TestBastionSilent(t *testing.T) {
	t.Parallel()
	s, _ := paired(t, bastionOpts{mute: true}, piOnly)
	s.cfg.StepTimeout = 300 * time.Millisecond
	start := time.Now()
	out, _ := s.run(t)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s", took)
	}
	want(t, out, ": host key", "✗", "no SSH answer within 300ms")
	want(t, out, "login with the agent key", "-", "not tried: no SSH handshake")
}

func TestBastionRefusedAndUnresolved(t *testing.T) {
	t.Parallel()
	s := newSite(t, fmt.Sprintf("127.0.0.1:%d", closedPort(t)), "pi:22=127.0.0.1:22")
	out, _ := s.run(t)
	want(t, out, ": TCP connection", "✗", "refused: nothing listens", "fix: check the port in LIFELINE_BASTION")
	want(t, out, ": host key", "-", "not tried: no TCP connection")

	s = newSite(t, "bastion.invalid:2222", "pi:22=127.0.0.1:22")
	s.cfg.Resolver = fakeResolver{err: &net.DNSError{Err: "no such host", Name: "bastion.invalid", IsNotFound: true}}
	out, _ = s.run(t)
	want(t, out, ": name bastion.invalid", "✗", "does not exist in DNS", "fix: check the name in LIFELINE_BASTION")
	want(t, out, ": TCP connection", "-", "its name did not resolve")
}

func TestBastionByName(t *testing.T) {
	t.Parallel()
	s, b := paired(t, bastionOpts{permit: []string{"pi:22"}}, piOnly)
	_, port, _ := net.SplitHostPort(b.addr)
	name := "bastion.test:" + port
	s.cfg.Agent.Bastion = name
	s.pin(t, name, b.hostKey.PublicKey())
	s.cfg.Resolver = fakeResolver{addrs: []string{"127.0.0.1"}}
	out, n := s.run(t)
	if n != 0 {
		t.Errorf("%d failures:\n%s", n, out)
	}
	want(t, out, "name bastion.test is 127.0.0.1", "✓")
	want(t, out, ": host key", "✓")
}

func TestBastionInterface(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		// SO_BINDTODEVICE needs no capability only from Linux 5.7 on.
		t.Log("not root: binding to lo may be refused on old kernels")
	}
	s, _ := paired(t, bastionOpts{permit: []string{"pi:22"}}, piOnly)
	s.cfg.Agent.Interface = "lo"
	out, _ := s.run(t)
	want(t, out, ": TCP connection via lo", "✓")

	s.cfg.Agent.Interface = "nosuch0"
	out, _ = s.run(t)
	want(t, out, ": TCP connection via nosuch0", "✗", "bind socket to interface nosuch0", "fix: LIFELINE_INTERFACE=nosuch0 must name this Pi's backup uplink")
}

type fakeResolver struct {
	addrs []string
	err   error
}

func (f fakeResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	if f.err != nil {
		return nil, f.err
	}
	if host == "" {
		return nil, errors.New("empty")
	}
	return f.addrs, nil
}

// TestCertificateLogin: a site paired by certificate presents it.
func TestCertificate(t *testing.T) {
	t.Parallel()
	s, _ := paired(t, bastionOpts{permit: []string{"pi:22"}}, piOnly)
	out, _ := s.run(t)
	want(t, out, "certificate", "-", "none")

	ca := sshtest.NewKey(t, t.TempDir(), "ca")
	writeCert(t, s, ca, []string{"pi:22"}, time.Now().Add(72*time.Hour))
	// The fake bastion lets in only the bare key, so the certificate is
	// refused: the fix talks about the CA line.
	out, _ = s.run(t)
	want(t, out, "certificate", "✓", "principals pi:22", "valid until", "days from now")
	want(t, out, "login with the agent key", "✗", "refused the agent's certificate", "cert-authority line")

	writeCert(t, s, ca, []string{"pi:22"}, time.Now().Add(-time.Minute))
	out, _ = s.run(t)
	want(t, out, "certificate", "✗", "expired", "the agent refuses to start with it", "ssh-keygen -s SITE_CA -I test -n pi:22")
	want(t, out, "login with the agent key", "-", "the agent does not start with that certificate")

	writeCert(t, s, ca, []string{"nuc:3389"}, time.Now().Add(time.Hour))
	out, _ = s.run(t)
	want(t, out, "certificate", "✗", "certifies nuc:3389 but not pi:22")
}
