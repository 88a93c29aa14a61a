package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jpillora/backoff"
	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// link is the reconnect loop for one bastion.
type link struct {
	t    *Tunnels
	addr string
	log  *slog.Logger

	mu   sync.Mutex
	conn *conn
	st   Status
	fail *failure // why the last attempt or connection ended
	beat time.Time
}

func newLink(t *Tunnels, addr string) *link {
	return &link{t: t, addr: addr, log: t.cfg.Log.With("bastion", addr), st: Status{Bastion: addr}, beat: t.cfg.Clock.Now()}
}

func (l *link) heartbeat() {
	now := l.t.cfg.Clock.Now()
	l.mu.Lock()
	l.beat = now
	l.mu.Unlock()
}

func (l *link) lastBeat() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.beat
}

func (l *link) current() *conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn
}

func (l *link) status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.st
	s.Registered = append([]string(nil), s.Registered...)
	return s
}

func (l *link) update(f func(*Status)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.st)
}

// describe is this bastion's part of STATUS=, e.g. "connected to
// b.example:2222, pi:22 registered" or "b.example:2222 unreachable: dial
// tcp …: connection refused; retry in 12s".
func (l *link) describe(now time.Time) string {
	l.mu.Lock()
	st, f := l.st, l.fail
	st.Registered = append([]string(nil), st.Registered...)
	l.mu.Unlock()
	if st.Connected {
		var pending []string
		for _, fw := range l.t.cfg.Forwards {
			if !slices.Contains(st.Registered, fw.Listen()) {
				pending = append(pending, fw.Listen())
			}
		}
		s := "connected to " + l.addr
		if len(st.Registered) > 0 {
			s += ", " + strings.Join(st.Registered, ", ") + " registered"
		}
		if len(pending) > 0 {
			s += ", registering " + strings.Join(pending, ", ")
		}
		return s
	}
	if f == nil {
		return "connecting to " + l.addr
	}
	var s string
	switch {
	case errors.Is(f.err, errHostKey):
		s = l.addr + ": BASTION HOST KEY REFUSED: " + f.err.Error()
	case f.stage == "dial":
		s = l.addr + " unreachable: " + f.err.Error()
	case f.stage == "handshake":
		s = l.addr + ": handshake failed: " + f.err.Error()
	default:
		s = l.addr + ": connection lost: " + f.err.Error()
	}
	if !st.RetryAt.IsZero() {
		in := max(st.RetryAt.Sub(now), 0)
		if in >= 10*time.Second {
			in = in.Round(time.Second)
		} else {
			in = in.Round(100 * time.Millisecond)
		}
		s += "; retry in " + in.String()
	}
	return s
}

// failure classifies why an attempt or a connection ended.
type failure struct {
	stage string // "dial", "handshake", "lost"
	// network is true when the path to the bastion is the likely cause
	// (refused, unreachable, timed out, link died): the loop then probes
	// for its return. Otherwise (host key, authentication, a server that
	// hangs up during the handshake) it waits out the backoff.
	network bool
	err     error
}

func (f *failure) Error() string { return f.stage + ": " + f.err.Error() }

// run is the loop; it calls started once it runs.
func (l *link) run(ctx context.Context, started func()) {
	started()
	cfg := &l.t.cfg
	b := &backoff.Backoff{Min: time.Second, Max: cfg.BackoffMax, Factor: 2, Jitter: true}
	if b.Min > b.Max {
		b.Min = b.Max
	}
	// A connection that lasted this long resets the backoff.
	stable := 2 * cfg.DeadAfter
	var pre net.Conn
	for {
		l.heartbeat()
		up, f := l.once(ctx, pre)
		pre = nil
		if ctx.Err() != nil {
			return
		}
		if up >= stable {
			b.Reset()
		}
		wait := b.Duration()
		now := cfg.Clock.Now()
		l.mu.Lock()
		l.st.LastError = f.Error()
		l.st.Connected = false
		l.st.Registered = nil
		l.st.RetryAt = now.Add(wait)
		l.fail = f
		l.mu.Unlock()
		l.t.refreshStatus()
		switch {
		case errors.Is(f.err, errHostKey):
			l.log.Error("BASTION HOST KEY REFUSED: not connecting", "err", f.err, "retry_in", wait.Round(time.Millisecond))
		case f.stage == "lost":
			// "lost" was logged with its reason and duration already.
		default:
			l.log.Warn("connect failed", "stage", f.stage, "err", f.err, "retry_in", wait.Round(time.Millisecond))
		}
		l.log.Info("reconnect in", "in", wait.Round(time.Millisecond), "probing", f.network, "attempt", int(b.Attempt()))
		pre = l.wait(ctx, wait, f.network)
		if ctx.Err() != nil {
			if pre != nil {
				pre.Close()
			}
			return
		}
	}
}

// wait waits d, beating the heart every ProbeEvery. When probe is true it
// also tries a TCP connect to the bastion at that cadence and returns the
// first connection that succeeds (the caller then uses it).
func (l *link) wait(ctx context.Context, d time.Duration, probe bool) net.Conn {
	cfg := &l.t.cfg
	end := cfg.Clock.Now().Add(d)
	for {
		left := end.Sub(cfg.Clock.Now())
		if left <= 0 {
			return nil
		}
		step := min(left, cfg.ProbeEvery)
		tm := cfg.Clock.NewTimer(step)
		select {
		case <-ctx.Done():
			tm.Stop()
			return nil
		case <-tm.C():
		}
		l.heartbeat()
		if !probe || end.Sub(cfg.Clock.Now()) <= 0 {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		c, err := cfg.Dialer.DialContext(pctx, "tcp", l.addr)
		cancel()
		if err == nil {
			l.log.Info("bastion reachable again: reconnecting now")
			return c
		}
		l.log.Debug("probe failed", "err", err)
	}
}

var (
	errHostKey         = errors.New("host key refused")
	errClosedByBastion = errors.New("closed by the bastion")
)

// once makes one connection (using pre when not nil) and holds it until it
// dies or ctx ends. up is how long it was established (0 if it never was).
func (l *link) once(ctx context.Context, pre net.Conn) (up time.Duration, f *failure) {
	cfg := &l.t.cfg
	start := time.Now()
	nc := pre
	if nc == nil {
		dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		c, err := cfg.Dialer.DialContext(dctx, "tcp", l.addr)
		cancel()
		if err != nil {
			return 0, &failure{stage: "dial", network: true, err: err}
		}
		nc = c
	}
	// The handshake has no timeout of its own: bound it on the socket, and
	// let ctx cancel it.
	if err := nc.SetDeadline(start.Add(cfg.ConnectTimeout)); err != nil {
		nc.Close()
		return 0, &failure{stage: "dial", network: true, err: err}
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	var hostKeyErr error
	check := cfg.HostKeys.HostKeyCallback(l.addr)
	algo := sshalgo.Config()
	algo.Ciphers = cfg.Ciphers
	sshCfg := &ssh.ClientConfig{
		Config: algo,
		User:   cfg.User,
		Auth:   []ssh.AuthMethod{ssh.PublicKeys(cfg.Signer)},
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			hostKeyErr = check(host, remote, key)
			return hostKeyErr
		},
		HostKeyAlgorithms: cfg.HostKeys.Algorithms(l.addr),
		ClientVersion:     clientVersion(),
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, l.addr, sshCfg)
	stopped := stop()
	if err != nil {
		var ne net.Error
		switch {
		case hostKeyErr != nil:
			err = fmt.Errorf("%w: %w", errHostKey, hostKeyErr)
		case !stopped:
			err = ctx.Err()
		case errors.As(err, &ne) && ne.Timeout():
			return 0, &failure{stage: "handshake", network: true, err: fmt.Errorf("no answer within %s: %w", cfg.ConnectTimeout, err)}
		case strings.Contains(err.Error(), "unable to authenticate"):
			err = fmt.Errorf("%w: the bastion refused this agent's key as user %q (LIFELINE_USER): on lifeline's bastion put the line of `sudo lifeline-agent pair` in its agents file; on a stock sshd set LIFELINE_USER to the account whose authorized_keys holds the key", err, cfg.User)
		}
		return 0, &failure{stage: "handshake", err: err}
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		// The transport closes the socket when the bastion hangs up.
		sc.Close()
		return 0, &failure{stage: "handshake", err: fmt.Errorf("%w right after authentication: %w", errClosedByBastion, err)}
	}
	connected := cfg.Clock.Now()
	cipher := ""
	if a, ok := sc.(ssh.AlgorithmsConnMetadata); ok {
		cipher = a.Algorithms().Write.Cipher
	}
	l.log.Info("connected", "remote", nc.RemoteAddr().String(), "server", string(sc.ServerVersion()), "cipher", cipher,
		"took", time.Since(start).Round(time.Millisecond))
	s := newConn(l, sc)
	l.mu.Lock()
	l.conn = s
	l.st.Connected, l.st.LastError, l.st.Registered = true, "", nil
	l.st.RetryAt = time.Time{}
	l.st.Connects++
	l.fail = nil
	l.mu.Unlock()
	l.t.refreshStatus()

	why := s.run(ctx, chans, reqs)
	l.t.connGone(s)

	l.mu.Lock()
	l.conn = nil
	l.st.Registered = nil
	l.mu.Unlock()
	l.t.rolesChanged()
	up = cfg.Clock.Now().Sub(connected)
	if ctx.Err() != nil {
		l.log.Info("closed", "after", up.Round(time.Millisecond))
		return up, &failure{stage: "lost", err: ctx.Err()}
	}
	l.log.Warn("lost", "why", why, "after", up.Round(time.Millisecond))
	// A bastion that hangs up on purpose (restart, a newer connection of this
	// agent, policy) is not a path problem: probing would turn a bastion
	// that keeps closing into a reconnect loop, so wait out the backoff.
	return up, &failure{stage: "lost", network: !errors.Is(why, errClosedByBastion), err: why}
}

// conn is one established SSH connection to a bastion.
type conn struct {
	l   *link
	cfg *Config
	sc  ssh.Conn
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // every goroutine of this connection
	slots  chan struct{}  // bounds concurrent forwarded connections
	resent sync.Once      // the latest link reports, after the first registration
	// mainRefused: the bastion refused a main-link report (it reads
	// version 1 only); none is sent on this connection again.
	mainRefused atomic.Bool
	role        connRole
	// ready: counted in Tunnels.ready (under Tunnels.readyMu).
	ready bool
}

func newConn(l *link, sc ssh.Conn) *conn {
	return &conn{l: l, cfg: &l.t.cfg, sc: sc, log: l.log, slots: make(chan struct{}, l.t.cfg.MaxChannels)}
}

// goroutine starts f as part of the connection unless it is over.
func (s *conn) goroutine(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Go(f)
	return true
}

var errClosed = errors.New("connection closed")

// request sends a global request and waits for its reply, at most the
// keepalive-dead period or until ctx ends. SendRequest itself cannot be
// interrupted: it runs in a goroutine of the connection that ends when the connection
// is closed (which the keepalive loop does to a dead link).
func (s *conn) request(ctx context.Context, name string, payload []byte) (bool, error) {
	type result struct {
		ok  bool
		err error
	}
	done := make(chan result, 1)
	if !s.goroutine(func() {
		ok, _, err := s.sc.SendRequest(name, true, payload)
		done <- result{ok, err}
	}) {
		return false, errClosed
	}
	limit := s.cfg.DeadAfter
	tm := s.cfg.Clock.NewTimer(limit)
	defer tm.Stop()
	select {
	case r := <-done:
		return r.ok, r.err
	case <-tm.C():
		return false, fmt.Errorf("%s: no reply within %s", name, limit)
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// run serves the connection until it dies or ctx ends, then closes it and
// waits for all its goroutines. It returns why the connection ended.
func (s *conn) run(ctx context.Context, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) error {
	sctx, cancel := context.WithCancelCause(ctx)
	s.goroutine(func() {
		// Requests from the server (its keepalives): answer like OpenSSH does.
		for r := range reqs {
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
	})
	s.goroutine(func() { s.serveChannels(sctx, chans) })
	s.goroutine(func() {
		err := s.sc.Wait()
		if err == nil || errors.Is(err, io.EOF) {
			err = errClosedByBastion
		}
		cancel(fmt.Errorf("connection ended: %w", err))
	})
	s.goroutine(func() {
		// The site role goes first: the bastion must know whether to
		// text this site's events before its names make it "up".
		s.l.t.sendRole(sctx, s)
		s.l.t.rolesChanged()
		s.registerAll(sctx)
	})
	s.goroutine(func() {
		if err := s.keepalive(sctx); err != nil {
			cancel(err)
		}
	})
	<-sctx.Done()
	why := context.Cause(sctx)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.sc.Close()
	s.wg.Wait()
	cancel(nil)
	return why
}

// keepalive sends keepalive@openssh.com right after connecting and then
// every Keepalive, and beats the heart every beatEvery meanwhile. The link
// is dead when a request has gone DeadAfter without a reply; it returns an
// error saying so. A request still unanswered when the next is due counts
// as a miss (and no second one is sent).
func (s *conn) keepalive(ctx context.Context) error {
	cfg := s.cfg
	type reply struct {
		rtt time.Duration
		err error
	}
	replies := make(chan reply, 1)
	var sent time.Time // of the request awaiting its reply; zero: none
	due := cfg.Clock.Now()
	for {
		now := cfg.Clock.Now()
		wake := min(max(due.Sub(now), 0), cfg.beatEvery())
		if !sent.IsZero() {
			wake = min(wake, max(sent.Add(cfg.DeadAfter).Sub(now), 0))
		}
		tm := cfg.Clock.NewTimer(wake)
		select {
		case <-ctx.Done():
			tm.Stop()
			return nil
		case r := <-replies:
			tm.Stop()
			sent = time.Time{}
			if r.err != nil {
				// The connection is closing: its end (sc.Wait) says why.
				return nil
			}
			s.l.t.recordRTT(r.rtt)
			continue
		case <-tm.C():
		}
		s.l.heartbeat()
		now = cfg.Clock.Now()
		if !sent.IsZero() && now.Sub(sent) >= cfg.DeadAfter {
			return fmt.Errorf("dead link: no reply to a keepalive for %s", cfg.DeadAfter)
		}
		if now.Before(due) {
			continue
		}
		due = now.Add(cfg.Keepalive)
		if !sent.IsZero() {
			s.l.t.recordMiss()
			s.log.Debug("keepalive unanswered", "since", now.Sub(sent).Round(time.Millisecond))
			continue
		}
		sent = now
		at := sent
		s.goroutine(func() {
			_, _, err := s.sc.SendRequest("keepalive@openssh.com", true, nil)
			select {
			case replies <- reply{cfg.Clock.Now().Sub(at), err}:
			case <-ctx.Done():
			}
		})
	}
}
