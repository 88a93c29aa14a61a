package daemon

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/bastion/outage"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// texts is an alert Sender that keeps what it is given.
type texts struct {
	mu   sync.Mutex
	msgs []alert.Message
}

func (*texts) Name() string { return "texts" }

func (s *texts) Send(_ context.Context, m alert.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	return nil
}

func (s *texts) of(kind string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.msgs {
		if m.Kind == kind {
			out = append(out, m.Text)
		}
	}
	return out
}

// records keeps audit events.
type records struct {
	mu  sync.Mutex
	evs []audit.Event
}

func (r *records) Record(e audit.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e)
}

func (r *records) of(kind string) []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []audit.Event
	for _, e := range r.evs {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// The keeper, wired as New wires it: the server's agent events reach it
// (by fingerprint), and its events become one text and one audit event
// each, with the agent named by its key. The idle period runs out with
// nothing keeping the host up: Stopping is texted and the request written.
func TestOutageEventsBecomeTextsAndAudit(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 14, 3, 0, 0, time.UTC)
	clk := clocktest.New(t0)
	dir := t.TempDir()
	sent, rec := &texts{}, &records{}
	a, err := alert.New(alert.Config{Dir: dir, Sender: sent, Log: slog.New(slog.DiscardHandler), Audit: rec, BastionName: "bast1", Clock: clk, PerMinute: 100})
	if err != nil {
		t.Fatal(err)
	}
	ev := newEvents(a, rec)
	k, err := outage.New(outage.Config{Idle: outage.MinIdle, StateDir: dir, RequestPath: filepath.Join(dir, "poweroff"),
		Clock: clk, Log: slog.New(slog.DiscardHandler), Notify: ev.notify})
	if err != nil {
		t.Fatal(err)
	}
	ev.k = k
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(2)
	go func() { defer wg.Done(); a.Run(ctx) }()
	go func() { defer wg.Done(); k.Run(ctx) }()

	id := &authz.Identity{Name: "site-agent", Fingerprint: "SHA256:site", Role: authz.RoleAgent}
	ev.AgentUp(id, []string{"pi:22"})
	down := report.LinkReport{Version: report.VersionMain, Link: report.LinkMain, Time: t0, Since: t0.Add(-time.Minute), Verdict: report.VerdictFailed,
		Reasons: []string{"no answer"}, Jump: &report.JumpStart{StartedAt: t0.Add(-30 * time.Second), Attempts: 1, LastCode: "ok"}}
	ev.MainLink(id, []string{"pi:22"}, down)
	sshtest.Eventually(t, 10*time.Second, func() bool { return slices.Equal(k.Status().SitesDown, []string{"SHA256:site"}) }, "the site's main link down reached the keeper: %+v", k.Status())
	if _, err := k.Hold(2*time.Hour, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Hold(0, "alice"); err != nil {
		t.Fatal(err)
	}
	ev.AgentDown(id, []string{"pi:22"})
	sshtest.Eventually(t, 10*time.Second, func() bool { return len(k.Status().Sites) == 0 && !k.Status().IdleSince.IsZero() }, "the agent's leaving reached the keeper: %+v", k.Status())
	sshtest.Eventually(t, 10*time.Second, func() bool { return clk.Pending() > 0 }, "idle timer armed")
	clk.Advance(outage.MinIdle)

	want := map[string][2]string{ // alert kind: text, audit kind
		alert.KindOutageStarted:  {"bast1: jump host started 14:03Z (outage mode, first start)", audit.KindOutageStarted},
		alert.KindOutageReady:    {"bast1: jump host ready 14:03Z: agent site-agent connected", audit.KindOutageReady},
		alert.KindOutageHeld:     {"bast1: jump host held up until 16:03Z by alice", audit.KindOutageHeld},
		alert.KindOutageReleased: {"bast1: jump host hold released 14:03Z by alice", audit.KindOutageReleased},
		alert.KindOutageStopping: {"bast1: jump host stopping: idle 5m, no site's main internet down, nobody connected (since 14:03Z)", audit.KindOutageStopping},
		alert.KindMainDown:       {"site-agent: MAIN INTERNET DOWN since 14:02Z; jump host started, ssh -J bast1 pi ready at 14:03Z", ""},
	}
	for kind, w := range want {
		sshtest.Eventually(t, 10*time.Second, func() bool { return len(sent.of(kind)) > 0 }, "no %s text", kind)
		if got := sent.of(kind); len(got) != 1 || got[0] != w[0] {
			t.Errorf("%s texts %q, want %q", kind, got, w[0])
		}
		if w[1] == "" {
			continue
		}
		if evs := rec.of(w[1]); len(evs) != 1 {
			t.Errorf("%d %s audit events, want 1", len(evs), w[1])
		}
	}
	if evs := rec.of(audit.KindOutageReady); len(evs) == 1 && (evs[0].Agent != "site-agent" || evs[0].Fingerprint != "SHA256:site") {
		t.Errorf("ready audit event %+v", evs[0])
	}
	if evs := rec.of(audit.KindOutageStopping); len(evs) == 1 && (!strings.Contains(evs[0].Reason, "idle for 5m0s") || evs[0].DurationMS != outage.MinIdle.Milliseconds()) {
		t.Errorf("stopping audit event %+v", evs[0])
	}
	sshtest.Eventually(t, 10*time.Second, func() bool { return !k.Status().Requested.IsZero() }, "power-off requested")
}
