package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// siteWith connects the site agent, serving pi:22 and nuc:3389 by echo.
func (w *world) siteWith(key sshtest.Key, names ...string) *ssh.Client {
	w.t.Helper()
	c := w.mustDial(key)
	serveForwards(w.t, c)
	for _, n := range names {
		host, port, _ := strings.Cut(n, ":")
		var p uint32
		fmt.Sscan(port, &p)
		if ok, err := register(c, host, p); !ok || err != nil {
			w.t.Fatalf("register %s = %v, %v\n%s", n, ok, err, w.rec.dump())
		}
	}
	return c
}

// openErr is the rejection of a channel, or nil when it opened.
func openErr(t *testing.T, c *ssh.Client, target string) (net.Conn, error) {
	t.Helper()
	conn, err := c.Dial("tcp", target)
	if err == nil {
		t.Cleanup(func() { conn.Close() })
	}
	return conn, err
}

func wantRejected(t *testing.T, err error, why ssh.RejectionReason, substr string) {
	t.Helper()
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != why || !strings.Contains(oce.Message, substr) {
		t.Fatalf("got %v; want a %v rejection containing %q", err, why, substr)
	}
}

func waitClosed(t *testing.T, c *ssh.Client, within time.Duration, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatalf("%s: connection still open after %s", what, within)
	}
}

func TestChannelsPerConnection(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{MaxChannelsPerConn: 3}})
	w.siteWith(w.agent, "pi:22")
	op := w.mustDial(w.operator)
	var open []net.Conn
	for i := range 3 {
		c, err := openErr(t, op, "pi:22")
		if err != nil {
			t.Fatalf("channel %d: %v", i+1, err)
		}
		open = append(open, c)
	}
	_, err := openErr(t, op, "pi:22")
	wantRejected(t, err, ssh.ResourceShortage, "LIFELINE_MAX_CHANNELS_PER_CONN")
	// A session channel counts too.
	if _, err := op.NewSession(); err == nil {
		t.Fatal("session channel opened beyond the per-connection cap")
	}
	// Another connection of the same key is not affected, and closing one
	// channel makes room again.
	other := w.mustDial(w.operator)
	if _, err := openErr(t, other, "pi:22"); err != nil {
		t.Fatalf("second connection: %v", err)
	}
	open[0].Close()
	sshtest.Eventually(t, 5*time.Second, func() bool {
		c, err := op.Dial("tcp", "pi:22")
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "no room after closing a channel")
}

func TestOneSessionChannelAtATime(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	op := w.mustDial(w.operator)
	first, err := op.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.NewSession(); err == nil || !strings.Contains(err.Error(), "one session channel at a time") {
		t.Fatalf("second session channel: %v; want refused", err)
	}
	first.Close()
	sshtest.Eventually(t, 5*time.Second, func() bool {
		s, err := op.NewSession()
		if err == nil {
			s.Close()
		}
		return err == nil
	}, "no session channel after the first closed")
}

func TestChannelsPerKeyAndInTotal(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{MaxChannelsPerKey: 4, MaxChannels: 5}})
	w.siteWith(w.agent, "pi:22", "nuc:3389")
	a, b := w.mustDial(w.operator), w.mustDial(w.operator)
	for i := range 2 {
		for _, c := range []*ssh.Client{a, b} {
			if _, err := openErr(t, c, "pi:22"); err != nil {
				t.Fatalf("channel %d: %v", i, err)
			}
		}
	}
	_, err := openErr(t, a, "pi:22")
	wantRejected(t, err, ssh.ResourceShortage, "LIFELINE_MAX_CHANNELS_PER_KEY")
	// Another key still gets the one relay left, then the total is reached.
	bob := w.mustDial(w.limited)
	if _, err := openErr(t, bob, "nuc:3389"); err != nil {
		t.Fatalf("another key was locked out: %v", err)
	}
	_, err = openErr(t, bob, "nuc:3389")
	wantRejected(t, err, ssh.ResourceShortage, "LIFELINE_MAX_CHANNELS")
}

func TestConnectionsPerKeyNewestWins(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{MaxConnsPerKey: 2}})
	closed := make(chan int, 3)
	for i := range 3 {
		c := w.mustDial(w.operator)
		go func() { c.Wait(); closed <- i }()
		// Let the bastion track this login before the next one, so that
		// "oldest" is well defined.
		sshtest.Eventually(t, 5*time.Second, func() bool { return w.srv.liveConns() >= min(i+1, 2) }, "login %d not tracked", i)
	}
	select {
	case i := <-closed:
		if i != 0 {
			t.Fatalf("connection %d was closed; want the oldest (0)", i)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no connection closed with 3 of one key and a cap of 2")
	}
	sshtest.Eventually(t, 5*time.Second, func() bool { return w.srv.liveConns() == 2 }, "sessions = %d, want 2", w.srv.liveConns())
}

func TestRequestRateLimited(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{RequestsPerSecond: 5}})
	agent := w.siteWith(w.agent)
	refused := 0
	for range 30 { // fewer than a flood (5 x 5 refused)
		if ok, err := register(agent, "pi", 22); err != nil {
			t.Fatal(err)
		} else if !ok {
			refused++
		}
	}
	// A burst of twice the rate goes through, the rest of a fast burst not.
	if refused < 15 || refused > 22 {
		t.Fatalf("%d of 30 fast requests refused at 5/s; want about 20", refused)
	}
	if !w.rec.has(audit.KindRefused, "LIFELINE_REQUESTS_PER_SECOND") {
		t.Fatalf("refusal not audited with the variable:\n%s", w.rec.dump())
	}
	// Channel opens share the budget.
	op := w.mustDial(w.operator)
	rejected := 0
	for range 20 {
		if c, err := op.Dial("tcp", "pi:22"); err != nil {
			rejected++
		} else {
			c.Close()
		}
	}
	if rejected == 0 {
		t.Fatal("20 channel opens at once were all taken at 5/s")
	}
}

func TestRequestFloodClosesConnection(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{RequestsPerSecond: 1}})
	op := w.mustDial(w.operator)
	other := w.mustDial(w.operator) // a second connection of the same key
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if _, _, err := op.SendRequest("flood@example.com", true, nil); err != nil {
				return
			}
		}
	}()
	waitClosed(t, op, 20*time.Second, "a flood of global requests")
	waitClosed(t, other, 5*time.Second, "another connection of the flooding key")
	<-done
	if c, err := w.dial(w.operator); err == nil {
		c.Close()
		t.Fatal("the flooding key logged in again at once")
	}
	sshtest.Eventually(t, 5*time.Second, func() bool { return w.rec.has(audit.KindAuthFailed, "flooded the jump host") },
		"refused login of the flooding key not audited with why:\n%s", w.rec.dump())
	// Another key, from the same address, is not affected.
	w.mustDial(w.limited)
}

func TestRequestBudgetIsPerKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{RequestsPerSecond: 5}})
	a, b := w.siteWith(w.agent), w.siteWith(w.agent)
	taken := 0
	for i := range 20 {
		c := a
		if i%2 == 1 {
			c = b
		}
		if ok, _ := register(c, "nuc", 3389); ok {
			taken++
		}
	}
	// Two connections share one budget of 10 at once, not 10 each.
	if taken > 12 {
		t.Fatalf("%d of 20 requests taken over two connections of one key at 5/s", taken)
	}
}

func TestLinkReportsRateLimitedPerKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	agent := w.siteWith(w.agent, "pi:22")
	send := func(isp string) bool {
		payload, err := report.Encode(report.LinkReport{Time: time.Now(), ISP: isp, Verdict: report.VerdictOK})
		if err != nil {
			t.Fatal(err)
		}
		ok, _, err := agent.SendRequest(report.RequestType, true, payload)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for _, isp := range []string{"first", "second", "third"} {
		if !send(isp) {
			t.Fatalf("report %q of a burst of 3 refused", isp)
		}
	}
	if send("fourth") {
		t.Fatal("a fourth report within LIFELINE_REPORT_EVERY was taken")
	}
	// Reconnecting does not reset the budget: it is per key.
	again := w.siteWith(w.agent)
	payload, _ := report.Encode(report.LinkReport{Time: time.Now(), ISP: "fifth", Verdict: report.VerdictOK})
	if ok, _, _ := again.SendRequest(report.RequestType, true, payload); ok {
		t.Fatal("a new connection of the same key reset the report budget")
	}
	for _, ts := range w.srv.Snapshot(nil).Targets {
		if ts.Link == nil || ts.Link.ISP != "third" {
			t.Fatalf("status shows %+v; want the last report taken kept", ts.Link)
		}
	}
}

func TestReloadClosesRevokedConnections(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.siteWith(w.agent, "pi:22", "nuc:3389")
	alice := w.mustDial(w.operator)
	bob := w.mustDial(w.limited)
	if _, err := openErr(t, bob, "pi:22"); err == nil {
		t.Fatal("bob reached pi:22 before the reload")
	}
	// The server tracks a connection just after the client's handshake ends.
	sshtest.Eventually(t, 5*time.Second, func() bool { return w.srv.liveConns() == 3 }, "connections not tracked")
	agents := []string{w.agent.AuthorizedLine(`permitlisten="pi:22",permitlisten="nuc:3389"`, "site-agent")}
	// alice is removed; bob may now reach pi:22 instead of nuc:3389.
	closed := w.reload(agents, []string{w.limited.AuthorizedLine(`permitopen="pi:22"`, "bob@phone")})
	if closed != 1 {
		t.Fatalf("reload closed %d connections, want 1 (alice)", closed)
	}
	waitClosed(t, alice, 5*time.Second, "a removed key")
	if !w.rec.has(audit.KindRefused, "no longer authorized") {
		t.Fatalf("revocation not audited:\n%s", w.rec.dump())
	}
	if _, err := openErr(t, bob, "pi:22"); err != nil {
		t.Fatalf("bob after permitopen changed to pi:22: %v", err)
	}
	_, err := openErr(t, bob, "nuc:3389")
	wantRejected(t, err, ssh.Prohibited, "not permitted")
	// Agents lose the names their key no longer permits.
	w.reload([]string{w.agent.AuthorizedLine(`permitlisten="pi:22"`, "site-agent")}, nil)
	sshtest.Eventually(t, 5*time.Second, func() bool {
		_, ok := w.srv.reg.Lookup("nuc", 3389)
		return !ok
	}, "nuc:3389 still registered after it left the key's permitlisten")
}

func TestCertificateExpiryClosesConnection(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	_, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caPriv)
	_, userPriv, _ := ed25519.GenerateKey(rand.Reader)
	user, _ := ssh.NewSignerFromKey(userPriv)
	cert := &ssh.Certificate{
		Key: user.PublicKey(), CertType: ssh.UserCert, KeyId: "carol", ValidPrincipals: []string{"ops"},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(3 * time.Second).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-port-forwarding": ""}},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	certSigner, _ := ssh.NewCertSigner(cert, user)
	caLine := "cert-authority,principals=\"ops\" " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.PublicKey())))
	w.reload([]string{w.agent.AuthorizedLine(`permitlisten="pi:22"`, "site-agent")}, []string{caLine})
	c, err := ssh.Dial("tcp", w.addr, &ssh.ClientConfig{
		Config: sshalgo.Config(), User: "ops", Auth: []ssh.AuthMethod{ssh.PublicKeys(certSigner)},
		HostKeyCallback: ssh.FixedHostKey(w.hostKey.Signer.PublicKey()), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("certificate login: %v", err)
	}
	defer c.Close()
	waitClosed(t, c, 10*time.Second, "a certificate past its valid-before")
	if !w.rec.has(audit.KindRefused, "login expired") {
		t.Fatalf("expiry not audited:\n%s", w.rec.dump())
	}
}

func TestNameTakenOverThenHandedBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.siteWith(w.agent, "pi:22")
	spare := w.siteWith(w.spare, "pi:22")
	sshtest.Eventually(t, 5*time.Second, func() bool {
		return w.rec.alertsWith("moved pi:22 to spare-agent from site-agent takeover=true") == 1
	}, "takeover by another key not reported:\n%s", w.rec.dump())
	if b, _ := w.srv.reg.Lookup("pi", 22); b.Session.identity().Name != "spare-agent" {
		t.Fatalf("pi:22 held by %s, want the newest, spare-agent", b.Session.identity().Name)
	}
	spare.Close()
	sshtest.Eventually(t, 5*time.Second, func() bool {
		return w.rec.alertsWith("moved pi:22 to site-agent from spare-agent takeover=false") == 1
	}, "hand-back not reported:\n%s", w.rec.dump())
	op := w.mustDial(w.operator)
	if _, err := openErr(t, op, "pi:22"); err != nil {
		t.Fatalf("pi:22 lost after the newer holder left: %v\n%s", err, w.rec.dump())
	}
	if n := w.rec.alertsWith("down site-agent"); n != 0 {
		t.Fatalf("the original agent, still connected, was reported down:\n%s", w.rec.dump())
	}
}

func TestStatusAlertSectionOnlyForUnrestrictedOperators(t *testing.T) {
	t.Parallel()
	q := &alertQueue{st: alert.Status{Sender: "twilio", Permanent: 1, LastPermanent: "texting +15551234567 via AC123 failed"}}
	w := newWorld(t, worldOpts{alerts: q})
	w.siteWith(w.agent, "pi:22", "nuc:3389")
	status := func(key sshtest.Key) string {
		c := w.mustDial(key)
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		out, _ := s.Output("status")
		return string(out)
	}
	if out := status(w.operator); !strings.Contains(out, "+15551234567") {
		t.Fatalf("unrestricted operator's status lacks the alert section:\n%s", out)
	}
	out := status(w.limited)
	if strings.Contains(out, "+15551234567") || strings.Contains(out, "AC123") || strings.Contains(out, "pi:22") {
		t.Fatalf("restricted operator sees more than its target:\n%s", out)
	}
	if !strings.Contains(out, "nuc:3389") {
		t.Fatalf("restricted operator does not see its own target:\n%s", out)
	}
	if !w.rec.has(audit.KindStatus, "status") {
		t.Fatalf("status call not audited:\n%s", w.rec.dump())
	}
}

func TestIdleOperatorConnectionClosed(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{IdleTimeout: 700 * time.Millisecond}})
	w.siteWith(w.agent, "pi:22")
	idle := w.mustDial(w.operator)
	busy := w.mustDial(w.operator)
	if _, err := openErr(t, busy, "pi:22"); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, idle, 5*time.Second, "an operator connection without channels")
	if !w.rec.has(audit.KindRefused, "LIFELINE_IDLE_TIMEOUT") {
		t.Fatalf("idle close not audited:\n%s", w.rec.dump())
	}
	time.Sleep(1500 * time.Millisecond) // longer than the timeout: busy must survive it
	if _, _, err := busy.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Fatalf("connection with an open channel was closed: %v", err)
	}
}

func TestNamesPerConnection(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{MaxNamesPerConn: 1}})
	agent := w.siteWith(w.agent, "pi:22")
	if ok, _ := register(agent, "nuc", 3389); ok {
		t.Fatal("second name taken beyond LIFELINE_MAX_NAMES_PER_CONN=1")
	}
	if ok, _ := register(agent, "pi", 22); !ok {
		t.Fatal("re-registering a name already held was refused")
	}
	if !w.rec.has(audit.KindRefused, "LIFELINE_MAX_NAMES_PER_CONN") {
		t.Fatalf("not audited:\n%s", w.rec.dump())
	}
}

func TestNonASCIINamesRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	agent := w.siteWith(w.agent)
	// U+0131 and U+017F fold to i and s under Unicode rules: never a permit match.
	for _, name := range []string{"p\u0131", "\u017fpi"} {
		if ok, _ := register(agent, name, 22); ok {
			t.Fatalf("%q registered against permitlisten=\"pi:22\"", name)
		}
	}
}

func TestChannelsPerKeyToOneAgent(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{MaxChannelsPerAgent: 2}})
	w.siteWith(w.agent, "pi:22", "nuc:3389")
	alice := w.mustDial(w.operator)
	for range 2 {
		if _, err := openErr(t, alice, "pi:22"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := openErr(t, alice, "nuc:3389") // the same agent, another name
	wantRejected(t, err, ssh.ResourceShortage, "LIFELINE_MAX_CHANNELS_PER_AGENT")
	bob := w.mustDial(w.limited)
	if _, err := openErr(t, bob, "nuc:3389"); err != nil {
		t.Fatalf("another key was kept from the site: %v", err)
	}
}

// alertQueue is a hand-written AlertQueue that counts its snapshots.
type alertQueue struct {
	mu    sync.Mutex
	st    alert.Status
	calls int
}

func (q *alertQueue) Status() alert.Status {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls++
	st := q.st
	st.Sent = q.calls // every snapshot differs
	return st
}

func (q *alertQueue) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.calls
}

// One status command takes one snapshot of the alert queue, and its text
// and --json show that snapshot, under the --json field names of before.
func TestStatusTakesOneAlertSnapshot(t *testing.T) {
	t.Parallel()
	q := &alertQueue{st: alert.Status{Sender: "twilio"}}
	w := newWorld(t, worldOpts{alerts: q})
	run := func(cmd string) string {
		c := w.mustDial(w.operator)
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		out, err := s.Output(cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return string(out)
	}
	before := q.count()
	out := run("status")
	if n := q.count() - before; n != 1 {
		t.Errorf("text status took %d alert snapshots, want 1", n)
	}
	if want := fmt.Sprintf("alerts via twilio: 0 pending, %d texts sent", q.count()); !strings.Contains(out, want) {
		t.Errorf("text status lacks %q:\n%s", want, out)
	}
	before = q.count()
	out = run("status --json")
	if n := q.count() - before; n != 1 {
		t.Errorf("status --json took %d alert snapshots, want 1", n)
	}
	var got struct {
		Alerts map[string]any `json:"alerts"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, k := range []string{"notifier", "pending", "sent", "rate_limited", "overflow", "quiet", "undeliverable"} {
		if _, ok := got.Alerts[k]; !ok {
			t.Errorf("status --json alerts lacks %q: %v", k, got.Alerts)
		}
	}
}
