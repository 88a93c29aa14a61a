package linkcheck

import (
	"context"
	"testing"
	"time"

	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// BenchmarkCheck runs whole checks with the real speedtest-go against the
// fake and reports, per check, the bytes the check counted, the bytes the
// server sent, the budget, the measured download speed and the duration.
// On a loopback server faster than any link the budget is what stops the
// download; on a paced one the capture time is.
//
//	go test -run '^$' -bench Check -benchtime 3x ./agent/linkcheck/
func BenchmarkCheck(b *testing.B) {
	cases := []struct {
		name   string
		rate   int64
		budget units.ByteSize
	}{
		{name: "loopback/budget=50MB", budget: 50 * units.MB},
		{name: "loopback/budget=10MB", budget: 10 * units.MB},
		{name: "paced=20Mbps/budget=50MB", rate: 20e6, budget: 50 * units.MB},
		{name: "paced=200Mbps/budget=50MB", rate: 200e6, budget: 50 * units.MB},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			fake := startFake(b, speedtestfake.Config{RateBps: bc.rate})
			cfg := baseConfig(b)
			cfg.SpeedtestURL, cfg.Budget, cfg.MinDownload = fake.URL(), bc.budget, 0
			cfg.CheckDuration = 3 * time.Second
			c, err := New(cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			var counted, served int64
			var secs, bps float64
			b.ResetTimer()
			for range b.N {
				before := fake.Stats().BytesServed
				r := checkOnce(context.Background(), c)
				if !r.OK() {
					b.Fatalf("check failed: %s", r.Summary())
				}
				counted += r.Bytes
				served += fake.Stats().BytesServed - before
				secs += r.DurationSecs
				bps += r.DownloadBps
			}
			n := float64(b.N)
			b.ReportMetric(float64(counted)/n, "bytes/check")
			b.ReportMetric(float64(served)/n, "served-bytes/check")
			b.ReportMetric(float64(bc.budget), "budget-bytes")
			b.ReportMetric(secs/n, "s/check")
			b.ReportMetric(bps/n/1e6, "Mbit/s")
		})
	}
}
