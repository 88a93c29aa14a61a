package alert

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// BenchmarkLoginFlood fires 1,000 logins from 16 goroutines at an Alerter
// that delivers through the real twilio-go client to the fake API, with the
// default rate limit (6 texts a minute; the fake clock moves the minutes).
// It reports how long Login() took (it must not depend on the API) and how
// fast every alert was accounted for: texted on its own or summarised. A
// lost alert fails the benchmark.
func BenchmarkLoginFlood(b *testing.B) {
	for _, spool := range []int{DefaultMaxSpool, 200} {
		b.Run(fmt.Sprintf("spool=%d", spool), func(b *testing.B) {
			const logins, workers = 1000, 16
			var lat []time.Duration
			var texts, elapsed float64
			for i := 0; i < b.N; i++ {
				srv := startFake(b)
				clk := clocktest.New(t0)
				cfg := testConfig(b, twilioFor(b, srv, nil))
				cfg.Clock, cfg.MaxSpool = clk, spool
				a := mustNew(b, cfg)
				stop := run(b, a)
				start := time.Now()
				var mu sync.Mutex
				var wg sync.WaitGroup
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						mine := make([]time.Duration, 0, logins/workers)
						for j := 0; j < logins/workers; j++ {
							t := time.Now()
							a.Login(login(fmt.Sprintf("op%d", w), "203.0.113.5:1"))
							mine = append(mine, time.Since(t))
						}
						mu.Lock()
						lat = append(lat, mine...)
						mu.Unlock()
					}()
				}
				wg.Wait()
				sent := logins / workers * workers
				accounted := func() int {
					st := a.Status()
					return countContaining(bodies(srv), ": login ") + st.RateLimited
				}
				for round := 0; accounted() < sent || a.Status().Pending > 0; round++ {
					if round > 100 {
						b.Fatalf("after 100 minutes only %d of %d alerts accounted for (status %+v)", accounted(), sent, a.Status())
					}
					// Let the sender settle, then open the next rate window.
					sshtest.Eventually(b, 10*time.Second, func() bool {
						st := a.Status()
						return (st.Pending == 0 && st.Overflow == 0) || clk.Pending() > 0
					}, "sender idle or waiting for the window")
					if accounted() < sent {
						clk.Advance(time.Minute)
					}
				}
				elapsed += time.Since(start).Seconds()
				if got := accounted(); got != sent {
					b.Fatalf("%d alerts accounted for, want %d", got, sent)
				}
				texts += float64(srv.Count())
				stop()
			}
			base := baselineWrites(b, logins, workers)
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(base[len(base)/2].Microseconds()), "fsync-baseline-p50-µs")
			b.ReportMetric(float64(base[len(base)*99/100].Microseconds()), "fsync-baseline-p99-µs")
			b.ReportMetric(float64(lat[len(lat)/2])/float64(base[len(base)/2]), "login/baseline-p50")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "login-p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "login-p99-µs")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "login-max-µs")
			b.ReportMetric(float64(b.N*logins)/elapsed, "alerts-accounted/s")
			b.ReportMetric(texts/float64(b.N), "texts/flood")
		})
	}
}

// baselineWrites times the bare durable write the spool does per alert
// (temp file, fsync, rename, directory fsync) under the same concurrency, on
// the same disk: the floor under Login's latency.
func baselineWrites(b *testing.B, n, workers int) []time.Duration {
	sp, err := makeSpool(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var out []time.Duration
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < n/workers; j++ {
				t := time.Now()
				if err := sp.writeFile(fmt.Sprintf("base-%d-%d.json", w, j), make([]byte, 300)); err != nil {
					b.Error(err)
					return
				}
				d := time.Since(t)
				mu.Lock()
				out = append(out, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// BenchmarkLoginToSMS measures the time from Login() to the fake API
// receiving the text, one login at a time, no rate limit in the way.
func BenchmarkLoginToSMS(b *testing.B) {
	const per = 50
	got := make(chan time.Time, per)
	srv, err := twiliofake.Start("127.0.0.1:0", twiliofake.Config{OnMessage: func(twiliofake.Message) { got <- time.Now() }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	cfg := testConfig(b, twilioFor(b, srv, nil))
	cfg.PerMinute = 1 << 20
	a := mustNew(b, cfg)
	run(b, a)
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < per; j++ {
			start := time.Now()
			a.Login(login("alice", "203.0.113.5:1"))
			select {
			case at := <-got:
				lat = append(lat, at.Sub(start))
			case <-time.After(10 * time.Second):
				b.Fatal("no SMS within 10s")
			}
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "login-to-sms-median-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "login-to-sms-worst-ms")
}
