package linkcheck

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// link40 measures like a 40 Mbit/s link against speedtest.net: a light
// check moves testLightBytes (the control requests), a speed measurement
// those plus 5 MB for every second of its capture time, up to its
// allowance (where the meter stops it: a fast link is cut short).
type link40 struct {
	mu   sync.Mutex
	lims []Limits
}

const link40Bps = 40e6

func (f *link40) Measure(_ context.Context, lim Limits) Measurement {
	f.mu.Lock()
	f.lims = append(f.lims, lim)
	f.mu.Unlock()
	m := good()
	if lim.Light {
		m.HaveDownload, m.DownloadBps, m.Bytes = false, 0, min(testLightBytes, lim.Budget)
		return m
	}
	full := testLightBytes + int64(link40Bps/8*lim.Duration.Seconds())
	m.DownloadBps, m.Bytes = link40Bps, min(full, lim.Budget)
	if m.Bytes < full {
		m.DownloadCut = true
		m.DownloadTime = time.Duration(float64(m.Bytes-testLightBytes) * 8 / link40Bps * float64(time.Second))
	}
	return m
}

func (f *link40) calls() []Limits {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Limits(nil), f.lims...)
}

// meteredDefaults are the shipped defaults that matter for pacing
// (LIFELINE_CHECK_EVERY=1h, LIFELINE_CHECK_BUDGET=10MB,
// LIFELINE_CHECK_MONTHLY_BUDGET=300MB, LIFELINE_CHECK_DURATION=10s).
func meteredDefaults(c *Config) {
	c.CheckEvery, c.Budget, c.MonthlyBudget, c.CheckDuration = time.Hour, 10*units.MB, 300*units.MB, 10*time.Second
}

// month is what a simulated month's history says.
type month struct {
	checks, speeds []report.LinkReport
	bytes          int64
}

// monthOfHistory is the history's checks from from to the month's end.
func monthOfHistory(t *testing.T, w *world, from time.Time) month {
	t.Helper()
	var out month
	for _, r := range w.history() {
		if r.Time.Before(from) || !r.Time.Before(nextMonth(from)) {
			continue
		}
		out.checks = append(out.checks, r)
		out.bytes += r.Bytes
		if !r.Light {
			out.speeds = append(out.speeds, r)
		}
	}
	return out
}

// assertMonth: every hour from first on had its check (one each, none
// skipped, all ok), speed was measured at least every 24 h to the month's
// end, the month stayed within its budget, and every light check says
// why and when speed is measured next (within two hours of when it was).
func assertMonth(t *testing.T, w *world, first time.Time, used int64) month {
	t.Helper()
	end := nextMonth(first)
	m := monthOfHistory(t, w, first)
	if want := countIn(end.Sub(first), time.Hour); len(m.checks) != want {
		for i, r := range m.checks {
			if want := first.Add(time.Duration(i) * time.Hour); !r.Time.Equal(want) {
				t.Errorf("check %d at %s, want %s", i, r.Time, want)
				var near []string
				for _, l := range strings.Split(w.logs.String(), "\n") {
					if !strings.Contains(l, "link check ok") {
						near = append(near, l)
					}
				}
				t.Logf("the agent's log, but for its results:\n%s", strings.Join(near, "\n"))
				break
			}
		}
		t.Fatalf("%d checks in %s, want %d (hourly)", len(m.checks), first.Month(), want)
	}
	for i, r := range m.checks {
		if want := first.Add(time.Duration(i) * time.Hour); !r.Time.Equal(want) {
			t.Fatalf("check %d at %s, want %s", i, r.Time, want)
		}
		if !r.OK() || r.Skipped != 0 || len(r.Notes) != 0 {
			t.Fatalf("check %d: %s (notes %q)", i, r.Summary(), r.Notes)
		}
	}
	if strings.Contains(w.logs.String(), "link check skipped") || strings.Contains(w.logs.String(), "spaced out") {
		t.Errorf("checks skipped or spaced out:\n%s", w.logs.String())
	}
	prev := first.Add(-time.Hour) // the first check must measure, or one in the day before it did
	if len(m.speeds) > 0 && !m.speeds[0].Time.Equal(first) {
		prev = lastSpeedBefore(t, w, first)
	}
	for _, r := range append(m.speeds, report.LinkReport{Time: end}) {
		if gap := r.Time.Sub(prev); gap > 24*time.Hour {
			t.Errorf("no speed measurement from %s to %s (%s)", prev, r.Time, gap)
		}
		prev = r.Time
	}
	if total := used + m.bytes; total > int64(w.cfg.MonthlyBudget) {
		t.Errorf("the month used %s, budget %s", mb(total), mb(int64(w.cfg.MonthlyBudget)))
	}
	for i, r := range m.checks {
		if !r.Light {
			continue
		}
		paced := strings.Contains(r.SpeedNote, "speed not measured this hour: paced to the monthly budget") && strings.Contains(r.SpeedNote, "next measurement about")
		// In the month's last hours what is left may all be held for them.
		held := r.Time.After(end.Add(-24*time.Hour)) && strings.Contains(r.SpeedNote, "is held for the") && strings.Contains(r.SpeedNote, "; next measurement ")
		if !(paced || held) || !strings.Contains(r.Summary(), "download not measured (speed not measured") {
			t.Fatalf("light check %d: %s", i, r.Summary())
		}
		var next time.Time
		for _, s := range m.speeds {
			if s.Time.After(r.Time) {
				next = s.Time
				break
			}
		}
		if !next.IsZero() && (r.NextSpeed.Sub(next) > 2*time.Hour || next.Sub(r.NextSpeed) > 2*time.Hour) {
			t.Errorf("light check at %s said speed next at %s; it was measured at %s", r.Time, r.NextSpeed, next)
		}
	}
	return m
}

func lastSpeedBefore(t *testing.T, w *world, at time.Time) time.Time {
	t.Helper()
	var last time.Time
	for _, r := range w.history() {
		if !r.Light && r.Time.Before(at) {
			last = r.Time
		}
	}
	if last.IsZero() {
		t.Fatalf("no speed measurement before %s", at)
	}
	return last
}

func speedTimes(m month) string {
	var s []string
	for _, r := range m.speeds {
		s = append(s, r.Time.Format("02T15"))
	}
	return strings.Join(s, " ")
}

// logMonth prints a simulated month's figures.
func logMonth(t *testing.T, m month) {
	t.Helper()
	var light, speed int64
	for _, r := range m.checks {
		if r.Light {
			light += r.Bytes
		} else {
			speed += r.Bytes
		}
	}
	n := max(len(m.speeds), 1)
	t.Logf("%d checks, %d with speed (%s MB each on average), %d light (%s); %s in all (light %s, speed %s)",
		len(m.checks), len(m.speeds), strings.TrimSuffix(mb(speed/int64(n)), " MB"), len(m.checks)-len(m.speeds), mb(light/int64(max(len(m.checks)-len(m.speeds), 1))),
		mb(m.bytes), mb(light), mb(speed))
	t.Logf("speed measured at (day, hour): %s", speedTimes(m))
}

// TestPacedMonths runs the simulated months: whole months of hourly checks
// on the fake clock, each driven by Run as the agent runs it. Not parallel
// with the other tests, only among themselves: a test that starts a
// process (the link check program, a helper) forks this one, and the
// child holds copies of every open file, check.lock's included, until it
// execs; a scheduled check that finds the lock taken retries a minute
// later, which a simulation that steps by the hour would take for a
// missed check.
func TestPacedMonths(t *testing.T) {
	for name, f := range map[string]func(*testing.T){
		"defaults":               pacedMonth,
		"half used":              pacedMonthHalfUsed,
		"restarted":              pacedMonthRestart,
		"no cap":                 unpacedWithoutCap,
		"manual check":           manualCheckShiftsPacing,
		"cap below light checks": spacedOut,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t)
		})
	}
}

// pacedMonth: the defaults, hourly checks, a 300 MB month, a
// 40 Mbit/s link: every hourly check runs all month, speed is measured at
// least daily, and the month stays within its budget.
func pacedMonth(t *testing.T) {
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC) // a 31-day month
	w := newWorld(t, start, meteredDefaults)
	link := &link40{}
	w.measure = link
	var mu sync.Mutex
	var notes []string
	w.startWithStatus(func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() })
	w.advance(firstCheckDelay, firstCheckDelay) // then on the hour, as a real timer fires
	w.advance(31*24*time.Hour-firstCheckDelay, time.Hour)
	w.stop()
	m := assertMonth(t, w, start.Add(firstCheckDelay), 0)
	logMonth(t, m)
	if len(m.speeds) < 31 {
		t.Errorf("%d speed measurements in May", len(m.speeds))
	}
	for _, lim := range link.calls() {
		if !lim.Light && (lim.Budget > int64(w.cfg.Budget) || lim.Budget < int64(minSpeedAllowance)) {
			t.Errorf("speed allowance %s", mb(lim.Budget))
		}
		if lim.Light && lim.Budget > int64(lightAllowance) {
			t.Errorf("light allowance %s", mb(lim.Budget))
		}
	}
	// The published reports are the history's, and say the same.
	pub := w.rec.get()
	if len(pub) != len(m.checks) || !pub[1].Light || pub[1].SpeedNote != m.checks[1].SpeedNote || pub[1].NextSpeed.IsZero() {
		t.Errorf("%d published; the second: %+v", len(pub), pub[1])
	}
	mu.Lock()
	defer mu.Unlock()
	var sawSpeedNext, sawWithSpeed bool
	for _, s := range notes {
		sawSpeedNext = sawSpeedNext || (strings.Contains(s, ", speed about ") && strings.Contains(s, " of 300 MB used in 2026-05"))
		sawWithSpeed = sawWithSpeed || strings.Contains(s, "UTC, with speed, ")
	}
	if !sawSpeedNext || !sawWithSpeed {
		t.Errorf("status lines do not show the pacing: %q ... %q", notes[0], notes[len(notes)-1])
	}
	t.Logf("status: %s", notes[len(notes)/2])
}

// pacedMonthHalfUsed: a month that starts with half of its budget
// used (a forced manual check at midnight) still gets every hourly check
// and a speed measurement every day, within the budget.
func pacedMonthHalfUsed(t *testing.T) {
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) // a 30-day month
	w := newWorld(t, start, meteredDefaults)
	w.measure = &link40{}
	big := report.LinkReport{Time: start, Bytes: 150e6, Verdict: report.VerdictOK, Manual: true, DownloadBps: 40e6}
	if err := w.checker().hist.add(big); err != nil {
		t.Fatal(err)
	}
	w.clk.Advance(10 * time.Second)
	w.start()
	w.advance(time.Hour-10*time.Second, time.Hour) // 01:00, an hour after the manual check
	w.advance(30*24*time.Hour-time.Hour, time.Hour)
	w.stop()
	m := assertMonth(t, w, start.Add(time.Hour), big.Bytes)
	logMonth(t, m)
	if len(m.speeds) < 29 {
		t.Errorf("%d speed measurements", len(m.speeds))
	}
}

// pacedMonthRestart: an agent restarted in the middle of the month
// (right after a speed measurement, and again later) checks exactly as
// one that ran throughout: no extra check, the same speed measurements.
func pacedMonthRestart(t *testing.T) {
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	// simulate runs the month, restarting the agent at each of restarts
	// (each 10 minutes after a check) for 20 minutes (no check was due).
	simulate := func(restarts ...time.Duration) (*world, month) {
		w := newWorld(t, start, meteredDefaults)
		w.measure = &link40{}
		w.start()
		w.advance(firstCheckDelay, firstCheckDelay)
		at := firstCheckDelay
		for _, r := range restarts {
			w.advance(r-at, time.Hour)
			w.stop()
			w.clk.Advance(20 * time.Minute)
			w.start()
			w.advance(30*time.Minute, 30*time.Minute) // the next check, on time
			at = r + 50*time.Minute
		}
		w.advance(31*24*time.Hour-at, time.Hour)
		w.stop()
		return w, assertMonth(t, w, start.Add(firstCheckDelay), 0)
	}
	_, throughout := simulate()
	// Restart just after the sixth speed measurement, and 3½ days later.
	after := throughout.speeds[5].Time.Sub(start) + 10*time.Minute
	w, restarted := simulate(after, after+84*time.Hour)
	if got, want := speedTimes(restarted), speedTimes(throughout); got != want {
		t.Errorf("speed measured at\n%s with restarts, at\n%s without", got, want)
	}
	if n := strings.Count(w.logs.String(), "link check history read"); n != 3 {
		t.Errorf("%d starts, want 3", n)
	}
}

// unpacedWithoutCap: with LIFELINE_CHECK_MONTHLY_BUDGET=0 every check
// measures speed within LIFELINE_CHECK_BUDGET, as before pacing.
func unpacedWithoutCap(t *testing.T) {
	start := time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)
	w := newWorld(t, start, func(c *Config) { meteredDefaults(c); c.MonthlyBudget = 0 })
	link := &link40{}
	w.measure = link
	var mu sync.Mutex
	var notes []string
	w.startWithStatus(func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() })
	w.advance(48*time.Hour, time.Hour)
	w.stop()
	lims := link.calls()
	if len(lims) != 48 {
		t.Fatalf("%d checks in 48 hours", len(lims))
	}
	for i, lim := range lims {
		if lim != (Limits{Budget: int64(10 * units.MB), Duration: 10 * time.Second, Connections: 4}) {
			t.Fatalf("check %d limits %+v", i, lim)
		}
	}
	for _, r := range w.rec.get() {
		if r.Light || r.SpeedNote != "" || !r.NextSpeed.IsZero() || r.MonthBudget != 0 || r.Bytes != int64(10*units.MB) || r.DownloadBps != link40Bps {
			t.Fatalf("report %+v", r)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if last := notes[len(notes)-1]; last != "link checks: next May 12 13:00 UTC, 480 MB used in 2026-05" {
		t.Errorf("status %q", last)
	}
}

// manualCheckShiftsPacing: `lifeline-agent check` in the middle of a
// paced month measures speed (with the allowance a scheduled measurement
// would get), counts against the month, and the agent's next speed
// measurement is paced from it, not from its own previous one.
func manualCheckShiftsPacing(t *testing.T) {
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	w := newWorld(t, start, meteredDefaults)
	link := &link40{}
	w.measure = link
	w.start()
	w.advance(firstCheckDelay, firstCheckDelay)
	w.advance(3*24*time.Hour, time.Hour)
	before := monthOfHistory(t, w, start)
	lastSpeed := before.speeds[len(before.speeds)-1]
	planned := w.rec.get()[len(w.rec.get())-1].NextSpeed // as the latest light check said
	if planned.IsZero() || !planned.After(w.clk.Now()) {
		t.Fatalf("no next speed measurement planned: %v", planned)
	}
	// Two hours before the agent's next speed measurement, by hand.
	w.advance(planned.Sub(w.clk.Now())-2*time.Hour, time.Hour)
	w.clk.Advance(10 * time.Minute)
	c := w.checker()
	if err := c.hist.refresh(); err != nil {
		t.Fatal(err)
	}
	want := c.pace(w.clk.Now()).speedAllowance
	r, err := c.CheckNow(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Light || !r.Manual || r.Bytes != want || want <= int64(minSpeedAllowance) || r.NextSpeed.Sub(r.Time) < 20*time.Hour {
		t.Fatalf("manual check %+v, want a speed measurement of %s paced from it", r, mb(want))
	}
	w.advance(2*24*time.Hour, time.Hour)
	w.stop()
	after := monthOfHistory(t, w, start)
	var next report.LinkReport
	for _, s := range after.speeds {
		if s.Time.After(r.Time) {
			next = s
			break
		}
	}
	if next.Time.IsZero() || next.Time.Sub(r.Time) < 20*time.Hour || next.Time.Sub(r.Time) > 24*time.Hour {
		t.Errorf("after the manual check at %s (the agent's had been at %s, planned for %s) speed was measured at %s", r.Time, lastSpeed.Time, planned, next.Time)
	}
	if next.MonthBytes-next.Bytes < r.MonthBytes {
		t.Errorf("the manual check's bytes are not in the month: %d then %d", r.MonthBytes, next.MonthBytes)
	}
}

// spacedOut: a monthly budget too small for a light check every hour
// spaces the checks out, and the log and the status say so.
func spacedOut(t *testing.T) {
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	w := newWorld(t, start, func(c *Config) { meteredDefaults(c); c.MonthlyBudget = 5 * units.MB })
	link := &link40{}
	w.measure = link
	var mu sync.Mutex
	var notes []string
	w.startWithStatus(func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() })
	w.advance(firstCheckDelay, firstCheckDelay)
	w.advance(3*24*time.Hour-firstCheckDelay, time.Hour)
	w.stop()
	h := w.history()
	// 5 MB pays for 100 light checks of 50 kB: one every 8 hours.
	if len(h) != 9 {
		t.Fatalf("%d checks in 3 days, want 9", len(h))
	}
	for i, r := range h {
		if want := start.Add(firstCheckDelay + time.Duration(i)*8*time.Hour); !r.Time.Equal(want) || !r.Light || !r.OK() {
			t.Fatalf("check %d: %s, want a light check at %s", i, r.Summary(), want)
		}
		if !strings.Contains(r.SpeedNote, "pays only for light checks, spaced to every 8h0m0s; next measurement in 2026-06") {
			t.Errorf("speed note %q", r.SpeedNote)
		}
	}
	logs := w.logs.String()
	if !strings.Contains(logs, `level=WARN msg="link checks spaced out: LIFELINE_CHECK_MONTHLY_BUDGET cannot pay for a light check every LIFELINE_CHECK_EVERY`) ||
		!strings.Contains(logs, "every=8h0m0s") || strings.Count(logs, "link checks spaced out") != 1 {
		t.Errorf("log:\n%s", logs)
	}
	mu.Lock()
	defer mu.Unlock()
	if last := notes[len(notes)-1]; !strings.HasPrefix(last, "link checks every 8h0m0s (paced): next May 4 00:00 UTC, no speed until 2026-06, ") {
		t.Errorf("status %q", last)
	}
}

var may = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

// inMonth is usage.months with b used in t's month.
func inMonth(t time.Time, b int64) [2]monthUse {
	return [2]monthUse{{key: monthKey(t), bytes: b}, {key: monthKey(nextMonth(t))}}
}

// TestPace: the pacing arithmetic, at the month's edges.
func TestPace(t *testing.T) {
	t.Parallel()
	at := func(day, hour int) time.Time {
		return may.Add(time.Duration(day-1)*24*time.Hour + time.Duration(hour)*time.Hour + 30*time.Second)
	}
	tests := []struct {
		name  string
		cfg   func(*Config)
		now   time.Time
		u     usage
		check func(t *testing.T, p plan)
	}{
		{name: "no cap: speed at every check", cfg: func(c *Config) { c.MonthlyBudget = 0 }, now: at(10, 12),
			u: usage{last: at(10, 11), lastSpeed: at(10, 11), speedBytes: 10e6},
			check: func(t *testing.T, p plan) {
				if p.capped || !p.speed || p.allowance != 10e6 || p.every != time.Hour {
					t.Errorf("%+v", p)
				}
			}},
		{name: "first check ever: speed", now: at(1, 0),
			check: func(t *testing.T, p plan) {
				// 744 checks left at 50 kB: 37.2 MB held; 262.8 MB over 31 days.
				if !p.speed || p.checks != 744 || p.pool != 262_800_000 || p.allowance/1000 != 262_800_000/31/1000 || !p.nextSpeed.Equal(at(1, 0)) {
					t.Errorf("%+v", p)
				}
			}},
		{name: "an hour after a speed measurement: light", now: at(1, 1),
			u: usage{months: inMonth(may, 8_517_000), last: at(1, 0), lastSpeed: at(1, 0), speedBytes: 8_517_000},
			check: func(t *testing.T, p plan) {
				if p.speed || p.allowance != int64(lightAllowance) || p.speedEvery < 23*time.Hour || p.speedEvery > 24*time.Hour ||
					!p.nextSpeed.Equal(at(2, 0)) {
					t.Errorf("%+v", p)
				}
			}},
		{name: "a slow link is measured more often", now: at(1, 1),
			u: usage{months: inMonth(may, 2_500_000), last: at(1, 0), lastSpeed: at(1, 0), speedBytes: 2_500_000},
			check: func(t *testing.T, p plan) {
				// It used 2.5 MB: paced at minSpeedAllowance, 3 MB, every 8.5 h.
				if p.speed || p.speedEvery < 8*time.Hour || p.speedEvery > 9*time.Hour || !p.nextSpeed.Equal(at(1, 9)) {
					t.Errorf("%+v", p)
				}
			}},
		{name: "the history's light checks cost more than the estimate", now: at(1, 1),
			u: usage{light: 80_000, last: at(1, 0), lastSpeed: at(1, 0), speedBytes: 8e6},
			check: func(t *testing.T, p plan) {
				if p.light != 80_000 || p.pool != 300e6-743*80_000 {
					t.Errorf("%+v", p)
				}
			}},
		{name: "last hour of the month: what is left, up to the check budget", now: at(31, 23),
			u: usage{months: inMonth(may, 200e6), last: at(31, 22), lastSpeed: at(31, 10), speedBytes: 8e6},
			check: func(t *testing.T, p plan) {
				if !p.speed || p.checks != 1 || p.allowance != 10e6 || !p.end.Equal(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)) {
					t.Errorf("%+v", p)
				}
			}},
		{name: "last hour of the month, little left: light", now: at(31, 23),
			u: usage{months: inMonth(may, 299_000_000), last: at(31, 22), lastSpeed: at(31, 10), speedBytes: 8e6},
			check: func(t *testing.T, p plan) {
				if p.speed || p.over || p.allowance != int64(lightAllowance) || p.speedAllowance != 0 || !p.nextSpeed.IsZero() {
					t.Errorf("%+v", p)
				}
			}},
		{name: "last hour, less than two light checks left: over", now: at(31, 23),
			u: usage{months: inMonth(may, 299_950_000), last: at(31, 22)},
			check: func(t *testing.T, p plan) {
				if !p.over || p.speed || p.allowance != 50_000 {
					t.Errorf("%+v", p)
				}
			}},
		{name: "month change: a fresh budget, paced from May's last measurement", now: time.Date(2026, 6, 1, 0, 0, 30, 0, time.UTC),
			u: usage{months: inMonth(may, 299_000_000), last: at(31, 23), lastSpeed: at(31, 20), speedBytes: 8e6},
			check: func(t *testing.T, p plan) {
				// June: 720 checks hold 36 MB; 264 MB at 8 MB: every 21.8 h.
				if p.speed || p.used != 0 || monthOf(p.month) != "2026-06" || p.checks != 720 || p.pool != 264e6 ||
					p.speedAllowance/1000 != 264e6/30/1000 || !p.nextSpeed.Equal(time.Date(2026, 6, 1, 18, 0, 30, 0, time.UTC)) {
					t.Errorf("%+v", p)
				}
			}},
		{name: "clock went back: the latest check's month", now: at(10, 8),
			u: usage{months: inMonth(may, 100e6), last: time.Date(2026, 6, 2, 0, 0, 0, 0, time.UTC), lastSpeed: time.Date(2026, 6, 2, 0, 0, 0, 0, time.UTC), speedBytes: 8e6},
			check: func(t *testing.T, p plan) {
				if monthOf(p.month) != "2026-06" || p.used != 0 || !p.speed {
					t.Errorf("%+v", p)
				}
			}},
		{name: "a cap smaller than a light check an hour: spaced out", cfg: func(c *Config) { c.MonthlyBudget = 5 * units.MB }, now: at(1, 0),
			check: func(t *testing.T, p plan) {
				if !p.spaced(time.Hour) || p.every != 8*time.Hour || p.checks != 93 || p.speed || p.speedAllowance != 0 || p.allowance != int64(lightAllowance) {
					t.Errorf("%+v", p)
				}
			}},
		{name: "spaced out at the month's end", cfg: func(c *Config) { c.MonthlyBudget = 5 * units.MB }, now: at(31, 20),
			u: usage{months: inMonth(may, 4_850_000), last: at(31, 12)},
			check: func(t *testing.T, p plan) {
				// 150 kB left: 3 light checks over the last 4 hours.
				if p.every != 2*time.Hour || p.checks != 2 || p.allowance != 150_000 {
					t.Errorf("%+v", p)
				}
			}},
		{name: "hourly light checks fit, no speed measurement does", cfg: func(c *Config) { c.MonthlyBudget = 39 * units.MB }, now: at(1, 0),
			check: func(t *testing.T, p plan) {
				if p.spaced(time.Hour) || p.speed || p.speedAllowance != 0 || p.pool != 1_800_000 {
					t.Errorf("%+v", p)
				}
			}},
		{name: "upload: twice the smallest measurement", cfg: func(c *Config) { c.Upload = true; c.MonthlyBudget = 150 * units.MB }, now: at(1, 0),
			check: func(t *testing.T, p plan) {
				// 112.8 MB over 31 days is 3.6 MB a day: less than 2 × 3 MB.
				if !p.speed || p.allowance != 6e6 {
					t.Errorf("%+v", p)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig(t)
			meteredDefaults(&cfg)
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			u := tt.u
			if u.light == 0 {
				u.light = int64(lightEstimate)
			}
			p := pace(cfg, tt.now, u)
			if p.capped && !p.over && p.allowance > p.left {
				t.Errorf("allowance %d of %d left", p.allowance, p.left)
			}
			if p.speed && p.allowance > p.pool && p.capped {
				t.Errorf("speed allowance %d, pool %d", p.allowance, p.pool)
			}
			tt.check(t, p)
		})
	}
}

// TestPaceNeverPassesTheCap: whatever the month's position and use, a
// check never gets more than what is left, and a speed measurement never
// eats into the light checks' reserve.
func TestPaceNeverPassesTheCap(t *testing.T) {
	t.Parallel()
	cfg := baseConfig(t)
	meteredDefaults(&cfg)
	for h := 0; h < 31*24; h += 7 {
		now := may.Add(time.Duration(h)*time.Hour + 30*time.Second)
		for used := int64(0); used <= 300e6; used += 7_300_000 {
			for _, sb := range []int64{0, 1e6, 8e6, 50e6} {
				u := usage{months: inMonth(may, used), last: now.Add(-time.Hour), light: int64(lightEstimate)}
				if sb > 0 {
					u.lastSpeed, u.speedBytes = now.Add(-30*time.Hour), sb
				}
				p := pace(cfg, now, u)
				if p.over {
					continue
				}
				// A light check is expected to use p.light (its allowance
				// only bounds it); a speed measurement its allowance.
				reserve := int64(p.checks-1) * p.light
				use := p.light
				if p.speed {
					use = p.allowance
				}
				if p.allowance > p.left || (!p.spaced(cfg.CheckEvery) && use+reserve > p.left) || (p.speed && p.spaced(cfg.CheckEvery)) {
					t.Fatalf("at %s with %s used: %+v", now, mb(used), p)
				}
			}
		}
	}
}

// TestLightEstimateFromHistory: what a light check is taken to use comes
// from the history's light checks, never below lightEstimate nor above
// lightAllowance; an older agent's history (no light mark) has none.
func TestLightEstimateFromHistory(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		lights []int64
		want   int64
	}{
		{nil, int64(lightEstimate)},
		{[]int64{10_000, 20_000}, int64(lightEstimate)},
		{[]int64{70_000, 90_000}, 80_000},
		{[]int64{5_000_000}, int64(lightAllowance)},
	} {
		t.Run(fmt.Sprint(tt.lights), func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, may, meteredDefaults)
			c := w.checker()
			if err := c.hist.add(report.LinkReport{Time: may, Bytes: 8e6, Verdict: report.VerdictOK}); err != nil {
				t.Fatal(err)
			}
			for i, b := range tt.lights {
				if err := c.hist.add(report.LinkReport{Time: may.Add(time.Duration(i+1) * time.Hour), Bytes: b, Light: true, Verdict: report.VerdictOK}); err != nil {
					t.Fatal(err)
				}
			}
			c = w.checker() // another process reads the file
			if err := c.hist.refresh(); err != nil {
				t.Fatal(err)
			}
			u := c.hist.usage(may.Add(10 * time.Hour))
			if u.light != tt.want || !u.lastSpeed.Equal(may) || u.speedBytes != 8e6 {
				t.Errorf("usage %+v, want light %d and the speed measurement at %s", u, tt.want, may)
			}
		})
	}
}

// TestForecastNoGarbage: the forecast plays a month of checks forward at
// every check without allocating (the agent's heap is small). Not
// parallel: it counts the process's allocations.
func TestForecastNoGarbage(t *testing.T) {
	cfg := baseConfig(t)
	meteredDefaults(&cfg)
	cfg.MonthlyBudget = 39 * units.MB // no speed measurement fits: the forecast runs to its end
	u := usage{months: inMonth(may, 1e6), last: may, lastSpeed: may, speedBytes: 8e6, light: int64(lightEstimate)}
	var next time.Time
	if n := testing.AllocsPerRun(5, func() { next = forecast(cfg, may.Add(time.Hour), u) }); n != 0 {
		t.Errorf("%v allocations per forecast", n)
	}
	if want := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC); !next.Equal(want) {
		t.Errorf("next speed measurement %s, want %s (June's budget)", next, want)
	}
}
