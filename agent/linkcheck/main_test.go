package linkcheck

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

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
		{name: "help", args: []string{"--help"}, wantCode: ExitOK, wantStdout: []string{"usage: lifeline-agent check", "LIFELINE_CHECK_BUDGET", "50MB"}},
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
