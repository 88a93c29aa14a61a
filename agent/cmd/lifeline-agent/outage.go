package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline/agent/mainwatch"
	"github.com/lifeline-dev/lifeline/agent/outage"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// mainLink carries the main-link watch's events out: to every bastion
// (Publish) and into STATUS=, and, in outage mode, to the Decider that
// starts the jump host. The Decider's reports go out again as the
// outage's Down report with Jump filled ("main down since 14:02; jump
// host started 14:03, ready 14:04"), so the bastion that just booted, or
// one started by hand, learns what the agent did; every start call's
// outcome is in STATUS= as it comes.
//
// Fill publish and note, then (outage mode) set decider, before any
// method is called; run publishes the Decider's reports until ctx ends.
type mainLink struct {
	publish func(context.Context, report.LinkReport)
	note    func(string) // STATUS='s main-link part (Tunnels.SetMainNote)
	decider *outage.Decider
	clock   clock.Clock
	log     *slog.Logger

	mu       sync.Mutex
	down     *mainwatch.Down // the latest event, when a Down; nil: up or not known yet
	mainNote string
	jumpNote string
	pending  *outage.Report // a report of the Decider's not yet published
	kick     chan struct{}
}

func newMainLink(clk clock.Clock, log *slog.Logger) *mainLink {
	if clk == nil {
		clk = clock.Real{}
	}
	return &mainLink{clock: clk, log: log, kick: make(chan struct{}, 1)}
}

// event takes one event of the main-link watch: the Decider is told, the
// status note set, and the event's report published to every bastion.
func (m *mainLink) event(ctx context.Context, ev mainwatch.Event) {
	m.mu.Lock()
	if d, ok := ev.(mainwatch.Down); ok {
		m.down = &d
	} else {
		m.down, m.pending, m.jumpNote = nil, nil, ""
	}
	m.mainNote = mainNote(ev)
	m.noteLocked()
	m.mu.Unlock()
	if m.decider != nil {
		switch ev := ev.(type) {
		case mainwatch.Down:
			m.decider.MainDown(ev.Since)
		case mainwatch.Up:
			m.decider.MainUp()
		}
	}
	m.publish(ctx, ev.Report())
}

// noteLocked sends STATUS='s main-link part; m.mu is held, which keeps
// the notes in order.
func (m *mainLink) noteLocked() {
	parts := make([]string, 0, 2)
	for _, p := range []string{m.mainNote, m.jumpNote} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	m.note(strings.Join(parts, "; "))
}

// setJumpNote sets what STATUS= says of the jump host, while the main
// link is down.
func (m *mainLink) setJumpNote(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down == nil {
		return
	}
	m.jumpNote = s
	m.noteLocked()
}

// report is the Decider's onReport: a bastion connected after start
// calls. It keeps the report for run and returns at once.
func (m *mainLink) report(r outage.Report) {
	m.mu.Lock()
	if m.down != nil && r.MainDownSince.Equal(m.down.Since) {
		m.pending = &r
		m.jumpNote = reportNote(r)
		m.noteLocked()
	}
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// run publishes the Decider's reports, each as the outage's Down report
// with Jump, until ctx ends. Publishing waits for the bastions' replies,
// which the Decider must not.
func (m *mainLink) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		}
		m.mu.Lock()
		r, down := m.pending, m.down
		m.pending = nil
		m.mu.Unlock()
		if r == nil || down == nil {
			continue
		}
		rep := down.Report()
		rep.Jump = jumpStart(*r)
		m.publish(ctx, rep)
	}
}

// maxJumpMessage bounds Jump.LastMessage (report.LinkReport.Validate
// allows 512 bytes).
const maxJumpMessage = 500

// jumpStart is r as a main-link report's Jump.
func jumpStart(r outage.Report) *report.JumpStart {
	j := &report.JumpStart{StartedAt: r.StartedAt.UTC(), ReadyAt: r.ReadyAt.UTC(), Attempts: r.Attempts, LastCode: r.LastCode,
		LastMessage: clip(r.LastMessage, maxJumpMessage)}
	if !j.StartedAt.IsZero() && j.ReadyAt.Before(j.StartedAt) {
		// A bastion up before the start was accepted was not started by it.
		j.ReadyAt = time.Time{}
	}
	return j
}

// clip cuts s to at most n bytes on a rune boundary, control characters
// made spaces.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-len("…")], "") + "…"
}

// hhmm is a time of STATUS=.
func hhmm(t time.Time) string { return t.UTC().Format("15:04 UTC") }

// reportNote is STATUS='s jump host part once a bastion connected after
// start calls.
func reportNote(r outage.Report) string {
	switch {
	case !r.StartedAt.IsZero() && !r.ReadyAt.IsZero() && !r.ReadyAt.Before(r.StartedAt):
		return "jump host started " + hhmm(r.StartedAt) + ", ready " + hhmm(r.ReadyAt)
	case !r.StartedAt.IsZero():
		return "jump host started " + hhmm(r.StartedAt) + ", bastion connected"
	case !r.ReadyAt.IsZero():
		return fmt.Sprintf("jump host start failed (%s, %s), bastion connected %s", r.LastCode, attempts(r.Attempts), hhmm(r.ReadyAt))
	}
	return fmt.Sprintf("jump host start failed (%s, %s), bastion connected", r.LastCode, attempts(r.Attempts))
}

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

// maxNoteMessage bounds a call's message in STATUS=.
const maxNoteMessage = 120

// callNote is STATUS='s jump host part after one start call at.
func callNote(res outage.Result, at time.Time) string {
	if res.OK {
		state := res.State
		if state == "" {
			state = "accepted"
		}
		return "jump host start requested " + hhmm(at) + " (" + state + ")"
	}
	then := "no more start calls this outage"
	if res.Retry {
		then = "will retry"
	}
	s := "JUMP HOST START FAILED " + hhmm(at) + ": " + res.Code
	if res.Message != "" {
		s += ": " + clip(res.Message, maxNoteMessage)
	}
	return s + " (" + then + ")"
}

// notingCaller is the Decider's Caller: the jump start program, each
// call's outcome put in STATUS= as it comes.
type notingCaller struct {
	c outage.Caller
	m *mainLink
}

func (n notingCaller) Call(ctx context.Context, req outage.Request) outage.Result {
	n.m.setJumpNote("jump host start: calling AWS since " + hhmm(n.m.clock.Now()))
	res := n.c.Call(ctx, req).Clean(req.SecretAccessKey)
	n.m.setJumpNote(callNote(res, n.m.clock.Now()))
	return res
}

// newOutage makes outage mode's Decider, calling the jump start program
// through c (nil: an outage.Starter), reporting to m; nil when outage
// mode is off. A program not found is logged at once (each call says so
// again, and doctor checks it).
func newOutage(cfg outage.Config, c outage.Caller, m *mainLink, log *slog.Logger) (*outage.Decider, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	log = log.With("part", "outage")
	if c == nil {
		s := &outage.Starter{Log: log.With("program", outage.ProgramName)}
		if p, err := outage.FindProgram(); err != nil {
			log.Error("outage mode cannot start the jump host", "err", err)
		} else {
			s.Program = p
		}
		c = s
	}
	d, err := outage.NewDecider(cfg, notingCaller{c: c, m: m}, m.clock, log, m.report)
	if err != nil {
		return nil, err
	}
	m.decider = d
	log.Info("outage mode on", "config", cfg)
	return d, nil
}
