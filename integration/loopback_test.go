//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// binDir holds lifeline-bastion and lifeline-agent, built once per run.
var binDir string

func TestMain(m *testing.M) {
	// Re-executed inside a namespace as a small TCP service (the "NUC").
	if addr := os.Getenv("LIFELINE_TEST_SERVE"); addr != "" {
		serveBanner(addr, os.Getenv("LIFELINE_TEST_BANNER"))
		return
	}
	// Re-executed inside a namespace as a client: print what addr says.
	if addr := os.Getenv("LIFELINE_TEST_DIAL"); addr != "" {
		os.Exit(dialBanner(addr))
	}
	dir, err := os.MkdirTemp("", "lifeline-integration-bin")
	if err != nil {
		panic(err)
	}
	binDir = dir
	// The agent runs lifeline-linkcheck from next to itself for link checks.
	for _, b := range []string{"bastion/cmd/lifeline-bastion", "agent/cmd/lifeline-agent", "agent/cmd/lifeline-linkcheck"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(b)), "../"+b).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", filepath.Base(b), err, out)
			os.Exit(1)
		}
	}
	for _, c := range []string{"fake-twilio", "fake-speedtest"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "./cmd/"+c).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", c, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// loopback is lifeline on 127.0.0.1: bastion, agent, the Pi's sshd, and an
// operator ssh_config with host keys checked at both hops.
type loopback struct {
	t           testing.TB
	dir         string
	bastionPort int
	bastion     *sshtest.Process
	agent       *sshtest.Process
	pi          *sshtest.SSHD
	operator    sshtest.Key
	sshConfig   string
	agentEnv    []string
	bastionEnv  []string
	extraFwds   string
	hostKey     ssh.PublicKey // the bastion's
	opKnown     string        // the operator's known_hosts: the bastion, and the Pi as "pi"
}

type loopbackOpts struct {
	forwards       string // extra LIFELINE_FORWARDS entries (comma-prefixed)
	agentExtra     []string
	permit         string // extra permitlisten options
	extraAgents    string // more lines for the agents file
	bastionEnv     []string
	relayToBastion func(addr string) string // agent dials this instead
}

func startLoopback(t testing.TB, o loopbackOpts) *loopback {
	t.Helper()
	sshtest.Need(t, "ssh", "sshd", "ssh-keygen")
	dir := t.TempDir()
	l := &loopback{t: t, dir: dir, bastionPort: sshtest.FreePort(t)}
	l.operator = sshtest.NewKey(t, dir, "operator")
	l.pi = sshtest.StartSSHD(t, sshtest.SSHDOptions{AuthorizedKeys: l.operator.AuthorizedLine("", "alice")})
	l.bastionEnv = append([]string{
		"LIFELINE_LISTEN=127.0.0.1:" + fmt.Sprint(l.bastionPort),
		"LIFELINE_HOST_KEY=" + filepath.Join(dir, "bastion", "host_key"),
		"LIFELINE_STATE_DIR=" + filepath.Join(dir, "bastion"),
		"LIFELINE_AGENTS=" + filepath.Join(dir, "agents"),
		"LIFELINE_OPERATORS=" + filepath.Join(dir, "operators"),
		"LIFELINE_NAME=bastion",
		"TWILIO_ACCOUNT_SID=", "TWILIO_AUTH_TOKEN=", "LIFELINE_SMS_FROM=", "LIFELINE_SMS_TO=",
	}, o.bastionEnv...)
	bastionAddr := fmt.Sprintf("127.0.0.1:%d", l.bastionPort)
	dialAddr := bastionAddr
	if o.relayToBastion != nil {
		dialAddr = o.relayToBastion(bastionAddr)
	}
	l.agentEnv = append([]string{
		"LIFELINE_BASTION=" + dialAddr,
		"LIFELINE_KEY=" + filepath.Join(dir, "agent", "key"),
		"LIFELINE_KNOWN_HOSTS=" + filepath.Join(dir, "agent", "known_hosts"),
		"LIFELINE_FORWARDS=pi:22=127.0.0.1:" + fmt.Sprint(l.pi.Port) + o.forwards,
		"LIFELINE_STATE_DIR=" + filepath.Join(dir, "agent"),
		"LIFELINE_CHECK_EVERY=0",
	}, o.agentExtra...)
	os.MkdirAll(filepath.Join(dir, "agent"), 0o700)
	pub := l.run(l.agentEnv, bin("lifeline-agent"), "pubkey")
	os.WriteFile(filepath.Join(dir, "agents"), []byte(pub+"\n"+o.extraAgents+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "operators"), []byte(l.operator.AuthorizedLine("", "alice@laptop")+"\n"), 0o600)
	hostKey := bastionHostKey(t, l.bastionEnv)
	l.hostKey = hostKey
	// The agent pins the address it dials; the operator the bastion's own.
	os.WriteFile(filepath.Join(dir, "agent", "known_hosts"), []byte(knownHostsFor(dialAddr, hostKey)+"\n"), 0o600)
	opKnown := filepath.Join(dir, "operator_known_hosts")
	l.opKnown = opKnown
	os.WriteFile(opKnown, []byte(knownHostsFor(bastionAddr, hostKey)+"\n"+l.pi.KnownHostsLine("pi")+"\n"), 0o600)
	l.sshConfig = sshtest.OperatorConfig(t, dir, "127.0.0.1", l.bastionPort, l.operator.Path, opKnown)
	l.startBastion()
	l.agent = sshtest.Start(t, l.agentEnv, bin("lifeline-agent"))
	l.waitTarget("pi:22")
	return l
}

// knownHostsFor is the known_hosts line pinning key for a host:port.
func knownHostsFor(addr string, key ssh.PublicKey) string {
	return keyfile.KnownHostsLine([]string{addr}, key)
}

// bastionHostKey creates the bastion's host key the way an admin does
// (`lifeline-bastion hostkey` with the bastion's environment) and returns it.
func bastionHostKey(t testing.TB, env []string) ssh.PublicKey {
	t.Helper()
	out, err := sshtest.Stdout(context.Background(), 20*time.Second, env, bin("lifeline-bastion"), "hostkey")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range sshtest.Lines(out) {
		if f := strings.Fields(line); len(f) == 3 && strings.HasPrefix(f[1], "ssh-") {
			if pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(f[1] + " " + f[2])); err == nil {
				return pk
			}
		}
	}
	t.Fatalf("no host key in `lifeline-bastion hostkey` output:\n%s", out)
	return nil
}

func (l *loopback) startBastion() {
	l.bastion = sshtest.Start(l.t, l.bastionEnv, bin("lifeline-bastion"))
	sshtest.Eventually(l.t, 10*time.Second, func() bool { return strings.Contains(l.bastion.Output(), "bastion listening") },
		"bastion did not start:\n%s", l.bastion.Output)
}

// run returns a command's standard output.
func (l *loopback) run(env []string, name string, args ...string) string {
	l.t.Helper()
	out, err := sshtest.Stdout(context.Background(), 20*time.Second, env, name, args...)
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

func (l *loopback) ssh(args ...string) (string, error) {
	return sshtest.Run(context.Background(), 60*time.Second, nil, "ssh", append([]string{"-F", l.sshConfig}, args...)...)
}

func (l *loopback) status() string {
	out, _ := l.ssh("bastion", "status")
	return out
}

func (l *loopback) waitTarget(target string) {
	l.t.Helper()
	sshtest.Eventually(l.t, 20*time.Second, func() bool { return online(l.status(), target) != nil },
		"%s never registered\nagent:\n%s\nbastion:\n%s", target, l.agent.Output, l.bastion.Output)
}

// online returns the fields of target's row in the text status when it
// is online: SITE STATE FOR AGENT KEY ADDRESS RTT; nil otherwise.
func online(status, target string) []string {
	for _, l := range strings.Split(status, "\n") {
		if f := strings.Fields(l); len(f) >= 7 && f[0] == target && f[1] == "online" {
			return f
		}
	}
	return nil
}

// source is a TCP service that writes size bytes to every connection.
func source(t testing.TB, size int64) (addr string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sshtest.ServeConns(t, ln, func(c net.Conn) {
		defer c.Close()
		io.CopyBuffer(c, io.LimitReader(zeroes{}, size), make([]byte, 64<<10))
	})
	return ln.Addr().String()
}

type zeroes struct{}

func (zeroes) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// serveBanner answers every connection with banner and closes it.
func serveBanner(addr, banner string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
	fmt.Println("serving", addr)
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		if n, err := strconv.ParseInt(os.Getenv("LIFELINE_TEST_BULK"), 10, 64); err == nil && n > 0 {
			go func() {
				defer c.Close()
				io.CopyBuffer(c, io.LimitReader(zeroes{}, n), make([]byte, 64<<10))
			}()
			continue
		}
		fmt.Fprintf(c, "%s from %s\n", banner, c.RemoteAddr())
		c.Close()
	}
}

func dialBanner(addr string) int {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	fmt.Print(string(b))
	return 0
}
