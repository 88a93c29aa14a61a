package measure

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// checker measures with speedtest-go in this process (as the link check
// program does) against a fresh fake.
func checker(t *testing.T, fc speedtestfake.Config) (*linkcheck.Checker, *speedtestfake.Server) {
	t.Helper()
	f, err := speedtestfake.Start("127.0.0.1:0", fc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close fake: %v", err)
		}
	})
	cfg := linkcheck.Config{CheckEvery: time.Hour, MinDownload: 10 * units.Mbps, MaxLatency: 100 * time.Millisecond,
		Budget: 50 * units.MB, CheckDuration: time.Second, CheckConnections: 4, SpeedtestURL: f.URL(), StateDir: t.TempDir()}
	tester, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tester = tester
	c, err := linkcheck.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, f
}

// TestMeasure: the real library against the fake, in this process.
func TestMeasure(t *testing.T) {
	t.Parallel()
	c, f := checker(t, speedtestfake.Config{ISP: "Starlink Internet", ClientIP: "203.0.113.7"})
	r, err := c.CheckNow(context.Background(), true)
	if err != nil || !r.OK() || r.ISP != "Starlink Internet" || r.IP != "203.0.113.7" || !strings.Contains(r.Server, "lifeline fake") ||
		r.LatencyMS <= 0 || r.DownloadBps < 10e6 || r.Bytes <= 0 || r.Bytes > 50e6 {
		t.Fatalf("result %+v", r)
	}
	if st := f.Stats(); st.DownloadRequests < 1 || st.BytesServed > 50e6 {
		t.Errorf("fake saw %+v", st)
	}
}

// TestNoGoroutineLeft: after a check (ok, and cancelled mid-download) no
// goroutine of the check, the HTTP transport or speedtest-go is left in
// the process that measured. Not parallel: it counts every goroutine of
// the process.
func TestNoGoroutineLeft(t *testing.T) {
	c, fake := checker(t, speedtestfake.Config{RateBps: 50e6})
	before := runtime.NumGoroutine()
	if r, err := c.CheckNow(context.Background(), true); err != nil || !r.OK() {
		t.Fatalf("check failed: %s, %v", r.Summary(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	n := fake.Stats().DownloadRequests
	go func() { defer close(done); _, _ = c.CheckNow(ctx, true) }()
	sshtest.Eventually(t, 20*time.Second, func() bool { return fake.Stats().DownloadRequests > n }, "the download")
	cancel()
	sshtest.Eventually(t, 20*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}, "the cancelled check to end")
	sshtest.Eventually(t, 20*time.Second, func() bool { return runtime.NumGoroutine() <= before }, "goroutines to end")
}

// TestLightCheck: a light check asks for the client info, the server list
// and the latency, and downloads nothing; it costs a few kB against the
// fake (speedtest.net's answers are bigger: see linkcheck's lightEstimate).
func TestLightCheck(t *testing.T) {
	t.Parallel()
	f, err := speedtestfake.Start("127.0.0.1:0", speedtestfake.Config{ISP: "Starlink"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	tester, err := NewSpeedtestGo(SpeedtestGoConfig{APIURL: f.URL()})
	if err != nil {
		t.Fatal(err)
	}
	m := tester.Measure(context.Background(), linkcheck.Limits{Budget: 500_000, Duration: time.Second, Connections: 4, Light: true})
	st := f.Stats()
	if len(m.Errors) != 0 || m.ISP != "Starlink" || !m.HaveLatency || m.HaveDownload || m.HaveUpload {
		t.Fatalf("light measurement %+v", m)
	}
	if st.ConfigRequests != 1 || st.ServerListLookup != 1 || st.LatencyRequests < 10 || st.DownloadRequests != 0 || st.UploadRequests != 0 {
		t.Fatalf("the fake saw %+v", st)
	}
	if m.Bytes <= 0 || m.Bytes > 10_000 {
		t.Errorf("a light check moved %d bytes", m.Bytes)
	}
	t.Logf("light check: %d bytes counted by the meter (request and response bytes, headers included); the fake served %d body bytes in %d latency, 1 config and 1 list requests",
		m.Bytes, st.BytesServed, st.LatencyRequests)
}

// TestDownloadCut: a download stopped by its budget says so (and for how
// long it moved data), one that ran its capture time does not.
func TestDownloadCut(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		rate   int64
		budget int64
		cut    bool
	}{
		{"fast link, small budget", 0, 5_000_000, true},
		{"slow link, large budget", 8e6, 50_000_000, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := speedtestfake.Start("127.0.0.1:0", speedtestfake.Config{RateBps: tt.rate})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = f.Close() })
			tester, err := NewSpeedtestGo(SpeedtestGoConfig{APIURL: f.URL()})
			if err != nil {
				t.Fatal(err)
			}
			m := tester.Measure(context.Background(), linkcheck.Limits{Budget: tt.budget, Duration: time.Second, Connections: 4})
			if !m.HaveDownload || m.DownloadCut != tt.cut || m.DownloadTime <= 0 || m.DownloadTime > 2*time.Second {
				t.Fatalf("measurement %+v", m)
			}
		})
	}
}
