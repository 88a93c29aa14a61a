package measure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline/shared/clock"
)

// errBudget is returned for traffic the budget does not allow.
var errBudget = errors.New("data budget of the check exhausted")

// phase is what the check is doing; it decides which requests are
// measured and held against a reservation.
type phase int

const (
	phaseControl phase = iota
	phaseDownload
	phaseUpload
)

const (
	// headerAllowance is reserved per measured request for its headers.
	headerAllowance = 2 << 10
	// firstEstimate is the reservation for a download before any response
	// told the size of the test files (the real random1000x1000.jpg that
	// speedtest-go asks for is 1.98 MB). A server with bigger files has its
	// first response closed unread when it does not fit.
	firstEstimate = 2 << 20
	// maxErrors is how many consecutive failed requests stop a phase, so
	// that speedtest-go does not spin on a dead server until its capture
	// time ends.
	maxErrors = 3
)

var randomFile = regexp.MustCompile(`/random\d+x\d+\.jpg$`)

// meter accounts for every byte a check moves and holds it to the budget.
//
// It keeps three counts: spent, every byte read from or written to the
// check's connections (TLS and headers included: what the carrier bills);
// pending, the bytes still expected on admitted download and upload bodies;
// and abandoned, the unread rest of bodies closed early (the server may
// already have sent it). A measured request is admitted only while
// spent + pending + abandoned + its expected size fits, so a server is never
// asked for more than the budget allows. As a last resort, connection reads
// and writes stop at the budget.
type meter struct {
	budget int64
	clock  clock.Clock

	mu        sync.Mutex
	spent     int64
	inflight  int64 // of spent: reserved by reads and writes under way
	pending   int64
	abandoned int64
	conns     map[*meteredConn]struct{}
	aborted   error
	phase     phase
	phaseCap  int64
	estimate  int64 // expected size of a download before its response
	sized     bool  // estimate comes from a response
	unsized   int   // admitted downloads whose size is still the estimate
	changed   chan struct{}
	stopped   error
	errStreak int
	firstErr  error
	start     time.Time
	last      time.Time
	moved     int64
	budgetHit bool

	lastCtlErr error // last error of a control request
}

func newMeter(budget int64, clk clock.Clock) *meter {
	return &meter{budget: budget, clock: clk, conns: map[*meteredConn]struct{}{}, estimate: firstEstimate, phaseCap: budget, changed: make(chan struct{})}
}

// Spent is every byte moved so far. A read still waiting on a connection
// (an idle keep-alive connection's, until it is closed) holds its
// reservation against the budget but is not counted here.
func (m *meter) Spent() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.spent - m.inflight
}

// abort stops all traffic: open connections are closed, new ones refused,
// measured requests parked until speedtest-go ends its phase.
func (m *meter) abort(err error) {
	m.mu.Lock()
	if m.aborted == nil {
		m.aborted = err
		m.notify()
	}
	conns := make([]*meteredConn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
}

// lastControlErr is the last error of a request outside the measured
// phases (speedtest-go replaces some of them with its own less telling
// errors).
func (m *meter) lastControlErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastCtlErr
}

func (m *meter) abortErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.aborted
}

// beginPhase starts measuring p. share is the fraction of the budget left
// that the phase may use.
func (m *meter) beginPhase(p phase, share float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	used := m.spent + m.pending + m.abandoned
	m.phase = p
	m.phaseCap = used + int64(float64(m.budget-used)*share)
	m.stopped, m.errStreak, m.firstErr, m.moved, m.budgetHit = nil, 0, nil, 0, false
	m.start = m.clock.Now()
	m.last = m.start
}

// phaseResult is what one measured phase gave.
type phaseResult struct {
	moved     int64         // body bytes moved
	active    time.Duration // from the start to the last body byte
	budgetHit bool          // a request was refused for the budget
	err       error         // why it stopped, or its first error
}

func (m *meter) endPhase() phaseResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := phaseResult{moved: m.moved, active: m.last.Sub(m.start), budgetHit: m.budgetHit, err: m.stopped}
	if r.err == nil {
		r.err = m.firstErr
	}
	m.phase = phaseControl
	m.phaseCap = m.budget
	return r
}

// reserve admits a measured request expected to move body bytes (-1:
// unknown, use the estimate). When the request does not fit but some
// admitted request's size is still only an estimate, it waits (until ctx
// ends) for that size to be known: the first responses tell the real file
// size, which is usually smaller. When it cannot fit, the phase stops
// admitting: its budget is used.
func (m *meter) reserve(ctx context.Context, body int64) (*grant, error) {
	for {
		m.mu.Lock()
		if m.aborted != nil {
			m.mu.Unlock()
			return nil, m.aborted
		}
		if m.stopped != nil {
			m.mu.Unlock()
			return nil, m.stopped
		}
		g := &grant{m: m, body: body, hdr: headerAllowance, sized: true}
		if body < 0 {
			g.body, g.sized = m.estimate, false
		}
		if m.spent+m.pending+m.abandoned+g.body+g.hdr <= m.phaseCap {
			m.pending += g.body + g.hdr
			if !g.sized {
				m.unsized++
			}
			m.mu.Unlock()
			return g, nil
		}
		if m.unsized == 0 {
			m.budgetHit = true
			m.stopped = errBudget
			m.mu.Unlock()
			return nil, errBudget
		}
		changed := m.changed
		m.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// notify wakes the requests waiting in reserve. m.mu must be held.
func (m *meter) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// resize sets a grant's body size once the response told it. It fails,
// changing nothing, when the new size does not fit.
func (m *meter) resize(g *grant, body int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.sized || body > m.estimate {
		m.estimate, m.sized = body, true
	}
	if !g.sized {
		g.sized = true
		m.unsized--
		defer m.notify()
	}
	if m.spent+m.pending+m.abandoned-g.body+body > m.phaseCap {
		m.budgetHit = true
		m.stopped = errBudget
		return errBudget
	}
	m.pending += body - g.body
	g.body = body
	return nil
}

// requestFailed records a measured request that got no response.
func (m *meter) requestFailed(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.firstErr == nil {
		m.firstErr = err
	}
	m.errStreak++
	if m.errStreak >= maxErrors && m.stopped == nil {
		m.stopped = fmt.Errorf("%d requests in a row failed: %w", m.errStreak, err)
	}
}

func (m *meter) requestOK() {
	m.mu.Lock()
	m.errStreak = 0
	m.mu.Unlock()
}

// allow takes up to n bytes of the hard budget for a connection read or
// write; the caller settles it with what it used.
func (m *meter) allow(n int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	left := m.budget - m.spent
	if left <= 0 {
		return 0
	}
	k := int64(n)
	if k > left {
		k = left
	}
	m.spent += k
	m.inflight += k
	return int(k)
}

// settle ends a reservation of k bytes of which n were used.
func (m *meter) settle(k, n int) {
	m.mu.Lock()
	m.spent -= int64(k - n)
	m.inflight -= int64(k)
	m.mu.Unlock()
}

// grant is an admitted request's reservation.
type grant struct {
	m         *meter
	body, hdr int64
	sized     bool // body is known, not the meter's estimate
	done      bool
}

// moved records n body bytes of this request.
func (g *grant) moved(n int) {
	m := g.m
	m.mu.Lock()
	defer m.mu.Unlock()
	k := min(int64(n), g.body)
	g.body -= k
	m.pending -= k
	m.moved += int64(n)
	m.last = m.clock.Now()
}

// finish releases the header allowance (the headers' real bytes are in
// spent). The body's unread rest stays held against the budget as
// abandoned: the server may already have sent it.
func (g *grant) finish() { g.end(false) }

// release gives the whole reservation back: the request got no response,
// so no body can be on its way.
func (g *grant) release() { g.end(true) }

func (g *grant) end(release bool) {
	m := g.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if g.done {
		return
	}
	g.done = true
	m.pending -= g.hdr + g.body
	if !release {
		m.abandoned += g.body
	}
	g.body = 0
	if !g.sized {
		g.sized = true
		m.unsized--
		m.notify()
	}
}

// meteredConn counts and limits one connection's bytes.
type meteredConn struct {
	net.Conn
	m    *meter
	once sync.Once
}

func (c *meteredConn) Read(p []byte) (int, error) {
	k := c.m.allow(len(p))
	if k == 0 && len(p) > 0 {
		return 0, errBudget
	}
	n, err := c.Conn.Read(p[:k])
	c.m.settle(k, n)
	return n, err
}

func (c *meteredConn) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		k := c.m.allow(len(p))
		if k == 0 {
			return total, errBudget
		}
		n, err := c.Conn.Write(p[:k])
		c.m.settle(k, n)
		total += n
		p = p[n:]
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (c *meteredConn) Close() error {
	c.once.Do(func() {
		c.m.mu.Lock()
		delete(c.m.conns, c)
		c.m.mu.Unlock()
	})
	return c.Conn.Close()
}

// dialer wraps d: connections are counted, and refused once aborted.
func (m *meter) dialer(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := m.abortErr(); err != nil {
			return nil, err
		}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		mc := &meteredConn{Conn: c, m: m}
		m.mu.Lock()
		aborted := m.aborted
		if aborted == nil {
			m.conns[mc] = struct{}{}
		}
		m.mu.Unlock()
		if aborted != nil {
			_ = c.Close()
			return nil, aborted
		}
		return mc, nil
	}
}

// meteredTransport is the http.RoundTripper of every request a check makes.
// It sends speedtest.net API requests to base when base is set, holds
// measured requests to the meter, and parks refused measured requests until
// their context ends: speedtest-go retries a failed download at once in a
// loop until its capture time is over, so returning at once would spin.
type meteredTransport struct {
	m         *meter
	inner     http.RoundTripper
	base      *url.URL // nil: no rewrite
	userAgent string
}

// apiHost is the host speedtest-go sends its API requests to.
const apiHost = "www.speedtest.net"

func (t *meteredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if t.base != nil && strings.EqualFold(req.URL.Host, apiHost) {
		req.URL.Scheme = t.base.Scheme
		req.URL.Host = t.base.Host
		req.URL.Path = path.Join("/", t.base.Path, req.URL.Path)
		req.URL.RawPath = ""
		req.Host = t.base.Host
	}
	req.Header.Set("User-Agent", t.userAgent)

	t.m.mu.Lock()
	p := t.m.phase
	t.m.mu.Unlock()
	switch {
	case p == phaseDownload && req.Method == http.MethodGet && randomFile.MatchString(req.URL.Path):
		return t.download(req)
	case p == phaseUpload && req.Method == http.MethodPost && req.Body != nil:
		return t.upload(req)
	}
	if err := t.m.abortErr(); err != nil {
		return nil, err
	}
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		t.m.mu.Lock()
		t.m.lastCtlErr = err
		t.m.mu.Unlock()
	}
	return resp, err
}

// park waits until the request's context ends, then returns err.
func park(req *http.Request, err error) (*http.Response, error) {
	<-req.Context().Done()
	return nil, fmt.Errorf("%w (%w)", err, req.Context().Err())
}

func (t *meteredTransport) download(req *http.Request) (*http.Response, error) {
	g, err := t.m.reserve(req.Context(), -1)
	if err != nil {
		return park(req, err)
	}
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		g.release()
		if req.Context().Err() == nil {
			t.m.requestFailed(err)
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		g.finish()
		_ = resp.Body.Close()
		err := fmt.Errorf("GET %s: %s", req.URL, resp.Status)
		t.m.requestFailed(err)
		return nil, err
	}
	t.m.requestOK()
	if resp.ContentLength >= 0 {
		if err := t.m.resize(g, resp.ContentLength); err != nil {
			g.finish()
			_ = resp.Body.Close()
			return park(req, err)
		}
	}
	resp.Body = &meteredBody{rc: resp.Body, g: g}
	return resp, nil
}

func (t *meteredTransport) upload(req *http.Request) (*http.Response, error) {
	if req.ContentLength <= 0 {
		return nil, errors.New("upload request without a length")
	}
	g, err := t.m.reserve(req.Context(), req.ContentLength)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return park(req, err)
	}
	defer g.release() // the bytes sent are counted by the connection
	req.Body = &meteredBody{rc: req.Body, g: g}
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		if req.Context().Err() == nil {
			t.m.requestFailed(err)
		}
		return nil, err
	}
	t.m.requestOK()
	return resp, nil
}

// meteredBody reports body bytes to its grant. (net/http already stops a
// response body at its Content-Length; a body of unknown length is held to
// the budget by the connection count.)
type meteredBody struct {
	rc io.ReadCloser
	g  *grant
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.g.moved(n)
	}
	if err != nil {
		b.g.finish()
	}
	return n, err
}

func (b *meteredBody) Close() error {
	b.g.finish()
	return b.rc.Close()
}
