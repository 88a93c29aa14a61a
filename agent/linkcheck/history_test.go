package linkcheck

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/logging"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// meteredTester uses 12 MB per check, or its allowance when that is less,
// as the real one does; a light check uses testLightBytes and downloads
// nothing.
type meteredTester struct {
	mu    sync.Mutex
	lims  []Limits
	block chan struct{} // when not nil, Measure waits for it (or ctx)
}

func (f *meteredTester) Measure(ctx context.Context, lim Limits) Measurement {
	f.mu.Lock()
	f.lims = append(f.lims, lim)
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
		}
	}
	m := good()
	if lim.Light {
		m.HaveDownload, m.DownloadBps, m.Bytes = false, 0, testLightBytes
	}
	m.Bytes = min(m.Bytes, lim.Budget)
	return m
}

// testLightBytes is what a light check of the test testers uses: about
// what one costs against speedtest.net (see lightEstimate).
const testLightBytes = 40_000

func (f *meteredTester) calls() []Limits {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Limits(nil), f.lims...)
}

// world is one state directory, one clock and one tester that several
// Checkers (one per "process start") share.
type world struct {
	t       *testing.T
	cfg     Config
	clk     *clocktest.Fake
	tester  *meteredTester
	measure SpeedTester // instead of tester, when set
	logs    *lockedBuffer
	rec     recorder
	run     *runner
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newWorld(t *testing.T, start time.Time, edit func(*Config)) *world {
	cfg := baseConfig(t)
	if edit != nil {
		edit(&cfg)
	}
	return &world{t: t, cfg: cfg, clk: clocktest.New(start), tester: &meteredTester{}, logs: &lockedBuffer{}}
}

func (w *world) checker() *Checker { return w.checkerWithStatus(nil) }

// checkerWithStatus is checker, telling status its schedule (Config.Status).
func (w *world) checkerWithStatus(status func(string)) *Checker {
	w.t.Helper()
	log, err := logging.New(w.logs, "info")
	if err != nil {
		w.t.Fatal(err)
	}
	var tester SpeedTester = w.tester
	if w.measure != nil {
		tester = w.measure
	}
	cfg := w.cfg
	cfg.Tester, cfg.Clock, cfg.Status = tester, w.clk, status
	c, err := New(cfg, log)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// start starts the agent (a new Run on a new Checker, as after a restart)
// and waits until it is parked on its timer.
func (w *world) start() { w.t.Helper(); w.startWithStatus(nil) }

// startWithStatus is start, telling status the schedule (Config.Status).
func (w *world) startWithStatus(status func(string)) {
	w.t.Helper()
	w.run = startRun(w.t, w.checkerWithStatus(status), nil, w.rec.publish)
	w.parked()
}

func (w *world) stop() { w.run.stop() }

// parked waits until Run waits for its next check.
func (w *world) parked() {
	w.t.Helper()
	sshtest.Eventually(w.t, 20*time.Second, func() bool { return w.clk.Pending() == 1 }, "Run to wait for its next check")
}

// advance moves the clock by d in steps of step, letting Run act at each.
func (w *world) advance(d, step time.Duration) {
	w.t.Helper()
	for ; d > 0; d -= step {
		w.clk.Advance(min(step, d))
		w.parked()
	}
}

func (w *world) history() []report.LinkReport {
	w.t.Helper()
	var out []report.LinkReport
	for _, line := range readLines(w.t, filepath.Join(w.cfg.StateDir, JournalName)) {
		r, err := report.Decode([]byte(line))
		if err != nil {
			w.t.Fatalf("history line %s: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// TestRestartsCostNoExtraCheck: an agent restarted every 2 minutes for 40
// minutes with LIFELINE_CHECK_EVERY=10m checks every 10 minutes, as if it
// had run throughout (without the history, each start checked 30 s in:
// 20 checks instead of 4).
func TestRestartsCostNoExtraCheck(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)
	w := newWorld(t, t0, func(c *Config) { c.CheckEvery = 10 * time.Minute; c.MonthlyBudget = 0 })
	for range 20 {
		w.start()
		w.advance(2*time.Minute, 30*time.Second)
		w.stop()
	}
	var times []string
	for _, r := range w.history() {
		times = append(times, r.Time.Sub(t0).String())
	}
	if got, want := strings.Join(times, " "), "30s 10m30s 20m30s 30m30s"; got != want {
		t.Errorf("checks at %s after the first start, want %s", got, want)
	}
	if n := len(w.tester.calls()); n != 4 {
		t.Errorf("%d measurements, want 4", n)
	}
	if n := len(w.rec.get()); n != 4 {
		t.Errorf("%d reports published, want 4", n)
	}
}

// TestFirstDue: when the first check of a start is due, from the history.
func TestFirstDue(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		last  time.Duration // before start; 0: no history
		every time.Duration
		want  time.Duration // after start
	}{
		{"fresh install", 0, time.Hour, firstCheckDelay},
		{"fresh install, short interval", 0, 10 * time.Second, 10 * time.Second},
		{"checked 10 minutes ago", 10 * time.Minute, time.Hour, 50 * time.Minute},
		{"overdue", 3 * time.Hour, time.Hour, firstCheckDelay},
		{"due in 10 s", time.Hour - 10*time.Second, time.Hour, firstCheckDelay},
		{"last check in the future (clock went back)", -5 * time.Hour, time.Hour, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, start, func(c *Config) { c.CheckEvery = tt.every })
			c := w.checker()
			if tt.last != 0 {
				if err := c.hist.add(report.LinkReport{Time: start.Add(-tt.last), Verdict: report.VerdictOK, Bytes: 1}); err != nil {
					t.Fatal(err)
				}
			}
			c = w.checker() // a new process reads the file
			c.startup()
			if got := c.firstDue(start).Sub(start); got != tt.want {
				t.Errorf("first check %s after start, want %s", got, tt.want)
			}
		})
	}
}

// TestMonthlyBudgetAcrossRestarts: a month whose budget is used up (a
// forced manual check took nearly all of it) skips its checks, whatever
// the restarts, with a log line, until the month changes; the first
// report of the next month says how many were skipped.
func TestMonthlyBudgetAcrossRestarts(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 5, 31, 19, 0, 0, 0, time.UTC)
	w := newWorld(t, t0, func(c *Config) { c.MonthlyBudget = 300 * units.MB })
	// 60 kB left: less than two light checks' worth.
	if err := w.checker().hist.add(report.LinkReport{Time: t0.Add(-9 * time.Hour), Bytes: 299_940_000, Verdict: report.VerdictOK, Manual: true}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notes []string
	w.startWithStatus(func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() })
	w.advance(2*time.Hour, 30*time.Second) // 19:00:30 and 20:00:30 skipped
	w.stop()
	w.start()
	w.advance(3*time.Hour, 30*time.Second) // 21:00:30 to 23:00:30 skipped
	if n := len(w.tester.calls()); n != 0 {
		t.Fatalf("%d checks over the monthly budget:\n%s", n, w.logs.String())
	}
	if n := strings.Count(w.logs.String(), "link check skipped: the monthly check budget is used up"); n != 5 {
		t.Errorf("%d log lines for 5 skipped checks:\n%s", n, w.logs.String())
	}
	if n := strings.Count(w.logs.String(), "level=WARN msg=\"link check skipped"); n != 2 {
		t.Errorf("%d warnings, want one per start:\n%s", n, w.logs.String())
	}
	// June: checks resume; the first report says what was skipped.
	w.advance(2*time.Hour, 30*time.Second) // 00:00:30 and 01:00:30
	w.stop()
	reps := w.rec.get()
	if len(reps) != 2 || len(w.tester.calls()) != 2 {
		t.Fatalf("%d reports, %d checks, want 2 in June", len(reps), len(w.tester.calls()))
	}
	june := reps[0]
	if june.Time.Month() != time.June || june.Skipped != 3 || len(june.Notes) != 1 || !strings.Contains(june.Notes[0], "3 scheduled link checks skipped from 2026-05-31T21:00:30Z to 2026-05-31T23:00:30Z") ||
		june.MonthBytes != june.Bytes || june.MonthBudget != int64(300*units.MB) {
		t.Errorf("first report of June %+v", june)
	}
	if reps[1].Skipped != 0 || len(reps[1].Notes) != 0 {
		t.Errorf("skips reported twice: %+v", reps[1])
	}
	mu.Lock()
	got := strings.Join(notes, "\n")
	mu.Unlock()
	if !strings.Contains(got, "link checks paused until 2026-06-01: monthly budget used up (299.9 MB of 300 MB in 2026-05), 2 skipped") {
		t.Errorf("status lines %q", got)
	}
}

// TestTornLastLine: a line cut short (a power cut in the middle of its
// write) is skipped by readers, loses no earlier line, and is cut off by
// the next append.
func TestTornLastLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := &journal{path: filepath.Join(dir, JournalName), maxBytes: journalMax, keep: journalKeep}
	t0 := time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		if err := j.append(report.LinkReport{Time: t0.Add(time.Duration(i) * time.Hour), Bytes: int64(i + 1), Verdict: report.VerdictOK}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"v":1,"time":"2026-05-10T15:00:00Z","bytes":99`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	h := newHistory(dir, j)
	if err := h.refresh(); err != nil {
		t.Fatal(err)
	}
	if last := h.lastCheck(); !last.Equal(t0.Add(2 * time.Hour)) {
		t.Errorf("last check %v", last)
	}
	if b := h.monthBytes(t0); b != 6 {
		t.Errorf("month bytes %d, want 6", b)
	}
	if h.unreadable() != 1 {
		t.Errorf("%d unreadable lines, want 1", h.unreadable())
	}
	if err := h.add(report.LinkReport{Time: t0.Add(4 * time.Hour), Bytes: 4, Verdict: report.VerdictOK}); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, j.path)
	if len(lines) != 4 {
		t.Fatalf("%d lines after the repair: %q", len(lines), lines)
	}
	for i, l := range lines {
		r, err := report.Decode([]byte(l))
		if err != nil || r.Bytes != []int64{1, 2, 3, 4}[i] {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
	}
}

// The kill -9 tests run this test binary again as the process that dies.
const helperEnv = "LINKCHECK_TEST_HELPER"

func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("the process the kill -9 tests kill")
	}
	dir := os.Getenv("LINKCHECK_TEST_DIR")
	switch mode {
	case "append":
		// Append as fast as possible; say which line is on disk.
		j := &journal{path: filepath.Join(dir, JournalName), maxBytes: journalMax, keep: journalKeep}
		t0 := time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)
		for i := range 100_000 {
			r := report.LinkReport{Time: t0.Add(time.Duration(i) * time.Second), ISP: strings.Repeat("x", i%200), Bytes: int64(i), Verdict: report.VerdictOK}
			if err := j.append(r); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			fmt.Println(i)
		}
	case "check":
		cfg := baseConfig(t)
		cfg.StateDir, cfg.MonthlyBudget = dir, 0 // no cap: its allowance is LIFELINE_CHECK_BUDGET
		tester := &meteredTester{block: make(chan struct{})}
		cfg.Tester = announce{tester}
		c, err := New(cfg, nil)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		c.CheckNow(context.Background(), false)
		fmt.Println("error: the check ended")
	}
	os.Exit(1)
}

// announce says on stdout when the measurement starts.
type announce struct{ SpeedTester }

func (a announce) Measure(ctx context.Context, lim Limits) Measurement {
	fmt.Println("measuring")
	return a.SpeedTester.Measure(ctx, lim)
}

// helper starts TestHelperProcess in mode and returns its stdout lines.
func helper(t *testing.T, mode, dir string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "LINKCHECK_TEST_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewScanner(out)
}

func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, not by SIGKILL", err)
	}
}

// TestKilledWhileAppending: a process killed (-9) while it appends as fast
// as it can loses no line it had appended.
func TestKilledWhileAppending(t *testing.T) {
	t.Parallel()
	for round := range 3 {
		t.Run(strconv.Itoa(round), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cmd, out := helper(t, "append", dir)
			acked := -1
			for out.Scan() {
				n, err := strconv.Atoi(out.Text())
				if err != nil {
					t.Fatalf("helper: %s", out.Text())
				}
				acked = n
				if n == 100+round*150 {
					break
				}
			}
			kill9(t, cmd)
			for out.Scan() { // acknowledged before it died
				if n, err := strconv.Atoi(out.Text()); err == nil {
					acked = n
				}
			}
			j := &journal{path: filepath.Join(dir, JournalName), maxBytes: journalMax, keep: journalKeep}
			var got []int64
			bad, err := j.scan(func(e entry) { got = append(got, e.Bytes) })
			if err != nil {
				t.Fatal(err)
			}
			if bad > 1 || len(got) < acked+1 {
				t.Fatalf("%d lines readable, %d not, after %d were acknowledged", len(got), bad, acked+1)
			}
			for i, b := range got {
				if b != int64(i) {
					t.Fatalf("line %d holds record %d", i, b)
				}
			}
			// The next append (a new process) leaves a clean file.
			if err := j.append(report.LinkReport{Time: time.Now(), Verdict: report.VerdictOK}); err != nil {
				t.Fatal(err)
			}
			for _, l := range readLines(t, j.path) {
				if _, err := report.Decode([]byte(l)); err != nil {
					t.Fatalf("line %q after the next append: %v", l, err)
				}
			}
		})
	}
}

// TestKilledDuringCheck: a `lifeline-agent check` killed (-9) in the middle
// of its measurement still counts, at its whole allowance, and the agent
// started afterwards does not check again before LIFELINE_CHECK_EVERY.
func TestKilledDuringCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cmd, out := helper(t, "check", dir)
	if !out.Scan() || out.Text() != "measuring" {
		t.Fatalf("helper: %q %v", out.Text(), out.Err())
	}
	kill9(t, cmd)
	killed := time.Now()

	w := newWorld(t, killed, func(c *Config) { c.StateDir, c.MonthlyBudget = dir, 300*units.MB })
	w.start()
	hist := w.history()
	if len(hist) != 1 || hist[0].Bytes != int64(50*units.MB) || !hist[0].Manual || hist[0].OK() || !hasReason(hist[0], "check interrupted") {
		t.Fatalf("history after the kill: %+v", hist)
	}
	if !strings.Contains(w.logs.String(), "a link check was interrupted") {
		t.Errorf("the interrupted check was not logged:\n%s", w.logs.String())
	}
	w.advance(50*time.Minute, time.Minute)
	if n := len(w.tester.calls()); n != 0 {
		t.Fatalf("%d checks within an hour of the interrupted one", n)
	}
	w.advance(11*time.Minute, time.Minute)
	w.stop()
	if n := len(w.tester.calls()); n != 1 {
		t.Fatalf("%d checks an hour after the interrupted one, want 1", n)
	}
	// It counts as the month's latest speed measurement: the next check is
	// light, paced from it.
	if r := w.rec.get()[0]; !r.Light || (r.MonthBytes != int64(50*units.MB)+r.Bytes && r.Time.Month() == hist[0].Time.Month()) {
		t.Errorf("check after the interrupted one %+v, want a light check and the interrupted 50 MB in the month", r)
	}
}

func TestParseEntry(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		line  string
		ok    bool
		bytes int64
		light bool
	}{
		{`{"v":1,"time":"2026-05-10T12:00:00Z","isp":"x","bytes":12000000,"verdict":"ok","month_bytes":99}`, true, 12000000, false},
		{`{"v":1,"time":"2026-05-10T12:00:00Z","isp":"x","bytes":41000,"verdict":"ok","month_bytes":99,"light":true,"speed_note":"paced"}`, true, 41000, true},
		{`{"v":1,"time":"2026-05-10T12:00:00Z","isp":"a\"light\":true","bytes":41000,"verdict":"ok"}`, true, 41000, false},
		{`{"v":1,"isp":"a\"time\":\"2020-01-01T00:00:00Z\" \"bytes\":7","time":"2026-05-10T12:00:00Z","bytes":3}`, true, 3, false},
		{`{"v":1,"time":"2026-05-10T12:00:00Z","verdict":"ok"}`, true, 0, false},
		{`{"v":1,"time":"2026-05-10T12:00:00Z","bytes":-5}`, true, 0, false},
		{`{"v":1,"time":"2026-05-10T12:00:00Z","bytes":12`, false, 0, false}, // torn
		{`{"v":1,"bytes":12}`, false, 0, false},
		{`{"v":1,"time":"yesterday","bytes":12}`, false, 0, false},
		{`{"v":1,"time":"2026-05-10T12:00:00Z","bytes":99999999999999999999999}`, false, 0, false},
		{`not json`, false, 0, false},
		{``, false, 0, false},
	}
	for _, tt := range tests {
		e, ok := parseEntry([]byte(tt.line))
		if ok != tt.ok || (ok && (!e.Time.Equal(t0) || e.Bytes != tt.bytes || e.Light != tt.light)) {
			t.Errorf("parseEntry(%s) = %+v, %v; want bytes %d, %v", tt.line, e, ok, tt.bytes, tt.ok)
		}
	}
}

// FuzzParseEntry: whatever the network put in a report's strings, the
// journal line reads back with its time and bytes.
func FuzzParseEntry(f *testing.F) {
	f.Add("Starlink", "wrong ISP \"time\":\"2020-01-01T00:00:00Z\"", int64(12e6), int64(1e6))
	f.Add("\"light\":true", "\"light\":true", int64(40e3), int64(1e6+1))
	f.Add("\"bytes\":1", "", int64(0), int64(0))
	f.Fuzz(func(t *testing.T, isp, reason string, b, ns int64) {
		r := report.LinkReport{Time: time.Unix(0, ns).UTC(), ISP: isp, Reasons: []string{reason}, Bytes: max(b, 0), Verdict: report.VerdictFailed, MonthBytes: b,
			Light: ns%2 == 0, SpeedNote: reason}
		line, err := json.Marshal(r)
		if err != nil {
			return
		}
		e, ok := parseEntry(line)
		if !ok || !e.Time.Equal(r.Time) || e.Bytes != r.Bytes || e.Light != r.Light {
			t.Fatalf("line %s read as %+v, %v", line, e, ok)
		}
	})
}

// TestScanGarbageDoesNotGrow: reading the history allocates about the
// same for 200 lines as for 2000 (the agent reads it at every start).
func TestScanGarbageDoesNotGrow(t *testing.T) {
	allocs := func(lines int) uint64 {
		j := &journal{path: filepath.Join(t.TempDir(), JournalName), maxBytes: journalMax, keep: journalKeep}
		r := report.LinkReport{ISP: "Starlink", IP: "203.0.113.9", Server: "a server", LatencyMS: 40.5, DownloadBps: 8e7, Bytes: 12e6,
			Verdict: report.VerdictOK, KeepaliveMS: &report.RTT{Samples: 700, Median: 40, Worst: 99, Missed: 1}}
		for i := range lines {
			r.Time = time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Hour)
			if err := j.append(r); err != nil {
				t.Fatal(err)
			}
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		n := 0
		if _, err := j.scan(func(entry) { n++ }); err != nil || n != lines {
			t.Fatalf("scanned %d of %d lines: %v", n, lines, err)
		}
		runtime.ReadMemStats(&after)
		return after.Mallocs - before.Mallocs
	}
	small, big := allocs(200), allocs(2000)
	if big > small+20 {
		t.Errorf("scanning allocates per line: %d allocations for 200 lines, %d for 2000", small, big)
	}
}
