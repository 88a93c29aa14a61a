package linkcheck

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// fakeTester is a hand-written SpeedTester.
type fakeTester struct {
	mu    sync.Mutex
	m     Measurement
	panic any
	calls int
	lims  []Limits
}

func (f *fakeTester) Measure(_ context.Context, lim Limits) Measurement {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.lims = append(f.lims, lim)
	if f.panic != nil {
		panic(f.panic)
	}
	return f.m
}

func (f *fakeTester) set(m Measurement) {
	f.mu.Lock()
	f.m = m
	f.mu.Unlock()
}

func (f *fakeTester) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func good() Measurement {
	return Measurement{ISP: "Starlink", IP: "203.0.113.9", Server: "test server",
		HaveLatency: true, Latency: 40 * time.Millisecond, Jitter: 3 * time.Millisecond,
		HaveDownload: true, DownloadBps: 80e6, Bytes: 12_000_000}
}

func TestJudge(t *testing.T) {
	t.Parallel()
	cfg := Config{ExpectISP: "starlink", MinDownload: 10 * units.Mbps, MaxLatency: 100 * time.Millisecond}
	tests := []struct {
		name   string
		cfg    func(*Config)
		m      func(*Measurement)
		wantIn []string // substrings, one per expected reason, in order
	}{
		{name: "ok", m: func(*Measurement) {}},
		{name: "ISP substring any case", m: func(m *Measurement) { m.ISP = "SpaceX STARLINK Services" }},
		{name: "wrong ISP", m: func(m *Measurement) { m.ISP = "T-Mobile USA" }, wantIn: []string{`wrong ISP "T-Mobile USA", expected "starlink"`}},
		{name: "ISP unknown", m: func(m *Measurement) { m.ISP = "" }, wantIn: []string{"ISP unknown"}},
		{name: "any ISP when none expected", cfg: func(c *Config) { c.ExpectISP = "" }, m: func(m *Measurement) { m.ISP = "" }},
		{name: "slow", m: func(m *Measurement) { m.DownloadBps = 9.99e6 }, wantIn: []string{"low download speed 9.99 Mbit/s, minimum 10.0 Mbit/s"}},
		{name: "exactly the minimum", m: func(m *Measurement) { m.DownloadBps = 10e6 }},
		{name: "no minimum", cfg: func(c *Config) { c.MinDownload = 0 }, m: func(m *Measurement) { m.DownloadBps = 1 }},
		{name: "high latency", m: func(m *Measurement) { m.Latency = 101 * time.Millisecond }, wantIn: []string{"high latency 101ms, maximum 100ms"}},
		{name: "no maximum", cfg: func(c *Config) { c.MaxLatency = 0 }, m: func(m *Measurement) { m.Latency = time.Hour }},
		{name: "unmeasured values are not judged", m: func(m *Measurement) {
			m.HaveDownload, m.DownloadBps, m.HaveLatency, m.Latency = false, 0, false, 0
		}},
		{name: "slow but cut short by the allowance: too small to judge", m: func(m *Measurement) {
			m.DownloadBps, m.DownloadCut, m.DownloadTime = 6e6, true, 1500*time.Millisecond
		}},
		{name: "slow, cut short by the allowance after long enough", m: func(m *Measurement) {
			m.DownloadBps, m.DownloadCut, m.DownloadTime = 6e6, true, 2*time.Second
		}, wantIn: []string{"low download speed 6.00 Mbit/s"}},
		{name: "slow over a short capture time, not cut short", m: func(m *Measurement) {
			m.DownloadBps, m.DownloadTime = 6e6, 500*time.Millisecond
		}, wantIn: []string{"low download speed 6.00 Mbit/s"}},
		{name: "every reason", m: func(m *Measurement) {
			m.ISP, m.DownloadBps, m.Latency = "Other", 1e6, time.Second
			m.Errors = []error{errors.New("upload to x: boom")}
		}, wantIn: []string{"speed test: upload to x: boom", "wrong ISP", "high latency", "low download speed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, m := cfg, good()
			if tt.cfg != nil {
				tt.cfg(&c)
			}
			tt.m(&m)
			got, codes, _ := assess(c, m)
			if len(got) != len(tt.wantIn) {
				t.Fatalf("reasons %q, want %d", got, len(tt.wantIn))
			}
			// One code per reason, the one the reason's wording stands for
			// (report.CodeOf classifies linkcheck's reasons by their start).
			if len(codes) != len(got) {
				t.Fatalf("codes %q for reasons %q", codes, got)
			}
			for i := range got {
				if want := report.CodeOf(got[i]); codes[i] != want || want == report.CodeUnknown {
					t.Errorf("code %d = %q for reason %q, want %q", i, codes[i], got[i], want)
				}
			}
			for i, want := range tt.wantIn {
				if !strings.Contains(got[i], want) {
					t.Errorf("reason %d = %q, want it to contain %q", i, got[i], want)
				}
			}
		})
	}
}

// TestTooSmallToJudge: a download below the minimum that its allowance
// cut short says so in the speed note, and the check is ok.
func TestTooSmallToJudge(t *testing.T) {
	t.Parallel()
	m := good()
	m.DownloadBps, m.DownloadCut, m.DownloadTime = 7.5e6, true, 420*time.Millisecond
	c, err := New(withSeams(baseConfig(t), &fakeTester{m: m}, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := checkOnce(context.Background(), c)
	want := "download 7.50 Mbit/s over only 420ms, cut short by the check's data allowance: too small a measurement to judge against the minimum of 10.0 Mbit/s"
	if !r.OK() || r.SpeedNote != want || r.DownloadBps != 7.5e6 || !strings.Contains(r.Summary(), "download 7.5 Mbit/s ("+want+")") {
		t.Fatalf("report %+v\nsummary %s", r, r.Summary())
	}
}

// TestLightCheckJudgesNoSpeed: a light check reports no speed and judges
// none, whatever the tester says.
func TestLightCheckJudgesNoSpeed(t *testing.T) {
	t.Parallel()
	m := good()
	m.DownloadBps = 1e6 // slow, if it were judged
	tester := &fakeTester{m: m}
	c, err := New(withSeams(baseConfig(t), tester, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := c.check(context.Background(), c.limits(int64(lightAllowance), true))
	if !r.OK() || !r.Light || r.DownloadBps != 0 || r.UploadBps != 0 || len(tester.lims) != 1 || !tester.lims[0].Light || tester.lims[0].Upload {
		t.Fatalf("light check %+v, limits %+v", r, tester.lims)
	}
}

// TestCheckResult: the report a Check builds from a measurement, including
// the hostile cases (panic, control characters, too many reasons).
func TestCheckResult(t *testing.T) {
	t.Parallel()
	many := make([]error, 40)
	for i := range many {
		many[i] = errors.New(strings.Repeat("x", 600))
	}
	tests := []struct {
		name   string
		tester *fakeTester
		check  func(t *testing.T, r report.LinkReport)
	}{
		{name: "ok", tester: &fakeTester{m: good()}, check: func(t *testing.T, r report.LinkReport) {
			want := report.LinkReport{Version: 1, ISP: "Starlink", IP: "203.0.113.9", Server: "test server",
				LatencyMS: 40, JitterMS: 3, DownloadBps: 80e6, Bytes: 12_000_000, Verdict: "ok"}
			r.Time, r.DurationSecs = time.Time{}, 0
			if r.ISP != want.ISP || r.IP != want.IP || r.Server != want.Server || r.LatencyMS != want.LatencyMS ||
				r.JitterMS != want.JitterMS || r.DownloadBps != want.DownloadBps || r.Bytes != want.Bytes || r.Verdict != want.Verdict || len(r.Reasons) != 0 {
				t.Errorf("got %+v\nwant %+v", r, want)
			}
		}},
		{name: "panic", tester: &fakeTester{panic: "kaboom"}, check: func(t *testing.T, r report.LinkReport) {
			if r.OK() || !hasReason(r, "check failed unexpectedly: kaboom") {
				t.Errorf("a panicking test: %+v", r)
			}
			// The panic's reason, added without a code, gets its own.
			if len(r.Codes) != len(r.Reasons) || r.Codes[len(r.Codes)-1] != report.CodeCheckFailed {
				t.Errorf("codes %q for reasons %q", r.Codes, r.Reasons)
			}
		}},
		{name: "control characters and long fields", tester: &fakeTester{m: Measurement{
			ISP: "Evil\x1b[31mISP\n" + strings.Repeat("é", 300), IP: "1.2.3.4\x00", Server: "s\x7f",
			Errors: []error{errors.New("line one\nline two")},
		}}, check: func(t *testing.T, r report.LinkReport) {
			if strings.ContainsAny(r.ISP+r.IP+r.Server, "\x1b\n\x00\x7f") || len(r.ISP) > 256 || !strings.HasPrefix(r.ISP, "Evil[31mISP ") {
				t.Errorf("not cleaned: %q %q %q", r.ISP, r.IP, r.Server)
			}
			if !hasReason(r, "line one line two") {
				t.Errorf("reasons %q", r.Reasons)
			}
		}},
		{name: "too many reasons", tester: &fakeTester{m: Measurement{ISP: "Starlink", Errors: many}}, check: func(t *testing.T, r report.LinkReport) {
			if len(r.Reasons) != 16 || r.Reasons[15] != "and 25 more" || len(r.Reasons[0]) > 512 {
				t.Errorf("%d reasons, last %q", len(r.Reasons), r.Reasons[len(r.Reasons)-1])
			}
			// The codes are cut alongside: 15 of the speed test's, then more.
			if len(r.Codes) != 16 || r.Codes[0] != report.CodeUnreachable || r.Codes[14] != report.CodeUnreachable || r.Codes[15] != report.CodeMore {
				t.Errorf("codes %q", r.Codes)
			}
			if _, err := report.Encode(r); err != nil {
				t.Error(err)
			}
		}},
		{name: "negative and NaN figures", tester: &fakeTester{m: Measurement{ISP: "Starlink", HaveDownload: true, DownloadBps: -5,
			HaveLatency: true, Latency: -time.Second, Bytes: -1}}, check: func(t *testing.T, r report.LinkReport) {
			if r.DownloadBps != 0 || r.LatencyMS != 0 || r.Bytes != 0 {
				t.Errorf("%+v", r)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig(t)
			cfg.ExpectISP = "starlink"
			c, err := New(withSeams(cfg, tt.tester, nil), nil)
			if err != nil {
				t.Fatal(err)
			}
			r := checkOnce(context.Background(), c)
			if _, err := report.Encode(r); err != nil {
				t.Fatalf("the report cannot be sent: %v", err)
			}
			tt.check(t, r)
			lims := tt.tester.lims
			if len(lims) != 1 || lims[0] != (Limits{Budget: 50e6, Duration: time.Second, Connections: 4}) {
				t.Errorf("limits given to the tester: %+v", lims)
			}
		})
	}
}

func TestCheckTimeUsesClock(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("X", 3600))
	clk := clocktest.New(start)
	c, err := New(withSeams(baseConfig(t), &fakeTester{m: good()}, clk), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := checkOnce(context.Background(), c)
	if !r.Time.Equal(start) || r.Time.Location() != time.UTC {
		t.Fatalf("time %v", r.Time)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*Config)
		want []string // variable names the error must mention; none: valid
	}{
		{name: "defaults", edit: func(*Config) {}},
		{name: "disabled", edit: func(c *Config) { c.CheckEvery = 0 }},
		{name: "negatives", edit: func(c *Config) {
			c.CheckEvery, c.MinDownload, c.MaxLatency = -1, -1, -1
		}, want: []string{"LIFELINE_CHECK_EVERY", "LIFELINE_MIN_DOWNLOAD", "LIFELINE_MAX_LATENCY"}},
		{name: "budget too small", edit: func(c *Config) { c.Budget = 4 * units.MB }, want: []string{"LIFELINE_CHECK_BUDGET=4MB"}},
		{name: "no monthly cap", edit: func(c *Config) { c.MonthlyBudget = 0 }},
		{name: "monthly cap below one check", edit: func(c *Config) { c.MonthlyBudget = 20 * units.MB }},
		{name: "monthly cap too small", edit: func(c *Config) { c.MonthlyBudget = 4 * units.MB }, want: []string{"LIFELINE_CHECK_MONTHLY_BUDGET=4MB"}},
		{name: "monthly cap negative", edit: func(c *Config) { c.MonthlyBudget = -1 }, want: []string{"LIFELINE_CHECK_MONTHLY_BUDGET"}},
		{name: "capture and connections", edit: func(c *Config) { c.CheckDuration, c.CheckConnections = 2*time.Minute, 0 },
			want: []string{"LIFELINE_CHECK_DURATION", "LIFELINE_CHECK_CONNECTIONS"}},
		{name: "urls", edit: func(c *Config) { c.SpeedtestURL, c.SpeedtestServer = "ftp://x", "http://" },
			want: []string{"LIFELINE_SPEEDTEST_URL", "LIFELINE_SPEEDTEST_SERVER"}},
		{name: "url with credentials", edit: func(c *Config) { c.SpeedtestURL = "https://u:p@host" }, want: []string{"LIFELINE_SPEEDTEST_URL"}},
		{name: "interface and state dir", edit: func(c *Config) { c.Interface, c.StateDir = "eth0/../x", "relative" },
			want: []string{"LIFELINE_INTERFACE", "LIFELINE_STATE_DIR"}},
		{name: "expected ISP", edit: func(c *Config) { c.ExpectISP = "bad\nisp" }, want: []string{"LIFELINE_EXPECT_ISP"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := baseConfig(t)
			tt.edit(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, v := range tt.want {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("error %q does not name %s", err, v)
				}
			}
			if n := strings.Count(err.Error(), "LIFELINE_"); n != len(tt.want) {
				t.Errorf("%d problems reported, want %d: %v", n, len(tt.want), err)
			}
			if _, err := New(c, nil); err == nil {
				t.Error("New accepted an invalid configuration")
			}
		})
	}
}

// TestConfigDefaults: the defaults from the tags are valid and what the
// issue says, and --help lists every variable.
func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := envconf.Process(&c); err != nil {
		t.Fatal(err)
	}
	want := Config{CheckEvery: time.Hour, MinDownload: 10 * units.Mbps, MaxLatency: 100 * time.Millisecond, Budget: 10 * units.MB,
		MonthlyBudget: 300 * units.MB, CheckDuration: 10 * time.Second, CheckConnections: 4, SpeedtestURL: "https://www.speedtest.net", StateDir: "/var/lib/lifeline"}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults %+v\nwant %+v", c, want)
	}
	var help bytes.Buffer
	if err := envconf.Usage(&help, &Config{}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"CHECK_EVERY", "EXPECT_ISP", "MIN_DOWNLOAD", "MAX_LATENCY", "CHECK_BUDGET", "CHECK_MONTHLY_BUDGET", "CHECK_UPLOAD",
		"CHECK_DURATION", "CHECK_CONNECTIONS", "SPEEDTEST_URL", "SPEEDTEST_SERVER", "INTERFACE", "STATE_DIR"} {
		if !strings.Contains(help.String(), "LIFELINE_"+v) {
			t.Errorf("--help does not list LIFELINE_%s", v)
		}
	}
}

// checkOnce measures the link now within the whole of Config.Budget,
// without the history or the monthly budget.
func checkOnce(ctx context.Context, c *Checker) report.LinkReport {
	return c.check(ctx, c.limits(int64(c.cfg.Budget), false))
}

// withSeams is cfg measuring with tester on clk (nil: the real clock).
func withSeams(cfg Config, tester SpeedTester, clk clock.Clock) Config {
	cfg.Tester, cfg.Clock = tester, clk
	return cfg
}
