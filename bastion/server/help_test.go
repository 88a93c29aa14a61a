package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/ban"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// jumpErr is the refusal an operator sees for a jump to target.
func jumpErr(t *testing.T, c *ssh.Client, target string) string {
	t.Helper()
	conn, err := c.Dial("tcp", target)
	if err == nil {
		conn.Close()
		t.Fatalf("jump to %s was accepted", target)
	}
	return err.Error()
}

func statusOf(t *testing.T, c *ssh.Client, args string) string {
	t.Helper()
	sess := newSession(t, c)
	defer sess.Close()
	out, err := sess.Output(strings.TrimSpace("status " + args))
	if err != nil {
		t.Fatalf("status %s: %v", args, err)
	}
	return string(out)
}

// TestOfflineAndUnknownSites: a known site whose agent is gone says so,
// with when, from where and why, in the refusal and in status; a known
// site never connected says that; an unknown name says unknown and lists
// the sites; an operator limited by permitopen sees only its own.
func TestOfflineAndUnknownSites(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{keepalive: 200 * time.Millisecond})
	relay := sshtest.NewRelay(t, w.addr)
	direct := w.addr
	w.addr = relay.Addr
	a := w.mustDial(w.agent)
	w.addr = direct
	serveForwards(t, a)
	if ok, _ := register(a, "pi", 22); !ok {
		t.Fatal("register pi:22")
	}
	payload, _ := report.Encode(report.LinkReport{Time: time.Now(), ISP: "T-Mobile", Verdict: report.VerdictOK, DownloadBps: 24e6, LatencyMS: 41})
	if ok, _, _ := a.SendRequest(report.RequestType, true, payload); !ok {
		t.Fatal("link report refused")
	}
	relay.BlackHole()
	sshtest.Eventually(t, 5*time.Second, func() bool { return len(w.srv.Snapshot(nil).Targets) == 0 }, "black-holed agent never dropped")

	op := w.mustDial(w.operator)
	got := jumpErr(t, op, "pi:22")
	for _, want := range []string{"pi:22 is offline since ", "Z (last seen from 127.0.0.1, keepalive timeout); see: ssh test-bastion status"} {
		if !strings.Contains(got, want) {
			t.Errorf("jump to an offline site: %q lacks %q", got, want)
		}
	}
	if got := jumpErr(t, op, "nuc:3389"); !strings.Contains(got, "nuc:3389 is offline: its agent has not connected since the bastion started at") {
		t.Errorf("jump to a site never connected: %q", got)
	}
	got = jumpErr(t, op, "nas:445")
	if !strings.Contains(got, "nas:445 is unknown") || !strings.Contains(got, "cam:80, nuc:3389, pi:22") {
		t.Errorf("jump to an unknown name: %q", got)
	}

	st := w.srv.Snapshot(nil)
	var pi *OfflineStatus
	for i, o := range st.Offline {
		if o.Target == "pi:22" {
			pi = &st.Offline[i]
		}
	}
	if pi == nil || pi.OfflineSince == nil || pi.LastSeenFrom == "" || !strings.HasPrefix(pi.LastReason, "keepalive timeout") ||
		pi.Agent != "site-agent" || pi.Link == nil || pi.Link.ISP != "T-Mobile" {
		t.Fatalf("status --json does not describe the offline site: %+v", st.Offline)
	}
	text := statusOf(t, op, "")
	for _, want := range []string{"offline", "pi:22", "keepalive timeout", "link ok at", "nuc:3389", "cam:80", "not connected since the bastion started"} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}

	// The operator limited to nuc:3389 sees nothing of the others.
	lim := w.mustDial(w.limited)
	for _, target := range []string{"pi:22", "cam:80", "nas:445"} {
		got := jumpErr(t, lim, target)
		if strings.Contains(got, "offline") || strings.Contains(got, "pi:22,") || strings.Contains(got, "cam:80,") || !strings.Contains(got, "nuc:3389") {
			t.Errorf("limited operator, jump to %s: %q shows other sites or not its own", target, got)
		}
	}
	text = statusOf(t, lim, "")
	if strings.Contains(text, "pi:22") || strings.Contains(text, "cam:80") || !strings.Contains(text, "nuc:3389") {
		t.Errorf("limited operator's status shows other sites:\n%s", text)
	}
	var lst Status
	if err := json.Unmarshal([]byte(statusOf(t, lim, "--json")), &lst); err != nil || len(lst.Offline) != 1 || lst.Offline[0].Target != "nuc:3389" || len(lst.Targets) != 0 {
		t.Errorf("limited operator's status --json: %+v (%v)", lst, err)
	}

	// Back online: no longer offline.
	a2 := w.mustDial(w.agent)
	serveForwards(t, a2)
	register(a2, "pi", 22)
	c, err := op.Dial("tcp", "pi:22")
	if err != nil {
		t.Fatalf("jump after the agent came back: %v", err)
	}
	c.Close()
	for _, o := range w.srv.Snapshot(nil).Offline {
		if o.Target == "pi:22" {
			t.Errorf("pi:22 online and still listed offline")
		}
	}
}

// TestStatusFitsAndShortFingerprints: the text fits 100 columns with long
// names and comments, with short fingerprints; --json has the full ones.
func TestStatusFitsAndShortFingerprints(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	long := sshtest.NewKey(t, w.dir, "long")
	w.reload([]string{
		w.agent.AuthorizedLine(`permitlisten="pi:22",permitlisten="nuc:3389",permitlisten="a-very-long-site-name-at-the-far-end.example:65000"`, "site-agent-with-a-rather-long-comment@radio-pi.example"),
		long.AuthorizedLine(`permitlisten="cam:80"`, "cam"),
	}, []string{w.operator.AuthorizedLine("", "alice@laptop")})
	a := w.mustDial(w.agent)
	register(a, "pi", 22)
	register(a, "a-very-long-site-name-at-the-far-end.example", 65000)
	payload, _ := report.Encode(report.LinkReport{Time: time.Now(), ISP: "Some Carrier With A Long Name Inc.", Verdict: report.VerdictFailed,
		Reasons: []string{"download 2.0 Mbit/s below 10 Mbit/s", "latency 340 ms above 100 ms"}})
	a.SendRequest(report.RequestType, true, payload)
	op := w.mustDial(w.operator)
	text := statusOf(t, op, "")
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if n := utf8.RuneCountInString(line); n > 100 {
			t.Errorf("%d columns: %q", n, line)
		}
	}
	fp := ssh.FingerprintSHA256(w.agent.Signer.PublicKey())
	if strings.Contains(text, fp) || !strings.Contains(text, fp[:15]) {
		t.Errorf("text status should have the short fingerprint %s only:\n%s", fp[:15], text)
	}
	if !strings.Contains(statusOf(t, op, "--json"), fp) {
		t.Errorf("status --json lacks the full fingerprint %s", fp)
	}
	t.Logf("status:\n%s", text)
}

// TestPTYGetsHelp: a PTY is granted only so that the help reaches the
// terminal (CR LF line ends); the shell then exits 1.
func TestPTYGetsHelp(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	op := w.mustDial(w.operator)
	sess := newSession(t, op)
	defer sess.Close()
	if err := sess.RequestPty("xterm", 24, 80, nil); err != nil {
		t.Fatalf("pty-req refused: %v", err)
	}
	var stdout bytes.Buffer
	sess.Stdout = &stdout
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	err := sess.Wait()
	var exitErr *ssh.ExitError
	if !errorsAs(err, &exitErr) || exitErr.ExitStatus() != 1 {
		t.Errorf("shell with a PTY: %v, want exit status 1", err)
	}
	if out := stdout.String(); !strings.Contains(out, "not a shell;") || !strings.Contains(out, "ssh -J test-bastion pi\r\n") {
		t.Errorf("help on the PTY: %q", out)
	}
	if !w.rec.has(audit.KindRefused, "shell with a PTY") {
		t.Errorf("not audited:\n%s", w.rec.dump())
	}
	// SetEnv LIFELINE_HOST names the jump host as the operator's ssh_config does.
	sess = newSession(t, op)
	sess.Setenv("LIFELINE_HOST", "lifeline")
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	sess.Run("id")
	if !strings.Contains(stderr.String(), "ssh -J lifeline pi") {
		t.Errorf("help with LIFELINE_HOST=lifeline: %q", stderr.String())
	}
}

// TestSubsystemExplained: sftp (and scp in its SFTP mode) gets one line on
// stderr saying how to copy through the jump host, then exit status 1.
func TestSubsystemExplained(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	op := w.mustDial(w.operator)
	ch, reqs, err := op.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	status := make(chan uint32, 1)
	go func() {
		for r := range reqs {
			if r.Type == "exit-status" && len(r.Payload) == 4 {
				status <- uint32(r.Payload[0])<<24 | uint32(r.Payload[1])<<16 | uint32(r.Payload[2])<<8 | uint32(r.Payload[3])
			}
		}
	}()
	if ok, err := ch.SendRequest("subsystem", true, ssh.Marshal(struct{ Name string }{"sftp"})); err != nil || !ok {
		t.Fatalf("subsystem request: %v %v", ok, err)
	}
	got, _ := io.ReadAll(ch.Stderr())
	select {
	case code := <-status:
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
	case <-time.After(5 * time.Second):
		t.Error("no exit status")
	}
	if strings.Count(string(got), "\n") != 1 || !strings.Contains(string(got), "jump host without sftp") || !strings.Contains(string(got), "scp -J test-bastion file pi:") {
		t.Errorf("explanation: %q", got)
	}
	if !w.rec.has(audit.KindRefused, "subsystem sftp") {
		t.Errorf("not audited:\n%s", w.rec.dump())
	}
}

// TestRefusalsNameNoServerPath: what a client is told never names the key
// files; the audit log has the file and line.
func TestRefusalsNameNoServerPath(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	a := w.mustDial(w.agent)
	serveForwards(t, a)
	register(a, "pi", 22)
	lim := w.mustDial(w.limited)
	op := w.mustDial(w.operator)
	var seen []string
	for _, target := range []string{"pi:22", "cam:80", "nas:445", "127.0.0.1:22", "localhost:22"} {
		seen = append(seen, jumpErr(t, lim, target))
	}
	// Alice's key gets a from= that no longer admits her: her next channel
	// is refused and the connection closed.
	w.reload([]string{
		w.agent.AuthorizedLine(`permitlisten="pi:22",permitlisten="nuc:3389"`, "site-agent"),
	}, []string{
		w.operator.AuthorizedLine(`from="10.0.0.0/8"`, "alice@laptop"),
		w.limited.AuthorizedLine(`permitopen="nuc:3389"`, "bob@phone"),
	})
	if _, err := op.Dial("tcp", "pi:22"); err != nil {
		seen = append(seen, err.Error())
	}
	for _, s := range seen {
		if strings.Contains(s, w.dir) || strings.Contains(s, "operators:") || strings.Contains(s, "agents:") {
			t.Errorf("refusal names a server path: %q", s)
		}
	}
	if !w.rec.has(audit.KindRefused, w.dir+"/operators:2") {
		t.Errorf("the audit log lacks the file and line of the permitopen refusal:\n%s", w.rec.dump())
	}
	if !w.rec.has(audit.KindRefused, "from=") {
		t.Errorf("the audit log lacks the from= detail:\n%s", w.rec.dump())
	}
}

// dialKeys tries every key in one connection, as a client with many keys
// in its agent does.
func dialKeys(w *world, keys ...sshtest.Key) error {
	var signers []ssh.Signer
	for _, k := range keys {
		signers = append(signers, k.Signer)
	}
	c, err := ssh.Dial("tcp", w.addr, &ssh.ClientConfig{
		Config: sshalgo.Config(), User: "tester", Auth: []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback: ssh.FixedHostKey(w.hostKey.Signer.PublicKey()), Timeout: 5 * time.Second,
	})
	if err == nil {
		c.Close()
	}
	return err
}

// TestBanCountsConnectionsAndIsVisible: a client offering five keys
// that are all refused counts one failure, not five; once banned, the
// source is told why and until when.
func TestBanCountsConnectionsAndIsVisible(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{bans: ban.New(3, time.Minute, time.Hour, nil)})
	var strangers []sshtest.Key
	for i := range 5 {
		strangers = append(strangers, sshtest.NewKey(t, w.dir, fmt.Sprintf("stranger%d", i)))
	}
	for range 2 {
		if err := dialKeys(w, strangers...); err == nil {
			t.Fatal("strangers logged in")
		}
	}
	sshtest.Eventually(t, 5*time.Second, func() bool {
		n := 0
		w.rec.mu.Lock()
		for _, e := range w.rec.events {
			if e.Kind == audit.KindAuthFailed {
				n++
			}
		}
		w.rec.mu.Unlock()
		return n == 2
	}, "want 2 failed connections audited:\n%s", w.rec.dump)
	if w.rec.has(audit.KindBanned, "127.0.0.1") {
		t.Fatalf("banned after 2 connections (10 keys) with a threshold of 3:\n%s", w.rec.dump())
	}
	dialKeys(w, strangers...)
	sshtest.Eventually(t, 5*time.Second, func() bool { return w.rec.has(audit.KindBanned, "127.0.0.1") }, "not banned after 3 connections:\n%s", w.rec.dump)

	// The banned source reads one line before the version line, then a
	// disconnect message with the same words.
	nc, err := net.DialTimeout("tcp", w.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(nc, "SSH-2.0-OpenSSH_9.2p1\r\n")
	raw, _ := io.ReadAll(nc)
	nc.Close()
	first, _, _ := strings.Cut(string(raw), "\r\n")
	if !strings.HasPrefix(first, "lifeline: 127.0.0.1 is refused until ") || !strings.Contains(first, "repeated failed logins") {
		t.Errorf("first line to a banned source: %q", first)
	}
	if !bytes.Contains(raw, []byte("\r\nSSH-2.0-lifeline\r\n")) || bytes.Count(raw, []byte("is refused until")) != 2 {
		t.Errorf("no version line and disconnect message: %q", raw)
	}
	// Go's client reports the disconnect.
	if err := dialKeys(w, w.operator); err == nil || !strings.Contains(err.Error(), "refused until") {
		t.Errorf("Go client, banned: %v", err)
	}
	// And OpenSSH prints it.
	if _, err := exec.LookPath("ssh"); err == nil {
		kh := w.knownHosts()
		out, _ := sshtest.Run(context.Background(), 20*time.Second, nil, "ssh", "-F", "/dev/null", "-p", fmt.Sprint(w.port),
			"-i", w.operator.Path, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "UserKnownHostsFile="+kh,
			"-o", "StrictHostKeyChecking=yes", "operator@127.0.0.1", "status")
		if !strings.Contains(out, "refused until") {
			t.Errorf("OpenSSH does not show why it is refused:\n%s", out)
		}
		t.Logf("OpenSSH, banned:\n%s", out)
	}
}

func TestProfileForClientVersions(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    profile
	}{
		{"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", profileGCM},
		{"SSH-2.0-OpenSSH_6.2", profileGCM},
		{"SSH-2.0-OpenSSH_5.3", profileCompat},
		{"SSH-2.0-OpenSSH_for_Windows_8.1", profileCompat},
		{"SSH-2.0-PuTTY_Release_0.78", profileGCM},
		{"SSH-2.0-PuTTY_Release_0.75", profileCompat},
		{"SSH-2.0-Go", profileGCM},
		{"SSH-2.0-lifeline_agent_dev", profileAgent},
		{"SSH-2.0-AsyncSSH_2.10.1", profileGCM},
		{"SSH-2.0-dropbear_2022.83", profileCompat},
		{"SSH-2.0-paramiko_2.12.0", profileCompat},
		{"SSH-2.0-libssh_0.10.4", profileCompat},
		{"SSH-1.5-old", profileCompat},
		{"", profileCompat},
	} {
		if got := profileFor(tc.version); got != tc.want {
			t.Errorf("profileFor(%q) = %s, want %s", tc.version, got, tc.want)
		}
	}
	// Every profile stays inside the audited lists.
	for _, p := range profiles {
		c := p.algorithms()
		for _, ci := range c.Ciphers {
			if !strings.Contains(strings.Join(sshalgo.Ciphers(), " "), ci) {
				t.Errorf("profile %s offers %s, not in sshalgo.Ciphers", p, ci)
			}
		}
	}
}

// TestPeekKeepsTheHandshake: lines before the client's version line, and a
// client that waits for the server's line first, still get in; the
// negotiated cipher follows the client's software.
func TestPeekKeepsTheHandshake(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	for _, tc := range []struct {
		version string
		ciphers []string
		want    string
	}{
		{"SSH-2.0-OpenSSH_9.2p1", []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES128CTR, ssh.CipherAES128GCM}, ssh.CipherAES128GCM}, // OpenSSH's order, yet GCM
		{"SSH-2.0-dropbear_2022.83", []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES128CTR}, ssh.CipherChaCha20Poly1305},
		{"SSH-2.0-paramiko_2.12.0", []string{ssh.CipherAES128CTR}, ssh.CipherAES128CTR},
		// The agent picks by its CPU, and is offered both.
		{"SSH-2.0-lifeline_agent_dev", sshalgo.AgentCiphers(false), ssh.CipherChaCha20Poly1305},
		{"SSH-2.0-lifeline_agent_dev", sshalgo.AgentCiphers(true), ssh.CipherAES128GCM},
	} {
		algo := sshalgo.Config()
		algo.Ciphers = tc.ciphers
		nc, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		// Wait for the server's line before sending anything, as some clients do.
		buf := make([]byte, 18)
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(nc, buf); err != nil || string(buf) != "SSH-2.0-lifeline\r\n" {
			t.Fatalf("server line %q: %v", buf, err)
		}
		nc.SetReadDeadline(time.Time{})
		conn, chans, reqs, err := ssh.NewClientConn(&prefixConn{Conn: nc, prefix: []byte("hello from a proxy\r\n")}, w.addr, &ssh.ClientConfig{
			Config: algo, User: "tester", Auth: []ssh.AuthMethod{ssh.PublicKeys(w.operator.Signer)},
			HostKeyCallback: ssh.FixedHostKey(w.hostKey.Signer.PublicKey()), ClientVersion: tc.version,
			HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		})
		if err != nil {
			t.Fatalf("%s: %v", tc.version, err)
		}
		c := ssh.NewClient(conn, chans, reqs)
		if got := conn.(ssh.AlgorithmsConnMetadata).Algorithms().Write.Cipher; got != tc.want {
			t.Errorf("%s: cipher %s, want %s", tc.version, got, tc.want)
		}
		c.Close()
	}
}

// prefixConn writes prefix before its first write (a line before the
// version line) and skips the server's version line, already read.
type prefixConn struct {
	net.Conn
	prefix  []byte
	written bool
	skipped bool
}

func (c *prefixConn) Write(p []byte) (int, error) {
	if !c.written {
		c.written = true
		if _, err := c.Conn.Write(append(append([]byte{}, c.prefix...), p...)); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if !c.skipped {
		// The client reads the server's version line byte by byte: give it
		// the line it already missed.
		c.skipped = true
		c.Conn = &replayConn{Conn: c.Conn, pending: []byte("SSH-2.0-lifeline\r\n")}
	}
	return c.Conn.Read(p)
}

type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
