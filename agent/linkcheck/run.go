package linkcheck

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lifeline-dev/lifeline/shared/report"
)

// firstCheckDelay is how long Run waits before the first check of a fresh
// install, or an overdue one (less when CheckEvery is shorter): long enough
// for the uplink to come up at boot.
const firstCheckDelay = 30 * time.Second

// busyRetry is how soon Run tries again when another process is checking.
const busyRetry = time.Minute

// ErrOverBudget is returned by CheckNow when the month's checks have used
// LIFELINE_CHECK_MONTHLY_BUDGET (what is left cannot pay for a light
// check).
var ErrOverBudget = errors.New("the monthly link check budget is used up")

// Run checks the link on the schedule its history sets, until ctx is done;
// then it returns nil. With CheckEvery 0 it only waits for ctx.
//
// The schedule comes from the state directory, not from Run's start: the
// next check is due CheckEvery after the latest recorded one (the agent's
// or a manual one), so a restart, a crash or a reboot never causes an extra
// check; the first check of a fresh install, or an overdue one, comes
// shortly after Run starts. Checks never overlap, also not with a manual
// check in another process.
//
// Under a monthly budget every check proves ISP and latency, and speed is
// measured as the pacing allows (see pace.go): a check without a speed
// measurement is light, and its report says so and when the next
// measurement is due. When the month cannot pay for a light check every
// CheckEvery, checks are spaced out (logged); when it cannot pay for one
// more, a check is skipped with a log line, and the next report says how
// many were.
//
// Each result gets the keepalive figures of rtt (called once per check,
// after it; rtt may be nil, and may return nil when it has nothing), the
// month's data, is appended to StateDir/checks.jsonl (a failure to write it
// is logged, not fatal: the report still goes out) and is passed to
// publish (which may be nil). publish runs on Run's goroutine and should
// return promptly; it gets ctx. A check cut short by ctx is recorded (it
// used data) but not published.
func (c *Checker) Run(ctx context.Context, rtt func() *report.RTT, publish func(context.Context, report.LinkReport)) error {
	if c.cfg.CheckEvery <= 0 {
		c.log.Info("link checks disabled (LIFELINE_CHECK_EVERY=0)")
		c.setStatus("link checks disabled")
		<-ctx.Done()
		return nil
	}
	start := c.clock.Now()
	c.startup()
	due := c.firstDue(start)
	var sk skips
	for {
		c.showSchedule(due, &sk)
		if !c.sleepUntil(ctx, due) {
			return nil
		}
		due = c.scheduled(ctx, rtt, publish, &sk)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// skips is a run of scheduled checks skipped for the monthly budget.
type skips struct {
	n           int
	first, last time.Time
}

func (s *skips) add(t time.Time) {
	if s.n == 0 {
		s.first = t
	}
	s.n++
	s.last = t
}

// startup counts a check a dead process left behind, reads the history
// and says so if the link check program is missing (every check would
// fail, and say why).
func (c *Checker) startup() {
	if c.tester == nil {
		if _, err := c.program(); err != nil {
			c.log.Error("link checks will fail", "err", err)
		}
	}
	l, err := c.hist.lock()
	switch {
	case errors.Is(err, ErrBusy):
		// A manual check is running; its marker is its own.
	case err != nil:
		c.log.Warn("link check history unusable: checks still run, but a restart may repeat one and the monthly budget counts only this run",
			"dir", c.cfg.StateDir, "err", err)
	default:
		c.recoverLeftover(l)
		l.release()
	}
	if err := c.hist.refresh(); err != nil {
		c.log.Warn("link check history not read", "err", err)
	}
	if n := c.hist.unreadable(); n > 0 {
		c.log.Warn("link check history: unreadable lines skipped (a write cut short by a power cut or kill)", "lines", n)
	}
	now := c.clock.Now()
	p := c.pace(now)
	attrs := []any{"every", c.cfg.CheckEvery, "month_used", mb(c.hist.monthBytes(c.monthTime(now)))}
	if p.capped {
		attrs = append(attrs, "monthly_budget", mb(int64(c.cfg.MonthlyBudget)), "light_check", mb(p.light))
		if p.speedAllowance > 0 && !p.spaced(c.cfg.CheckEvery) {
			attrs = append(attrs, "speed_every", p.speedEvery.Round(time.Minute), "speed_allowance", mb(p.speedAllowance))
		}
	}
	if last := c.hist.lastCheck(); !last.IsZero() {
		attrs = append(attrs, "last", last.UTC().Format(time.RFC3339))
	}
	c.log.Info("link check history read", attrs...)
	c.notePacing(p)
}

// recoverLeftover records the check of a process that died during it, at
// its whole allowance. l is held.
func (c *Checker) recoverLeftover(l *checkLock) {
	m, ok, err := l.leftover(int64(c.cfg.Budget))
	if err != nil {
		c.log.Warn("link check marker not read", "err", err)
		return
	}
	if !ok {
		return
	}
	r := interrupted(m)
	if err := c.hist.add(r); err != nil {
		c.log.Warn("interrupted link check not recorded", "err", err)
	}
	// Cleared either way: counting it twice would be worse.
	if err := l.end(); err != nil {
		c.log.Warn("link check marker not cleared", "err", err)
	}
	c.log.Warn("a link check was interrupted (crash, kill or power cut): counted at its whole allowance",
		"started", m.Start.UTC().Format(time.RFC3339), "counted", mb(m.Budget), "manual", m.Manual)
}

// firstDue is when Run's first check is due, from the history (and the
// spacing the monthly budget may impose).
func (c *Checker) firstDue(start time.Time) time.Time {
	every := c.pace(start).every
	first := start.Add(min(firstCheckDelay, every))
	last := c.hist.lastCheck()
	if last.IsZero() {
		return first
	}
	due := last.Add(every)
	if due.Before(first) {
		due = first // overdue: soon, once the uplink had time to come up
	}
	if lim := start.Add(every); due.After(lim) {
		due = lim // the latest check is in the future: the clock went back
	}
	return due
}

// sleepUntil waits until due by c.clock; false when ctx ended first.
func (c *Checker) sleepUntil(ctx context.Context, due time.Time) bool {
	for {
		if ctx.Err() != nil {
			return false
		}
		d := due.Sub(c.clock.Now())
		if d <= 0 {
			return true
		}
		t := c.clock.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C():
		}
	}
}

// scheduled runs the check that is due, if it still is, and returns when
// the next one is due.
func (c *Checker) scheduled(ctx context.Context, rtt func() *report.RTT, publish func(context.Context, report.LinkReport), sk *skips) time.Time {
	every := c.cfg.CheckEvery
	l, err := c.hist.lock()
	if errors.Is(err, ErrBusy) {
		c.log.Info("link check postponed: another check is running", "retry_in", min(busyRetry, every))
		return c.clock.Now().Add(min(busyRetry, every))
	}
	if err != nil {
		c.log.Warn("link check history not locked: checking anyway", "err", err)
		l = nil
	}
	defer l.release()
	if l != nil {
		c.recoverLeftover(l)
	}
	if err := c.hist.refresh(); err != nil {
		c.log.Warn("link check history not read", "err", err)
	}
	now := c.clock.Now()
	if last := c.hist.lastCheck(); !last.IsZero() && now.Before(last.Add(every)) {
		next := last.Add(every)
		if lim := now.Add(every); next.After(lim) {
			next = lim // the latest check is in the future: the clock went back
		}
		c.log.Info("link check not due: another check ran since (lifeline-agent check)", "last", last.UTC().Format(time.RFC3339), "next", next.UTC().Format(time.RFC3339))
		return next
	}
	p := c.pace(now)
	if p.over {
		sk.add(now)
		args := []any{"used", mb(p.used), "monthly_budget", mb(int64(c.cfg.MonthlyBudget)), "month", monthOf(p.month),
			"resume", p.end.Format("2006-01-02"), "skipped", sk.n}
		if sk.n == 1 {
			c.log.Warn("link check skipped: the monthly check budget is used up (LIFELINE_CHECK_MONTHLY_BUDGET); the next report says how many were skipped", args...)
		} else {
			c.log.Info("link check skipped: the monthly check budget is used up", args...)
		}
		return now.Add(every)
	}
	c.notePacing(p)
	if last := c.hist.lastCheck(); p.spaced(every) && !last.IsZero() && now.Before(last.Add(p.every-every/2)) {
		next := last.Add(p.every)
		if lim := now.Add(p.every); next.After(lim) {
			next = lim // the latest check is in the future: the clock went back
		}
		c.log.Info("link check not due: checks are spaced out to the monthly budget", "every", p.every, "last", last.UTC().Format(time.RFC3339), "next", next.UTC().Format(time.RFC3339))
		return next
	}
	light := !p.speed
	if p.speed && p.allowance < int64(c.cfg.Budget) {
		c.log.Info("speed measurement paced to the monthly budget", "allowance", mb(p.allowance), "speed_every", p.speedEvery.Round(time.Minute))
	}
	if err := l.begin(marker{Start: now, Budget: p.allowance, Light: light}); err != nil {
		c.log.Warn("link check marker not written", "err", err)
	}
	r := c.check(ctx, c.limits(p.allowance, light))
	cancelled := ctx.Err() != nil
	if rtt != nil && !cancelled {
		r.KeepaliveMS = rtt()
	}
	c.annotate(&r, sk)
	if p.capped {
		r.NextSpeed = c.nextSpeedAfter(r, p.every)
		if light {
			r.SpeedNote = clean(c.speedNote(p, r.NextSpeed, r.Time), maxReason)
		}
	}
	if err := c.hist.add(r); err != nil {
		c.log.Warn("link check result not recorded", "err", err)
	}
	if err := l.end(); err != nil {
		c.log.Warn("link check marker not cleared", "err", err)
	}
	if cancelled {
		return now.Add(every)
	}
	if publish != nil {
		publish(ctx, r)
	}
	*sk = skips{}
	return r.Time.Add(c.pace(c.clock.Now()).every)
}

// monthTime is the time whose month is budgeted: now, or the latest check
// when the clock went back behind it (a Pi without a clock at boot).
func (c *Checker) monthTime(now time.Time) time.Time {
	if last := c.hist.lastCheck(); last.After(now) {
		return last
	}
	return now
}

func nextMonth(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
}

// annotate adds the month's data and the skipped checks to r, before it is
// recorded.
func (c *Checker) annotate(r *report.LinkReport, sk *skips) {
	r.MonthBytes = c.hist.monthBytes(r.Time) + r.Bytes
	r.MonthBudget = int64(c.cfg.MonthlyBudget)
	if sk != nil && sk.n > 0 {
		r.Skipped = sk.n
		what := "1 scheduled link check skipped at " + sk.first.UTC().Format(time.RFC3339)
		if sk.n > 1 {
			what = fmt.Sprintf("%d scheduled link checks skipped from %s to %s", sk.n, sk.first.UTC().Format(time.RFC3339), sk.last.UTC().Format(time.RFC3339))
		}
		r.Notes = append(r.Notes, what+": the monthly check budget of "+mb(int64(c.cfg.MonthlyBudget))+" was used up")
	}
}

func (c *Checker) setStatus(s string) {
	if c.status != nil {
		c.status(s)
	}
}

// showSchedule tells Config.Status when the next check is due,
// when speed is measured next, and what the month's checks used.
func (c *Checker) showSchedule(due time.Time, sk *skips) {
	if c.status == nil {
		return
	}
	month := c.monthTime(c.clock.Now())
	used := mb(c.hist.monthBytes(month))
	next := due.UTC().Format("Jan 2 15:04 UTC")
	if sk.n > 0 {
		c.setStatus(fmt.Sprintf("link checks paused until %s: monthly budget used up (%s of %s in %s), %d skipped",
			nextMonth(month).Format("2006-01-02"), used, mb(int64(c.cfg.MonthlyBudget)), monthOf(month), sk.n))
		return
	}
	if c.cfg.MonthlyBudget <= 0 {
		c.setStatus(fmt.Sprintf("link checks: next %s, %s used in %s", next, used, monthOf(month)))
		return
	}
	u := c.hist.usage(due)
	p := pace(c.cfg, due, u)
	var speed string
	switch next := forecast(c.cfg, due, u); {
	case p.over:
		speed = "monthly budget used up"
	case p.speed:
		speed = "with speed"
	case !next.IsZero():
		speed = "speed about " + clockTime(next, due)
	default:
		speed = "no speed until " + monthOf(p.end)
	}
	every := ""
	if p.spaced(c.cfg.CheckEvery) {
		every = fmt.Sprintf(" every %s (paced)", p.every)
	}
	c.setStatus(fmt.Sprintf("link checks%s: next %s, %s, %s of %s used in %s", every, next, speed, used, mb(int64(c.cfg.MonthlyBudget)), monthOf(month)))
}

// CheckNow is a manual check (`lifeline-agent check`): like a scheduled
// one it waits for no other check (ErrBusy when one runs), counts against
// the monthly budget (an error wrapping ErrOverBudget when it is used up,
// unless force) and is recorded in the history, so the agent's next check
// is due CheckEvery after it, and its next speed measurement is paced from
// it. It measures speed whenever the month's pool for speed measurements
// has room for one, with the allowance a scheduled one would get now;
// else it is a light check whose speed note says why. force measures
// speed within LIFELINE_CHECK_BUDGET whatever the monthly budget. When the
// history cannot be used (a user without access to the state directory)
// it refuses unless force, and then checks without recording.
func (c *Checker) CheckNow(ctx context.Context, force bool) (report.LinkReport, error) {
	l, err := c.hist.lock()
	switch {
	case errors.Is(err, ErrBusy):
		return report.LinkReport{}, err
	case err != nil && !force:
		return report.LinkReport{}, fmt.Errorf("cannot use the check history in %s: %w: run this as root or as the agent's user (sudo -u lifeline) so the check counts against LIFELINE_CHECK_MONTHLY_BUDGET, or give --force to check without recording it", c.cfg.StateDir, err)
	case err != nil:
		c.log.Warn("check history unusable: this check is not recorded", "err", err)
		l = nil
	}
	defer l.release()
	if l != nil {
		c.recoverLeftover(l)
		if err := c.hist.refresh(); err != nil {
			if !force {
				return report.LinkReport{}, fmt.Errorf("read the check history: %w (--force checks anyway)", err)
			}
			c.log.Warn("check history not read", "err", err)
		}
	}
	now := c.clock.Now()
	p := c.pace(now)
	allow, light, note := int64(c.cfg.Budget), false, ""
	switch {
	case !p.capped || force:
	case p.over:
		return report.LinkReport{}, fmt.Errorf("%w: link checks used %s of LIFELINE_CHECK_MONTHLY_BUDGET=%s in %s (UTC), so the agent skips its checks until %s; --force checks anyway (up to LIFELINE_CHECK_BUDGET=%s more)",
			ErrOverBudget, mb(p.used), mb(int64(c.cfg.MonthlyBudget)), monthOf(p.month), p.end.Format("2006-01-02"), mb(int64(c.cfg.Budget)))
	case p.speedAllowance > 0 && !p.spaced(c.cfg.CheckEvery):
		allow = p.speedAllowance
	default:
		allow, light = p.allowance, true
		note = fmt.Sprintf("speed not measured: what is left of LIFELINE_CHECK_MONTHLY_BUDGET in %s (%s of %s) is held for the agent's %s still due; --force measures anyway",
			monthOf(p.month), mb(p.left), mb(int64(c.cfg.MonthlyBudget)), lightChecks(p.checks))
	}
	if err := l.begin(marker{Start: now, Budget: allow, Manual: true, Light: light}); err != nil {
		c.log.Warn("check marker not written", "err", err)
	}
	r := c.check(ctx, c.limits(allow, light))
	r.Manual = true
	c.annotate(&r, nil)
	if p.capped {
		r.NextSpeed = c.nextSpeedAfter(r, c.cfg.CheckEvery)
		if light {
			r.SpeedNote = clean(note, maxReason)
		}
	}
	if l != nil {
		if err := c.hist.add(r); err != nil {
			c.log.Warn("check result not recorded", "err", err)
		}
		if err := l.end(); err != nil {
			c.log.Warn("check marker not cleared", "err", err)
		}
	}
	return r, nil
}
