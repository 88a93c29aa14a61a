package alert

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// msgLog is a hand-written Sender that keeps every message it is given.
type msgLog struct {
	mu   sync.Mutex
	msgs []Message
}

func (*msgLog) Name() string { return "msglog" }

func (l *msgLog) Send(ctx context.Context, m Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, m)
	return nil
}

func (l *msgLog) all() []Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Message(nil), l.msgs...)
}

// roleAlerter runs an Alerter on a fake clock with a msgLog sender.
func roleAlerter(t *testing.T) (*Alerter, *clocktest.Fake, *auditLog, *msgLog) {
	t.Helper()
	clk := clocktest.New(t0)
	rec := &auditLog{}
	log := &msgLog{}
	cfg := testConfig(t, log)
	cfg.Clock, cfg.Audit = clk, rec
	a := mustNew(t, cfg)
	run(t, a)
	return a, clk, rec, log
}

// sent sends a barrier login, waits until it and everything else pending
// is delivered, and returns the messages delivered but the barrier: all
// those enqueued (or audited) before it.
func sent(t *testing.T, a *Alerter, log *msgLog) []Message {
	t.Helper()
	a.Login(login("barrier", "203.0.113.99:1"))
	var out []Message
	sshtest.Eventually(t, 10*time.Second, func() bool {
		out = out[:0]
		barrier := false
		for _, m := range log.all() {
			if strings.Contains(m.Text, "barrier") {
				barrier = true
				continue
			}
			out = append(out, m)
		}
		return barrier && a.Status().Pending == 0
	}, "the barrier login")
	return out
}

func kinds(ms []Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Kind)
	}
	return out
}

// goDown reports agent gone, lets its down timer fire and waits until
// the down was decided (audited, texted or not) and delivered.
func goDown(t *testing.T, a *Alerter, clk *clocktest.Fake, rec *auditLog, agent Agent) {
	t.Helper()
	before := downsDecided(rec, agent)
	a.AgentDown(agent)
	sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "down timer armed")
	clk.Advance(DefaultDownAfter)
	sshtest.Eventually(t, 10*time.Second, func() bool { return downsDecided(rec, agent) > before && a.Status().Pending == 0 }, "down decided and delivered")
}

// downsDecided counts the SITE DOWN of agent audited, texted or not.
func downsDecided(rec *auditLog, agent Agent) int {
	n := 0
	for _, e := range append(rec.withReason(KindAgentDown), rec.withReason(KindNotReporter)...) {
		if e.Fingerprint == agent.Fingerprint && strings.Contains(e.Message, "SITE DOWN") {
			n++
		}
	}
	return n
}

// An agent's last site-role word decides whether this bastion texts its
// SITE DOWN; a down not texted is audited, and no "back" follows it.
func TestSiteRoleDecidesSiteDown(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		roles []bool // the words the agent said, in order; none: an older agent
		text  bool
	}{
		"never said":         {nil, true},
		"reporter":           {[]bool{true}, true},
		"not reporter":       {[]bool{false}, false},
		"became reporter":    {[]bool{false, true}, true},
		"no longer reporter": {[]bool{true, false}, false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, clk, rec, log := roleAlerter(t)
			pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi:22"}}
			for _, r := range tc.roles {
				a.SiteRole(pi, r)
			}
			a.AgentUp(pi)
			goDown(t, a, clk, rec, pi)
			clk.Advance(time.Minute)
			a.AgentUp(pi)
			got := sent(t, a, log)
			if tc.text {
				if len(got) != 2 || got[0].Kind != KindAgentDown || got[1].Kind != KindAgentBack {
					t.Fatalf("sent %q, want agent down and back", kinds(got))
				}
				if n := len(rec.withReason(KindNotReporter)); n != 0 {
					t.Errorf("%d events audited as not texted", n)
				}
				return
			}
			if len(got) != 0 {
				t.Fatalf("sent %q, want nothing: another bastion reports the site", kinds(got))
			}
			ev := rec.withReason(KindNotReporter)
			if len(ev) != 2 || !strings.Contains(ev[0].Message, "SITE DOWN") || !strings.Contains(ev[1].Message, "site back") ||
				!strings.HasPrefix(ev[0].Message, "not texted (another bastion is the site's reporter): agent_down: ") {
				t.Errorf("not-texted audit events %+v, want the down and the back", ev)
			}
		})
	}
}

// The role at the moment the down timer fires counts, and the end of an
// outage is texted by the bastion that texted its start, whatever the
// role says by then.
func TestSiteRoleSwitchWhileDown(t *testing.T) {
	t.Parallel()
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi:22"}}

	t.Run("not texted down, reporter at the return", func(t *testing.T) {
		t.Parallel()
		a, clk, rec, log := roleAlerter(t)
		a.SiteRole(pi, false)
		goDown(t, a, clk, rec, pi)
		a.SiteRole(pi, true) // the agent is back and names this bastion first
		a.AgentUp(pi)
		if got := sent(t, a, log); len(got) != 0 {
			t.Errorf("sent %q: a back from the bastion that did not text the down", kinds(got))
		}
	})

	t.Run("texted down, not reporter at the return", func(t *testing.T) {
		t.Parallel()
		a, clk, rec, log := roleAlerter(t)
		a.SiteRole(pi, true)
		goDown(t, a, clk, rec, pi)
		a.SiteRole(pi, false)
		a.AgentUp(pi)
		got := sent(t, a, log)
		if len(got) != 2 || got[0].Kind != KindAgentDown || got[1].Kind != KindAgentBack {
			t.Errorf("sent %q, want down and back from the bastion that texted the down", kinds(got))
		}
	})

	t.Run("role changes before the timer fires", func(t *testing.T) {
		t.Parallel()
		a, clk, rec, log := roleAlerter(t)
		a.SiteRole(pi, false)
		a.AgentDown(pi)
		sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() == 1 }, "down timer armed")
		a.SiteRole(pi, true)
		clk.Advance(DefaultDownAfter)
		sshtest.Eventually(t, 10*time.Second, func() bool { return downsDecided(rec, pi) == 1 }, "down decided")
		got := sent(t, a, log)
		if len(got) != 1 || got[0].Kind != KindAgentDown {
			t.Errorf("sent %q, want the down: reporter when the timer fired", kinds(got))
		}
	})

	t.Run("roles are per key", func(t *testing.T) {
		t.Parallel()
		a, clk, rec, log := roleAlerter(t)
		cam := Agent{Name: "cam-agent", Fingerprint: "SHA256:cam", Names: []string{"cam:80"}}
		a.SiteRole(pi, false)
		a.AgentDown(pi)
		goDown(t, a, clk, rec, cam)
		got := sent(t, a, log)
		if len(got) != 1 || !strings.Contains(got[0].Text, "cam-agent") {
			t.Errorf("sent %q, want cam's down only", kinds(got))
		}
	})
}

// Logins are texted whatever the role: the bastion that saw one texts it.
func TestSiteRoleLeavesLogins(t *testing.T) {
	t.Parallel()
	a, _, _, log := roleAlerter(t)
	a.SiteRole(Agent{Name: "alice", Fingerprint: "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"}, false)
	a.Login(login("alice", "198.51.100.7:5000"))
	if got := sent(t, a, log); len(got) != 1 || got[0].Kind != KindLogin {
		t.Errorf("sent %q, want the login", kinds(got))
	}
}
