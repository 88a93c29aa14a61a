package outage

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jpillora/backoff"

	"github.com/lifeline-dev/lifeline/shared/clock"
)

// Caller makes one call of the jump start program. *Starter is the real
// one; tests pass a fake. Call must return within the request's timeout
// plus a few seconds, or soon after ctx ends.
type Caller interface {
	Call(ctx context.Context, req Request) Result
}

// Report is what the agent tells the bastion about this outage once one
// answers: e.g. "MAIN INTERNET DOWN since 14:02; jump host started 14:03,
// ready 14:04".
type Report struct {
	// MainDownSince is when the main link went down (the watch's Since).
	MainDownSince time.Time
	// StartedAt is the first start call of this outage that AWS
	// accepted; zero when none was.
	StartedAt time.Time
	// Attempts counts the start calls of this outage.
	Attempts int
	// LastCode and LastMessage are the last call's Result.Code and
	// Message.
	LastCode, LastMessage string
	// ReadyAt is the first bastion connection after the first call of
	// this outage; zero until then.
	ReadyAt time.Time
}

// Phase names what a Decider is doing, for Status.
type Phase string

const (
	PhaseOff         Phase = "off"          // main link up (or not known down): nothing to do
	PhaseBastion     Phase = "bastion"      // main link down, a bastion is connected
	PhaseGrace       Phase = "grace"        // main link down, no bastion: waiting NoBastionFor before calling
	PhaseCalling     Phase = "calling"      // a call is running
	PhaseWaitReady   Phase = "wait_ready"   // started: waiting for a bastion to connect (ReadyWithin)
	PhaseBackoff     Phase = "backoff"      // the last call failed with Retry: waiting to call again
	PhaseBlocked     Phase = "blocked"      // the last call failed without Retry: no more calls this outage
	PhaseBudgetSpent Phase = "budget_spent" // today's calls are spent: waiting for the next UTC day
)

// Status is a snapshot of a Decider, for `status` and doctor.
type Status struct {
	Phase            Phase
	MainDown         bool
	MainDownSince    time.Time
	BastionConnected bool
	// BastionSince is when the state of the bastion connection last
	// changed (for "no bastion", since the Decider's start when none
	// ever was).
	BastionSince time.Time
	// NextCallAt is when the next call is due if nothing changes; zero
	// when none is planned.
	NextCallAt time.Time
	// CallsToday and DailyCalls: the day's budget (UTC).
	CallsToday, DailyCalls int
	// Report is this outage's (the last outage's, while the link is up).
	Report Report
}

// Decider decides when to start the jump host: when the main link is down
// (as the main-link watch says, after LIFELINE_MAIN_DOWN_AFTER) and no
// bastion has been connected for NoBastionFor, it calls start once, then
// gives the instance ReadyWithin to boot and a bastion to connect. Without
// one by then, or after a call that failed with Retry, it calls again
// after a jittered exponential backoff (RetryMin doubling to RetryMax),
// at most DailyCalls times per UTC day. A call that failed without Retry
// (auth_failed, denied, not_found, a refused request) is not repeated in
// this outage: only a new configuration (the agent's restart) or a new
// outage (the main link back, then down again) tries again. Every call,
// every failure and every stop is logged once; nothing loops.
//
// When the main link comes back the Decider stops calling. It never stops
// the instance: the jump host powers itself off when idle.
//
// Make it with NewDecider and run it with Run (once); the other methods
// may be called from any goroutine at any time, also before Run.
type Decider struct {
	cfg      Config
	caller   Caller
	clock    clock.Clock
	log      *slog.Logger
	onReport func(Report)
	kick     chan struct{}
	back     *backoff.Backoff // under mu

	mu sync.Mutex
	st state
	// For tests: inputs counts the inputs; decided is the inputs value
	// of Run's latest decision, parked whether Run is waiting on it and
	// parkedAt for when (zero: no timer).
	inputs, decided int
	parked          bool
	parkedAt        time.Time
}

// state is the Decider's state, under mu.
type state struct {
	mainDown      bool
	mainSince     time.Time
	bastionUp     bool
	bastionSince  time.Time
	calling       bool
	phase         Phase
	nextAt        time.Time // planned by the last decision (Status)
	budgetLogDay  string
	blockedLogged bool

	// this outage
	attempts    int
	startedAt   time.Time
	lastCallAt  time.Time
	lastOK      bool // waiting for a bastion after an accepted call
	lastCode    string
	lastMessage string
	readyAt     time.Time
	unreported  bool // calls since the last report
	blocked     bool
	retryAt     time.Time // earliest next call after the last one

	// the budget
	day        string // UTC day of callsToday
	callsToday int
}

// NewDecider checks cfg (it must be Enabled and valid) and returns a
// Decider that calls through caller. clk nil: clock.Real; log nil:
// discarded. onReport, when not nil, is called from Run's goroutine each
// time a bastion connects after one or more start calls of this outage
// (Report.ReadyAt set), for the agent to send the report to that bastion;
// it must return promptly. Status().Report has the same at any time.
func NewDecider(cfg Config, caller Caller, clk clock.Clock, log *slog.Logger, onReport func(Report)) (*Decider, error) {
	if !cfg.Enabled() {
		return nil, errors.New("outage mode is off: LIFELINE_OUTAGE_INSTANCE is empty")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if caller == nil {
		return nil, errors.New("outage: no caller")
	}
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	d := &Decider{cfg: cfg, caller: caller, clock: clk, log: log, onReport: onReport, kick: make(chan struct{}, 1),
		back: &backoff.Backoff{Min: cfg.RetryMin, Max: cfg.RetryMax, Factor: 2, Jitter: true}}
	d.st.bastionSince = clk.Now()
	d.st.phase = PhaseOff
	return d, nil
}

// MainDown tells the Decider that the main link is down, since since (the
// watch's mainwatch.Down.Since). After MainUp, it starts a new outage.
func (d *Decider) MainDown(since time.Time) {
	d.input(func(st *state) {
		if st.mainDown {
			return
		}
		outage := state{mainDown: true, mainSince: since, bastionUp: st.bastionUp, bastionSince: st.bastionSince,
			day: st.day, callsToday: st.callsToday, budgetLogDay: st.budgetLogDay, phase: st.phase, calling: st.calling}
		*st = outage
		d.back.Reset()
		d.log.Info("outage mode: main link down", "since", since.UTC().Format(time.RFC3339), "instance", d.cfg.InstanceID,
			"start_after_no_bastion_for", d.cfg.NoBastionFor)
	})
}

// MainUp tells the Decider that the main link is back: it makes no more
// calls (one running ends as it ends). The jump host is left to power
// itself off when idle.
func (d *Decider) MainUp() {
	d.input(func(st *state) {
		if !st.mainDown {
			return
		}
		st.mainDown = false
		if st.attempts > 0 {
			d.log.Info("outage mode: main link back, no more start calls; the jump host powers itself off when idle", "attempts", st.attempts, "last_code", st.lastCode)
		}
	})
}

// Bastion tells the Decider whether any bastion is connected now, and
// since when (for false: when the last one went away).
func (d *Decider) Bastion(connected bool, since time.Time) {
	d.input(func(st *state) {
		if connected == st.bastionUp {
			return
		}
		st.bastionUp, st.bastionSince = connected, since
		if connected && st.mainDown && st.attempts > 0 {
			if st.readyAt.IsZero() {
				st.readyAt = since
			}
			st.lastOK = false
			st.retryAt = time.Time{}
			d.back.Reset()
			d.log.Info("outage mode: bastion connected after the jump host start", "ready_at", since.UTC().Format(time.RFC3339), "attempts", st.attempts)
		}
	})
}

// input applies f under the lock and wakes Run.
func (d *Decider) input(f func(*state)) {
	d.mu.Lock()
	f(&d.st)
	d.inputs++
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Status is a snapshot of the Decider.
func (d *Decider) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := &d.st
	calls := st.callsToday
	if st.day != utcDay(d.clock.Now()) {
		calls = 0
	}
	return Status{Phase: st.phase, MainDown: st.mainDown, MainDownSince: st.mainSince, BastionConnected: st.bastionUp,
		BastionSince: st.bastionSince, NextCallAt: st.nextAt, CallsToday: calls, DailyCalls: d.cfg.DailyCalls, Report: st.report()}
}

func (st *state) report() Report {
	return Report{MainDownSince: st.mainSince, StartedAt: st.startedAt, Attempts: st.attempts, LastCode: st.lastCode,
		LastMessage: st.lastMessage, ReadyAt: st.readyAt}
}

// Run decides and calls until ctx ends, then returns nil (a call running
// then is cancelled through ctx).
func (d *Decider) Run(ctx context.Context) error {
	for {
		d.mu.Lock()
		now := d.clock.Now()
		call, at, rep := d.decide(now)
		d.decided = d.inputs
		d.mu.Unlock()
		if rep != nil && d.onReport != nil {
			d.onReport(*rep)
		}
		if call {
			d.call(ctx, now)
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		var timer clock.Timer
		var fire <-chan time.Time
		if !at.IsZero() {
			timer = d.clock.NewTimer(at.Sub(now))
			fire = timer.C()
		}
		d.mu.Lock()
		d.parked, d.parkedAt = true, at
		d.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-d.kick:
		case <-fire:
		}
		d.mu.Lock()
		d.parked = false
		d.mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// decide says, at now, whether to call now, else when to look again
// (zero: only at the next input), and returns a report to send, if one is
// due. d.mu is held.
func (d *Decider) decide(now time.Time) (call bool, at time.Time, rep *Report) {
	st := &d.st
	st.nextAt = time.Time{}
	if st.bastionUp && st.mainDown && st.unreported {
		st.unreported = false
		r := st.report()
		rep = &r
	}
	switch {
	case !st.mainDown:
		st.phase = PhaseOff
		return false, time.Time{}, rep
	case st.bastionUp:
		st.phase = PhaseBastion
		return false, time.Time{}, rep
	case st.blocked:
		st.phase = PhaseBlocked
		if !st.blockedLogged {
			st.blockedLogged = true
			d.log.Error("outage mode: no more start calls this outage: retrying cannot help until the configuration changes (restart the agent) or the main link comes back and fails again",
				"code", st.lastCode, "message", st.lastMessage)
		}
		return false, time.Time{}, rep
	}
	at = st.bastionSince.Add(d.cfg.NoBastionFor)
	st.phase = PhaseGrace
	if st.retryAt.After(at) {
		at = st.retryAt
		st.phase = PhaseBackoff
		if st.lastOK {
			st.phase = PhaseWaitReady
		}
	}
	if day := utcDay(at); day == st.day && st.callsToday >= d.cfg.DailyCalls {
		at = nextUTCDay(at)
		st.phase = PhaseBudgetSpent
		if st.budgetLogDay != day {
			st.budgetLogDay = day
			d.log.Warn("outage mode: today's start calls are spent, none until the next UTC day", "daily_calls", d.cfg.DailyCalls,
				"next", at.UTC().Format(time.RFC3339), "last_code", st.lastCode)
		}
	}
	st.nextAt = at
	if at.After(now) {
		return false, at, rep
	}
	st.phase = PhaseCalling
	st.calling = true
	return true, time.Time{}, rep
}

// call makes one start call at now and records its result.
func (d *Decider) call(ctx context.Context, now time.Time) {
	d.mu.Lock()
	st := &d.st
	if day := utcDay(now); st.day != day {
		st.day, st.callsToday = day, 0
	}
	st.callsToday++
	st.attempts++
	attempt, today := st.attempts, st.callsToday
	mainSince := st.mainSince
	d.mu.Unlock()
	d.log.Info("outage mode: main link down and no bastion: starting the jump host", "instance", d.cfg.InstanceID,
		"region", d.cfg.Region, "attempt", attempt, "calls_today", today, "daily_calls", d.cfg.DailyCalls,
		"main_down_since", mainSince.UTC().Format(time.RFC3339))
	res := d.caller.Call(ctx, d.cfg.request(ActionStart, d.cfg.CallTimeout))
	res = res.Clean(d.cfg.SecretAccessKey)
	end := d.clock.Now()

	d.mu.Lock()
	defer d.mu.Unlock()
	st.calling = false
	st.lastCallAt, st.lastCode, st.lastMessage = end, res.Code, res.Message
	st.unreported = true
	switch {
	case ctx.Err() != nil:
		return
	case res.OK:
		if st.startedAt.IsZero() {
			st.startedAt = end
		}
		st.lastOK = true
		wait := max(d.cfg.ReadyWithin, d.back.Duration())
		st.retryAt = end.Add(wait)
		d.log.Info("outage mode: jump host start accepted, waiting for a bastion", "state", res.State, "previous_state", res.PreviousState,
			"attempt", attempt, "call_again_after", wait.Round(time.Second))
	case res.Retry:
		st.lastOK = false
		wait := d.back.Duration()
		st.retryAt = end.Add(wait)
		d.log.Warn("outage mode: jump host start failed, will retry", "code", res.Code, "message", res.Message,
			"attempt", attempt, "retry_in", wait.Round(time.Second))
	default:
		st.lastOK = false
		st.blocked = true
		st.blockedLogged = false // decide logs it once
	}
}

func utcDay(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// nextUTCDay is the start of the UTC day after t's.
func nextUTCDay(t time.Time) time.Time {
	y, m, dd := t.UTC().Date()
	return time.Date(y, m, dd+1, 0, 0, 0, 0, time.UTC)
}
