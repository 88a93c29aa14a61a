// Package tunnel keeps the agent's reverse tunnels to its bastions alive.
//
// For every bastion it runs one loop: dial (with a timeout, optionally bound
// to the backup uplink), SSH handshake (with a deadline), register every
// forward with a tcpip-forward request exactly as `ssh -R NAME:PORT:…` does,
// serve the forwarded-tcpip channels the server opens by dialling the
// forward's target, and send keepalive@openssh.com requests with a reply
// deadline. A link that stops answering is closed and redialled with
// jittered exponential backoff; while it waits after a network failure the
// loop probes the bastion with a plain TCP connect about once a second and
// uses the first connection that succeeds, so a returning link is used at
// once rather than at the end of the backoff.
//
// The same code works against lifeline's bastion (NAME is a registered name
// such as "pi") and against a stock OpenSSH sshd (NAME is a bind address
// sshd understands such as "localhost").
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/netbind"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
	"github.com/lifeline-dev/lifeline/shared/version"
)

// Dialer opens network connections; *net.Dialer implements it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// HostKeys pins bastion host keys; *hostkeys.Pinner implements it.
type HostKeys interface {
	// HostKeyCallback checks the key presented by the bastion configured as
	// addr (host:port) and returns nil only for a key that may be trusted.
	HostKeyCallback(addr string) ssh.HostKeyCallback
	// Algorithms lists the host key algorithms to offer to addr.
	Algorithms(addr string) []string
}

// Systemd receives the service's states for systemd's notify protocol
// ("READY=1\nSTATUS=…", "STATUS=…", "WATCHDOG=1", "STOPPING=1");
// *sdnotify.Notifier implements it. Notify is called from the tunnel
// loops and must return promptly.
type Systemd interface {
	Notify(state string) error
}

// Config configures New. Zero durations and counts take the defaults noted.
type Config struct {
	// Bastions are host:port addresses; one tunnel is held to each. Required.
	Bastions []string
	// User is the SSH user name sent (lifeline's bastion ignores it).
	// Empty means "lifeline-agent".
	User string
	// Signer is the agent's private key. Required.
	Signer ssh.Signer
	// HostKeys checks bastion host keys. Required: there is no insecure default.
	HostKeys HostKeys
	// Forwards are registered on every bastion. Required.
	Forwards []forward.Forward
	// Interface binds the tunnel's sockets (SO_BINDTODEVICE) when not empty.
	// It is ignored when Dialer is set.
	Interface string
	// DeadAfter (15s) is how long the link may be silent before it is
	// declared dead and redialled. The kernel watches it without a packet
	// of ours while traffic flows: TCP keepalive probes go out only when
	// the connection is idle (see tcpKeepalive), and TCP_USER_TIMEOUT =
	// DeadAfter bounds both them and unacknowledged data. An SSH keepalive
	// unanswered for DeadAfter ends the link too.
	DeadAfter time.Duration
	// Keepalive (5m) is the interval of SSH keepalive requests, the first
	// right after connecting: they show the bastion itself answers (not
	// only its kernel) and their round trips are what RTT returns. They
	// are not what finds a dead link in time; DeadAfter's probes are.
	Keepalive time.Duration
	// Ciphers is the agent's cipher preference. nil: AES-GCM first on a
	// CPU with AES instructions, chacha20-poly1305 first on one without
	// (sshalgo.AgentCiphers).
	Ciphers []string
	// BackoffMax caps the wait between attempts (30s).
	BackoffMax time.Duration
	// ConnectTimeout bounds TCP connect plus SSH handshake and authentication (15s).
	ConnectTimeout time.Duration
	// DialTimeout bounds one TCP connect (3s). It is short on purpose: while
	// the link is down the loop tries again about every ProbeEvery, so a
	// returning link is found by a fresh SYN within a second or two instead
	// of waiting for the kernel's next SYN retransmission (up to 8 s later).
	DialTimeout time.Duration
	// TargetDialTimeout bounds dialling a forward's target (5s).
	TargetDialTimeout time.Duration
	// ProbeEvery is the cadence of TCP connect probes while waiting to
	// reconnect after a network failure (1s).
	ProbeEvery time.Duration
	// MaxChannels caps concurrent forwarded connections per bastion (8):
	// each may buffer up to one SSH window (2 MiB) when a side stalls.
	MaxChannels int
	// Dialer dials bastions. nil means a net.Dialer with ConnectTimeout,
	// TCP keepalive, TCP_USER_TIMEOUT and the Interface binding.
	Dialer Dialer
	// TargetDialer dials forward targets. nil means a plain net.Dialer.
	TargetDialer Dialer
	// Systemd gets READY=1 as soon as Run has started every loop, whatever
	// the network does (started means running, not connected: a bastion
	// that cannot be reached is retried here, never by a restart of the
	// service); STATUS= with every tunnel's state (and the note of
	// SetNote) whenever it changes; WATCHDOG=1 every WatchdogEvery while
	// every loop shows progress (0: never), which depends on the loops
	// only, not on the link; and STOPPING=1 when Run ends. nil sends
	// nothing.
	Systemd       Systemd
	WatchdogEvery time.Duration
	// OnBastion, when not nil, is told each time the agent goes from no
	// bastion ready to one (connected true) and from the last one back to
	// none (false), with the time of the change by Clock. A connection is
	// ready once a bastion accepted its first forward and the latest link
	// reports were resent to it (so a report published from OnBastion
	// reaches it after them); it stops being ready when it ends. Calls
	// come one at a time, in order, from the tunnel loops, with a lock of
	// the Tunnels held: OnBastion must return promptly and must not call
	// the Tunnels' methods (outage.Decider.Bastion does neither). nil:
	// nobody is told.
	OnBastion func(connected bool, at time.Time)
	// Clock drives keepalives, backoff and the watchdog. nil means clock.Real.
	Clock clock.Clock
	// Log receives the structured log. nil discards.
	Log *slog.Logger
}

// Tunnels holds one tunnel per bastion. Create it with New and start it with
// Run; Status, Publish and RTT may be called from any goroutine at any time.
type Tunnels struct {
	cfg   Config
	links []*link

	mu      sync.Mutex
	samples []float64 // keepalive round trips (ms) since the last RTT call
	missed  int
	ran     bool
	// lastReport is the payload of the latest link report, resent on every
	// new connection so a restarted bastion shows it without waiting for
	// the next check (an hour by default). lastMain is the latest
	// main-link report, resent the same way: a main link that went down
	// while no bastion was connected is told to the first that connects
	// (and a later "back" replaces it).
	lastReport []byte
	lastMain   []byte

	// roles wakes the loop that tells bastions their site role
	// (reconcileRoles) when the reporter may have changed.
	roles chan struct{}

	// statusMu orders what systemd is told: READY=1 first, then each
	// STATUS= that differs from the one before.
	statusMu   sync.Mutex
	readySent  bool
	lastStatus string
	mainNote   string
	note       string

	// act counts the forwarded channels open over every link (Activity).
	act activity

	// readyMu orders the calls of OnBastion; ready counts the ready
	// connections (conn.ready).
	readyMu sync.Mutex
	ready   int
}

// connReady counts s as ready (once) and tells OnBastion when it is the
// first.
func (t *Tunnels) connReady(s *conn) {
	t.readyMu.Lock()
	defer t.readyMu.Unlock()
	if s.ready {
		return
	}
	s.ready = true
	t.ready++
	if t.ready == 1 && t.cfg.OnBastion != nil {
		t.cfg.OnBastion(true, t.cfg.Clock.Now())
	}
}

// connGone uncounts s, if it was ready, and tells OnBastion when it was
// the last. It is called after every goroutine of s has ended, so after
// any connReady of s.
func (t *Tunnels) connGone(s *conn) {
	t.readyMu.Lock()
	defer t.readyMu.Unlock()
	if !s.ready {
		return
	}
	s.ready = false
	t.ready--
	if t.ready == 0 && t.cfg.OnBastion != nil {
		t.cfg.OnBastion(false, t.cfg.Clock.Now())
	}
}

// New checks cfg, fills in defaults and returns Tunnels ready to Run.
func New(cfg Config) (*Tunnels, error) {
	var errs []error
	if len(cfg.Bastions) == 0 {
		errs = append(errs, errors.New("no bastion given"))
	}
	if cfg.Signer == nil {
		errs = append(errs, errors.New("no private key given"))
	}
	if cfg.HostKeys == nil {
		errs = append(errs, errors.New("no host key checker given"))
	}
	if len(cfg.Forwards) == 0 {
		errs = append(errs, errors.New("no forward given"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("tunnel config: %w", err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Keepalive, 5*time.Minute)
	def(&cfg.DeadAfter, 15*time.Second)
	def(&cfg.BackoffMax, 30*time.Second)
	def(&cfg.ConnectTimeout, 15*time.Second)
	def(&cfg.DialTimeout, 3*time.Second)
	cfg.DialTimeout = min(cfg.DialTimeout, cfg.ConnectTimeout)
	def(&cfg.TargetDialTimeout, 5*time.Second)
	def(&cfg.ProbeEvery, time.Second)
	if cfg.MaxChannels <= 0 {
		cfg.MaxChannels = 8
	}
	if cfg.Ciphers == nil {
		cfg.Ciphers = sshalgo.AgentCiphers(sshalgo.AESHardware())
	}
	if cfg.User == "" {
		cfg.User = "lifeline-agent"
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{
			Timeout:         cfg.DialTimeout,
			KeepAliveConfig: tcpKeepalive(cfg.DeadAfter),
			Control:         netbind.Control(cfg.Interface, cfg.DeadAfter),
		}
	}
	if cfg.TargetDialer == nil {
		cfg.TargetDialer = &net.Dialer{}
	}
	t := &Tunnels{cfg: cfg, roles: make(chan struct{}, 1)}
	for _, b := range cfg.Bastions {
		t.links = append(t.links, newLink(t, b))
	}
	return t, nil
}

// Run holds the tunnels until ctx is cancelled, then closes them, waits for
// every goroutine it started, logs each tunnel's tally (Status) and
// returns nil. It never returns because a network is down. Run may be
// called once.
func (t *Tunnels) Run(ctx context.Context) error {
	t.mu.Lock()
	if t.ran {
		t.mu.Unlock()
		return errors.New("tunnel: Run called twice")
	}
	t.ran = true
	t.mu.Unlock()

	var wg sync.WaitGroup
	var started sync.WaitGroup
	started.Add(len(t.links))
	for _, l := range t.links {
		wg.Go(func() { l.run(ctx, started.Done) })
	}
	if t.cfg.WatchdogEvery > 0 && t.cfg.Systemd != nil {
		wg.Go(func() { t.watchdog(ctx) })
	}
	wg.Go(func() { t.roleLoop(ctx) })
	// Every loop runs: the agent is started, connected or not.
	started.Wait()
	t.sendReady()
	// Tell systemd as soon as shutdown begins, not once it is over.
	wg.Go(func() {
		<-ctx.Done()
		t.notify("STOPPING=1")
	})
	wg.Wait()
	for _, st := range t.Status() {
		t.cfg.Log.Info("tunnel closed", "bastion", st.Bastion, "connects", st.Connects, "served", st.Served, "rejected", st.Rejected, "last_error", st.LastError)
	}
	return nil
}

// sendReady tells systemd the agent runs, with the tunnels' state so far.
func (t *Tunnels) sendReady() {
	t.statusMu.Lock()
	defer t.statusMu.Unlock()
	line := t.statusLine()
	t.notify("READY=1\nSTATUS=" + line)
	t.readySent, t.lastStatus = true, line
}

// SetNote sets a short text shown after the tunnels' state in STATUS=
// (the agent puts its link checks' schedule and data budget there) and
// sends the status if it changed. It may be called at any time, before
// Run too.
func (t *Tunnels) SetNote(note string) {
	t.statusMu.Lock()
	t.note = oneLine(note, maxStatusPart)
	t.statusMu.Unlock()
	t.refreshStatus()
}

// SetMainNote sets what STATUS= says of the site's main internet link
// (the agent's main-link watch: "main internet DOWN since ..."), shown
// after the tunnels' state and before the note of SetNote; "" says
// nothing. It may be called at any time, before Run too.
func (t *Tunnels) SetMainNote(note string) {
	t.statusMu.Lock()
	t.mainNote = oneLine(note, maxStatusPart)
	t.statusMu.Unlock()
	t.refreshStatus()
}

// refreshStatus sends STATUS= when the state it describes changed since
// the last one sent. Nothing is sent before READY=1.
func (t *Tunnels) refreshStatus() {
	if t.cfg.Systemd == nil {
		return
	}
	t.statusMu.Lock()
	defer t.statusMu.Unlock()
	if !t.readySent {
		return
	}
	line := t.statusLine()
	if line == t.lastStatus {
		return
	}
	t.lastStatus = line
	t.notify("STATUS=" + line)
}

// maxStatusPart bounds each bastion's part of STATUS= (an error text from
// the network can be long).
const maxStatusPart = 300

// statusLine is one line for systemd's STATUS=: every bastion's state,
// then the main link's note and the note, separated by " | ". Callers
// hold statusMu.
func (t *Tunnels) statusLine() string {
	now := t.cfg.Clock.Now()
	parts := make([]string, 0, len(t.links)+2)
	for _, l := range t.links {
		parts = append(parts, oneLine(l.describe(now), maxStatusPart))
	}
	if t.mainNote != "" {
		parts = append(parts, t.mainNote)
	}
	if t.note != "" {
		parts = append(parts, t.note)
	}
	return strings.Join(parts, " | ")
}

// oneLine makes s fit on one line of at most n bytes.
func oneLine(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func (t *Tunnels) notify(state string) {
	if t.cfg.Systemd == nil {
		return
	}
	if err := t.cfg.Systemd.Notify(state); err != nil {
		t.cfg.Log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// registered is called by a link each time a forward is accepted.
func (t *Tunnels) registered() { t.refreshStatus() }

// healthyWithin is how long a loop may go without a heartbeat before the
// watchdog stops vouching for it: the longest legitimate block is a connect
// attempt, or the keepalive loop's wait between beats.
func (t *Tunnels) healthyWithin() time.Duration {
	return t.cfg.ConnectTimeout + 2*t.cfg.beatEvery() + 2*t.cfg.ProbeEvery + 5*time.Second
}

// beatEvery is how often an established link's keepalive loop wakes (and
// beats the heart) even when no keepalive is due.
func (c *Config) beatEvery() time.Duration { return min(c.Keepalive, c.DeadAfter) }

// tcpKeepalive is the TCP keepalive of the tunnel's socket for a link
// declared dead after d of silence (netbind.KeepAlive): for d = 15s the
// first probe after 11s idle, then four chances a second apart to hear
// back, dead at 15s. Idle, one probe and its ACK every 11 s cost 1.04 MB
// a day on the wire, all of the agent's keepalive traffic but its
// 5-minutely SSH request (~0.08 MB a day): BenchmarkKeepaliveTraffic.
func tcpKeepalive(d time.Duration) net.KeepAliveConfig {
	return netbind.KeepAlive(d, 4, d/15)
}

func (t *Tunnels) watchdog(ctx context.Context) {
	for {
		tm := t.cfg.Clock.NewTimer(t.cfg.WatchdogEvery)
		select {
		case <-ctx.Done():
			tm.Stop()
			return
		case <-tm.C():
		}
		now := t.cfg.Clock.Now()
		var wedged []string
		for _, l := range t.links {
			if age := now.Sub(l.lastBeat()); age > t.healthyWithin() {
				wedged = append(wedged, fmt.Sprintf("%s (no progress for %s)", l.addr, age.Round(time.Second)))
			}
		}
		if len(wedged) > 0 {
			t.cfg.Log.Error("tunnel loop wedged: withholding the systemd watchdog ping so the agent is restarted", "loops", strings.Join(wedged, ", "))
			continue
		}
		t.notify("WATCHDOG=1")
	}
}

// Status describes one bastion's tunnel.
type Status struct {
	Bastion   string
	Connected bool
	// Registered lists the NAME:PORT forwards the bastion accepted on the
	// current connection.
	Registered []string
	// LastError is why the last attempt or connection ended ("" if none).
	LastError string
	// RetryAt is when the next attempt is due while not connected (a
	// returning path may be used sooner); zero while connected and before
	// the first attempt ended.
	RetryAt time.Time
	// Connects counts established connections; Served and Rejected count
	// forwarded connections accepted and refused (target down, unknown forward).
	Connects, Served, Rejected int
}

// Status returns one entry per bastion, in configuration order.
func (t *Tunnels) Status() []Status {
	out := make([]Status, 0, len(t.links))
	for _, l := range t.links {
		out = append(out, l.status())
	}
	return out
}

// Publish sends r as a report.RequestType global request on every connected
// tunnel and waits for each reply at most one keepalive-dead period (or until
// ctx ends). A bastion that is not connected is skipped; every outcome is
// logged. It never blocks the tunnels themselves.
//
// A main-link report (r.Link is report.LinkMain, version 2) is kept apart
// from the backup link's: the latest of each is resent to every new
// connection. A bastion that refuses a main-link report is taken for one
// too old to read them: no more are sent on that connection.
func (t *Tunnels) Publish(ctx context.Context, r report.LinkReport) {
	payload, err := report.Encode(r)
	if err != nil {
		t.cfg.Log.Error("link report not sent", "err", err)
		return
	}
	isMain := r.Link == report.LinkMain
	t.mu.Lock()
	if isMain {
		t.lastMain = payload
	} else {
		t.lastReport = payload
	}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range t.links {
		s := l.current()
		if s == nil {
			t.cfg.Log.Warn("link report not sent: bastion not connected", "bastion", l.addr, "link", r.LinkKind())
			continue
		}
		if isMain && s.mainRefused.Load() {
			continue
		}
		wg.Go(func() {
			ok, err := s.request(ctx, report.RequestType, payload)
			switch {
			case err != nil:
				t.cfg.Log.Warn("link report not delivered", "bastion", l.addr, "link", r.LinkKind(), "err", err)
			case !ok && isMain:
				s.refusedMain()
			case !ok:
				t.cfg.Log.Warn("bastion refused the link report", "bastion", l.addr)
			default:
				t.cfg.Log.Info("link report delivered", "bastion", l.addr, "link", r.LinkKind(), "verdict", r.Verdict)
			}
		})
	}
	wg.Wait()
}

// resendReport sends the latest link reports, if any (the backup link's,
// then the main link's), on a connection that has just registered (a new
// connection, or a restarted bastion).
func (t *Tunnels) resendReport(ctx context.Context, s *conn) {
	t.mu.Lock()
	backup, main := t.lastReport, t.lastMain
	t.mu.Unlock()
	for _, rep := range []struct {
		payload []byte
		isMain  bool
	}{{backup, false}, {main, true}} {
		payload, isMain := rep.payload, rep.isMain
		if payload == nil || isMain && s.mainRefused.Load() {
			continue
		}
		ok, err := s.request(ctx, report.RequestType, payload)
		switch {
		case err != nil:
			s.log.Warn("latest link report not resent", "main", isMain, "err", err)
		case !ok && isMain:
			s.refusedMain()
		case !ok:
			s.log.Warn("bastion refused the latest link report")
		default:
			s.log.Info("latest link report resent to the new connection", "main", isMain)
		}
	}
}

// refusedMain records that the bastion refused a main-link report: it reads
// version 1 only, so none is sent on this connection again.
func (s *conn) refusedMain() {
	if !s.mainRefused.Swap(true) {
		s.log.Info("bastion too old for main-link reports: not sending it the main internet's state on this connection")
	}
}

// maxSamples bounds the memory RTT keeps between calls.
const maxSamples = 4096

func (t *Tunnels) recordRTT(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.samples) < maxSamples {
		t.samples = append(t.samples, float64(d.Microseconds())/1000)
	}
}

func (t *Tunnels) recordMiss() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.missed++
}

// RTT summarises keepalive round trips (all bastions) since the previous
// call and starts a new interval. It returns nil when there was neither a
// reply nor a miss.
func (t *Tunnels) RTT() *report.RTT {
	t.mu.Lock()
	s, missed := t.samples, t.missed
	t.samples, t.missed = nil, 0
	t.mu.Unlock()
	if len(s) == 0 && missed == 0 {
		return nil
	}
	r := &report.RTT{Samples: len(s), Missed: missed}
	if len(s) > 0 {
		sort.Float64s(s)
		r.Worst = s[len(s)-1]
		if n := len(s); n%2 == 1 {
			r.Median = s[n/2]
		} else {
			r.Median = (s[n/2-1] + s[n/2]) / 2
		}
	}
	return r
}

func clientVersion() string {
	v := strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || r == '-' {
			return '.'
		}
		return r
	}, version.Version)
	return "SSH-2.0-lifeline_agent_" + v
}

// matchForward finds the forward a forwarded-tcpip channel is for: the one
// registered with this exact address and port, else the only one with this
// port (a server may report the bind address in another spelling, e.g. an
// IP for "localhost").
func matchForward(fs []forward.Forward, addr string, port uint32) (forward.Forward, bool) {
	for _, f := range fs {
		if uint32(f.Port) == port && strings.EqualFold(f.Name, addr) {
			return f, true
		}
	}
	i := slices.IndexFunc(fs, func(f forward.Forward) bool { return uint32(f.Port) == port })
	if i < 0 || slices.ContainsFunc(fs[i+1:], func(f forward.Forward) bool { return uint32(f.Port) == port }) {
		return forward.Forward{}, false
	}
	return fs[i], true
}
