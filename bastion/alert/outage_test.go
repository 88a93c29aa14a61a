package alert

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/outage"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// withJump is a down report carrying the agent's start of the jump host.
func withJump(r report.LinkReport, j report.JumpStart) report.LinkReport {
	r.Jump = &j
	return r
}

// A down report that says the agent started the jump host says so in the
// down text, with when it was ready (the report's time when not yet): one
// segment, one text per outage, a start reported after the down adds
// nothing. A failed start is texted once per outage and code.
func TestMainLinkJumpTexts(t *testing.T) {
	t.Parallel()
	started := mainSince.Add(time.Minute)
	ready := mainSince.Add(2 * time.Minute)
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi:22"}}
	tests := []struct {
		name    string
		agent   Agent
		reports []report.LinkReport
		want    []string
	}{
		{"started and ready", pi, []report.LinkReport{withJump(mainDownReport(mainSince), report.JumpStart{StartedAt: started, ReadyAt: ready, Attempts: 1, LastCode: "ok"})},
			[]string{"pi-agent: MAIN INTERNET DOWN since 14:02Z; jump host started, ssh -J bast1 pi ready at 14:04Z"}},
		{"started, ready not said: the report's time", pi, []report.LinkReport{withJump(mainDownReport(mainSince), report.JumpStart{StartedAt: started, Attempts: 2, LastCode: "ok"})},
			[]string{"pi-agent: MAIN INTERNET DOWN since 14:02Z; jump host started, ssh -J bast1 pi ready at 14:05Z"}},
		{"no names", Agent{Name: "pi-agent"}, []report.LinkReport{withJump(mainDownReport(mainSince), report.JumpStart{StartedAt: started, ReadyAt: ready, Attempts: 1, LastCode: "ok"})},
			[]string{"pi-agent: MAIN INTERNET DOWN since 14:02Z; jump host started, ready at 14:04Z"}},
		{"long names still one segment", Agent{Name: strings.Repeat("s", 80), Names: []string{strings.Repeat("h", 80) + ":22"}}, []report.LinkReport{withJump(mainDownReport(mainSince), report.JumpStart{StartedAt: started, ReadyAt: ready, Attempts: 1, LastCode: "ok"})},
			[]string{strings.Repeat("s", 32) + "..: MAIN INTERNET DOWN since 14:02Z; jump host started, ssh -J bast1 " + strings.Repeat("h", 24) + ".. ready at 14:04Z"}},
		{"start after the down: one text", pi, []report.LinkReport{
			mainDownReport(mainSince),
			withJump(mainDownReport(mainSince), report.JumpStart{StartedAt: started, ReadyAt: ready, Attempts: 1, LastCode: "ok"}),
		}, []string{"pi-agent: MAIN INTERNET DOWN since 14:02Z (backup up; ssh -J bast1 pi)"}},
		{"failed start: once per code", pi, []report.LinkReport{
			withJump(mainDownReport(mainSince), report.JumpStart{Attempts: 1, LastCode: "throttled", LastMessage: "Request limit exceeded."}),
			withJump(mainDownReport(mainSince), report.JumpStart{Attempts: 2, LastCode: "throttled", LastMessage: "Request limit exceeded."}),
			withJump(mainDownReport(mainSince), report.JumpStart{Attempts: 3, LastCode: "denied", LastMessage: "not authorized to perform ec2:StartInstances"}),
			withJump(mainDownReport(mainSince), report.JumpStart{Attempts: 4, LastCode: "throttled"}),
			withJump(mainDownReport(mainSince), report.JumpStart{StartedAt: started, Attempts: 5, LastCode: "ok"}),
		}, []string{
			"pi-agent: MAIN INTERNET DOWN since 14:02Z (backup up; ssh -J bast1 pi)",
			"pi-agent: could not start the jump host: throttled (Request limit exceeded., attempt 1)",
			"pi-agent: could not start the jump host: denied (not authorized to perform ec2:StartInstances, attempt 3)",
		}},
		{"failed start in the next outage again", pi, []report.LinkReport{
			withJump(mainDownReport(mainSince), report.JumpStart{Attempts: 1, LastCode: "network"}),
			mainUpReport(mainSince, mainBack),
			withJump(mainDownReport(mainBack.Add(time.Hour)), report.JumpStart{Attempts: 1, LastCode: "network"}),
		}, []string{
			"pi-agent: MAIN INTERNET DOWN since 14:02Z (backup up; ssh -J bast1 pi)",
			"pi-agent: could not start the jump host: network (attempt 1)",
			"pi-agent: main internet back after 47m",
			"pi-agent: MAIN INTERNET DOWN since 15:49Z (backup up; ssh -J bast1 pi)",
			"pi-agent: could not start the jump host: network (attempt 1)",
		}},
		{"long message cut to one segment", pi, []report.LinkReport{
			withJump(mainDownReport(mainSince), report.JumpStart{Attempts: 7, LastCode: "capacity", LastMessage: strings.Repeat("insufficient capacity ", 20)}),
		}, []string{
			"pi-agent: MAIN INTERNET DOWN since 14:02Z (backup up; ssh -J bast1 pi)",
			"pi-agent: could not start the jump host: capacity (" + strings.Repeat("insufficient capacity ", 20)[:95] + ".., attempt 7)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, _, _, log := roleAlerter(t)
			for _, r := range tt.reports {
				a.MainLink(tt.agent, r)
			}
			got := sent(t, a, log)
			var texts []string
			for _, m := range got {
				texts = append(texts, m.Text)
				if len(m.Text) > smsLimit {
					t.Errorf("text of %d characters: %q", len(m.Text), m.Text)
				}
			}
			if !slices.Equal(texts, tt.want) {
				t.Errorf("texts\n%q\nwant\n%q", texts, tt.want)
			}
		})
	}
}

// The start and the failure are in the detail too (e-mail, webhook).
func TestMainLinkJumpDetail(t *testing.T) {
	t.Parallel()
	a, _, rec, log := roleAlerter(t)
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi:22"}}
	a.MainLink(pi, withJump(mainDownReport(mainSince), report.JumpStart{StartedAt: mainSince.Add(time.Minute), ReadyAt: mainSince.Add(2 * time.Minute), Attempts: 2, LastCode: "ok"}))
	got := sent(t, a, log)
	if len(got) != 1 || !strings.Contains(got[0].Detail, "jump host start: 2 attempt(s), last ok, started 2026-11-22T14:03:00Z, ready 2026-11-22T14:04:00Z") {
		t.Fatalf("sent %+v", got)
	}
	// Another bastion reports the site: the failure is audited, not texted.
	a.SiteRole(pi, false)
	a.MainLink(pi, withJump(mainDownReport(mainBack), report.JumpStart{Attempts: 1, LastCode: "denied"}))
	if got := sent(t, a, log); len(got) != 1 {
		t.Fatalf("texted %+v while not the reporter", got[1:])
	}
	if n := len(rec.withReason(KindNotReporter)); n != 2 {
		t.Errorf("%d not-texted audit events, want 2 (down and failed start)", n)
	}
}

// Every outage event is one text of one segment, and its audit event.
func TestOutageTexts(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 22, 14, 3, 0, 0, time.UTC)
	stop := &outage.Stop{Time: time.Date(2026, 11, 22, 11, 20, 0, 0, time.UTC), Idle: 30 * time.Minute}
	tests := []struct {
		e    outage.Event
		kind string
		want string
	}{
		{outage.Event{Kind: outage.Started, Time: at, PrevStarted: at.Add(-5 * time.Hour), PrevStop: stop}, KindOutageStarted,
			"bast1: jump host started 14:03Z (outage mode; last stopped 11:20Z after 30m idle)"},
		{outage.Event{Kind: outage.Started, Time: at, PrevStarted: at.Add(-5 * time.Hour)}, KindOutageStarted,
			"bast1: jump host started 14:03Z (outage mode; its run from 09:03Z did not power itself off)"},
		{outage.Event{Kind: outage.Started, Time: at}, KindOutageStarted, "bast1: jump host started 14:03Z (outage mode, first start)"},
		{outage.Event{Kind: outage.Ready, Time: at.Add(time.Minute), Site: "pi-agent"}, KindOutageReady, "bast1: jump host ready 14:04Z: agent pi-agent connected"},
		{outage.Event{Kind: outage.Stopping, Time: at, IdleSince: at.Add(-30 * time.Minute), Idle: 30 * time.Minute, Reason: "idle"}, KindOutageStopping,
			"bast1: jump host stopping: idle 30m, no site's main internet down, nobody connected (since 13:33Z)"},
		{outage.Event{Kind: outage.Held, Time: at, Until: time.Date(2026, 11, 22, 16, 30, 0, 0, time.UTC), By: "alice"}, KindOutageHeld,
			"bast1: jump host held up until 16:30Z by alice"},
		{outage.Event{Kind: outage.Released, Time: at, By: "alice"}, KindOutageReleased, "bast1: jump host hold released 14:03Z by alice"},
		{outage.Event{Kind: outage.Released, Time: at}, KindOutageReleased, "bast1: jump host hold ran out 14:03Z"},
		{outage.Event{Kind: outage.RequestFailed, Time: at, Err: errors.New("open /run/lifeline/poweroff: permission denied")}, KindOutageRequestFailed,
			"bast1: jump host cannot power itself off: open /run/lifeline/poweroff: permission denied (retrying)"},
		{outage.Event{Kind: outage.RequestFailed, Time: at, Err: errors.New(strings.Repeat("e", 300))}, KindOutageRequestFailed,
			"bast1: jump host cannot power itself off: " + strings.Repeat("e", 105) + ".. (retrying)"},
		{outage.Event{Kind: outage.NotStopped, Time: at, Requested: at.Add(-10 * time.Minute)}, KindOutageNotStopped,
			"bast1: jump host still up 10m after its power-off request: is lifeline-poweroff.path enabled?"},
	}
	rec, log := &auditLog{}, &msgLog{}
	cfg := testConfig(t, log)
	cfg.Clock, cfg.Audit, cfg.PerMinute = clocktest.New(t0), rec, 100 // all of them, none summarised
	a := mustNew(t, cfg)
	run(t, a)
	for _, tt := range tests {
		a.Outage(tt.e)
	}
	got := sent(t, a, log)
	if len(got) != len(tests) {
		t.Fatalf("sent %d texts, want %d: %+v", len(got), len(tests), got)
	}
	for i, tt := range tests {
		if got[i].Kind != tt.kind || got[i].Text != tt.want {
			t.Errorf("%s: %s %q\nwant %s %q", tt.e.Kind, got[i].Kind, got[i].Text, tt.kind, tt.want)
		}
		if len(got[i].Text) > smsLimit {
			t.Errorf("text of %d characters: %q", len(got[i].Text), got[i].Text)
		}
		if !strings.Contains(got[i].Detail, tt.e.String()) {
			t.Errorf("detail %q lacks %q", got[i].Detail, tt.e.String())
		}
		if n := len(rec.withReason(tt.kind)); n == 0 {
			t.Errorf("no audit event of %s", tt.kind)
		}
	}
}
