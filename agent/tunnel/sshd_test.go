package tunnel

// End-to-end tests against stock OpenSSH: sshd as the server (the bastion's
// role), a second sshd as the Pi's target, stock ssh -J as the operator.
//
//   operator (ssh -J)                      agent (this package)
//        |  StrictHostKeyChecking=yes          |  pinned host key
//        v                                     v
//   sshd "bastion" 127.0.0.1:S  <----- [relay 127.0.0.1:R] (some tests)
//        | listens on localhost:F for the agent (tcpip-forward)
//        '--forwarded-tcpip--> agent --dial--> sshd "pi" 127.0.0.1:T

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/agent/hostkeys"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// world is one bastion sshd, one target sshd, an operator and an agent key.
type world struct {
	t        testing.TB
	dir      string
	opKey    sshtest.Key
	opKnown  string // the operator's known_hosts
	opConfig string // the operator's ssh_config (sshtest.OperatorConfig)
	pi       *sshtest.SSHD
	agentKey ssh.Signer
	fwdPorts []int
	srv      *sshtest.SSHD
}

// piMark is what every login to the world's pi prints: it proves that the
// operator reached that server.
const piMark = "PI-REACHED"

// newWorld starts the target and a bastion sshd that lets the agent listen
// on localhost:<port> for each of nFwd ports and the operator reach them.
// The operator runs stock ssh with its own key, checking host keys strictly
// at every hop.
func newWorld(t *testing.T, nFwd int, extra ...string) *world {
	t.Helper()
	sshtest.NeedRoot(t)
	sshtest.Need(t, "sshd", "ssh")
	w := &world{t: t, dir: t.TempDir()}
	w.opKey = sshtest.NewKey(t, w.dir, "operator_key")
	w.opKnown = sshtest.KnownHostsFile(t, w.dir)
	w.pi = sshtest.StartSSHD(t, sshtest.SSHDOptions{
		AuthorizedKeys: w.opKey.AuthorizedLine("", "operator"),
		Extra:          []string{"AllowTcpForwarding no", "ForceCommand echo " + piMark},
	})
	w.agentKey = sshtest.NewKey(t, w.dir, "agent_key").Signer
	for range nFwd {
		w.fwdPorts = append(w.fwdPorts, sshtest.FreePort(t))
	}
	w.srv = w.startBastion(extra...)
	w.opConfig = sshtest.OperatorConfig(t, w.dir, "127.0.0.1", w.srv.Port, w.opKey.Path, w.opKnown)
	for _, p := range w.fwdPorts {
		w.trust("localhost:"+strconv.Itoa(p), w.pi.HostKey)
	}
	return w
}

// trust adds a line for addr (host:port) to the operator's known_hosts.
func (w *world) trust(addr string, key ssh.PublicKey) {
	w.t.Helper()
	f, err := os.OpenFile(w.opKnown, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, keyfile.KnownHostsLine([]string{addr}, key)); err != nil {
		w.t.Fatal(err)
	}
}

// startBastion starts one more sshd in the bastion role for this world.
func (w *world) startBastion(extra ...string) *sshtest.SSHD {
	w.t.Helper()
	var listen, open []string
	for _, p := range w.fwdPorts {
		listen = append(listen, fmt.Sprintf("localhost:%d", p))
		open = append(open, fmt.Sprintf("permitopen=\"localhost:%d\"", p))
	}
	var pl []string
	for _, l := range listen {
		pl = append(pl, fmt.Sprintf("permitlisten=%q", l))
	}
	agentLine := "restrict,port-forwarding," + strings.Join(pl, ",") + " " + keyfile.AuthorizedLine(w.agentKey.PublicKey(), "agent")
	opLine := w.opKey.AuthorizedLine("restrict,port-forwarding,"+strings.Join(open, ","), "operator")
	// Extra lines come first, so extra overrides these.
	cfg := append(slices.Clone(extra),
		"AllowTcpForwarding yes",
		"GatewayPorts no",
		"PermitListen "+strings.Join(listen, " "),
		"ClientAliveInterval 1",
		"ClientAliveCountMax 3",
	)
	s := sshtest.StartSSHD(w.t, sshtest.SSHDOptions{AuthorizedKeys: agentLine + "\n" + opLine, Extra: cfg})
	w.trust(s.Addr, s.HostKey)
	return s
}

// jump runs the operator's `ssh -J root@jump -p port root@host command` and
// returns its combined output.
func (w *world) jump(ctx context.Context, jump, host string, port int, command string) (string, error) {
	return sshtest.Run(ctx, 20*time.Second, nil, "ssh", "-F", w.opConfig, "-J", "root@"+jump, "-p", strconv.Itoa(port), "root@"+host, command)
}

// forwards is localhost:<port>=<pi target> for every forward port.
func (w *world) forwards() []forward.Forward {
	var fs []forward.Forward
	for _, p := range w.fwdPorts {
		fs = append(fs, forward.Forward{Name: "localhost", Port: uint16(p), TargetHost: "127.0.0.1", TargetPort: uint16(w.pi.Port)})
	}
	return fs
}

// agentConfig is a fast-timing agent for bastions (pinned to keys).
func (w *world) agentConfig(pins map[string]ssh.PublicKey) Config {
	w.t.Helper()
	var lines, bastions []string
	for addr, k := range pins {
		lines = append(lines, keyfile.KnownHostsLine([]string{addr}, k))
		bastions = append(bastions, addr)
	}
	log, _ := sshtest.Logger(w.t)
	return Config{
		Bastions:       bastions,
		User:           "root",
		Signer:         w.agentKey,
		HostKeys:       hostkeys.New(sshtest.KnownHostsFile(w.t, w.dir, lines...), false, log),
		Forwards:       w.forwards(),
		Keepalive:      500 * time.Millisecond,
		DeadAfter:      2 * time.Second,
		BackoffMax:     2 * time.Second,
		ConnectTimeout: 3 * time.Second,
		ProbeEvery:     100 * time.Millisecond,
		Log:            log,
	}
}

// startAgent runs Tunnels until the test ends; it returns the agent's log.
func startAgent(t *testing.T, cfg Config) (*Tunnels, *sshtest.Buffer) {
	t.Helper()
	log, buf := sshtest.Logger(t)
	cfg.Log = log
	tun, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := tun.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return tun, buf
}

func registered(tun *Tunnels, bastion string, n int) func() bool {
	return func() bool {
		for _, s := range tun.Status() {
			if s.Bastion == bastion {
				return s.Connected && len(s.Registered) == n
			}
		}
		return false
	}
}

// jumpWorks runs ssh -J through jump to the forward on port and checks that
// it reached the Pi's sshd.
func (w *world) jumpWorks(jump *sshtest.SSHD, port int) error {
	out, err := w.jump(context.Background(), jump.Addr, "localhost", port, "true")
	if err != nil {
		return fmt.Errorf("ssh -J: %v: %s", err, out)
	}
	if !strings.Contains(out, piMark) {
		return fmt.Errorf("ssh -J did not reach the target: %q", out)
	}
	return nil
}

func TestJumpThroughStockSSHD(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	tun, _ := startAgent(t, w.agentConfig(map[string]ssh.PublicKey{w.srv.Addr: w.srv.HostKey}))
	sshtest.Eventually(t, 15*time.Second, registered(tun, w.srv.Addr, 2), "both forwards registered")
	for _, p := range w.fwdPorts {
		if err := w.jumpWorks(w.srv, p); err != nil {
			t.Fatal(err)
		}
	}
	st := tun.Status()[0]
	if st.Served != 2 || st.Rejected != 0 || st.Connects != 1 {
		t.Errorf("status %+v: want 2 served, 0 rejected, 1 connect", st)
	}
	sshtest.Eventually(t, 5*time.Second, func() bool {
		r := tun.RTT()
		return r != nil && r.Samples > 0 && r.Worst >= r.Median && r.Median > 0
	}, "keepalive round trips")
}

func TestServerKilledAndRestarted(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	tun, log := startAgent(t, w.agentConfig(map[string]ssh.PublicKey{w.srv.Addr: w.srv.HostKey}))
	sshtest.Eventually(t, 15*time.Second, registered(tun, w.srv.Addr, 1), "registered")

	w.srv.Stop()
	sshtest.Eventually(t, 10*time.Second, func() bool { return !tun.Status()[0].Connected }, "agent to notice the server is gone")
	if !log.Contains("msg=lost") || !log.Contains("after=") {
		t.Errorf("no 'lost ... after' log line")
	}
	w.srv.Restart()
	sshtest.Eventually(t, 15*time.Second, registered(tun, w.srv.Addr, 1), "agent back")
	if err := w.jumpWorks(w.srv, w.fwdPorts[0]); err != nil {
		t.Fatal(err)
	}
	if c := tun.Status()[0].Connects; c != 2 {
		t.Errorf("Connects = %d, want 2", c)
	}
}

func TestBlackholedLinkDetectedAndRecovered(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	rl := sshtest.NewRelay(t, w.srv.Addr)
	cfg := w.agentConfig(map[string]ssh.PublicKey{rl.Addr: w.srv.HostKey})
	tun, log := startAgent(t, cfg)
	sshtest.Eventually(t, 15*time.Second, registered(tun, rl.Addr, 1), "registered through the relay")
	if err := w.jumpWorks(w.srv, w.fwdPorts[0]); err != nil {
		t.Fatal(err)
	}

	paused := rl.Pause()
	sshtest.Eventually(t, 10*time.Second, func() bool { return !tun.Status()[0].Connected }, "dead link detected")
	detected := time.Since(paused)
	if !log.Contains("dead link: no reply to a keepalive") {
		t.Errorf("the loss was not attributed to missed keepalives")
	}
	// The agent closed its side: the relay sees it (a moment later: the
	// close and the relay's read race) although it forwards nothing.
	sshtest.Eventually(t, 5*time.Second, func() bool {
		_, ok := rl.ClientClosedAfter(paused)
		return ok
	}, "agent to close the black-holed connection")
	t.Logf("black hole detected after %s (keepalive %s, dead after %s)", detected.Round(time.Millisecond), cfg.Keepalive, cfg.DeadAfter)

	rl.Resume(true)
	sshtest.Eventually(t, 15*time.Second, registered(tun, rl.Addr, 1), "reconnected after the relay resumed")
	// sshd may still hold the old listener until ClientAlive drops the
	// stale session; the agent retries the forward until it is free.
	sshtest.Eventually(t, 20*time.Second, func() bool { return w.jumpWorks(w.srv, w.fwdPorts[0]) == nil }, "jump works again")
}

func TestTargetDownRejectsChannelKeepsTunnel(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	cfg := w.agentConfig(map[string]ssh.PublicKey{w.srv.Addr: w.srv.HostKey})
	cfg.Forwards[1].TargetPort = uint16(sshtest.FreePort(t)) // nothing listens there
	tun, log := startAgent(t, cfg)
	sshtest.Eventually(t, 15*time.Second, registered(tun, w.srv.Addr, 2), "registered")

	if err := w.jumpWorks(w.srv, w.fwdPorts[1]); err == nil {
		t.Fatal("jump to a dead target succeeded")
	}
	sshtest.Eventually(t, 5*time.Second, func() bool { return tun.Status()[0].Rejected == 1 }, "rejection counted")
	if !log.Contains("forwarded connection rejected") || !log.Contains("connection refused") {
		t.Errorf("rejection not logged with its reason")
	}
	if err := w.jumpWorks(w.srv, w.fwdPorts[0]); err != nil {
		t.Fatalf("the other forward broke: %v", err)
	}
	if st := tun.Status()[0]; !st.Connected || st.Connects != 1 {
		t.Errorf("tunnel did not stay up: %+v", st)
	}
}

func TestWrongBastionHostKeyRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	impostor := sshtest.NewKey(t, w.dir, "other_host_key").Signer
	tun, log := startAgent(t, w.agentConfig(map[string]ssh.PublicKey{w.srv.Addr: impostor.PublicKey()}))
	sshtest.Eventually(t, 10*time.Second, func() bool {
		return strings.Count(log.String(), "BASTION HOST KEY REFUSED") >= 2
	}, "two refused attempts")
	if !log.Contains("level=ERROR") || !log.Contains("man-in-the-middle") {
		t.Errorf("refusal is not loud")
	}
	st := tun.Status()[0]
	if st.Connected || st.Connects != 0 {
		t.Errorf("status %+v: want never connected", st)
	}
	if strings.Contains(w.srv.Log(), "Accepted publickey") {
		t.Errorf("the agent authenticated to a server whose key it refused")
	}
	// A host key failure is not a network failure: no probing.
	if log.Contains("bastion reachable again") {
		t.Errorf("host key failure was treated as a network failure")
	}
}

// Two stock sshds on one machine cannot both listen on localhost:F, so the
// second bastion is the in-process lifeline-style one (it binds nothing).
func TestTwoBastionsOneDown(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	second := startFakeBastion(t, w.agentKey.PublicKey())
	pins := map[string]ssh.PublicKey{w.srv.Addr: w.srv.HostKey, second.Addr(): second.hostKey.PublicKey()}
	tun, _ := startAgent(t, w.agentConfig(pins))
	name := "localhost:" + strconv.Itoa(w.fwdPorts[0])
	sshtest.Eventually(t, 15*time.Second, registered(tun, w.srv.Addr, 1), "registered on sshd")
	sshtest.Eventually(t, 15*time.Second, func() bool { return second.Registered(name) }, "registered on the second bastion")
	if err := w.jumpWorks(w.srv, w.fwdPorts[0]); err != nil {
		t.Fatal(err)
	}

	w.srv.Stop()
	sshtest.Eventually(t, 10*time.Second, func() bool { return !registered(tun, w.srv.Addr, 1)() }, "first seen down")
	// Through the second bastion the Pi's sshd still answers.
	ch, err := second.Open("localhost", w.fwdPorts[0], "198.51.100.20", 5555)
	if err != nil {
		t.Fatalf("second bastion unusable while the first is down: %v", err)
	}
	defer ch.Close()
	banner, err := bufio.NewReader(ch).ReadString('\n')
	if err != nil || !strings.HasPrefix(banner, "SSH-2.0-OpenSSH") {
		t.Fatalf("the Pi's sshd did not answer through the second bastion: %q, %v", banner, err)
	}
	if !registered(tun, second.Addr(), 1)() {
		t.Errorf("second tunnel dropped: %+v", tun.Status())
	}
}

func TestRefusedForwardKeepsOthers(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	cfg := w.agentConfig(map[string]ssh.PublicKey{w.srv.Addr: w.srv.HostKey})
	notPermitted := sshtest.FreePort(t)
	cfg.Forwards = append(cfg.Forwards, forward.Forward{Name: "localhost", Port: uint16(notPermitted), TargetHost: "127.0.0.1", TargetPort: uint16(w.pi.Port)})
	tun, log := startAgent(t, cfg)
	sshtest.Eventually(t, 15*time.Second, registered(tun, w.srv.Addr, 1), "permitted forward registered")
	sshtest.Eventually(t, 10*time.Second, func() bool {
		return strings.Count(log.String(), "forward refused by the bastion") >= 2
	}, "refusal retried")
	if !log.Contains("forward=localhost:" + strconv.Itoa(notPermitted)) {
		t.Errorf("refusal does not name the forward")
	}
	if err := w.jumpWorks(w.srv, w.fwdPorts[0]); err != nil {
		t.Fatal(err)
	}
	if st := tun.Status()[0]; st.Connects != 1 {
		t.Errorf("a refused forward cost the connection: %+v", st)
	}
}

// TestWrongUserNamesTheVariable: against a stock sshd, the default user name
// fails authentication; the error says which variable to set.
func TestWrongUserNamesTheVariable(t *testing.T) {
	w := newWorld(t, 1)
	cfg := w.agentConfig(map[string]ssh.PublicKey{w.srv.Addr: w.srv.HostKey})
	cfg.User = "lifeline-agent" // the default: no such account here
	tun, _ := startAgent(t, cfg)
	sshtest.Eventually(t, 15*time.Second, func() bool {
		for _, st := range tun.Status() {
			if strings.Contains(st.LastError, "LIFELINE_USER") && strings.Contains(st.LastError, `"lifeline-agent"`) {
				return true
			}
		}
		return false
	}, "a hint naming LIFELINE_USER in the status")
}
