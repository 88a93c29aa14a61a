package linkcheck

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/logging"
	"github.com/lifeline-dev/lifeline/shared/report"
)

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestJournalRotation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		keep     int
		maxBytes int64
		writes   int
	}{
		{name: "keep 3", keep: 3, maxBytes: 1000, writes: 50},
		{name: "keep 1", keep: 1, maxBytes: 1000, writes: 20},
		{name: "no rotation needed", keep: 3, maxBytes: 1 << 20, writes: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "state", "sub") // created on first append
			j := &journal{path: filepath.Join(dir, JournalName), maxBytes: tt.maxBytes, keep: tt.keep}
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			for i := range tt.writes {
				r := report.LinkReport{Time: start.Add(time.Duration(i) * time.Hour), ISP: "Starlink", Bytes: int64(i), Verdict: "ok"}
				if err := j.append(r); err != nil {
					t.Fatal(err)
				}
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
				st, err := os.Stat(filepath.Join(dir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if st.Size() > tt.maxBytes {
					t.Errorf("%s is %d bytes, more than %d", e.Name(), st.Size(), tt.maxBytes)
				}
				if st.Mode().Perm() != 0o640 {
					t.Errorf("%s has mode %v", e.Name(), st.Mode().Perm())
				}
			}
			if len(names) > tt.keep {
				t.Errorf("files %v: more than %d", names, tt.keep)
			}
			// Oldest file first, lines in order: the sequence numbers
			// (in bytes) must increase, ending with the last write.
			sort.Sort(sort.Reverse(sort.StringSlice(names))) // .2, .1, checks.jsonl
			var seq []int64
			for _, n := range names {
				for _, line := range readLines(t, filepath.Join(dir, n)) {
					r, err := report.Decode([]byte(line))
					if err != nil {
						t.Fatalf("%s: %v", n, err)
					}
					seq = append(seq, r.Bytes)
				}
			}
			for i := 1; i < len(seq); i++ {
				if seq[i] != seq[i-1]+1 {
					t.Fatalf("lines out of order or lost: %v", seq)
				}
			}
			if len(seq) == 0 || seq[len(seq)-1] != int64(tt.writes-1) {
				t.Fatalf("the newest line is missing: %v", seq)
			}
			if tt.maxBytes > 1<<19 && len(seq) != tt.writes {
				t.Fatalf("lines lost without rotation: %v", seq)
			}
		})
	}
}

// recorder collects what Run publishes.
type recorder struct {
	mu      sync.Mutex
	reports []report.LinkReport
}

func (r *recorder) publish(_ context.Context, lr report.LinkReport) {
	r.mu.Lock()
	r.reports = append(r.reports, lr)
	r.mu.Unlock()
}

func (r *recorder) get() []report.LinkReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]report.LinkReport(nil), r.reports...)
}

type runner struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
}

func startRun(t *testing.T, c *Checker, rtt func() *report.RTT, publish func(context.Context, report.LinkReport)) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx, rtt, publish) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels Run and waits for it; it must return nil.
func (r *runner) stop() {
	r.t.Helper()
	r.cancel()
	sshtest.Eventually(r.t, 20*time.Second, func() bool { return len(r.done) == 1 }, "Run to return")
	if err := <-r.done; err != nil {
		r.t.Errorf("Run returned %v", err)
	}
	r.done <- nil // keep stop idempotent
}

func TestRunPublishesAndAppends(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	tester := &fakeTester{m: good()}
	cfg := baseConfig(t)
	cfg.ExpectISP = "Starlink"
	c, err := New(withSeams(cfg, tester, clk), nil)
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	rtts := []*report.RTT{{Samples: 12, Median: 41.5, Worst: 90, Missed: 1}, nil}
	var rttCalls int
	rtt := func() *report.RTT { r := rtts[rttCalls%2]; rttCalls++; return r }
	run := startRun(t, c, rtt, rec.publish)

	sshtest.Eventually(t, 20*time.Second, func() bool { return clk.Pending() == 1 }, "Run to wait for the first check")
	if tester.count() != 0 {
		t.Fatal("checked before the first delay")
	}
	clk.Advance(firstCheckDelay)
	sshtest.Eventually(t, 20*time.Second, func() bool { return len(rec.get()) == 1 }, "the first report")
	first := rec.get()[0]
	if !first.OK() || first.KeepaliveMS == nil || *first.KeepaliveMS != *rtts[0] {
		t.Fatalf("first report %+v", first)
	}

	// Nothing before CheckEvery has passed; then a failing check.
	sshtest.Eventually(t, 20*time.Second, func() bool { return clk.Pending() == 1 }, "Run to wait for the next check")
	clk.Advance(cfg.CheckEvery - time.Minute)
	if tester.count() != 1 {
		t.Fatalf("%d checks before CheckEvery passed", tester.count())
	}
	bad := good()
	bad.ISP = "Comcast"
	tester.set(bad)
	clk.Advance(time.Minute)
	sshtest.Eventually(t, 20*time.Second, func() bool { return len(rec.get()) == 2 }, "the second report")
	second := rec.get()[1]
	if second.OK() || !hasReason(second, "wrong ISP") || second.KeepaliveMS != nil {
		t.Fatalf("second report %+v", second)
	}
	run.stop()

	// Both are in the history, one JSON line each, with every field.
	lines := readLines(t, filepath.Join(cfg.StateDir, JournalName))
	if len(lines) != 2 {
		t.Fatalf("%d lines in the history", len(lines))
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &fields); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"v": 1.0, "time": "2026-05-01T00:00:30Z", "isp": "Starlink", "ip": "203.0.113.9", "server": "test server",
		"latency_ms": 40.0, "jitter_ms": 3.0, "download_bps": 80e6, "bytes": 12e6, "verdict": "ok", "duration_s": 0.0, "month_bytes": 12e6,
		"keepalive_rtt_ms": map[string]any{"samples": 12.0, "median": 41.5, "worst": 90.0, "missed": 1.0},
	}
	if fmt.Sprint(fields) != fmt.Sprint(want) {
		t.Errorf("JSON line %s\nwant fields %v", lines[0], want)
	}
	var failed map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &failed); err != nil {
		t.Fatal(err)
	}
	if reasons, ok := failed["reasons"].([]any); failed["verdict"] != "failed" || !ok || len(reasons) != 1 {
		t.Errorf("failed JSON line %s", lines[1])
	}
}

func TestRunDisabled(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(time.Now())
	tester := &fakeTester{m: good()}
	cfg := baseConfig(t)
	cfg.CheckEvery = 0
	c, err := New(withSeams(cfg, tester, clk), nil)
	if err != nil {
		t.Fatal(err)
	}
	run := startRun(t, c, nil, nil)
	clk.Advance(24 * time.Hour)
	run.stop()
	if tester.count() != 0 || clk.Pending() != 0 {
		t.Fatalf("%d checks, %d timers with checks disabled", tester.count(), clk.Pending())
	}
}

// TestRunStateDirBroken: a history that cannot be written does not stop
// the report from going out.
func TestRunStateDirBroken(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(time.Now())
	cfg := baseConfig(t)
	cfg.StateDir = filepath.Join(cfg.StateDir, "a-file")
	if err := os.WriteFile(cfg.StateDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var mu sync.Mutex
	log, _ := logging.New(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) }), "warn")
	c, err := New(withSeams(cfg, &fakeTester{m: good()}, clk), log)
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	run := startRun(t, c, nil, rec.publish)
	sshtest.Eventually(t, 20*time.Second, func() bool { return clk.Pending() == 1 }, "the timer")
	clk.Advance(firstCheckDelay)
	sshtest.Eventually(t, 20*time.Second, func() bool { return len(rec.get()) == 1 }, "the report")
	run.stop()
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "link check result not recorded") {
		t.Errorf("no warning logged: %s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestRunRealCheck: Run with the real speedtest-go against the fake, on
// the wall clock with a short first delay (CheckEvery below it).
func TestRunRealCheck(t *testing.T) {
	t.Parallel()
	fake := startFake(t, speedtestfake.Config{})
	cfg := baseConfig(t)
	cfg.SpeedtestURL = fake.URL()
	cfg.CheckEvery = time.Millisecond
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	run := startRun(t, c, func() *report.RTT { return &report.RTT{Samples: 1, Median: 5, Worst: 5} }, rec.publish)
	sshtest.Eventually(t, 20*time.Second, func() bool { return len(rec.get()) >= 1 }, "a published report")
	run.stop()
	r := rec.get()[0]
	if !r.OK() || r.KeepaliveMS == nil || r.Bytes <= 0 {
		t.Fatalf("report %+v", r)
	}
	lines := readLines(t, filepath.Join(cfg.StateDir, JournalName))
	if len(lines) < 1 {
		t.Fatal("nothing appended")
	}
	got, err := report.Decode([]byte(lines[0]))
	if err != nil || got.ISP != r.ISP || got.Bytes != r.Bytes {
		t.Fatalf("history line %s: %v", lines[0], err)
	}
}
