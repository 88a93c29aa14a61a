package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// openSSHWorld adds real OpenSSH peers around a bastion: sshd as the Pi's
// own server and an ssh_config for the operator with host keys checked at
// both hops.
type openSSHWorld struct {
	*world
	pi       *sshtest.SSHD
	config   string
	piKnown  string
	agentArg []string
}

func newOpenSSHWorld(t *testing.T) *openSSHWorld {
	t.Helper()
	sshtest.Need(t, "ssh", "sshd")
	w := newWorld(t, worldOpts{})
	pi := sshtest.StartSSHD(t, sshtest.SSHDOptions{AuthorizedKeys: w.operator.AuthorizedLine("", "alice")})
	kh := w.knownHosts()
	// The operator knows the Pi under its lifeline name: host "pi", port 22.
	f, _ := os.OpenFile(kh, os.O_APPEND|os.O_WRONLY, 0o600)
	fmt.Fprintln(f, pi.KnownHostsLine("pi"))
	f.Close()
	cfg := sshtest.OperatorConfig(t, w.dir, "127.0.0.1", w.port, w.operator.Path, kh)
	o := &openSSHWorld{world: w, pi: pi, config: cfg, piKnown: kh}
	return o
}

// startAgent runs stock OpenSSH as the agent: ssh -N -R pi:22:127.0.0.1:<sshd>.
func (o *openSSHWorld) startAgent(t *testing.T) *sshtest.Process {
	return sshtest.Start(t, nil, "ssh", "-N",
		"-R", fmt.Sprintf("pi:22:127.0.0.1:%d", o.pi.Port),
		"-p", fmt.Sprint(o.port), "-i", o.agent.Path, "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile="+o.piKnown, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
		"-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5",
		"lifeline-agent@127.0.0.1")
}

func (o *openSSHWorld) ssh(t *testing.T, args ...string) (string, error) {
	return sshtest.Run(context.Background(), 30*time.Second, nil, "ssh", append([]string{"-F", o.config}, args...)...)
}

func TestOpenSSHJump(t *testing.T) {
	o := newOpenSSHWorld(t)
	agent := o.startAgent(t)
	o.waitRegistered("pi:22")

	// ssh -J bastion pi, host keys checked at both hops.
	out, err := o.ssh(t, "pi", "echo", "hello-from-the-pi")
	if err != nil || !strings.Contains(out, "hello-from-the-pi") {
		t.Fatalf("ssh -J bastion pi: %v\n%s\nagent:\n%s\naudit:\n%s", err, out, agent.Output(), o.rec.dump())
	}
	// ssh -W pi:22 bastion (what older clients and ProxyCommand setups use).
	out, err = sshtest.Run(context.Background(), 30*time.Second, nil, "ssh", "-F", o.config,
		"-o", "ProxyCommand=ssh -F "+o.config+" -W %h:%p bastion", "-o", "ProxyJump=none", "pi", "echo", "via-W")
	if err != nil || !strings.Contains(out, "via-W") {
		t.Fatalf("ssh -W: %v\n%s", err, out)
	}
	// Bulk data both ways: 4 MiB through the relay, checksum compared.
	out, err = o.ssh(t, "pi", "head -c 4194304 /dev/zero | sha256sum")
	if err != nil || !strings.Contains(out, "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8") {
		t.Fatalf("bulk transfer: %v\n%s", err, out)
	}
	if e, ok := o.rec.find(audit.KindJump, nil); !ok || e.Target != "pi:22" || e.Key != "alice@laptop" {
		t.Fatalf("jump not audited with target and operator: %+v\n%s", e, o.rec.dump())
	}

	// status through OpenSSH.
	out, err = o.ssh(t, "bastion", "status")
	if err != nil || !strings.Contains(out, "pi:22") || !strings.Contains(out, "site-agent") {
		t.Fatalf("ssh bastion status: %v\n%s", err, out)
	}
}

func TestOpenSSHRefusals(t *testing.T) {
	o := newOpenSSHWorld(t)
	o.startAgent(t)
	o.waitRegistered("pi:22")
	cases := []struct {
		name string
		args []string
		want string // in the client's output
	}{
		{"shell", []string{"bastion"}, "not a shell"},
		{"forced PTY", []string{"-tt", "bastion"}, "not a shell"},
		{"RequestTTY", []string{"-o", "RequestTTY=force", "bastion"}, "ssh -J test-bastion pi"},
		{"command", []string{"bastion", "cat", "/etc/passwd"}, "only"},
		{"sftp subsystem", []string{"-s", "bastion", "sftp"}, "jump host without sftp"},
		{"open proxy to an address", []string{"-W", "127.0.0.1:22", "bastion"}, "stdio forwarding failed"},
		{"open proxy to localhost", []string{"-W", "localhost:22", "bastion"}, "stdio forwarding failed"},
		{"unknown name", []string{"-W", "nas:445", "bastion"}, "nas:445 is unknown"},
		{"operator remote forward", []string{"-N", "-o", "ExitOnForwardFailure=yes", "-R", "pi:22:127.0.0.1:22", "bastion"}, "forwarding failed"},
	}
	for _, tc := range cases {
		// LogLevel INFO, ssh's default: it prints why a channel was refused.
		out, err := o.ssh(t, append([]string{"-o", "LogLevel=INFO"}, tc.args...)...)
		if err == nil {
			t.Errorf("%s: ssh %v succeeded:\n%s", tc.name, tc.args, out)
			continue
		}
		if tc.want != "" && !strings.Contains(out, tc.want) {
			t.Errorf("%s: output lacks %q:\n%s", tc.name, tc.want, out)
		}
	}
	// A legitimate jump still works after all that.
	if out, err := o.ssh(t, "pi", "true"); err != nil {
		t.Fatalf("jump after refusals: %v\n%s", err, out)
	}
}

func TestOpenSSHAgentReconnectTakesOver(t *testing.T) {
	o := newOpenSSHWorld(t)
	first := o.startAgent(t)
	o.waitRegistered("pi:22")
	firstAddr := o.srv.Snapshot(nil).Targets[0].Address
	// A second stock ssh -R with the same key (the agent came back while the
	// bastion still holds the old connection): it must win, no "remote port
	// forwarding failed".
	second := o.startAgent(t)
	sshtest.Eventually(t, 10*time.Second, func() bool {
		st := o.srv.Snapshot(nil)
		return len(st.Targets) == 1 && st.Targets[0].Address != firstAddr
	}, "second agent did not take over; second agent said:\n%s", second.Output())
	// The first ssh -R is disconnected by the bastion and exits.
	done := make(chan error, 1)
	go func() { done <- first.Cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("stale ssh -R was not disconnected")
	}
	if out, err := o.ssh(t, "pi", "true"); err != nil {
		t.Fatalf("jump after takeover: %v\n%s", err, out)
	}
}

// ssh-audit must find nothing to fail or warn about, except the two
// algorithm names newer than the Debian scanner: in what OpenSSH-like
// clients are offered (ssh-audit says it is OpenSSH 8.2) and in what every
// other client is offered (the scanner's identification line rewritten on
// the way).
func TestSSHAuditClean(t *testing.T) {
	sshtest.Need(t, "ssh-audit")
	w := newWorld(t, worldOpts{})
	for _, tc := range []struct {
		name, as, cipher string
	}{
		{"as OpenSSH", "", "aes128-gcm@openssh.com"},
		{"as Dropbear", "SSH-2.0-dropbear_2022.83", "chacha20-poly1305@openssh.com"},
	} {
		port := w.port
		if tc.as != "" {
			port = versionRewriter(t, w.addr, tc.as)
		}
		out, _ := sshtest.Run(context.Background(), 60*time.Second, nil, "ssh-audit", "-n", "-p", fmt.Sprint(port), "127.0.0.1")
		if !strings.Contains(out, "key exchange algorithms") || !strings.Contains(out, tc.cipher) {
			t.Fatalf("%s: ssh-audit did not scan, or does not list %s:\n%s", tc.name, tc.cipher, out)
		}
		allowedUnknown := regexp.MustCompile(`mlkem768x25519-sha256|kex-strict-s-v00@openssh.com`)
		var problems []string
		for _, line := range sshtest.Lines(out) {
			if !strings.Contains(line, "[fail]") && !strings.Contains(line, "[warn]") && !strings.Contains(line, "-- [fail]") && !strings.Contains(line, "-- [warn]") {
				continue
			}
			if allowedUnknown.MatchString(line) && strings.Contains(line, "unknown algorithm") {
				continue
			}
			problems = append(problems, line)
		}
		if len(problems) > 0 {
			t.Fatalf("%s: ssh-audit reports:\n%s\n\nfull output:\n%s", tc.name, strings.Join(problems, "\n"), out)
		}
		t.Logf("ssh-audit %s:\n%s", tc.name, out)
	}
}

// versionRewriter relays 127.0.0.1:port to target, replacing the client's
// identification line with version.
func versionRewriter(t *testing.T, target, version string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sshtest.ServeConns(t, ln, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		br := bufio.NewReader(c)
		if _, err := br.ReadString('\n'); err != nil {
			return
		}
		io.WriteString(up, version+"\r\n")
		done := make(chan struct{}, 2)
		go func() { io.Copy(up, br); done <- struct{}{} }()
		go func() { io.Copy(c, up); done <- struct{}{} }()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}
