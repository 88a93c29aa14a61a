package server

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/wire"
)

// checkForward sends the agent doctor's dry-run registration request and
// returns the answer and the reason of a refusal.
func checkForward(t *testing.T, c *ssh.Client, payload []byte) (bool, string) {
	t.Helper()
	ok, reply, err := c.SendRequest(wire.CheckForwardRequest, true, payload)
	if err != nil {
		t.Fatalf("%s: %v", wire.CheckForwardRequest, err)
	}
	if ok {
		if len(reply) != 0 {
			t.Errorf("a permitted check replied with payload %q, want none", reply)
		}
		return true, ""
	}
	var r wire.CheckForwardReason
	if err := ssh.Unmarshal(reply, &r); err != nil {
		t.Fatalf("refusal payload %q is not one SSH string: %v", reply, err)
	}
	return false, r.Reason
}

func forwardPayload(name string, port uint32) []byte {
	return wire.Forward{BindAddr: name, BindPort: port}.Marshal()
}

// TestCheckForward: the dry run answers what tcpip-forward would, and
// registers nothing: the name's holder keeps it, whether the asker is
// another key permitted the name (a real registration would take it over)
// or the holder's own key (a real one would close the holder as stale).
func TestCheckForward(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	holder := w.mustDial(w.agent)
	seen := serveForwards(t, holder)
	if ok, err := register(holder, "pi", 22); !ok || err != nil {
		t.Fatalf("register pi:22: %v %v", ok, err)
	}
	w.waitRegistered("pi:22")

	spare := w.mustDial(w.spare)       // another key permitted pi:22
	sameKey := w.mustDial(w.agent)     // the holder's own key: the agent's doctor
	operator := w.mustDial(w.operator) // a person
	tests := []struct {
		name    string
		c       *ssh.Client
		payload []byte
		ok      bool
		reason  string
	}{
		{"another key permitted the held name", spare, forwardPayload("pi", 22), true, ""},
		{"the holder's own key", sameKey, forwardPayload("pi", 22), true, ""},
		{"a second name of the holder's key", sameKey, forwardPayload("nuc", 3389), true, ""},
		{"case folded as a registration is", spare, forwardPayload("PI", 22), true, ""},
		{"a name not in the key's permitlisten", spare, forwardPayload("nuc", 3389), false, `not permitted: this key's permitlisten is "pi:22"`},
		{"another port of a permitted name", sameKey, forwardPayload("pi", 2222), false, `not permitted: this key's permitlisten is "pi:22,nuc:3389"`},
		{"an operator key", operator, forwardPayload("pi", 22), false, "this key is an operator's, not an agent's"},
		{"an address, not a name", spare, forwardPayload("127.0.0.1", 22), false, "is an address: targets are registered names"},
		{"malformed payload", spare, []byte("junk"), false, "malformed tcpip-forward request"},
		{"port 0", spare, forwardPayload("pi", 0), false, "bind port 0"},
	}
	for _, tc := range tests {
		ok, reason := checkForward(t, tc.c, tc.payload)
		if ok != tc.ok || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: got %v %q, want %v %q", tc.name, ok, reason, tc.ok, tc.reason)
		}
	}

	// Nothing moved: the holder is open and still holds pi:22 alone, no
	// takeover or registration was recorded, no alert raised.
	if _, _, err := holder.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Fatalf("the holder's connection was closed by a check: %v", err)
	}
	snap := w.srv.Snapshot(nil)
	var holders []string
	for _, ts := range snap.Targets {
		holders = append(holders, ts.Target+" by "+ts.Agent)
	}
	if len(holders) != 1 || holders[0] != "pi:22 by site-agent" {
		t.Errorf("registrations after the checks: %v, want only pi:22 by site-agent", holders)
	}
	for _, kind := range []string{audit.KindTakeover, audit.KindRegister} {
		if e, found := w.rec.find(kind, func(e audit.Event) bool { return e.Key != "site-agent" || e.Session != w.sessionOf(holder) }); found {
			t.Errorf("a check recorded %s: %+v", kind, e)
		}
	}
	for _, a := range []string{"moved", "up spare-agent", "down"} {
		if w.rec.alertsWith(a) != 0 {
			t.Errorf("a check raised an alert %q:\n%s", a, w.rec.dump())
		}
	}
	// The name still leads to the holder.
	op := w.mustDial(w.operator)
	c, err := op.Dial("tcp", "pi:22")
	if err != nil {
		t.Fatalf("jump to pi:22 after the checks: %v", err)
	}
	c.Close()
	sshtest.Eventually(t, 5*time.Second, func() bool { return len(*seen) > 0 }, "the jump did not reach the holder")

	// The same request from a key that may not: a real tcpip-forward is
	// refused with the same reason in the audit log.
	if ok, _ := register(spare, "nuc", 3389); ok {
		t.Fatal("tcpip-forward of a name outside permitlisten was accepted")
	}
	if !w.rec.has(audit.KindRefused, `name nuc:3389: not permitted: this key's permitlisten is \"pi:22\"`) {
		t.Errorf("refused registration not audited with the reason:\n%s", w.rec.dump())
	}
}

// sessionOf is the session ID of a client's connection, as the audit log
// names it.
func (w *world) sessionOf(c *ssh.Client) string {
	for _, ss := range w.srv.snapshotConns() {
		if string(ss.sc.SessionID()) == string(c.SessionID()) {
			return ss.id
		}
	}
	return ""
}

// TestCheckForwardRateLimited: the dry run spends the key's request budget
// like any global request, and a refusal still says why.
func TestCheckForwardRateLimited(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{RequestsPerSecond: 2}})
	c := w.mustDial(w.agent)
	refused, reason := 0, ""
	for range 10 { // a burst of 4 goes through, then 2 a second
		if ok, why := checkForward(t, c, forwardPayload("pi", 22)); !ok {
			refused++
			reason = why
		}
	}
	if refused < 4 {
		t.Fatalf("%d of 10 fast checks refused at 2/s; want most of them", refused)
	}
	if !strings.Contains(reason, "LIFELINE_REQUESTS_PER_SECOND") {
		t.Errorf("rate-limited check answered %q; want the limit named", reason)
	}
}
