package linkcheck

import (
	"context"
	"runtime"
	"testing"
	"time"

	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
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
	if r := checkOnce(context.Background(), c); !r.OK() {
		t.Fatalf("check failed: %s", r.Summary())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); checkOnce(ctx, c) }()
	sshtest.Eventually(t, 20*time.Second, func() bool { return fake.Stats().DownloadRequests > 0 }, "the download")
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
