package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/ban"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

func dialThrough(c *ssh.Client, target string) (net.Conn, error) { return c.Dial("tcp", target) }

func TestJumpRelaysToRegisteredAgent(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	agent := w.mustDial(w.agent)
	seen := serveForwards(t, agent)
	if ok, err := register(agent, "pi", 22); !ok || err != nil {
		t.Fatalf("register pi:22 = %v, %v", ok, err)
	}
	op := w.mustDial(w.operator)
	conn, err := dialThrough(op, "pi:22")
	if err != nil {
		t.Fatalf("jump to pi:22: %v\n%s", err, w.rec.dump())
	}
	msg := bytes.Repeat([]byte("lifeline "), 100_000) // ~900 kB, more than one window
	go func() {
		conn.Write(msg)
		conn.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the jump: %d bytes, %v; want %d", len(got), err, len(msg))
	}
	conn.Close()
	if len(*seen) != 1 || !strings.HasPrefix((*seen)[0], "pi:22 from 127.0.0.1") {
		t.Fatalf("agent saw %v; want a forwarded-tcpip for pi:22 with the operator's address as origin", *seen)
	}
	sshtest.Eventually(t, 5*time.Second, func() bool {
		e, ok := w.rec.find(audit.KindJumpEnd, nil)
		return ok && e.BytesIn == int64(len(msg)) && e.BytesOut == int64(len(msg)) && e.Target == "pi:22"
	}, "no jump_end with byte counts; audit:\n%s", w.rec.dump())
	if w.rec.alertsWith("login alice@laptop") != 1 {
		t.Fatalf("want one login alert for alice; got:\n%s", w.rec.dump())
	}
	if w.rec.alertsWith("up site-agent") != 1 {
		t.Fatalf("want one agent-up alert; got:\n%s", w.rec.dump())
	}
}

func TestOperatorRefusals(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	agent := w.mustDial(w.agent)
	serveForwards(t, agent)
	register(agent, "pi", 22)
	op := w.mustDial(w.operator)
	limited := w.mustDial(w.limited)

	jumps := []struct {
		name   string
		client *ssh.Client
		target string
		reason string
	}{
		{"literal IPv4", op, "127.0.0.1:22", "is an address"},
		{"literal IPv6", op, "[::1]:22", "is an address"},
		{"localhost", op, "localhost:22", "never connects to itself"},
		{"unknown name", op, "nas:445", "nas:445 is unknown"},
		{"registered name, other port", op, "pi:23", "pi:23 is unknown"},
		{"name outside permitopen", limited, "pi:22", "not permitted"},
	}
	for _, j := range jumps {
		if c, err := dialThrough(j.client, j.target); err == nil {
			c.Close()
			t.Errorf("%s: direct-tcpip to %s was accepted", j.name, j.target)
			continue
		} else if !strings.Contains(err.Error(), j.reason) {
			t.Errorf("%s: error %q does not say %q", j.name, err, j.reason)
		}
		if !w.rec.has(audit.KindRefused, j.target) {
			t.Errorf("%s: no refusal for %s in the audit log", j.name, j.target)
		}
	}

	// Operators may not register names.
	if ok, _ := register(op, "pi", 22); ok {
		t.Error("operator registered a name")
	}
	// Only `status` runs; shells, PTYs, subsystems, env, agent forwarding do not.
	sess, err := op.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Setenv("LC_ALL", "C"); err == nil {
		t.Error("env accepted")
	}
	if ok, _ := sess.SendRequest("auth-agent-req@openssh.com", true, nil); ok {
		t.Error("agent forwarding granted")
	}
	if ok, _ := sess.SendRequest("x11-req", true, ssh.Marshal(struct {
		Single bool
		Proto  string
		Cookie string
		Screen uint32
	}{false, "MIT-MAGIC-COOKIE-1", "00", 0})); ok {
		t.Error("X11 forwarding granted")
	}
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	err = sess.Run("id")
	var exitErr *ssh.ExitError
	if !errorsAs(err, &exitErr) || exitErr.ExitStatus() != 1 {
		t.Errorf("exec id: err %v; want exit status 1", err)
	}
	if !strings.Contains(stderr.String(), "jump host") || !strings.Contains(stderr.String(), "ssh -J test-bastion pi") {
		t.Errorf("exec refusal did not explain how to use the jump host: %q", stderr.String())
	}
	sess.Close()

	// A shell gets the same explanation and exit status 1, never a prompt.
	sess = newSession(t, op)
	stderr.Reset()
	var stdout bytes.Buffer
	sess.Stderr, sess.Stdout = &stderr, &stdout
	if err := sess.Shell(); err != nil {
		t.Fatalf("shell request: %v", err)
	}
	err = sess.Wait()
	if !errorsAs(err, &exitErr) || exitErr.ExitStatus() != 1 || stdout.Len() != 0 || !strings.Contains(stderr.String(), "not a shell") {
		t.Errorf("shell: err %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
	}
	sess.Close()
	if !w.rec.has(audit.KindRefused, "shell") || !w.rec.has(audit.KindRefused, "exec") {
		t.Errorf("refusals missing from audit:\n%s", w.rec.dump())
	}
}

func TestAgentRefusals(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	agent := w.mustDial(w.agent)
	if ok, _ := register(agent, "cam", 80); ok {
		t.Error("agent registered a name its permitlisten does not allow")
	}
	if ok, _ := register(agent, "pi", 2222); ok {
		t.Error("agent registered an allowed name on another port")
	}
	if c, err := agent.Dial("tcp", "pi:22"); err == nil {
		c.Close()
		t.Error("agent opened direct-tcpip")
	}
	if _, err := agent.NewSession(); err == nil {
		t.Error("agent opened a session")
	}
	// A garbled report is refused, a valid one is stored and shown in status.
	if ok, _, _ := agent.SendRequest(report.RequestType, true, []byte(`{"v":99}`)); ok {
		t.Error("report with unknown version accepted")
	}
	register(agent, "pi", 22)
	payload, err := report.Encode(report.LinkReport{Time: time.Now(), ISP: "T-Mobile", Verdict: report.VerdictFailed, Reasons: []string{"download 2.0 Mbit/s below 10 Mbit/s"}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := agent.SendRequest(report.RequestType, true, payload); !ok || err != nil {
		t.Fatalf("valid report refused: %v", err)
	}
	st := w.srv.Snapshot(nil)
	if len(st.Targets) != 1 || st.Targets[0].Link == nil || st.Targets[0].Link.ISP != "T-Mobile" {
		t.Fatalf("status does not show the link report: %+v", st)
	}
	if w.rec.alertsWith("report site-agent failed") != 1 {
		t.Errorf("link report not passed to alerts:\n%s", w.rec.dump())
	}
	// An operator cannot send reports.
	op := w.mustDial(w.operator)
	if ok, _, _ := op.SendRequest(report.RequestType, true, payload); ok {
		t.Error("operator report accepted")
	}
}

func TestUnknownKeyAndPasswordRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	if c, err := w.dial(w.stranger); err == nil {
		c.Close()
		t.Fatal("unknown key logged in")
	}
	cfg := &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.Password("hunter2"), ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) { return nil, nil })},
		HostKeyCallback: ssh.FixedHostKey(w.hostKey.Signer.PublicKey()), Timeout: 5 * time.Second,
	}
	if c, err := ssh.Dial("tcp", w.addr, cfg); err == nil {
		c.Close()
		t.Fatal("password login accepted")
	}
	sshtest.Eventually(t, 5*time.Second, func() bool { return w.rec.alertsWith("authfailed 127.0.0.1") >= 1 }, "failed login not reported:\n%s", w.rec.dump())
	if !w.rec.has(audit.KindAuthFailed, "127.0.0.1") {
		t.Errorf("no auth_failed audit event:\n%s", w.rec.dump())
	}
}

func TestStaleRegistrationIsReplaced(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	old := w.mustDial(w.agent)
	serveForwards(t, old)
	if ok, _ := register(old, "pi", 22); !ok {
		t.Fatal("first registration refused")
	}
	fresh := w.mustDial(w.agent)
	seen := serveForwards(t, fresh)
	if ok, _ := register(fresh, "pi", 22); !ok {
		t.Fatal("the reconnecting agent's registration was refused: the classic 'remote port forwarding failed'")
	}
	// The stale connection is closed at once.
	closed := make(chan error, 1)
	go func() { closed <- old.Wait() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("stale connection still open")
	}
	op := w.mustDial(w.operator)
	c, err := dialThrough(op, "pi:22")
	if err != nil {
		t.Fatalf("jump after takeover: %v", err)
	}
	c.Close()
	if len(*seen) != 1 {
		t.Fatalf("new connection saw %v", *seen)
	}
	if !w.rec.has(audit.KindTakeover, "pi:22") {
		t.Errorf("no takeover audit event:\n%s", w.rec.dump())
	}
	// A reconnect is not an outage: one up, no down.
	if n := w.rec.alertsWith("down site-agent"); n != 0 {
		t.Errorf("takeover raised %d agent-down events:\n%s", n, w.rec.dump())
	}
}

func TestCancelAndDisconnectUnregister(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	a := w.mustDial(w.agent)
	register(a, "pi", 22)
	register(a, "nuc", 3389)
	ok, _, _ := a.SendRequest("cancel-tcpip-forward", true, ssh.Marshal(struct {
		A string
		P uint32
	}{"nuc", 3389}))
	if !ok {
		t.Fatal("cancel refused")
	}
	if n := len(w.srv.Snapshot(nil).Targets); n != 1 {
		t.Fatalf("%d targets after cancel", n)
	}
	a.Close()
	sshtest.Eventually(t, 5*time.Second, func() bool { return len(w.srv.Snapshot(nil).Targets) == 0 }, "names left after disconnect")
	sshtest.Eventually(t, 5*time.Second, func() bool { return w.rec.alertsWith("down site-agent [pi:22]") == 1 }, "no agent-down:\n%s", w.rec.dump())
}

func TestStatusCommand(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	a := w.mustDial(w.agent)
	register(a, "pi", 22)
	register(a, "nuc", 3389)
	op := w.mustDial(w.operator)
	sess, _ := op.NewSession()
	out, err := sess.Output("status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, want := range []string{"test-bastion", "pi:22", "nuc:3389", "site-agent", "SHA256:", "127.0.0.1:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	sess = newSession(t, op)
	out, err = sess.Output("status --json")
	if err != nil {
		t.Fatalf("status --json: %v", err)
	}
	var st Status
	if err := json.Unmarshal(out, &st); err != nil || len(st.Targets) != 2 || st.Targets[0].Target != "nuc:3389" {
		t.Fatalf("status --json = %s (%v)", out, err)
	}
	// An operator limited by permitopen sees only what it may reach.
	lim := w.mustDial(w.limited)
	sess = newSession(t, lim)
	out, _ = sess.Output("status --json")
	json.Unmarshal(out, &st)
	if len(st.Targets) != 1 || st.Targets[0].Target != "nuc:3389" {
		t.Fatalf("limited operator sees %+v", st.Targets)
	}
}

func TestDeadAgentDroppedByKeepalive(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{keepalive: 200 * time.Millisecond})
	relay := sshtest.NewRelay(t, w.addr)
	cfgAddr := w.addr
	w.addr = relay.Addr
	a := w.mustDial(w.agent)
	w.addr = cfgAddr
	register(a, "pi", 22)
	w.waitRegistered("pi:22")
	relay.BlackHole()
	start := time.Now()
	sshtest.Eventually(t, 5*time.Second, func() bool { return len(w.srv.Snapshot(nil).Targets) == 0 }, "black-holed agent never dropped")
	if !w.rec.has(audit.KindDisconnect, "no keepalive reply") {
		t.Errorf("disconnect reason not recorded:\n%s", w.rec.dump())
	}
	t.Logf("dead agent dropped after %s (quiet 200ms, then 600ms for a reply)", time.Since(start).Round(time.Millisecond))
}

func TestBansAfterRepeatedFailures(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{bans: ban.New(3, time.Minute, time.Hour, nil)})
	for range 3 {
		if c, err := w.dial(w.stranger); err == nil {
			c.Close()
		}
	}
	sshtest.Eventually(t, 5*time.Second, func() bool { return w.rec.has(audit.KindBanned, "127.0.0.1") }, "source never banned:\n%s", w.rec.dump())
	// Even a valid key is refused from a banned source.
	if c, err := w.dial(w.operator); err == nil {
		c.Close()
		t.Fatal("banned source logged in")
	}
}

func TestLoginGraceAndPendingCap(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{grace: 3 * time.Second, pending: 2})
	// Two idle TCP connections fill the pending slots (each has received the
	// server's version line, so it is in the handshake); the third is closed at once.
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 8)); err != nil {
			t.Fatalf("no version line: %v", err)
		}
		idle = append(idle, c)
	}
	c, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("third pending connection: read %d bytes, %v; want it closed at once", n, err)
	}
	c.Close()
	if !w.rec.has(audit.KindRefused, "connections authenticating (LIFELINE_MAX_PENDING_PER_SOURCE)") {
		t.Errorf("pending cap not audited:\n%s", w.rec.dump())
	}
	// The grace time closes idle handshakes.
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("idle connection not closed by the grace timer: %v", err)
		}
		c.Close()
	}
}

// TestNewSourceGetsInWhenFull: idle connections from one source fill every
// pending slot; an operator from another address still logs in, evicting
// the oldest of them.
func TestNewSourceGetsInWhenFull(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{pending: 4})
	var idle []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 8)); err != nil {
			t.Fatalf("no version line: %v", err)
		}
		idle = append(idle, c)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, w.addr, &ssh.ClientConfig{
		Config: sshalgo.Config(), User: "tester", Auth: []ssh.AuthMethod{ssh.PublicKeys(w.operator.Signer)},
		HostKeyCallback: ssh.FixedHostKey(w.hostKey.Signer.PublicKey()),
	})
	if err != nil {
		t.Fatalf("operator from a new source was kept out by a full gate: %v\n%s", err, w.rec.dump())
	}
	ssh.NewClient(conn, chans, reqs).Close()
	// The oldest idle connection made room.
	idle[0].SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(idle[0]); err != nil {
		t.Fatalf("oldest idle connection not evicted: %v", err)
	}
}

func TestGracefulShutdownClosesSessions(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	a := w.mustDial(w.agent)
	register(a, "pi", 22)
	start := time.Now()
	w.cancel()
	if err := <-w.done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	w.done <- nil // for cleanup
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s", d)
	}
	errc := make(chan error, 1)
	go func() { errc <- a.Wait() }()
	select {
	case <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("agent connection survived shutdown")
	}
}

// newSession opens a session channel, waiting for the previous one of the
// connection to be released (one at a time).
func newSession(t *testing.T, c *ssh.Client) *ssh.Session {
	t.Helper()
	var sess *ssh.Session
	var err error
	sshtest.Eventually(t, 5*time.Second, func() bool {
		sess, err = c.NewSession()
		return err == nil
	}, "no session channel: %v", func() string { return fmt.Sprint(err) })
	return sess
}

func errorsAs(err error, target any) bool { return err != nil && errors.As(err, target) }

// TestKeepaliveOnlyToQuietAgents: the bastion sends an agent nothing while
// it hears from it (any packet counts), asks one that went quiet, and keeps
// one that answers.
func TestKeepaliveOnlyToQuietAgents(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{keepalive: time.Second}) // quiet after 1s, dead 3s after asking
	nc, err := net.DialTimeout("tcp", w.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, w.addr, &ssh.ClientConfig{
		Config: sshalgo.Config(), User: "agent", Auth: []ssh.AuthMethod{ssh.PublicKeys(w.agent.Signer)},
		HostKeyCallback: ssh.FixedHostKey(w.hostKey.Signer.PublicKey()), HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		for c := range chans {
			c.Reject(ssh.Prohibited, "test")
		}
	}()
	var asked atomic.Int32
	go func() {
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				asked.Add(1)
			}
			r.Reply(false, nil)
		}
	}()
	if ok, _, err := conn.SendRequest("tcpip-forward", true, ssh.Marshal(struct {
		A string
		P uint32
	}{"pi", 22})); !ok || err != nil {
		t.Fatalf("register: %v %v", ok, err)
	}
	w.waitRegistered("pi:22")
	// Talking every 100 ms, three times as long as the quiet period: never asked.
	talk := time.NewTicker(100 * time.Millisecond)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); <-talk.C {
		if _, _, err := conn.SendRequest("keepalive@openssh.com", true, nil); err != nil {
			t.Fatal(err)
		}
	}
	talk.Stop()
	if n := asked.Load(); n != 0 {
		t.Errorf("the bastion sent %d keepalives to an agent it kept hearing from", n)
	}
	// Quiet: asked, answers (Reply above), asked again a quiet period
	// after each answer, and stays.
	quiet := time.Now()
	sshtest.Eventually(t, 10*time.Second, func() bool { return asked.Load() >= 3 }, "a quiet agent was not asked once a quiet period: %s in all", func() string { return fmt.Sprint(asked.Load()) })
	if len(w.srv.Snapshot(nil).Targets) != 1 {
		t.Errorf("an agent that answers was dropped:\n%s", w.rec.dump())
	}
	if n, most := asked.Load(), int32(time.Since(quiet)/time.Second)+2; n > most {
		t.Errorf("asked %d times in %s of quiet with a 1s quiet period, want one a quiet period", n, time.Since(quiet).Round(time.Millisecond))
	}
}

// An agent that cancels its last name goes down naming it: the SITE DOWN
// text says which site (releaseIfEmpty used to report no names at all).
func TestCancelLastNameReportsItDown(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	a := w.mustDial(w.agent)
	register(a, "pi", 22)
	sshtest.Eventually(t, 5*time.Second, func() bool { return w.rec.alertsWith("up site-agent") == 1 }, "no agent-up:\n%s", w.rec.dump())
	ok, _, _ := a.SendRequest("cancel-tcpip-forward", true, ssh.Marshal(struct {
		A string
		P uint32
	}{"pi", 22}))
	if !ok {
		t.Fatal("cancel refused")
	}
	sshtest.Eventually(t, 5*time.Second, func() bool { return w.rec.alertsWith("down site-agent") == 1 }, "no agent-down:\n%s", w.rec.dump())
	if w.rec.alertsWith("down site-agent [pi:22]") != 1 {
		t.Errorf("agent-down does not name pi:22:\n%s", w.rec.dump())
	}
}
