package linkcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/logging"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// The tests of this package run the real link check program (built once
// by TestMain, found by FindProgram in its directory) wherever a Checker
// is made without Config.Tester: TestCheckVerdicts, TestBudgetHolds,
// TestCheckMain and the others measure with the real speedtest-go in that
// program against the fake server. The tests below add the protocol's
// failures, with small shell programs standing in for it.

var (
	programDir string // the real program
	fakesDir   string // fakes/MODE/lifeline-linkcheck
)

// programReport is what the "good" fake writes: a measurement, and agent
// fields the agent must not take from a program.
var programReport = report.LinkReport{Version: report.Version, Time: time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC),
	ISP: "Fake Carrier", IP: "203.0.113.44", Server: "fake server", LatencyMS: 21.5, JitterMS: 1.5,
	DownloadBps: 55e6, UploadBps: 7e6, Bytes: 7_654_321, Verdict: report.VerdictOK, DurationSecs: 999,
	KeepaliveMS: &report.RTT{Samples: 9}, Manual: true, MonthBytes: 1, MonthBudget: 2, Skipped: 3, Notes: []string{"from the program"},
	SpeedNote: "a note on the speed from the measurement", Light: true, NextSpeed: time.Date(1999, 1, 2, 0, 0, 0, 0, time.UTC)}

// fakes are the stand-ins for the program, by mode. Each reads nothing
// unless it says so (the agent's request is small enough for the pipe).
// files are what they read, by path in fakesDir.
func fakes() (files, programs map[string]string) {
	good, err := report.Encode(programReport)
	if err != nil {
		panic(err)
	}
	stopped := programReport
	stopped.Reasons = []string{"speed test: download: interrupted: check stopped: context canceled"}
	stoppedJSON, err := report.Encode(stopped)
	if err != nil {
		panic(err)
	}
	files = map[string]string{"stoppable/stopped.json": string(stoppedJSON) + "\n"}
	return files, map[string]string{
		// A result; the request is saved in the state directory it names.
		"good": `req=$(cat)
dir=$(printf '%s' "$req" | sed -n 's/.*"StateDir":"\([^"]*\)".*/\1/p')
printf '%s' "$req" > "$dir/request.json"
echo '{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"measuring","budget":123}' >&2
printf '%s\n' '` + string(good) + `'`,
		"crash": `echo 'panic: runtime error: index out of range [3] with length 3' >&2
echo '' >&2
echo 'goroutine 1 [running]:' >&2
exit 2`,
		"segv":    `kill -SEGV $$`,
		"garbage": `echo '{"time":"2026-01-01T00:00:00Z","level":"WARN","msg":"odd server","n":3}' >&2; echo 'this is not JSON'`,
		"empty":   `exit 0`,
		"huge":    `head -c 40000 /dev/zero | tr '\0' x`,
		"invalid": `echo '{"v":1,"time":"2026-01-01T00:00:00Z","verdict":"failed"}'`,
		"newer":   `echo '{"v":2,"time":"2026-01-01T00:00:00Z","verdict":"ok"}'`,
		"two":     `printf '%s\n%s\n' '` + string(good) + `' '` + string(good) + `'`,
		"error":   `echo '{"time":"2026-01-01T00:00:00Z","level":"ERROR","msg":"cannot measure","err":"no test server"}' >&2; exit 1`,
		// Ignores SIGTERM (exec keeps the disposition): only SIGKILL ends it.
		"hang": `trap '' TERM; exec sleep 60`,
		// Ends with a result on SIGTERM, within 30 s otherwise.
		"stoppable": `trap 'cat "${0%/*}/stopped.json"; exit 0' TERM
echo '{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"ready"}' >&2
i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; exit 3`,
		// Talks a lot: more lines than the agent logs, one too long.
		"chatty": `i=0; while [ $i -lt 100 ]; do echo "{\"level\":\"DEBUG\",\"msg\":\"line $i\"}" >&2; i=$((i+1)); done
head -c 5000 /dev/zero | tr '\0' y >&2
printf '%s\n' '` + string(good) + `'`,
	}
}

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" { // TestHelperProcess: no build
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "linkcheck-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		programDir = filepath.Join(dir, "program")
		out, err := exec.Command("go", "build", "-o", filepath.Join(programDir, ProgramName), "../cmd/lifeline-linkcheck").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", ProgramName, err, out)
			return 1
		}
		programDirs = func() []string { return []string{programDir} }
		// Written before any test runs: a file open for writing while
		// another test forks would make its exec fail (ETXTBSY).
		fakesDir = filepath.Join(dir, "fakes")
		files, programs := fakes()
		for name, content := range files {
			p := filepath.Join(fakesDir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		for mode, body := range programs {
			p := filepath.Join(fakesDir, mode, ProgramName)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if err := os.WriteFile(filepath.Join(fakesDir, "noexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func fake(mode string) string { return filepath.Join(fakesDir, mode, ProgramName) }

// programWorld is a Checker with program, on a fake clock, logging into a
// buffer, with a monthly budget.
func programWorld(t *testing.T, program string) (*Checker, *clocktest.Fake, *lockedBuffer) {
	t.Helper()
	cfg := baseConfig(t)
	cfg.MonthlyBudget = 300 * units.MB
	logs := &lockedBuffer{}
	log, err := logging.New(logs, "debug")
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC))
	cfg.Program, cfg.Clock = program, clk
	c, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	c.stopGrace, c.killGrace = 50*time.Millisecond, 50*time.Millisecond
	return c, clk, logs
}

// TestProgramFailures: whatever the program does, a check is one result:
// the measurement when the program wrote one, else a failed check whose
// reason says what went wrong, counted at the whole allowance when the
// program ran (it may have moved data), at nothing when it never started.
// Each is recorded once in the history, with its marker cleared, and
// counts against the month.
func TestProgramFailures(t *testing.T) {
	t.Parallel()
	const budget = -1 // the check's allowance, paced to the monthly budget
	tests := []struct {
		name     string
		program  string
		dirs     []string // instead of program: FindProgram in these
		timeout  time.Duration
		wantOK   bool
		bytes    int64
		reasons  []string
		logs     []string
		maxTaken time.Duration
	}{
		{name: "good result", program: fake("good"), wantOK: true, bytes: programReport.Bytes,
			logs: []string{`level=INFO msg=measuring part=test budget=123`}},
		{name: "crash", program: fake("crash"), bytes: budget,
			reasons: []string{"link check program " + fake("crash") + " failed (exit status 2): panic: runtime error: index out of range", "counted at its whole allowance of "},
			logs:    []string{`msg="link check program output" part=test line="panic: runtime error`, `line="goroutine 1 [running]:"`}},
		{name: "killed by a signal", program: fake("segv"), bytes: budget, reasons: []string{"failed (signal: segmentation fault)", "whole allowance"}},
		{name: "error exit", program: fake("error"), bytes: budget, reasons: []string{"failed (exit status 1): cannot measure: no test server"}},
		{name: "garbage", program: fake("garbage"), bytes: budget,
			reasons: []string{"wrote no valid result (link report is not JSON", "whole allowance"}, logs: []string{`level=WARN msg="odd server" part=test n=3`}},
		{name: "no output", program: fake("empty"), bytes: budget, reasons: []string{"wrote no result"}},
		{name: "too much output", program: fake("huge"), bytes: budget, reasons: []string{"wrote more than 16384 bytes: not a result"}},
		{name: "invalid report", program: fake("invalid"), bytes: budget, reasons: []string{"wrote no valid result (invalid link report: a failed verdict must give at least one reason)"}},
		{name: "newer report version", program: fake("newer"), bytes: budget, reasons: []string{"wrote no valid result (link report version 2 is not supported"}},
		{name: "two results", program: fake("two"), bytes: budget, reasons: []string{"wrote no valid result"}},
		{name: "timeout", program: fake("hang"), timeout: 300 * time.Millisecond, bytes: budget, maxTaken: 10 * time.Second,
			reasons: []string{"killed: no result in time", "whole allowance"}, logs: []string{"link check program killed: it did not end when told to stop"}},
		{name: "missing", dirs: []string{filepath.Join(fakesDir, "nowhere"), fakesDir}, bytes: 0,
			reasons: []string{"link check program lifeline-linkcheck not found: tried " + filepath.Join(fakesDir, "nowhere", ProgramName) + " (no such file or directory), " + filepath.Join(fakesDir, ProgramName) + " (no such file or directory)",
				"lifeline-agent package (/usr/lib/lifeline/lifeline-linkcheck)"}},
		{name: "not executable", program: filepath.Join(fakesDir, "noexec"), bytes: 0, reasons: []string{"could not be started: permission denied"}},
		{name: "start fails", program: filepath.Join(fakesDir, "nowhere", ProgramName), bytes: 0, reasons: []string{"could not be started: no such file or directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, clk, logs := programWorld(t, tt.program)
			c.log = c.log.With("part", "test")
			if tt.dirs != nil {
				c.program = func() (string, error) { return findProgram(tt.dirs) }
			}
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			if tt.bytes == budget {
				tt.bytes = c.pace(clk.Now()).speedAllowance
				if tt.bytes <= 0 || tt.bytes >= int64(c.cfg.Budget) {
					t.Fatalf("allowance %d: not paced", tt.bytes)
				}
			}
			start := time.Now()
			r, err := c.CheckNow(ctx, false)
			taken := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Validate(); err != nil {
				t.Fatalf("result does not validate: %v: %+v", err, r)
			}
			if r.OK() != tt.wantOK || r.Bytes != tt.bytes {
				t.Fatalf("verdict %s, %d bytes, want ok=%v, %d bytes; reasons %q", r.Verdict, r.Bytes, tt.wantOK, tt.bytes, r.Reasons)
			}
			for _, w := range tt.reasons {
				if !hasReason(r, w) {
					t.Errorf("no reason with %q in %q", w, r.Reasons)
				}
			}
			for _, w := range tt.logs {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
			if tt.maxTaken > 0 && taken > tt.maxTaken {
				t.Errorf("took %s", taken)
			}
			// The agent's own: its clock, the month, manual.
			if !r.Time.Equal(clk.Now()) || !r.Manual || r.MonthBytes != tt.bytes || r.MonthBudget != int64(300*units.MB) ||
				r.KeepaliveMS != nil || r.Skipped != 0 || len(r.Notes) != 0 || r.Light || r.NextSpeed.IsZero() {
				t.Errorf("agent fields of the result: %+v", r)
			}
			// Once in the history, marker cleared, counted in the month.
			lines := readLines(t, filepath.Join(c.cfg.StateDir, JournalName))
			if len(lines) != 1 {
				t.Fatalf("%d history lines, want 1: %q", len(lines), lines)
			}
			got, err := report.Decode([]byte(lines[0]))
			if err != nil || got.Bytes != tt.bytes || got.OK() != tt.wantOK || !reflect.DeepEqual(got.Reasons, r.Reasons) {
				t.Fatalf("history line %s (%v), result %+v", lines[0], err, r)
			}
			if b, err := os.ReadFile(filepath.Join(c.cfg.StateDir, LockName)); err != nil || len(b) != 0 {
				t.Errorf("marker %q (%v) after the check", b, err)
			}
			h := newHistory(c.cfg.StateDir, &journal{path: filepath.Join(c.cfg.StateDir, JournalName), maxBytes: journalMax, keep: journalKeep})
			if err := h.refresh(); err != nil || h.monthBytes(clk.Now()) != tt.bytes {
				t.Errorf("month bytes %d (%v) read by another process, want %d", h.monthBytes(clk.Now()), err, tt.bytes)
			}
		})
	}
}

// TestProgramResultMeasurementOnly: the agent takes the measurement from
// the program's result and nothing else, and gives the program its own
// configuration and the check's allowance.
func TestProgramResultMeasurementOnly(t *testing.T) {
	t.Parallel()
	c, clk, _ := programWorld(t, fake("good"))
	c.cfg.ExpectISP = "Fake"
	c.cfg.Upload = true
	// 160 MB of the month's 300 used: this check gets its share of what
	// is left for speed measurements.
	if err := c.journal.append(report.LinkReport{Time: clk.Now().Add(-time.Hour), Bytes: 160e6, Verdict: report.VerdictOK}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	if err := c.hist.refresh(); err != nil {
		t.Fatal(err)
	}
	allowance := c.pace(clk.Now()).speedAllowance
	if allowance <= 0 || allowance >= int64(c.cfg.Budget) {
		t.Fatalf("allowance %d: not paced", allowance)
	}
	r, err := c.CheckNow(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if r.NextSpeed.Before(clk.Now().Add(time.Hour)) {
		t.Errorf("next speed measurement %v, not paced from this one", r.NextSpeed)
	}
	// The speed note is the measurement's; light and the next speed
	// measurement are the agent's.
	want := report.LinkReport{Version: report.Version, Time: clk.Now(), ISP: programReport.ISP, IP: programReport.IP, Server: programReport.Server,
		LatencyMS: programReport.LatencyMS, JitterMS: programReport.JitterMS, DownloadBps: programReport.DownloadBps, UploadBps: programReport.UploadBps,
		Bytes: programReport.Bytes, Verdict: report.VerdictOK, Manual: true, MonthBytes: 160e6 + programReport.Bytes, MonthBudget: 300e6,
		SpeedNote: programReport.SpeedNote, NextSpeed: r.NextSpeed}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("result\n%+v\nwant\n%+v", r, want)
	}
	b, err := os.ReadFile(filepath.Join(c.cfg.StateDir, "request.json"))
	if err != nil {
		t.Fatal(err)
	}
	req, err := readRequest(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("request %s: %v", b, err)
	}
	// The seams (clock, program) stay in this process.
	sent := c.cfg
	sent.Clock, sent.Program = nil, ""
	if !reflect.DeepEqual(req.Config, sent) || req.Budget != allowance || req.Light || req.V != ProgramProtocol || req.LogLevel != slog.LevelDebug ||
		req.Timeout <= c.MaxDuration()-time.Minute || req.Timeout > c.MaxDuration() {
		t.Fatalf("request %+v\nconfig %+v", req, c.cfg)
	}
}

// TestProgramStopped: a check cancelled while the program measures tells
// it to stop (SIGTERM) and takes the result it then writes.
func TestProgramStopped(t *testing.T) {
	t.Parallel()
	c, _, logs := programWorld(t, fake("stoppable"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan report.LinkReport, 1)
	go func() { done <- checkOnce(ctx, c) }()
	sshtest.Eventually(t, 20*time.Second, func() bool { return strings.Contains(logs.String(), "msg=ready") }, "the program to start")
	cancel()
	sshtest.Eventually(t, 20*time.Second, func() bool { return len(done) == 1 }, "the check to end")
	r := <-done
	if r.OK() || !hasReason(r, "check stopped: context canceled") || r.Bytes != programReport.Bytes {
		t.Fatalf("stopped check: %+v", r)
	}
	if !strings.Contains(logs.String(), `why="check cancelled"`) {
		t.Errorf("no stop logged:\n%s", logs.String())
	}
}

// TestProgramScheduled: the agent's own checks through the program: each
// recorded once and published once, a failed one too.
func TestProgramScheduled(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"good", "crash"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			c, clk, _ := programWorld(t, fake(mode))
			c.cfg.MonthlyBudget = 0 // every check measures speed within LIFELINE_CHECK_BUDGET
			var rec recorder
			run := startRun(t, c, func() *report.RTT { return &report.RTT{Samples: 2, Median: 30, Worst: 40} }, rec.publish)
			sshtest.Eventually(t, 20*time.Second, func() bool { return clk.Pending() == 1 }, "Run to wait")
			for i := range 2 {
				clk.Advance(time.Hour)
				sshtest.Eventually(t, 20*time.Second, func() bool { return len(rec.get()) == i+1 && clk.Pending() == 1 }, "a report")
			}
			run.stop()
			h := readLines(t, filepath.Join(c.cfg.StateDir, JournalName))
			pub := rec.get()
			if len(h) != 2 || len(pub) != 2 {
				t.Fatalf("%d history lines, %d published, want 2 and 2", len(h), len(pub))
			}
			want := programReport.Bytes
			if mode == "crash" {
				want = int64(c.cfg.Budget)
			}
			for i, r := range pub {
				if r.OK() != (mode == "good") || r.Bytes != want || r.KeepaliveMS == nil || r.Manual || r.MonthBytes != int64(i+1)*want || r.Light {
					t.Errorf("report %d: %+v", i, r)
				}
			}
		})
	}
}

// TestFindProgram: FindProgram looks for ProgramName where programDirs
// says (the mechanism is agent/child's, tested there).
func TestFindProgram(t *testing.T) {
	t.Parallel()
	// The real lookup (TestMain points it at the built program).
	if p, err := FindProgram(); err != nil || p != filepath.Join(programDir, ProgramName) {
		t.Errorf("FindProgram: %q %v", p, err)
	}
	if p, err := findProgram([]string{filepath.Join(fakesDir, "nowhere"), filepath.Join(fakesDir, "good")}); err != nil || p != fake("good") {
		t.Errorf("second directory: %q %v", p, err)
	}
}

// TestProgramLogBounds: a program that talks a lot puts at most
// maxLogLines lines of at most maxLogLine bytes in the agent's log.
func TestProgramLogBounds(t *testing.T) {
	t.Parallel()
	c, _, logs := programWorld(t, fake("chatty"))
	if r := checkOnce(context.Background(), c); !r.OK() {
		t.Fatalf("check: %+v", r)
	}
	out := logs.String()
	if n := strings.Count(out, `msg="line `); n != maxLogLines {
		t.Errorf("%d of the program's 100 lines logged, want %d", n, maxLogLines)
	}
	if !strings.Contains(out, `msg="link check program: more output not logged" lines=37`) {
		t.Errorf("dropped lines not counted:\n%s", out)
	}
	if strings.Contains(out, strings.Repeat("y", maxLogLine+1)) {
		t.Error("a line longer than maxLogLine logged whole")
	}
}

// TestProgramEnv: what systemd meant for the agent alone stays with it.
func TestProgramEnv(t *testing.T) {
	t.Parallel()
	got := programEnv([]string{"PATH=/usr/bin", "NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=60000000", "WATCHDOG_PID=7",
		"LIFELINE_CHECK_BUDGET=50MB", "LISTEN_FDS=1", "HOME=/"})
	want := []string{"PATH=/usr/bin", "LIFELINE_CHECK_BUDGET=50MB", "HOME=/"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("env %q, want %q", got, want)
	}
}

// TestProgramMain runs the program's main as a function, with a fake
// tester.
func TestProgramMain(t *testing.T) {
	t.Parallel()
	cfg := baseConfig(t)
	cfg.ExpectISP = "Starlink"
	request := func(edit func(r map[string]any)) string {
		b, err := json.Marshal(programRequest{V: ProgramProtocol, Config: cfg, Budget: 20e6, Timeout: time.Minute, LogLevel: slog.LevelInfo})
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(m)
		}
		b, err = json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name      string
		args      []string
		stdin     string
		cancelled bool
		code      int
		stdout    []string
		stderr    []string
		check     func(t *testing.T, r report.LinkReport, lims []Limits)
	}{
		{name: "version", args: []string{"--version"}, code: ExitOK, stdout: []string{"lifeline-linkcheck "}},
		{name: "help", args: []string{"--help"}, code: ExitOK, stdout: []string{"usage: lifeline-linkcheck", "lifeline-agent check"}},
		{name: "argument", args: []string{"now"}, code: ExitUsage, stderr: []string{`unexpected argument "now"`}},
		{name: "no request", code: ExitUsage, stderr: []string{"no request on stdin", "lifeline-agent check"}},
		{name: "not JSON", stdin: "budget=5", code: ExitUsage, stderr: []string{"request on stdin: invalid character"}},
		{name: "other version", stdin: request(func(m map[string]any) { m["v"] = 2 }), code: ExitUsage,
			stderr: []string{"request version 2, this lifeline-linkcheck", "reads version 1: restart lifeline-agent"}},
		{name: "unknown field", stdin: request(func(m map[string]any) { m["extra"] = true }), code: ExitUsage, stderr: []string{`unknown field "extra"`}},
		{name: "two documents", stdin: request(nil) + request(nil), code: ExitUsage, stderr: []string{"more than one JSON document"}},
		{name: "invalid", stdin: request(func(m map[string]any) {
			m["budget"] = 0
			m["config"].(map[string]any)["CheckDuration"] = 0
		}), code: ExitUsage, stderr: []string{"LIFELINE_CHECK_DURATION=0s", "budget 0: must be positive"}},
		{name: "measured", stdin: request(nil), code: ExitOK, check: func(t *testing.T, r report.LinkReport, lims []Limits) {
			if !r.OK() || r.ISP != "Starlink" || r.Bytes != 12e6 || r.LatencyMS != 40 {
				t.Errorf("result %+v", r)
			}
			if len(lims) != 1 || lims[0] != (Limits{Budget: 20e6, Duration: time.Second, Connections: 4}) {
				t.Errorf("limits %+v", lims)
			}
		}},
		{name: "judged", stdin: request(func(m map[string]any) { m["config"].(map[string]any)["ExpectISP"] = "Comcast" }), code: ExitOK,
			check: func(t *testing.T, r report.LinkReport, _ []Limits) {
				if r.OK() || !hasReason(r, `wrong ISP "Starlink", expected "Comcast"`) {
					t.Errorf("result %+v", r)
				}
			}},
		{name: "stopped", stdin: request(nil), cancelled: true, code: ExitOK, check: func(t *testing.T, r report.LinkReport, _ []Limits) {
			if r.OK() || !hasReason(r, "check stopped: context canceled") {
				t.Errorf("result %+v", r)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tester := &stopAware{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancelled {
				cancel()
			}
			var stdout, stderr bytes.Buffer
			code := ProgramMain(ctx, tt.args, strings.NewReader(tt.stdin), &stdout, &stderr, func(Config) (SpeedTester, error) { return tester, nil })
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", code, tt.code, &stdout, &stderr)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout %q lacks %q", &stdout, w)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q lacks %q", &stderr, w)
				}
			}
			if tt.check == nil {
				return
			}
			if strings.Count(stdout.String(), "\n") != 1 {
				t.Fatalf("want one line on stdout, got %q", &stdout)
			}
			r, err := report.Decode(stdout.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, r, tester.calls())
		})
	}
}

// stopAware measures good() unless ctx is done, then reports the stop as
// the meter does.
type stopAware struct{ meteredTester }

func (s *stopAware) Measure(ctx context.Context, lim Limits) Measurement {
	m := s.meteredTester.Measure(ctx, lim)
	if ctx.Err() != nil {
		m.Errors = append(m.Errors, fmt.Errorf("check stopped: %w", context.Cause(ctx)))
	}
	return m
}

// TestProgramRequestRoundTrip: the program reads exactly the configuration
// the agent has, odd values included.
func TestProgramRequestRoundTrip(t *testing.T) {
	t.Parallel()
	cfg := baseConfig(t)
	cfg.ExpectISP, cfg.MinDownload, cfg.MaxLatency = `Star "link" ü`, 2_500_001*units.BitRate(1), 123456789*time.Nanosecond
	cfg.Budget, cfg.MonthlyBudget, cfg.Upload = 12_345_678, 300*units.MB+1, true
	cfg.SpeedtestServer, cfg.Interface, cfg.CheckConnections = "http://127.0.0.1:1", "wwan0", 16
	in := programRequest{V: ProgramProtocol, Config: cfg, Budget: 7_777_777, Light: true, Timeout: 90 * time.Second, LogLevel: slog.LevelWarn}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := readRequest(bytes.NewReader(b))
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("request %s read as %+v (%v)", b, out, err)
	}
}

// TestRunSaysProgramMissing: an agent without its link check program says
// so when it starts, not only at the first check.
func TestRunSaysProgramMissing(t *testing.T) {
	t.Parallel()
	c, clk, logs := programWorld(t, "")
	c.program = func() (string, error) { return findProgram([]string{filepath.Join(fakesDir, "nowhere")}) }
	run := startRun(t, c, nil, nil)
	sshtest.Eventually(t, 20*time.Second, func() bool { return clk.Pending() == 1 }, "Run to wait")
	run.stop()
	if !strings.Contains(logs.String(), `level=ERROR msg="link checks will fail" err="link check program lifeline-linkcheck not found`) {
		t.Errorf("log:\n%s", logs.String())
	}
}

// TestProgramLightCheck: a paced light check through the real program
// against the fake: client info, server and latency, no download; the
// report says speed was not measured, and when it will be.
func TestProgramLightCheck(t *testing.T) {
	t.Parallel()
	fake := startFake(t, speedtestfake.Config{ISP: "Starlink"})
	cfg := baseConfig(t)
	cfg.SpeedtestURL, cfg.MonthlyBudget, cfg.ExpectISP = fake.URL(), 300*units.MB, "starlink"
	clk := clocktest.New(time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC))
	cfg.Clock = clk
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A speed measurement half an hour ago: the next check is light.
	if err := c.hist.add(report.LinkReport{Time: clk.Now().Add(-30 * time.Minute), Bytes: 8e6, DownloadBps: 40e6, Verdict: report.VerdictOK}); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	run := startRun(t, c, nil, rec.publish)
	sshtest.Eventually(t, 20*time.Second, func() bool { return clk.Pending() == 1 }, "Run to wait")
	clk.Advance(30 * time.Minute)
	sshtest.Eventually(t, 20*time.Second, func() bool { return len(rec.get()) == 1 }, "the report")
	run.stop()
	r := rec.get()[0]
	st := fake.Stats()
	if !r.OK() || !r.Light || r.ISP != "Starlink" || r.LatencyMS <= 0 || r.DownloadBps != 0 || r.Bytes <= 0 || r.Bytes > 50_000 ||
		!strings.Contains(r.SpeedNote, "speed not measured this hour: paced to the monthly budget") || r.NextSpeed.Sub(r.Time) < 10*time.Hour {
		t.Fatalf("light check %+v", r)
	}
	if st.DownloadRequests != 0 || st.UploadRequests != 0 || st.LatencyRequests < 10 || st.ConfigRequests != 1 {
		t.Errorf("the fake saw %+v", st)
	}
	t.Logf("light check through the program: %d bytes; %s", r.Bytes, r.Summary())
}
