package measure

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

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
	c, err := linkcheck.New(cfg, nil, linkcheck.WithSpeedTester(tester))
	if err != nil {
		t.Fatal(err)
	}
	return c, f
}

// TestMeasure: the real library against the fake, in this process.
func TestMeasure(t *testing.T) {
	t.Parallel()
	c, f := checker(t, speedtestfake.Config{ISP: "Starlink Internet", ClientIP: "203.0.113.7"})
	r := c.Check(context.Background())
	if !r.OK() || r.ISP != "Starlink Internet" || r.IP != "203.0.113.7" || !strings.Contains(r.Server, "lifeline fake") ||
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
	if r := c.Check(context.Background()); !r.OK() {
		t.Fatalf("check failed: %s", r.Summary())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	n := fake.Stats().DownloadRequests
	go func() { defer close(done); c.Check(ctx) }()
	eventually(t, "the download", func() bool { return fake.Stats().DownloadRequests > n })
	cancel()
	eventually(t, "the cancelled check to end", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	eventually(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
