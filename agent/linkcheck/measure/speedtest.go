// Package measure is the link check's measurement: speedtest-go, held to
// the check's data budget and capture time. Only the link check program
// (agent/cmd/lifeline-linkcheck) links it: speedtest-go brings net/http,
// TLS and their package state, which the long-running agent does without
// (agent/linkcheck runs each check in that program).
package measure

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/showwin/speedtest-go/speedtest"

	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/netbind"
	"github.com/lifeline-dev/lifeline/shared/version"
)

// SpeedtestGoConfig configures NewSpeedtestGo.
type SpeedtestGoConfig struct {
	// APIURL replaces https://www.speedtest.net for the client info and
	// server list requests; empty keeps it.
	APIURL string
	// Server, when not empty, is a fixed test server URL (its scheme and
	// host; speedtest-go adds /speedtest/…); empty picks the answering
	// server with the lowest latency from the list.
	Server string
	// Interface binds every socket of the test, DNS lookups included, to
	// this interface; empty: any.
	Interface string
	// Clock times the measured phases. nil: clock.Real.
	Clock clock.Clock
}

// speedtestGo is the SpeedTester built on github.com/showwin/speedtest-go.
//
// speedtest-go's habits, and what this does about them:
//   - it replaces http.DefaultClient.Transport whenever a client is made:
//     lifeline never uses the default client, and makes its clients under
//     newMu so the replacement is not a data race;
//   - it ignores cancellation during a download or upload and runs until its
//     capture time ends: the capture time is set to lim.Duration, and on
//     cancellation the meter closes every connection and parks the
//     library's request loop, so the check ends within that time;
//   - it downloads rate × capture time with no cap: the meter admits a
//     request only when its size fits the budget, and the speed is computed
//     here from the bytes actually received over the time they took (the
//     library's moving average would count the idle end of a phase the
//     budget stopped early);
//   - its API URLs are fixed to www.speedtest.net: the transport rewrites
//     them to APIURL.
type speedtestGo struct {
	cfg  SpeedtestGoConfig
	base *url.URL
}

// New returns the production SpeedTester for cfg: its API URL
// (LIFELINE_SPEEDTEST_URL), fixed test server (LIFELINE_SPEEDTEST_SERVER)
// and interface (LIFELINE_INTERFACE). The limits come with each Measure.
func New(cfg linkcheck.Config) (linkcheck.SpeedTester, error) {
	return NewSpeedtestGo(SpeedtestGoConfig{APIURL: cfg.SpeedtestURL, Server: cfg.SpeedtestServer, Interface: cfg.Interface, Clock: cfg.Clock})
}

// NewSpeedtestGo returns the production SpeedTester.
func NewSpeedtestGo(cfg SpeedtestGoConfig) (linkcheck.SpeedTester, error) {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	t := &speedtestGo{cfg: cfg}
	if cfg.APIURL != "" {
		u, err := url.Parse(cfg.APIURL)
		if err != nil {
			return nil, fmt.Errorf("speedtest API URL %q: %w", cfg.APIURL, err)
		}
		if u.Host != apiHost || u.Scheme != "https" || (u.Path != "" && u.Path != "/") {
			t.base = u
		}
	}
	return t, nil
}

// newMu serialises speedtest.New, which writes http.DefaultClient.Transport.
var newMu sync.Mutex

const (
	dialTimeout   = 10 * time.Second
	headerTimeout = 15 * time.Second
	// controlTimeout bounds each of the steps before the measured phases.
	controlTimeout = linkcheck.ControlTimeout
)

func (t *speedtestGo) Measure(ctx context.Context, lim linkcheck.Limits) (m linkcheck.Measurement) {
	meter := newMeter(lim.Budget, t.cfg.Clock)
	defer func() { m.Bytes = meter.Spent() }()
	stop := context.AfterFunc(ctx, func() { meter.abort(fmt.Errorf("check stopped: %w", context.Cause(ctx))) })
	defer stop()

	control := netbind.Control(t.cfg.Interface, 0)
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, Control: control}
	if t.cfg.Interface != "" {
		d.Resolver = &net.Resolver{PreferGo: true, Dial: (&net.Dialer{Timeout: dialTimeout, Control: control}).DialContext}
	}
	inner := &http.Transport{
		Proxy:                 nil, // the check measures the link itself, never a proxy
		DialContext:           meter.dialer(d),
		ForceAttemptHTTP2:     true,
		MaxConnsPerHost:       lim.Connections + 1,
		MaxIdleConnsPerHost:   lim.Connections + 1,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   dialTimeout,
		ResponseHeaderTimeout: headerTimeout,
	}
	defer inner.CloseIdleConnections()
	client := &http.Client{Transport: &meteredTransport{m: meter, inner: inner, base: t.base,
		userAgent: fmt.Sprintf("lifeline/%s %s", version.Version, speedtest.DefaultUserAgent)}}

	uc := &speedtest.UserConfig{MaxConnections: lim.Connections, DialerControl: control, PingMode: speedtest.HTTP}
	newMu.Lock()
	st := speedtest.New(speedtest.WithUserConfig(uc), speedtest.WithDoer(client))
	newMu.Unlock()
	st.SetCaptureTime(lim.Duration)

	step := func(f func(context.Context) error) error {
		sctx, cancel := context.WithTimeout(ctx, controlTimeout)
		defer cancel()
		return f(sctx)
	}

	if err := step(func(c context.Context) error {
		u, err := st.FetchUserInfoContext(c)
		if err != nil {
			return err
		}
		m.ISP, m.IP = u.Isp, u.IP
		return nil
	}); err != nil {
		m.Errors = append(m.Errors, fmt.Errorf("fetch client info: %w", err))
	}

	server, err := t.pickServer(ctx, st, step)
	if err != nil {
		m.Errors = append(m.Errors, err)
		return m
	}
	m.Server = describe(server)

	if err := step(func(c context.Context) error { return server.PingTestContext(c, nil) }); err != nil || server.TestDuration.Ping == nil {
		if err == nil {
			err = errors.New("no answer")
		}
		if last := meter.lastControlErr(); last != nil && !errors.Is(err, last) {
			err = fmt.Errorf("%w (last error: %w)", err, last)
		}
		m.Errors = append(m.Errors, fmt.Errorf("latency to %s: %w", m.Server, err))
		return m
	}
	m.HaveLatency, m.Latency, m.Jitter = true, server.Latency, server.Jitter
	if lim.Light {
		return m // a light check: the link is proven, its speed not measured
	}

	// The measured phases get a context that speedtest-go's own loop ends
	// at its capture time; cancellation reaches them through the meter.
	share := 1.0
	if lim.Upload {
		share = 0.5
	}
	meter.beginPhase(phaseDownload, share)
	dlErr := server.DownloadTestContext(context.WithoutCancel(ctx))
	res := meter.endPhase()
	m.HaveDownload, m.DownloadBps, err = rate(ctx, res, dlErr)
	m.DownloadCut, m.DownloadTime = res.budgetHit, res.active
	if err != nil {
		m.Errors = append(m.Errors, fmt.Errorf("download from %s: %w", m.Server, err))
	}
	if !lim.Upload {
		return m
	}
	meter.beginPhase(phaseUpload, 1)
	ulErr := server.UploadTestContext(context.WithoutCancel(ctx))
	res = meter.endPhase()
	m.HaveUpload, m.UploadBps, err = rate(ctx, res, ulErr)
	if err != nil {
		m.Errors = append(m.Errors, fmt.Errorf("upload to %s: %w", m.Server, err))
	}
	return m
}

func (t *speedtestGo) pickServer(ctx context.Context, st *speedtest.Speedtest, step func(func(context.Context) error) error) (*speedtest.Server, error) {
	if t.cfg.Server != "" {
		s, err := st.CustomServer(t.cfg.Server)
		if err != nil {
			return nil, fmt.Errorf("test server %q: %w", t.cfg.Server, err)
		}
		return s, nil
	}
	var list speedtest.Servers
	if err := step(func(c context.Context) error {
		var err error
		list, err = st.FetchServerListContext(c)
		return err
	}); err != nil {
		return nil, fmt.Errorf("fetch server list: %w", err)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("fetch server list: %w", context.Cause(ctx))
	}
	avail := list.Available()
	if avail == nil || len(*avail) == 0 {
		return nil, fmt.Errorf("none of the %d listed test servers answered", len(list))
	}
	return (*avail)[0], nil // lowest latency first
}

// rate turns a phase's bytes and active time into bits per second.
func rate(ctx context.Context, res phaseResult, libErr error) (bool, float64, error) {
	if res.moved == 0 || res.active <= 0 {
		switch {
		case ctx.Err() != nil:
			return false, 0, fmt.Errorf("no data: %w", context.Cause(ctx))
		case res.err != nil && errors.Is(res.err, errBudget):
			return false, 0, errors.New("no data: the budget left is smaller than one test file")
		case res.err != nil:
			return false, 0, fmt.Errorf("no data: %w", res.err)
		case libErr != nil:
			return false, 0, fmt.Errorf("no data: %w", libErr)
		default:
			return false, 0, errors.New("no data received")
		}
	}
	bps := float64(res.moved) * 8 / res.active.Seconds()
	if ctx.Err() != nil {
		return true, bps, fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	return true, bps, nil
}

func describe(s *speedtest.Server) string {
	switch {
	case s.Sponsor != "" && s.Sponsor != "?" && s.Name != "":
		return fmt.Sprintf("%s, %s (%s)", s.Sponsor, s.Name, s.Host)
	case s.Host != "":
		return s.Host
	default:
		return s.URL
	}
}
