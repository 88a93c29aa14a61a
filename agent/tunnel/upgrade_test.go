package tunnel

// The real lifeline-agent binary upgraded from inside an operator's session
// through it, the way `apt install ./lifeline-agent….deb` over
// `ssh -J bastion pi` does: the session lives on, and the agent restarts
// (exits 0 for systemd's Restart=always) only once it has been quiet.
//
//   operator: ssh -J root@bastion -p F localhost 'replace the agent; sleep; echo marker'
//        |
//        v
//   sshd "bastion" 127.0.0.1:S   (the agent registered localhost:F there)
//        '--forwarded-tcpip--> agent (temp copy of the binary, quiet 2s, poll 500ms)
//                                  '--dial--> sshd "pi" 127.0.0.1:T (runs the command)

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// TestActivityCountsChannelsOverAllLinks: Activity counts the forwarded
// channels open over every bastion link, and when the latest closed.
func TestActivityCountsChannelsOverAllLinks(t *testing.T) {
	t.Parallel()
	agent := sshtest.NewKey(t, t.TempDir(), "agent").Signer
	b1, b2 := startFakeBastion(t, agent.PublicKey()), startFakeBastion(t, agent.PublicKey())
	echo := echoServer(t)
	cfg := fakeAgentConfig(t, agent, b1, b2)
	cfg.Forwards = []forward.Forward{{Name: "pi", Port: 22, TargetHost: "127.0.0.1", TargetPort: uint16(echo)}}
	tun, _ := startAgent(t, cfg)
	sshtest.Eventually(t, 10*time.Second, func() bool { return b1.Registered("pi:22") && b2.Registered("pi:22") }, "pi registered on both bastions")
	if open, last := tun.Activity(); open != 0 || !last.IsZero() {
		t.Fatalf("Activity before any channel = %d, %v; want 0 and no close", open, last)
	}
	activity := func(want int) time.Time {
		t.Helper()
		var last time.Time
		sshtest.Eventually(t, 5*time.Second, func() bool {
			var open int
			open, last = tun.Activity()
			return open == want
		}, "%s", strconv.Itoa(want)+" channels open")
		return last
	}
	ping := func(ch io.ReadWriter) {
		t.Helper()
		if _, err := io.WriteString(ch, "hi\n"); err != nil {
			t.Fatal(err)
		}
		if l, err := bufio.NewReader(ch).ReadString('\n'); err != nil || l != "echo: hi\n" {
			t.Fatalf("through the tunnel: %q, %v", l, err)
		}
	}
	opened := time.Now()
	ch1, err := b1.Open("pi", 22, "198.51.100.20", 40001)
	if err != nil {
		t.Fatal(err)
	}
	defer ch1.Close()
	ch2, err := b2.Open("pi", 22, "198.51.100.20", 40002)
	if err != nil {
		t.Fatal(err)
	}
	defer ch2.Close()
	ping(ch1)
	ping(ch2)
	if last := activity(2); !last.IsZero() {
		t.Errorf("a close noted (%v) while both channels are open", last)
	}
	ch1.Close()
	first := activity(1)
	if first.Before(opened) {
		t.Errorf("lastClosed %v is before the channel opened (%v)", first, opened)
	}
	ch2.Close()
	second := activity(0)
	if second.Before(first) {
		t.Errorf("lastClosed went back from %v to %v", first, second)
	}
	// A channel the agent turns away (no such forward) counts only while
	// it holds its slot.
	b1.mu.Lock()
	b1.names["ghost:1"] = b1.names["pi:22"]
	b1.mu.Unlock()
	if _, err := b1.Open("ghost", 1, "198.51.100.20", 1); err == nil || !strings.Contains(err.Error(), "no forward for ghost:1") {
		t.Fatalf("unknown forward: %v", err)
	}
	sshtest.Eventually(t, 5*time.Second, func() bool {
		open, last := tun.Activity()
		return open == 0 && last.After(second)
	}, "the refused channel released")
}

func TestBinaryUpgradeWaitsForOperatorSession(t *testing.T) {
	t.Parallel()
	const (
		quiet   = 2 * time.Second
		poll    = 500 * time.Millisecond
		lives   = 6 * time.Second // the session, after replacing the binary
		marker  = "SESSION-SURVIVED-THE-UPGRADE"
		replace = "BINARY-REPLACED"
	)
	w := newWorld(t, 1)
	// The Pi's sshd, here one that runs the operator's command.
	pi := sshtest.StartSSHD(t, sshtest.SSHDOptions{AuthorizedKeys: w.opKey.AuthorizedLine("", "operator"), Extra: []string{"AllowTcpForwarding no"}})
	w.trust("localhost:"+strconv.Itoa(w.fwdPorts[0]), pi.HostKey)

	// The agent runs from a copy that the session replaces.
	built, err := os.ReadFile(agentBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "lifeline-agent")
	if err := os.WriteFile(bin, built, 0o755); err != nil {
		t.Fatal(err)
	}
	sock, states := notifySocket(t, w.dir)
	kh := sshtest.KnownHostsFile(t, w.dir, keyfile.KnownHostsLine([]string{w.srv.Addr}, w.srv.HostKey))
	out := &sshtest.Buffer{}
	cmd := exec.Command(bin)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"LIFELINE_BASTION=" + w.srv.Addr,
		"LIFELINE_KEY=" + filepath.Join(w.dir, "agent_key"),
		"LIFELINE_KNOWN_HOSTS=" + kh,
		"LIFELINE_FORWARDS=localhost:" + strconv.Itoa(w.fwdPorts[0]) + "=127.0.0.1:" + strconv.Itoa(pi.Port),
		"LIFELINE_USER=root",
		"LIFELINE_STATE_DIR=" + filepath.Join(w.dir, "state"),
		"LIFELINE_CHECK_EVERY=0",
		"LIFELINE_UPGRADE_QUIET=" + quiet.String(),
		"LIFELINE_UPGRADE_POLL=" + poll.String(),
		"NOTIFY_SOCKET=" + sock,
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	var exitedAt time.Time
	go func() { exitErr = cmd.Wait(); exitedAt = time.Now(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("lifeline-agent output:\n%s", out.String())
		}
	})
	sshtest.Eventually(t, 20*time.Second, func() bool { return out.Contains("msg=registered") }, "forward registered")

	// The session replaces the binary like dpkg (write beside, rename
	// over), then goes on working for longer than the quiet period.
	script := "set -e; cp " + bin + " " + bin + ".dpkg-new; mv -f " + bin + ".dpkg-new " + bin +
		"; echo " + replace + "; sleep " + strconv.Itoa(int(lives/time.Second)) + "; echo " + marker
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	session := exec.CommandContext(ctx, "ssh", "-F", w.opConfig, "-J", "root@"+w.srv.Addr, "-p", strconv.Itoa(w.fwdPorts[0]), "root@localhost", script)
	stdout, err := session.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &sshtest.Buffer{}
	session.Stderr = stderr
	if err := session.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	var replacedAt time.Time
	for sc := bufio.NewScanner(stdout); sc.Scan(); {
		if sc.Text() == replace {
			replacedAt = time.Now()
		}
		lines = append(lines, sc.Text())
	}
	err = session.Wait()
	closed := time.Now()
	if err != nil {
		t.Fatalf("operator session: %v (stdout %q, stderr %q)", err, lines, stderr.String())
	}
	if len(lines) == 0 || lines[len(lines)-1] != marker || replacedAt.IsZero() {
		t.Fatalf("session output %q: want %s, then %s at the end", lines, replace, marker)
	}
	select {
	case <-exited:
		t.Fatalf("the agent exited %s after the binary was replaced, while the session through it was open (%v)",
			exitedAt.Sub(replacedAt).Round(time.Millisecond), exitErr)
	default:
	}
	installed := "new lifeline-agent installed at " + bin + ": restarting once no operator connection has been open for 2s (systemctl restart lifeline-agent restarts now)"
	if !out.Contains(installed) {
		t.Fatalf("while the session was open the agent did not log %q", installed)
	}

	// Once the session closed: exit 0 after the quiet period, within a poll
	// more (and a moment for the clean stop).
	select {
	case <-exited:
	case <-time.After(quiet + poll + 5*time.Second):
		t.Fatalf("the agent still runs %s after the session closed", time.Since(closed).Round(time.Millisecond))
	}
	after := exitedAt.Sub(closed)
	t.Logf("binary replaced, session closed %s later, agent exited %s after that (quiet %s, poll %s)",
		closed.Sub(replacedAt).Round(time.Millisecond), after.Round(time.Millisecond), quiet, poll)
	if exitErr != nil {
		t.Errorf("agent exit: %v, want status 0 (systemd's Restart=always starts the new binary)", exitErr)
	}
	if after < quiet-500*time.Millisecond {
		t.Errorf("agent exited %s after the session closed, before the quiet period %s", after.Round(time.Millisecond), quiet)
	}
	for _, want := range []string{"no operator connection for 2s: stopping so that the new lifeline-agent starts", "lifeline-agent stopped to restart into its new binary"} {
		if !out.Contains(want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Count(out.String(), "installed at") != 1 {
		t.Errorf("the new binary was logged more than once")
	}
	if !hasState(states(), "STOPPING=1") {
		t.Errorf("no STOPPING=1: %q", states())
	}
}
