package linkcheck

import (
	"context"
	"runtime"
	"testing"

	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
)

// TestNoGoroutineLeft: after a check (ok, and cancelled mid-download) no
// goroutine of the check, the HTTP transport or speedtest-go is left. Not
// parallel: it counts every goroutine of the process.
func TestNoGoroutineLeft(t *testing.T) {
	fake := startFake(t, speedtestfake.Config{RateBps: 50e6})
	cfg := baseConfig(t)
	cfg.SpeedtestURL = fake.URL()
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	if r := c.Check(context.Background()); !r.OK() {
		t.Fatalf("check failed: %s", r.Summary())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Check(ctx) }()
	eventually(t, "the download", func() bool { return fake.Stats().DownloadRequests > 0 })
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
