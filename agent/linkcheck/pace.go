package linkcheck

import (
	"fmt"
	"time"

	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// Pacing under LIFELINE_CHECK_MONTHLY_BUDGET.
//
// Every scheduled check proves the link: the ISP, the test server and the
// latency to it. That "light" check costs only speedtest-go's control
// requests. The download (and upload) measurement costs megabytes, so it
// is paced: at each check, what is left of the month's budget, less a
// reserve for every light check still due before the month ends, is the
// pool that speed measurements may use. A measurement gets at most
// LIFELINE_CHECK_BUDGET and at most a day's share of the pool (so that one
// a day fits), and measurements are spaced so that, at what the latest one
// used, the pool lasts until the month's end: a link that uses less (a
// slow one) is measured more often. The month's last day may use what the
// month has left.
//
// When the month's budget cannot pay for a light check every
// LIFELINE_CHECK_EVERY, the checks themselves are spaced out (and the log
// says so); when it cannot pay for one more, checks are skipped as before.
// Everything is computed from the history at each check, so a restart
// changes nothing.
const (
	// lightEstimate is what a light check is taken to use until the
	// history has light checks of its own (then their average, if more).
	// Against the fake speedtest server (integration/fake/speedtest) one
	// moves 4.1 kB as the meter counts (TestLightCheck: 15 small requests
	// on plain HTTP). Against speedtest.net, from speedtest-go v1.7.10's
	// requests: a TLS 1.3 connection to www.speedtest.net (about 6 kB with
	// its certificates and Go's post-quantum key share), the client info
	// and the server list (3 to 8 kB with their headers), two HTTP requests
	// to each of the 10 listed servers to rank them (about 9 kB) and 11
	// latency requests to the nearest (about 5 kB): about 30 kB as the
	// meter counts, about 45 kB on the carrier's bill with TCP/IP headers
	// and DNS. 50 kB reserves a little more than either.
	lightEstimate = 50 * units.KB
	// lightAllowance bounds one light check (the meter's hard cap), and is
	// what one whose process died is counted at.
	lightAllowance = 500 * units.KB
	// minSpeedAllowance is the smallest speed measurement worth making,
	// per measured phase: the control requests and one test file
	// (speedtest-go's random1000x1000.jpg is 1.98 MB).
	minSpeedAllowance = 3 * units.MB
	// speedAtLeastEvery is how often speed is measured at least, when the
	// month's pool pays for measurements of minSpeedAllowance that often.
	speedAtLeastEvery = 24 * time.Hour
)

// usage is what pacing needs of the history. It is a plain value, so that
// forecast can play checks forward without garbage.
type usage struct {
	months     [2]monthUse // the budgeted month and the next
	last       time.Time   // the latest check
	lastSpeed  time.Time   // the latest check that measured speed, or tried to (zero: none)
	speedBytes int64       // what that one used
	light      int64       // what a light check is taken to use
}

// monthUse is what the checks of one calendar month (UTC) used.
type monthUse struct {
	key   int // monthKey
	bytes int64
}

// monthKey numbers t's calendar month (UTC).
func monthKey(t time.Time) int {
	t = t.UTC()
	return t.Year()*12 + int(t.Month()) - 1
}

// monthBytes is what checks used in t's month, as far as u knows.
func (u usage) monthBytes(t time.Time) int64 {
	k := monthKey(t)
	for _, m := range u.months {
		if m.key == k {
			return m.bytes
		}
	}
	return 0
}

// with is u once r is recorded.
func (u usage) with(r report.LinkReport) usage {
	k, found := monthKey(r.Time), false
	for i := range u.months {
		if u.months[i].key == k {
			u.months[i].bytes += max(r.Bytes, 0)
			found = true
		}
	}
	if !found { // a later month: the earlier one is no longer budgeted
		u.months = [2]monthUse{u.months[1], {key: k, bytes: max(r.Bytes, 0)}}
	}
	if r.Time.After(u.last) {
		u.last = r.Time
	}
	if !r.Light && !r.Time.Before(u.lastSpeed) {
		u.lastSpeed, u.speedBytes = r.Time, max(r.Bytes, 0)
	}
	return u
}

// plan is what the check at a time may do.
type plan struct {
	// capped: a monthly budget applies. Without one, every check measures
	// speed with LIFELINE_CHECK_BUDGET, every LIFELINE_CHECK_EVERY.
	capped bool
	// over: what is left of the month cannot pay for a light check; the
	// check is skipped.
	over bool

	month      time.Time     // a time in the budgeted month: the check's, or the latest check's when the clock went back
	end        time.Time     // the start of the next month (UTC)
	used, left int64         // the month's bytes so far, and what is left of its budget
	checks     int           // scheduled checks left in the month, this one included
	light      int64         // what a light check is taken to use
	every      time.Duration // between checks: CheckEvery, longer when the month cannot pay for a light check that often
	pool       int64         // left, less the light checks' reserve: what speed measurements may use

	speed          bool          // this check measures speed
	allowance      int64         // what this check may use
	speedAllowance int64         // what a speed measurement may use now (0: none fits this month)
	speedEvery     time.Duration // between speed measurements at the current pace
	nextSpeed      time.Time     // about when speed is measured at this pace (this check's time when speed; zero: not this month); forecast is closer
}

// spaced reports whether checks are further apart than every (the
// configured interval) for want of budget.
func (p plan) spaced(every time.Duration) bool { return p.every > every }

// pace plans the check due at now under cfg, from the history's u.
func pace(cfg Config, now time.Time, u usage) plan {
	every, per := cfg.CheckEvery, int64(cfg.Budget)
	if cfg.MonthlyBudget <= 0 || every <= 0 {
		return plan{every: every, speed: true, allowance: per, speedAllowance: per, speedEvery: every, nextSpeed: now}
	}
	p := plan{capped: true, every: every, month: now, light: max(u.light, 1)}
	if u.last.After(now) {
		p.month = u.last
	}
	p.end = nextMonth(p.month)
	p.used = u.monthBytes(p.month)
	p.left = int64(cfg.MonthlyBudget) - p.used
	if p.left < 2*p.light {
		p.over, p.allowance = true, max(p.left, 0)
		return p
	}
	p.allowance = min(int64(lightAllowance), p.left)
	rest := p.end.Sub(now)
	p.checks = countIn(rest, every)
	if int64(p.checks)*p.light > p.left {
		// Not even a light check every `every`: as many as it pays for,
		// evenly spread over the rest of the month, on the schedule's grid.
		n := p.left / p.light
		p.every = time.Duration(countIn(rest/time.Duration(n), every)) * every
		p.checks = countIn(rest, p.every)
		return p
	}
	p.pool = p.left - int64(p.checks)*p.light
	phases := int64(1)
	if cfg.Upload {
		phases = 2
	}
	least := min(int64(minSpeedAllowance)*phases, per)
	if p.pool < least {
		return p // no speed measurement fits before the month's end
	}
	// A day's share of the pool (all of it in the month's last day).
	daily := p.pool
	if rest > speedAtLeastEvery {
		daily = int64(float64(p.pool) * float64(speedAtLeastEvery) / float64(rest))
	}
	a := min(max(daily, least), per)
	p.speedAllowance = a
	cost := a
	if !u.lastSpeed.IsZero() && u.speedBytes > 0 {
		cost = min(max(u.speedBytes, least), a)
	}
	p.speedEvery = max(every, time.Duration(float64(rest)*float64(cost)/float64(p.pool)))
	// Half a check early rather than a whole one late: on the schedule's
	// grid the gap then rounds to the nearest interval.
	due := u.lastSpeed.Add(p.speedEvery - every/2)
	if u.lastSpeed.IsZero() || u.lastSpeed.After(now) || !now.Before(due) {
		p.speed, p.allowance, p.nextSpeed = true, a, now
		return p
	}
	p.nextSpeed = now.Add(time.Duration(countIn(due.Sub(now), every)) * every)
	return p
}

// countIn is how many steps of step start in a span of d from its start:
// d/step rounded up, at least 1.
func countIn(d, step time.Duration) int {
	if d <= 0 || step <= 0 {
		return 1
	}
	return int((d + step - 1) / step)
}

// pace plans the check due at t from the history.
func (c *Checker) pace(t time.Time) plan { return pace(c.cfg, t, c.hist.usage(t)) }

// maxForecast bounds the checks forecast plays forward.
const maxForecast = 2000

// forecast is about when speed is measured at or after the check due at
// t: the pacing played forward check by check, each light check taken to
// use what the plan reserves for it (zero: not within maxForecast checks,
// or never).
func forecast(cfg Config, t time.Time, u usage) time.Time {
	for range maxForecast {
		p := pace(cfg, t, u)
		switch {
		case p.speed:
			return t
		case !p.over:
			u = u.with(report.LinkReport{Time: t, Bytes: min(p.light, p.allowance), Light: true})
		}
		t = t.Add(p.every)
	}
	return time.Time{}
}

// nextSpeedAfter is about when speed is measured after r, once r is
// recorded and the next check is due every after it (zero: no monthly
// budget, or not known).
func (c *Checker) nextSpeedAfter(r report.LinkReport, every time.Duration) time.Time {
	if c.cfg.MonthlyBudget <= 0 {
		return time.Time{}
	}
	return forecast(c.cfg, r.Time.Add(every), c.hist.usage(r.Time).with(r))
}

// speedNote says why the light check r (planned by p) measured no speed,
// and when it will: next (zero: not this month).
func (c *Checker) speedNote(p plan, next time.Time, now time.Time) string {
	month := monthOf(p.month)
	when := "in " + monthOf(p.end)
	if !next.IsZero() {
		when = "about " + clockTime(next, now)
	}
	switch {
	case p.spaced(c.cfg.CheckEvery):
		return fmt.Sprintf("speed not measured: LIFELINE_CHECK_MONTHLY_BUDGET (%s left of %s in %s) pays only for light checks, spaced to every %s; next measurement %s",
			mb(p.left), mb(int64(c.cfg.MonthlyBudget)), month, p.every, when)
	case p.speedAllowance == 0:
		return fmt.Sprintf("speed not measured: what is left of LIFELINE_CHECK_MONTHLY_BUDGET in %s (%s of %s) is held for the %s still due; next measurement %s",
			month, mb(p.left), mb(int64(c.cfg.MonthlyBudget)), lightChecks(p.checks), when)
	}
	this := "at this check"
	if c.cfg.CheckEvery == time.Hour {
		this = "this hour"
	}
	return fmt.Sprintf("speed not measured %s: paced to the monthly budget (%s of %s used in %s), next measurement %s",
		this, mb(p.used), mb(int64(c.cfg.MonthlyBudget)), month, when)
}

// lightChecks is "1 light check" or "N light checks".
func lightChecks(n int) string {
	if n == 1 {
		return "1 light check"
	}
	return fmt.Sprintf("%d light checks", n)
}

// clockTime prints t for people: its time of day (UTC) when it is on the
// day of now, else with its date.
func clockTime(t, now time.Time) string {
	t, now = t.UTC(), now.UTC()
	if t.Year() == now.Year() && t.YearDay() == now.YearDay() {
		return t.Format("15:04 UTC")
	}
	return t.Format("Jan 2 15:04 UTC")
}

// notePacing logs when the checks' spacing changes for want of budget
// (warning once when the budget cannot pay for a light check every
// LIFELINE_CHECK_EVERY), and when speed cannot be measured this month.
func (c *Checker) notePacing(p plan) {
	if !p.capped || p.over {
		return
	}
	every := c.cfg.CheckEvery
	c.paceMu.Lock()
	prevEvery, prevNoSpeed := c.loggedEvery, c.loggedNoSpeed
	noSpeed := p.speedAllowance == 0 && !p.spaced(every)
	c.loggedEvery, c.loggedNoSpeed = p.every, noSpeed
	c.paceMu.Unlock()
	month := monthOf(p.month)
	switch {
	case p.spaced(every) && prevEvery != p.every:
		c.log.Warn("link checks spaced out: LIFELINE_CHECK_MONTHLY_BUDGET cannot pay for a light check every LIFELINE_CHECK_EVERY until the month ends; no speed measurement until it does",
			"every", p.every, "check_every", every, "left", mb(p.left), "monthly_budget", mb(int64(c.cfg.MonthlyBudget)), "month", month,
			"light_check", mb(p.light), "checks_due", p.checks, "resume", p.end.Format("2006-01-02"))
	case !p.spaced(every) && prevEvery > every:
		c.log.Info("link checks back to every LIFELINE_CHECK_EVERY", "every", every)
	}
	if noSpeed && !prevNoSpeed {
		c.log.Warn("no speed measurement until the month ends: what is left of LIFELINE_CHECK_MONTHLY_BUDGET is held for the light checks still due (ISP and latency are still checked)",
			"left", mb(p.left), "monthly_budget", mb(int64(c.cfg.MonthlyBudget)), "month", month, "checks_due", p.checks, "light_check", mb(p.light))
	}
}
