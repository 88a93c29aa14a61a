package linkcheck

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// baseConfig is a valid configuration for checks against a local fake:
// short capture, defaults otherwise.
func baseConfig(t testing.TB) Config {
	return Config{
		CheckEvery:       time.Hour,
		MinDownload:      10 * units.Mbps,
		MaxLatency:       100 * time.Millisecond,
		Budget:           50 * units.MB,
		CheckDuration:    time.Second,
		CheckConnections: 4,
		SpeedtestURL:     "https://www.speedtest.net",
		StateDir:         t.TempDir(),
	}
}

func startFake(t testing.TB, cfg speedtestfake.Config) *speedtestfake.Server {
	t.Helper()
	f, err := speedtestfake.Start("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close fake: %v", err)
		}
	})
	return f
}

func closedURL(t testing.TB) string {
	t.Helper()
	u, err := speedtestfake.ClosedURL()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func hasReason(r report.LinkReport, sub string) bool {
	for _, s := range r.Reasons {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestCheckVerdicts runs the real speedtest-go against the fake server in
// each situation a check must tell apart.
func TestCheckVerdicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		fake        speedtestfake.Config
		noFake      bool // the API URL is a closed port
		setup       func(c *Config, fakeURL string)
		wantOK      bool
		wantReasons []string
		check       func(t *testing.T, r report.LinkReport, st speedtestfake.Stats)
	}{
		{
			name:   "ok",
			fake:   speedtestfake.Config{ISP: "Starlink Internet", ClientIP: "203.0.113.7"},
			setup:  func(c *Config, _ string) { c.ExpectISP = "STARLINK" },
			wantOK: true,
			check: func(t *testing.T, r report.LinkReport, st speedtestfake.Stats) {
				if r.ISP != "Starlink Internet" || r.IP != "203.0.113.7" {
					t.Errorf("isp %q ip %q", r.ISP, r.IP)
				}
				if !strings.Contains(r.Server, "lifeline fake") || r.LatencyMS <= 0 || r.DownloadBps < 10e6 || r.Bytes <= 0 {
					t.Errorf("measurement missing: %+v", r)
				}
				if st.ConfigRequests != 1 || st.ServerListLookup != 1 || st.LatencyRequests < 10 || st.DownloadRequests < 1 {
					t.Errorf("the library did not ask what it should: %+v", st)
				}
			},
		},
		{
			name:        "wrong ISP",
			fake:        speedtestfake.Config{ISP: "Comcast Cable"},
			setup:       func(c *Config, _ string) { c.ExpectISP = "starlink" },
			wantReasons: []string{`wrong ISP "Comcast Cable", expected "starlink"`},
		},
		{
			name:        "slow",
			fake:        speedtestfake.Config{RateBps: 2e6},
			wantReasons: []string{"low download speed", "minimum 10.0 Mbit/s"},
			check: func(t *testing.T, r report.LinkReport, _ speedtestfake.Stats) {
				// The fake paces to 2 Mbit/s: the measure cannot be far above it.
				if r.DownloadBps <= 0 || r.DownloadBps > 4e6 {
					t.Errorf("download %.0f bit/s from a 2 Mbit/s server", r.DownloadBps)
				}
			},
		},
		{
			name:        "high latency",
			fake:        speedtestfake.Config{Latency: 150 * time.Millisecond},
			wantReasons: []string{"high latency", "maximum 100ms"},
			check: func(t *testing.T, r report.LinkReport, _ speedtestfake.Stats) {
				if r.LatencyMS < 150 {
					t.Errorf("latency %.1f ms from a server adding 150 ms", r.LatencyMS)
				}
			},
		},
		{
			name:        "every reason at once",
			fake:        speedtestfake.Config{ISP: "Other", RateBps: 2e6, Latency: 150 * time.Millisecond},
			setup:       func(c *Config, _ string) { c.ExpectISP = "Starlink" },
			wantReasons: []string{"wrong ISP", "low download speed", "high latency"},
		},
		{
			name:        "unreachable",
			noFake:      true,
			setup:       func(c *Config, _ string) { c.ExpectISP = "Starlink" },
			wantReasons: []string{"fetch client info", "fetch server list", "connection refused", "ISP unknown"},
			check: func(t *testing.T, r report.LinkReport, _ speedtestfake.Stats) {
				if r.ISP != "" || r.DownloadBps != 0 || r.LatencyMS != 0 {
					t.Errorf("values from nowhere: %+v", r)
				}
			},
		},
		{
			name:        "test server unreachable",
			setup:       func(c *Config, _ string) { c.SpeedtestServer = closedURL(t) },
			wantReasons: []string{"latency to", "connect"},
		},
		{
			name:   "nearest server dead",
			fake:   speedtestfake.Config{ExtraServers: []string{closedURL(t), closedURL(t)}},
			wantOK: true,
			check: func(t *testing.T, r report.LinkReport, _ speedtestfake.Stats) {
				if !strings.Contains(r.Server, "lifeline fake") {
					t.Errorf("server %q: not the live one", r.Server)
				}
			},
		},
		{
			name:   "bound to lo",
			setup:  func(c *Config, _ string) { c.Interface = "lo" },
			wantOK: true,
		},
		{
			name:        "bound to a missing interface",
			setup:       func(c *Config, _ string) { c.Interface = fmt.Sprintf("ll%dx", os.Getpid()%100000) },
			wantReasons: []string{"bind socket to interface", "no such device"},
		},
		{
			name:   "fixed server",
			setup:  func(c *Config, u string) { c.SpeedtestServer = u },
			wantOK: true,
			check: func(t *testing.T, r report.LinkReport, st speedtestfake.Stats) {
				if st.ServerListLookup != 0 {
					t.Errorf("server list fetched %d times with a fixed server", st.ServerListLookup)
				}
			},
		},
		{
			name:   "upload",
			setup:  func(c *Config, _ string) { c.Upload = true },
			wantOK: true,
			check: func(t *testing.T, r report.LinkReport, st speedtestfake.Stats) {
				if r.UploadBps <= 0 || st.UploadBytes <= 0 {
					t.Errorf("upload %.0f bit/s, fake received %d bytes", r.UploadBps, st.UploadBytes)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig(t)
			var fake *speedtestfake.Server
			if tt.noFake {
				cfg.SpeedtestURL = closedURL(t)
			} else {
				fake = startFake(t, tt.fake)
				cfg.SpeedtestURL = fake.URL()
			}
			if tt.setup != nil {
				tt.setup(&cfg, cfg.SpeedtestURL)
			}
			c, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r := checkOnce(ctx, c)
			if err := r.Validate(); err != nil {
				t.Fatalf("report does not validate: %v", err)
			}
			if r.OK() != tt.wantOK {
				t.Fatalf("verdict %s, reasons %q", r.Verdict, r.Reasons)
			}
			for _, want := range tt.wantReasons {
				if !hasReason(r, want) {
					t.Errorf("no reason containing %q in %q", want, r.Reasons)
				}
			}
			var st speedtestfake.Stats
			if fake != nil {
				st = fake.Stats()
				if st.BytesServed > int64(cfg.Budget) {
					t.Errorf("fake served %d bytes, budget %d", st.BytesServed, cfg.Budget)
				}
			}
			if r.Bytes > int64(cfg.Budget) {
				t.Errorf("check used %d bytes, budget %d", r.Bytes, cfg.Budget)
			}
			if tt.check != nil {
				tt.check(t, r, st)
			}
			t.Logf("%s", r.Summary())
		})
	}
}

// TestBudgetHolds: against a local server faster than any link, the check
// stops asking at the budget, by the fake's own count and by the check's.
func TestBudgetHolds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		budget      units.ByteSize
		upload      bool
		connections int
		fileSize    int64
	}{
		{name: "minimum budget", budget: 5 * units.MB, connections: 4},
		{name: "12MB", budget: 12 * units.MB, connections: 4},
		{name: "12MB one connection", budget: 12 * units.MB, connections: 1},
		{name: "12MB with upload", budget: 12 * units.MB, connections: 4, upload: true},
		{name: "small files", budget: 6 * units.MB, connections: 8, fileSize: 100_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := startFake(t, speedtestfake.Config{FileSize: tt.fileSize})
			cfg := baseConfig(t)
			cfg.SpeedtestURL = fake.URL()
			cfg.Budget, cfg.Upload, cfg.CheckConnections = tt.budget, tt.upload, tt.connections
			cfg.CheckDuration = 2 * time.Second
			c, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := checkOnce(context.Background(), c)
			st := fake.Stats()
			budget := int64(tt.budget)
			if st.BytesServed+st.UploadBytes > budget {
				t.Errorf("fake served %d and received %d bytes: more than the %d budget", st.BytesServed, st.UploadBytes, budget)
			}
			if r.Bytes > budget {
				t.Errorf("check counted %d bytes: more than the %d budget", r.Bytes, budget)
			}
			// Not vacuous: most of the budget was used, and measured.
			if st.DownloadBytes+st.UploadBytes < budget/3 || r.Bytes < budget/3 {
				t.Errorf("only %d bytes moved (check counted %d) of a %d budget", st.DownloadBytes+st.UploadBytes, r.Bytes, budget)
			}
			if !r.OK() || r.DownloadBps < 10e6 || (tt.upload && r.UploadBps <= 0) {
				t.Errorf("a fast link that hit the budget must still measure ok: %s", r.Summary())
			}
			t.Logf("budget %s: served %d, uploaded %d, counted %d; %s", tt.budget, st.BytesServed, st.UploadBytes, r.Bytes, r.Summary())
		})
	}
}

// TestCheckCancelled: speedtest-go ignores cancellation mid-download; the
// check must still end (within the capture time) with a failed verdict.
func TestCheckCancelled(t *testing.T) {
	t.Parallel()
	fake := startFake(t, speedtestfake.Config{RateBps: 1e6})
	cfg := baseConfig(t)
	cfg.SpeedtestURL = fake.URL()
	cfg.CheckDuration = 5 * time.Second
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan report.LinkReport, 1)
	go func() { done <- checkOnce(ctx, c) }()
	sshtest.Eventually(t, 20*time.Second, func() bool { return fake.Stats().DownloadBytes > 0 }, "the download to start")
	cancel()
	sshtest.Eventually(t, 20*time.Second, func() bool { return len(done) == 1 }, "the check to end")
	r := <-done
	if r.OK() || !hasReason(r, "context canceled") {
		t.Fatalf("a cancelled check: %s", r.Summary())
	}
	served := fake.Stats().DownloadBytes
	if r.Bytes > int64(cfg.Budget) || served > int64(cfg.Budget) {
		t.Fatalf("bytes %d, served %d", r.Bytes, served)
	}
}

// hangingServer accepts connections and never answers: a server (or link)
// that swallows requests.
func hangingServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// TestCheckHangingServer: a server that never answers costs the check no
// more than the caller's deadline.
func TestCheckHangingServer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(c *Config, hang string)
		want  []string
	}{
		{name: "API", setup: func(c *Config, hang string) { c.SpeedtestURL = hang }, want: []string{"fetch client info", "deadline exceeded"}},
		{name: "test server", setup: func(c *Config, hang string) {
			f := startFake(t, speedtestfake.Config{})
			c.SpeedtestURL, c.SpeedtestServer = f.URL(), hang
		}, want: []string{"latency to", "deadline exceeded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig(t)
			tt.setup(&cfg, hangingServer(t))
			c, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			done := make(chan report.LinkReport, 1)
			go func() { done <- checkOnce(ctx, c) }()
			sshtest.Eventually(t, 20*time.Second, func() bool { return len(done) == 1 }, "the check to end after its deadline")
			r := <-done
			if r.OK() {
				t.Fatal("ok from a server that never answers")
			}
			for _, w := range tt.want {
				if !hasReason(r, w) {
					t.Errorf("no reason with %q in %q", w, r.Reasons)
				}
			}
		})
	}
}
