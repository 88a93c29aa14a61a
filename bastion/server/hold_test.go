package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/outage"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// keeper runs a real outage-mode keeper on a fake clock (idle 0: off) and
// returns it, its clock and its power-off request path.
func keeper(t *testing.T, idle time.Duration) (*outage.Keeper, *clocktest.Fake, string) {
	t.Helper()
	clk := clocktest.New(time.Date(2026, 11, 22, 14, 3, 0, 0, time.UTC))
	dir := t.TempDir()
	req := filepath.Join(dir, "poweroff")
	k, err := outage.New(outage.Config{Idle: idle, StateDir: dir, RequestPath: req, Clock: clk, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); k.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	if idle > 0 {
		sshtest.Eventually(t, 5*time.Second, func() bool { return !k.Status().Started.IsZero() }, "keeper running")
	}
	return k, clk, req
}

// run runs cmd in a session of c: stdout, stderr, exit status.
func run(t *testing.T, c *ssh.Client, cmd string) (string, string, int) {
	t.Helper()
	sess := newSession(t, c)
	defer sess.Close()
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	err := sess.Run(cmd)
	code := 0
	var exitErr *ssh.ExitError
	if errorsAs(err, &exitErr) {
		code = exitErr.ExitStatus()
	} else if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return stdout.String(), stderr.String(), code
}

// `hold` sets outage mode's hold for an operator key without permitopen,
// refuses a restricted key and a hold above the maximum, saying why, and
// audits each; status shows the hold (who holds it only to viewers who see
// all) and what keeps the host up.
func TestHold(t *testing.T) {
	t.Parallel()
	k, clk, _ := keeper(t, 30*time.Minute)
	w := newWorld(t, worldOpts{outage: k})
	alice := w.mustDial(w.operator)

	out, errOut, code := run(t, alice, "hold 2h")
	until := clk.Now().Add(2 * time.Hour)
	if code != 0 || out != "jump host held up until 2026-11-22 16:03Z (2h0m0s); hold 0 releases it\n" || errOut != "" {
		t.Fatalf("hold 2h: %d %q %q", code, out, errOut)
	}
	if st := k.Status(); !st.HoldUntil.Equal(until) || st.HoldBy != "alice@laptop" {
		t.Fatalf("keeper status %+v", st)
	}
	if !w.rec.has(audit.KindHold, "held until 2026-11-22T16:03:00Z") {
		t.Errorf("hold not audited:\n%s", w.rec.dump())
	}

	out, errOut, code = run(t, alice, "hold 25h")
	if code != 1 || out != "" || errOut != "lifeline: hold: hold 25h0m0s is longer than the maximum 24h0m0s\n" {
		t.Errorf("hold 25h: %d %q %q", code, out, errOut)
	}
	_, errOut, code = run(t, alice, "hold soon")
	if code != 2 || !strings.Contains(errOut, `"soon" is not a duration`) {
		t.Errorf("hold soon: %d %q", code, errOut)
	}
	if st := k.Status(); !st.HoldUntil.Equal(until) {
		t.Errorf("a refused hold changed the hold: %+v", st)
	}

	bob := w.mustDial(w.limited)
	out, errOut, code = run(t, bob, "hold 1h")
	if code != 1 || out != "" || !strings.Contains(errOut, "lifeline: hold: this key is restricted to some sites (permitopen): only an operator key without permitopen may hold the jump host up") {
		t.Errorf("restricted hold: %d %q %q", code, out, errOut)
	}
	if !w.rec.has(audit.KindHold, "refused: this key is restricted") {
		t.Errorf("refusal not audited:\n%s", w.rec.dump())
	}
	if st := k.Status(); st.HoldBy != "alice@laptop" {
		t.Errorf("a restricted key changed the hold: %+v", st)
	}

	// status and `hold` alone show the section; the restricted key not who.
	text := statusOf(t, alice, "")
	for _, want := range []string{
		"outage mode: the jump host powers itself off after 30m with nothing keeping it up\n",
		"  kept up by: 2 operator connection(s) open; held by alice@laptop until 2026-11-22T16:03:00Z\n",
		"  held until 2026-11-22 16:03Z by alice@laptop (hold 0 releases)\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
	if shown, _, code := run(t, alice, "hold"); code != 0 || !strings.HasPrefix(shown, "outage mode: ") || !strings.Contains(shown, "held until") {
		t.Errorf("hold alone: %d %q", code, shown)
	}
	var all, restricted Status
	if err := json.Unmarshal([]byte(statusOf(t, alice, "--json")), &all); err != nil || all.Outage == nil {
		t.Fatalf("status --json: %v %+v", err, all)
	}
	if all.Outage.Mode != "outage" || all.Outage.Idle != "30m0s" || !all.Outage.HoldUntil.Equal(until) || all.Outage.HoldBy != "alice@laptop" || len(all.Outage.KeptUpBy) != 2 {
		t.Errorf("outage in --json: %+v", all.Outage)
	}
	if err := json.Unmarshal([]byte(statusOf(t, bob, "--json")), &restricted); err != nil || restricted.Outage == nil {
		t.Fatalf("restricted status --json: %v %+v", err, restricted)
	}
	if o := restricted.Outage; !o.HoldUntil.Equal(until) || o.HoldBy != "" || o.KeptUpBy != nil {
		t.Errorf("a restricted key sees %+v", o)
	}
	if text := statusOf(t, bob, ""); strings.Contains(text, "alice") {
		t.Errorf("a restricted key sees who holds the host:\n%s", text)
	}

	out, _, code = run(t, alice, "hold off")
	if code != 0 || out != "hold released: the jump host powers itself off after 30m with nothing keeping it up\n" {
		t.Errorf("hold off: %d %q", code, out)
	}
	if st := k.Status(); !st.HoldUntil.IsZero() {
		t.Errorf("hold not released: %+v", st)
	}
}

// Outage mode off (no keeper, or a keeper with it off): `hold` says so and
// changes nothing; status has no outage section.
func TestHoldOutageOff(t *testing.T) {
	t.Parallel()
	off, _, _ := keeper(t, 0)
	for name, o := range map[string]Outage{"no keeper": nil, "keeper off": off} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, worldOpts{outage: o})
			c := w.mustDial(w.operator)
			for _, cmd := range []string{"hold 2h", "hold", "hold 0"} {
				out, errOut, code := run(t, c, cmd)
				if code != 1 || out != "" || errOut != "lifeline: hold: outage mode is off: this jump host never powers itself off\n" {
					t.Errorf("%s: %d %q %q", cmd, code, out, errOut)
				}
			}
			if text := statusOf(t, c, ""); strings.Contains(text, "outage") {
				t.Errorf("status has an outage section:\n%s", text)
			}
			if js := statusOf(t, c, "--json"); strings.Contains(js, `"outage"`) {
				t.Errorf("status --json has an outage object:\n%s", js)
			}
		})
	}
}

// The keeper hears the number of open operator connections: one open
// blocks the power-off however long it stays, its closing starts the idle
// period again; agents and connections that never log in do not count.
func TestOperatorConnectionsKeepTheHostUp(t *testing.T) {
	t.Parallel()
	k, clk, req := keeper(t, outage.MinIdle)
	w := newWorld(t, worldOpts{outage: k})
	agent := w.mustDial(w.agent)
	serveForwards(t, agent)
	if ok, err := register(agent, "pi", 22); !ok || err != nil {
		t.Fatalf("register: %v %v", ok, err)
	}
	if _, err := w.dial(w.stranger); err == nil {
		t.Fatal("a stranger logged in")
	}
	if n := k.Status().Operators; n != 0 {
		t.Fatalf("%d operator connections with only an agent and a stranger", n)
	}

	op := w.mustDial(w.operator)
	sshtest.Eventually(t, 5*time.Second, func() bool { return k.Status().Operators == 1 }, "the operator connection reached the keeper: %+v", k.Status())
	if st := k.Status(); !st.IdleSince.IsZero() || w.srv.OperatorConns() != 1 {
		t.Fatalf("idle with an operator connected: %+v", st)
	}
	clk.Advance(time.Hour) // far past the idle time: nothing may fire
	if _, err := os.Stat(req); err == nil || !k.Status().Requested.IsZero() {
		t.Fatal("power-off requested with an operator connected")
	}

	closedAt := clk.Now()
	op.Close()
	sshtest.Eventually(t, 5*time.Second, func() bool { return k.Status().Operators == 0 }, "the closing reached the keeper")
	if st := k.Status(); !st.IdleSince.Equal(closedAt) || !st.PowerOffAt.Equal(closedAt.Add(outage.MinIdle)) {
		t.Fatalf("idle period not restarted at the closing: %+v", st)
	}
	sshtest.Eventually(t, 5*time.Second, func() bool { return clk.Pending() > 0 }, "idle timer armed")
	clk.Advance(outage.MinIdle)
	sshtest.Eventually(t, 5*time.Second, func() bool { _, err := os.Stat(req); return err == nil }, "no power-off request after the idle period")
}
