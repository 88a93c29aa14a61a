package linkcheck

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// TestCheckMain runs `lifeline-agent check` as a function with the
// environment set (so not in parallel), against the real speedtest-go and
// the fake server.
func TestCheckMain(t *testing.T) {
	fake := startFake(t, speedtestfake.Config{ISP: "Starlink", ClientIP: "203.0.113.5"})
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantCode   int
		wantStdout []string
		wantStderr []string
		json       bool
	}{
		{name: "ok", wantCode: ExitOK, wantStdout: []string{`ok at `, `isp "Starlink"`, "ip 203.0.113.5", "MB used"}},
		{name: "ok json", args: []string{"--json"}, wantCode: ExitOK, json: true},
		{name: "failed", env: map[string]string{"LIFELINE_EXPECT_ISP": "T-Mobile"}, wantCode: ExitFailed,
			wantStdout: []string{"failed at ", `wrong ISP "Starlink", expected "T-Mobile"`}},
		{name: "failed json", args: []string{"-json"}, env: map[string]string{"LIFELINE_MAX_LATENCY": "1ns"}, wantCode: ExitFailed, json: true},
		{name: "unreadable value", env: map[string]string{"LIFELINE_CHECK_BUDGET": "lots"}, wantCode: ExitUsage,
			wantStderr: []string{"LIFELINE_CHECK_BUDGET"}},
		{name: "invalid value", env: map[string]string{"LIFELINE_CHECK_BUDGET": "1MB", "LIFELINE_MIN_DOWNLOAD": "10MB/s"}, wantCode: ExitUsage,
			wantStderr: []string{"LIFELINE_MIN_DOWNLOAD"}},
		{name: "too small budget", env: map[string]string{"LIFELINE_CHECK_BUDGET": "1MB"}, wantCode: ExitUsage,
			wantStderr: []string{"LIFELINE_CHECK_BUDGET=1MB"}},
		{name: "unknown flag", args: []string{"--bogus"}, wantCode: ExitUsage, wantStderr: []string{"bogus"}},
		{name: "extra argument", args: []string{"now"}, wantCode: ExitUsage, wantStderr: []string{`unexpected argument "now"`}},
		{name: "help", args: []string{"--help"}, wantCode: ExitOK, wantStdout: []string{"usage: lifeline-agent check", "LIFELINE_CHECK_BUDGET", "10MB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("LIFELINE_SPEEDTEST_URL", fake.URL())
			t.Setenv("LIFELINE_CHECK_DURATION", "1s")
			t.Setenv("LIFELINE_STATE_DIR", t.TempDir())
			for _, k := range []string{"LIFELINE_EXPECT_ISP", "LIFELINE_MAX_LATENCY", "LIFELINE_CHECK_BUDGET", "LIFELINE_MIN_DOWNLOAD"} {
				t.Setenv(k, "") // restored after the test
				os.Unsetenv(k)  // unset, so the default applies
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := CheckMain(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, &stdout, &stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout %q lacks %q", &stdout, w)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q lacks %q", &stderr, w)
				}
			}
			if tt.json {
				out := stdout.String()
				if strings.Count(out, "\n") != 1 {
					t.Fatalf("want one JSON line, got %q", out)
				}
				r, err := report.Decode([]byte(out))
				if err != nil {
					t.Fatal(err)
				}
				if r.OK() != (code == ExitOK) || r.ISP != "Starlink" || r.IP != "203.0.113.5" || r.Bytes <= 0 {
					t.Fatalf("JSON report %+v", r)
				}
			}
		})
	}
}

// TestCheckMainHistory: `lifeline-agent check` is recorded and budgeted
// like the agent's own checks (not in parallel: it sets the environment).
func TestCheckMainHistory(t *testing.T) {
	fake := startFake(t, speedtestfake.Config{ISP: "Starlink", ClientIP: "203.0.113.5"})
	thisMonth := time.Now().UTC()
	full := func(t *testing.T, dir string) {
		// The month's checks used the whole default budget (300 MB).
		j := &journal{path: filepath.Join(dir, JournalName), maxBytes: journalMax, keep: journalKeep}
		if err := j.append(report.LinkReport{Time: thisMonth, Bytes: 300e6, Verdict: report.VerdictOK}); err != nil {
			t.Fatal(err)
		}
	}
	nearlyFull := func(t *testing.T, dir string) {
		// 1 MB left: held for the agent's light checks.
		j := &journal{path: filepath.Join(dir, JournalName), maxBytes: journalMax, keep: journalKeep}
		if err := j.append(report.LinkReport{Time: thisMonth, Bytes: 299e6, Verdict: report.VerdictOK}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name       string
		setup      func(t *testing.T, dir string)
		stateDir   func(dir string) string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
		recorded   int  // manual checks in the history afterwards
		light      bool // measured no speed (the fake served no download)
	}{
		{name: "recorded", wantCode: ExitOK, recorded: 1,
			wantStdout: []string{"link checks in " + thisMonth.Format("2006-01") + " (UTC): ", " of 300 MB (LIFELINE_CHECK_MONTHLY_BUDGET) used, this one included"}},
		{name: "over the monthly budget", setup: full, wantCode: ExitRefused,
			wantStderr: []string{"not checked: the monthly link check budget is used up: link checks used 300 MB of LIFELINE_CHECK_MONTHLY_BUDGET=300 MB", "--force checks anyway"}},
		{name: "over the monthly budget, forced", setup: full, args: []string{"--force"}, wantCode: ExitOK, recorded: 1},
		{name: "what is left is held for the light checks", setup: nearlyFull, wantCode: ExitOK, recorded: 1, light: true,
			wantStdout: []string{`isp "Starlink", download not measured (speed not measured: what is left of LIFELINE_CHECK_MONTHLY_BUDGET in ` + thisMonth.Format("2006-01") + " (1 MB of 300 MB) is held for the agent's ",
				"light checks still due; --force measures anyway), latency "}},
		{name: "what is left is held, forced", setup: nearlyFull, args: []string{"--force"}, wantCode: ExitOK, recorded: 1},
		{name: "another check running", setup: func(t *testing.T, dir string) {
			l, err := newHistory(dir, nil).lock()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(l.release)
		}, wantCode: ExitRefused, wantStderr: []string{"a link check is already running"}},
		{name: "history unusable", stateDir: func(dir string) string { return filepath.Join(dir, JournalName, "sub") },
			setup: full, wantCode: ExitRefused, wantStderr: []string{"cannot use the check history", "sudo -u lifeline", "--force"}},
		{name: "history unusable, forced", stateDir: func(dir string) string { return filepath.Join(dir, JournalName, "sub") },
			setup: full, args: []string{"--force"}, wantCode: ExitOK, wantStderr: []string{"this check is not recorded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			stateDir := dir
			if tt.stateDir != nil {
				stateDir = tt.stateDir(dir)
			}
			t.Setenv("LIFELINE_SPEEDTEST_URL", fake.URL())
			t.Setenv("LIFELINE_CHECK_DURATION", "1s")
			t.Setenv("LIFELINE_STATE_DIR", stateDir)
			for _, k := range []string{"LIFELINE_EXPECT_ISP", "LIFELINE_MAX_LATENCY", "LIFELINE_CHECK_BUDGET", "LIFELINE_MIN_DOWNLOAD", "LIFELINE_CHECK_MONTHLY_BUDGET"} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			var stdout, stderr bytes.Buffer
			downloads := fake.Stats().DownloadRequests
			code := CheckMain(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, &stdout, &stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout %q lacks %q", &stdout, w)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q lacks %q", &stderr, w)
				}
			}
			if measured := fake.Stats().DownloadRequests > downloads; code != ExitRefused && measured == tt.light {
				t.Errorf("downloads before %d, after %d: want light %v", downloads, fake.Stats().DownloadRequests, tt.light)
			}
			manual := 0
			if _, err := os.Stat(filepath.Join(dir, JournalName)); err == nil {
				for _, l := range readLines(t, filepath.Join(dir, JournalName)) {
					r, err := report.Decode([]byte(l))
					if err != nil {
						t.Fatal(err)
					}
					if r.Manual {
						manual++
						if r.Bytes <= 0 || r.MonthBudget != 300e6 || r.MonthBytes < r.Bytes || r.Light != tt.light || (r.Light && r.Bytes > 50_000) {
							t.Errorf("manual check recorded as %+v", r)
						}
					}
				}
			}
			if manual != tt.recorded {
				t.Errorf("%d manual checks recorded, want %d", manual, tt.recorded)
			}
		})
	}
}

// TestManualCheckMovesTheSchedule: the agent started after a manual check
// waits LIFELINE_CHECK_EVERY from it, not 30 s.
func TestManualCheckMovesTheSchedule(t *testing.T) {
	t.Parallel()
	w := newWorld(t, time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC), nil)
	if _, err := w.checker().CheckNow(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	w.clk.Advance(5 * time.Minute)
	w.start()
	w.advance(54*time.Minute, 30*time.Second)
	if n := len(w.tester.calls()); n != 1 {
		t.Fatalf("%d checks within the hour after the manual one", n)
	}
	w.advance(90*time.Second, 30*time.Second)
	w.stop()
	if n := len(w.tester.calls()); n != 2 {
		t.Fatalf("%d checks, want the manual one and one an hour later", n)
	}
	h := w.history()
	if len(h) != 2 || !h[0].Manual || h[1].Manual || h[1].Time.Sub(h[0].Time) != time.Hour {
		t.Fatalf("history %+v", h)
	}
	// A manual check while the agent runs moves its next check too.
	w.start()
	if _, err := w.checker().CheckNow(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	w.advance(59*time.Minute+30*time.Second, 30*time.Second) // the agent's own due time, 14:00
	if n := len(w.tester.calls()); n != 3 {
		t.Fatalf("%d checks: the agent checked although a manual check had run half a minute later", n)
	}
	if !strings.Contains(w.logs.String(), "link check not due: another check ran since") {
		t.Errorf("the postponement was not logged:\n%s", w.logs.String())
	}
	w.advance(30*time.Second, 30*time.Second)
	w.stop()
	if n := len(w.tester.calls()); n != 4 {
		t.Fatalf("%d checks, want one an hour after the second manual check", n)
	}
}
