// Package gate decides which incoming TCP connections may start an SSH
// handshake on the bastion, so that one stranger can never lock out
// everyone else.
//
// A connection is pending from Admit until its Ticket reports Authenticated
// or Done. Pending connections are what an attacker can hold without a key,
// so the gate bounds them three ways:
//
//   - Per source. A source is an IPv4 address or the /64 holding an IPv6
//     address (IPv4-mapped IPv6 addresses are unmapped first): the unit of
//     bastion/ban, since one host usually owns a whole /64. A source may
//     hold MaxPendingPerSource pending connections; a throttled source 1; a
//     trusted source 4x MaxPendingPerSource (never more than MaxPending).
//     The per-source cap is checked before the global one.
//   - Globally, MaxPending. When it is full, a connection from a source
//     holding fewer pending connections than the heaviest source takes the
//     slot of that source's oldest pending connection, whose socket the
//     gate closes (an eviction; that connection's handshake fails and its
//     owner calls Done as usual). Throttled sources are evicted first,
//     whatever they hold, and a throttled newcomer never evicts. Among
//     equally heavy sources, the one with the oldest pending connection
//     loses it. Otherwise the newcomer is refused. So a source holding
//     nothing always gets in unless it is banned or throttled, however many
//     connections others hold, and slots only pass from heavier sources to
//     lighter ones.
//   - In time. Reads must bring the client's version line and its whole
//     first binary packet (KEXINIT; the whole packet, not only its 5-byte
//     header, so that trickling it buys nothing) within HelloTimeout of
//     Admit, or the connection is closed; after that the connection has
//     until LoginGrace from Admit to authenticate. At most 8 KiB of lines
//     may come before the version line (RFC 4253 allows such lines;
//     x/crypto alone would take 255 KiB).
//
// Bans and throttles. Failed authentications (Failed) feed a ban.List, which
// refuses a source at Admit once it has failed too often. Separately,
// ThrottleAfter connections from one source that end without authenticating
// (Done: scans, timeouts, failed logins, evictions) within ThrottleWindow
// make the source throttled for ThrottleFor. A source is never banned nor
// throttled if its address is in Exempt (the operator's office) or if any
// key authenticated from it within TrustFor: an agent behind a carrier NAT
// shares its address with strangers, whose failures must not lock it out.
// Trust lives in memory: after a restart a source is trusted again from its
// first successful login.
//
// Memory. Pending state is bounded by MaxPending. Throttle and trust state
// is kept per source in maps of at most MaxTracked entries each: when one
// is full, expired entries go first, then the oldest, down to 90% so that a
// flood from many addresses costs amortized O(log n) per connection.
//
// Time. Bookkeeping (throttle windows, throttles, trust expiry) runs on
// Config.Clock, so tests drive it with clocktest.New. Socket deadlines
// necessarily run on the wall clock: the kernel knows no other.
//
// The gate starts no goroutines and needs no Close. A server uses it so:
//
//	t, err := g.Admit(nc) // right after Accept
//	if err != nil {       // a *Refusal: record it
//		nc.Close()
//		return
//	}
//	defer t.Done() // a no-op once Authenticated
//	conn, chans, reqs, err := ssh.NewServerConn(t.Conn(), sshConfig)
//	if err != nil {
//		// if keys were tried and refused (ssh.ServerAuthError): g.Failed(addr)
//		return
//	}
//	t.Authenticated()
package gate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/ban"
	"github.com/lifeline-dev/lifeline/shared/clock"
)

// MaxTracked bounds each map the gate keeps per source (throttle counts,
// trusted sources).
const MaxTracked = 100_000

// Defaults for zero Config fields.
const (
	DefaultMaxPending          = 64
	DefaultMaxPendingPerSource = 4
	DefaultHelloTimeout        = 5 * time.Second
	DefaultLoginGrace          = 20 * time.Second
	DefaultThrottleAfter       = 20
	DefaultThrottleWindow      = time.Minute
	DefaultThrottleFor         = 5 * time.Minute
	DefaultTrustFor            = 24 * time.Hour
	// TrustedCapFactor multiplies MaxPendingPerSource for trusted sources.
	TrustedCapFactor = 4
)

// Config of a Gate. The zero value of every field means its default.
type Config struct {
	// MaxPending caps connections admitted and not yet authenticated, from
	// all sources together (LIFELINE_MAX_PENDING, default 64).
	MaxPending int
	// MaxPendingPerSource caps them per source (LIFELINE_MAX_PENDING_PER_SOURCE,
	// default 4); it may not exceed MaxPending.
	MaxPendingPerSource int
	// HelloTimeout is how long after Admit the client's version line and its
	// first binary packet must have arrived (LIFELINE_HELLO_TIMEOUT, default
	// 5s); it may not exceed LoginGrace.
	HelloTimeout time.Duration
	// LoginGrace is how long after Admit the handshake and authentication
	// may take in all (LIFELINE_LOGIN_GRACE, default 20s).
	LoginGrace time.Duration
	// ThrottleAfter connections from one source that end without
	// authenticating within ThrottleWindow (default 20 within 1m) make the
	// source throttled for ThrottleFor (default 5m): at most one pending
	// connection, evicted first (LIFELINE_THROTTLE_AFTER, _WINDOW, _FOR).
	// A negative ThrottleAfter disables throttling.
	ThrottleAfter  int
	ThrottleWindow time.Duration
	ThrottleFor    time.Duration
	// Exempt addresses are never banned nor throttled (LIFELINE_BAN_EXEMPT).
	// nil = none.
	Exempt []netip.Prefix
	// TrustFor is how long a source where a key authenticated is remembered
	// (LIFELINE_TRUST_FOR, default 24h): it is never banned nor throttled
	// meanwhile and may hold TrustedCapFactor x MaxPendingPerSource pending
	// connections. A negative TrustFor disables trust.
	TrustFor time.Duration
	// Bans holds failed-login bans: Admit refuses banned sources (unless
	// exempt or trusted) and Failed feeds it. nil = no bans.
	Bans *ban.List
	// Clock runs the bookkeeping. nil = clock.Real{}.
	Clock clock.Clock
}

// Reason says why Admit refused a connection.
type Reason string

const (
	// ReasonBanned: the source failed to authenticate too often (bastion/ban).
	ReasonBanned Reason = "banned"
	// ReasonPerSource: the source already holds its cap of pending connections.
	ReasonPerSource Reason = "per-source cap"
	// ReasonThrottled: the source is throttled and holds its one connection.
	ReasonThrottled Reason = "throttled"
	// ReasonFull: MaxPending connections are pending and none may be evicted.
	ReasonFull Reason = "full"
)

// Refusal is the error Admit returns for a connection that may not start a
// handshake. The caller records it and closes the connection.
type Refusal struct {
	Reason Reason
	Addr   netip.Addr   // the connecting address (invalid if not an IP)
	Source netip.Prefix // the source it counts under
	// Pending is what the source (ReasonPerSource, ReasonThrottled) or the
	// whole bastion (ReasonFull) already holds; Limit the cap that was hit.
	// ReasonThrottled with Pending 0 means every slot was taken and a
	// throttled source may not evict: Limit is then MaxPending.
	Pending, Limit int
	// Until is when the ban or throttle ends (zero for other reasons).
	Until time.Time
}

func (r *Refusal) Error() string {
	who := "unknown address"
	if r.Addr.IsValid() {
		who = r.Addr.String()
		if r.Source.Bits() != r.Addr.BitLen() {
			who += " (" + r.Source.String() + ")"
		}
	}
	until := r.Until.UTC().Format(time.RFC3339)
	switch r.Reason {
	case ReasonBanned:
		return fmt.Sprintf("%s is banned until %s after repeated authentication failures (LIFELINE_BAN_AFTER; LIFELINE_BAN_EXEMPT exempts addresses)", who, until)
	case ReasonPerSource:
		return fmt.Sprintf("%s already has %d connections authenticating (LIFELINE_MAX_PENDING_PER_SOURCE)", who, r.Pending)
	case ReasonThrottled:
		if r.Pending == 0 {
			return fmt.Sprintf("%s is throttled until %s and may not take another source's slot while all %d are taken: too many of its connections ended without logging in (LIFELINE_THROTTLE_AFTER, LIFELINE_THROTTLE_WINDOW, LIFELINE_THROTTLE_FOR; LIFELINE_MAX_PENDING)", who, until, r.Limit)
		}
		return fmt.Sprintf("%s is throttled to %d connection authenticating until %s: too many of its connections ended without logging in (LIFELINE_THROTTLE_AFTER, LIFELINE_THROTTLE_WINDOW, LIFELINE_THROTTLE_FOR)", who, r.Limit, until)
	case ReasonFull:
		return fmt.Sprintf("%d connections already authenticating (LIFELINE_MAX_PENDING) and no source holds more of them than %s", r.Pending, who)
	}
	return fmt.Sprintf("%s refused: %s", who, r.Reason)
}

// Gate admits connections. Safe for concurrent use.
type Gate struct {
	cfg        Config
	trustedCap int
	maxTracked int // MaxTracked; tests lower it

	mu        sync.Mutex
	pending   map[netip.Prefix][]*Ticket // oldest first; no empty slices
	total     int
	seq       uint64
	ends      map[netip.Prefix]*ends
	trust     map[netip.Prefix]time.Time // source -> trusted until
	evictions uint64                     // since New; these two are read by the tests' Stats
	refused   map[Reason]uint64          // since New, by reason
}

// ends counts one source's connections that ended without authenticating.
type ends struct {
	first time.Time // start of the current window
	count int
	until time.Time // throttled until
}

type ticketState int

const (
	statePending ticketState = iota
	stateEvicted
	stateAuthenticated
	stateDone
)

// Ticket is one admitted connection. The caller must end it with
// Authenticated or Done (Done is always safe, so `defer t.Done()` works).
type Ticket struct {
	g    *Gate
	addr netip.Addr
	src  netip.Prefix
	seq  uint64
	conn *helloConn

	state   ticketState // guarded by g.mu
	evicted bool        // guarded by g.mu
}

// New checks cfg, fills in defaults and returns a gate. The error names
// every problem with the LIFELINE_ variable it comes from.
func New(cfg Config) (*Gate, error) {
	var errs []error
	bad := func(name, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, a...)...))
	}
	if cfg.MaxPending < 0 {
		bad("LIFELINE_MAX_PENDING", "%d must not be negative", cfg.MaxPending)
	}
	if cfg.MaxPendingPerSource < 0 {
		bad("LIFELINE_MAX_PENDING_PER_SOURCE", "%d must not be negative", cfg.MaxPendingPerSource)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"LIFELINE_HELLO_TIMEOUT", cfg.HelloTimeout},
		{"LIFELINE_LOGIN_GRACE", cfg.LoginGrace},
		{"LIFELINE_THROTTLE_WINDOW", cfg.ThrottleWindow},
		{"LIFELINE_THROTTLE_FOR", cfg.ThrottleFor},
	} {
		if d.v < 0 {
			bad(d.name, "%s must not be negative", d.v)
		}
	}
	setDefault(&cfg.MaxPending, DefaultMaxPending)
	setDefault(&cfg.MaxPendingPerSource, DefaultMaxPendingPerSource)
	setDefault(&cfg.HelloTimeout, DefaultHelloTimeout)
	setDefault(&cfg.LoginGrace, DefaultLoginGrace)
	setDefault(&cfg.ThrottleAfter, DefaultThrottleAfter)
	setDefault(&cfg.ThrottleWindow, DefaultThrottleWindow)
	setDefault(&cfg.ThrottleFor, DefaultThrottleFor)
	setDefault(&cfg.TrustFor, DefaultTrustFor)
	if cfg.MaxPendingPerSource > cfg.MaxPending {
		bad("LIFELINE_MAX_PENDING_PER_SOURCE", "%d exceeds LIFELINE_MAX_PENDING (%d)", cfg.MaxPendingPerSource, cfg.MaxPending)
	}
	if cfg.HelloTimeout > cfg.LoginGrace {
		bad("LIFELINE_HELLO_TIMEOUT", "%s exceeds LIFELINE_LOGIN_GRACE (%s)", cfg.HelloTimeout, cfg.LoginGrace)
	}
	exempt := make([]netip.Prefix, 0, len(cfg.Exempt))
	for _, p := range cfg.Exempt {
		if !p.IsValid() {
			bad("LIFELINE_BAN_EXEMPT", "%q is not a valid prefix", p.String())
			continue
		}
		exempt = append(exempt, unmapPrefix(p))
	}
	cfg.Exempt = exempt
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("configure connection gate: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return &Gate{
		cfg:        cfg,
		trustedCap: min(TrustedCapFactor*cfg.MaxPendingPerSource, cfg.MaxPending),
		maxTracked: MaxTracked,
		pending:    make(map[netip.Prefix][]*Ticket),
		ends:       make(map[netip.Prefix]*ends),
		trust:      make(map[netip.Prefix]time.Time),
		refused:    make(map[Reason]uint64),
	}, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// unmapPrefix turns ::ffff:192.0.2.0/120 into 192.0.2.0/24 and masks.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() {
		bits := max(p.Bits()-96, 0)
		p = netip.PrefixFrom(a.Unmap(), bits)
	}
	return p.Masked()
}

// Admit is called right after Accept, before anything is read or written.
// It returns either a Ticket, whose Conn the caller hands to
// ssh.NewServerConn and which it must end with Authenticated or Done, or an
// error: a *Refusal (banned, per-source cap, throttled, full), or a failure
// to set the socket's deadlines. On error the caller records it and closes
// nc; the gate keeps nothing of it. Admitting may close another source's
// pending connection to make room (see the package comment).
func (g *Gate) Admit(nc net.Conn) (*Ticket, error) {
	addr := remoteAddr(nc)
	src := ban.Source(addr)
	hc := newHelloConn(nc, time.Now(), g.cfg.HelloTimeout, g.cfg.LoginGrace)
	if err := hc.arm(); err != nil {
		return nil, fmt.Errorf("set handshake deadlines on connection from %s: %w", nc.RemoteAddr(), err)
	}

	g.mu.Lock()
	now := g.cfg.Clock.Now()
	trusted := g.trustedLocked(src, now)
	exempt := g.exempt(addr)
	if !trusted && !exempt && g.cfg.Bans != nil {
		if banned, until := g.cfg.Bans.Banned(addr); banned {
			return nil, g.refuseUnlock(&Refusal{Reason: ReasonBanned, Addr: addr, Source: src, Until: until})
		}
	}
	throttled, throttledUntil := false, time.Time{}
	if !trusted && !exempt {
		throttled, throttledUntil = g.throttledLocked(src, now)
	}
	held := len(g.pending[src])
	switch {
	case throttled && held >= 1:
		return nil, g.refuseUnlock(&Refusal{Reason: ReasonThrottled, Addr: addr, Source: src, Pending: held, Limit: 1, Until: throttledUntil})
	case trusted && held >= g.trustedCap:
		return nil, g.refuseUnlock(&Refusal{Reason: ReasonPerSource, Addr: addr, Source: src, Pending: held, Limit: g.trustedCap})
	case !trusted && held >= g.cfg.MaxPendingPerSource:
		return nil, g.refuseUnlock(&Refusal{Reason: ReasonPerSource, Addr: addr, Source: src, Pending: held, Limit: g.cfg.MaxPendingPerSource})
	}
	var victim *Ticket
	if g.total >= g.cfg.MaxPending {
		if throttled {
			return nil, g.refuseUnlock(&Refusal{Reason: ReasonThrottled, Addr: addr, Source: src, Limit: g.cfg.MaxPending, Until: throttledUntil})
		}
		victim = g.victimLocked(held, now)
		if victim == nil {
			return nil, g.refuseUnlock(&Refusal{Reason: ReasonFull, Addr: addr, Source: src, Pending: g.total, Limit: g.cfg.MaxPending})
		}
		g.releaseLocked(victim)
		victim.state, victim.evicted = stateEvicted, true
		g.evictions++
	}
	g.seq++
	t := &Ticket{g: g, addr: addr, src: src, seq: g.seq, conn: hc}
	g.pending[src] = append(g.pending[src], t)
	g.total++
	g.mu.Unlock()

	if victim != nil {
		victim.conn.Conn.Close() // its handshake fails; its owner calls Done
	}
	return t, nil
}

// refuseUnlock counts r, unlocks g.mu (held by the caller) and returns r.
func (g *Gate) refuseUnlock(r *Refusal) error {
	g.refused[r.Reason]++
	g.mu.Unlock()
	return r
}

// victimLocked picks the pending connection a newcomer (not throttled) from
// a source holding `held` may evict, or nil: the oldest of a throttled
// source, else the oldest of the heaviest source if it holds more than held.
func (g *Gate) victimLocked(held int, now time.Time) *Ticket {
	var best []*Ticket
	bestThrottled := false
	for src, ts := range g.pending {
		th, _ := g.throttledLocked(src, now)
		th = th && !g.trustedLocked(src, now)
		switch {
		case best == nil,
			th && !bestThrottled,
			th == bestThrottled && len(ts) > len(best),
			th == bestThrottled && len(ts) == len(best) && ts[0].seq < best[0].seq:
			best, bestThrottled = ts, th
		}
	}
	if best == nil || !bestThrottled && len(best) <= held {
		return nil
	}
	return best[0]
}

// releaseLocked removes a pending ticket from the tables.
func (g *Gate) releaseLocked(t *Ticket) {
	ts := g.pending[t.src]
	for i, o := range ts {
		if o == t {
			ts = append(ts[:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(g.pending, t.src)
	} else {
		g.pending[t.src] = ts
	}
	g.total--
}

// Conn is the admitted connection with the gate's deadlines applied: reads
// fail once HelloTimeout has passed since Admit without the client's version
// line and first packet (errors.Is(err, ErrHelloTimeout)), and reads and
// writes fail LoginGrace after Admit (ErrLoginGrace), until Authenticated
// clears the deadlines. More than MaxPreamble bytes before the version line
// close it (ErrPreamble). The caller passes it to ssh.NewServerConn and must not set
// deadlines on it before Authenticated. Closing it closes the socket.
func (t *Ticket) Conn() net.Conn { return t.conn }

// Evicted reports whether the gate closed this connection to make room for
// another source's: the handshake error the caller then sees is the closed
// socket, and this says why.
func (t *Ticket) Evicted() bool {
	t.g.mu.Lock()
	defer t.g.mu.Unlock()
	return t.evicted
}

// Authenticated reports that the handshake and authentication succeeded: it
// clears the socket deadlines, frees the pending slot and trusts the source
// for TrustFor. Call it once, before serving the connection; after Done it
// does nothing.
func (t *Ticket) Authenticated() {
	g := t.g
	g.mu.Lock()
	switch t.state {
	case stateAuthenticated, stateDone:
		g.mu.Unlock()
		return
	case statePending:
		g.releaseLocked(t)
	}
	t.state = stateAuthenticated
	if g.cfg.TrustFor > 0 {
		now := g.cfg.Clock.Now()
		if _, ok := g.trust[t.src]; !ok && len(g.trust) >= g.maxTracked {
			g.pruneTrustLocked(now)
		}
		g.trust[t.src] = now.Add(g.cfg.TrustFor)
		delete(g.ends, t.src)
	}
	g.mu.Unlock()
	t.conn.authenticated()
}

// Done reports that the handshake ended without authentication (an error,
// a timeout, an eviction, a failed login): it frees the pending slot and
// counts toward throttling the source. Done is idempotent and does nothing
// after Authenticated. It does not close the connection (ssh.NewServerConn
// already has when it fails).
func (t *Ticket) Done() {
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	switch t.state {
	case stateAuthenticated, stateDone:
		return
	case statePending:
		g.releaseLocked(t)
	}
	t.state = stateDone
	now := g.cfg.Clock.Now()
	if g.exempt(t.addr) || g.trustedLocked(t.src, now) {
		return
	}
	g.endLocked(t.src, now)
}

// Failed reports one failed authentication from a (a connection whose
// handshake ended in ssh.ServerAuthError with keys tried). Unless a is
// exempt or its source trusted, it is forwarded to Bans; Failed reports
// whether this failure started a ban. The caller still calls Done.
func (g *Gate) Failed(a netip.Addr) (banned bool) {
	if g.cfg.Bans == nil || g.exempt(a) {
		return false
	}
	g.mu.Lock()
	trusted := g.trustedLocked(ban.Source(a), g.cfg.Clock.Now())
	g.mu.Unlock()
	if trusted {
		return false
	}
	return g.cfg.Bans.Fail(a)
}

func (g *Gate) exempt(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range g.cfg.Exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (g *Gate) trustedLocked(src netip.Prefix, now time.Time) bool {
	until, ok := g.trust[src]
	return ok && now.Before(until)
}

func (g *Gate) throttledLocked(src netip.Prefix, now time.Time) (bool, time.Time) {
	if e, ok := g.ends[src]; ok && now.Before(e.until) {
		return true, e.until
	}
	return false, time.Time{}
}

// endLocked counts one unauthenticated end for src.
func (g *Gate) endLocked(src netip.Prefix, now time.Time) {
	if g.cfg.ThrottleAfter < 0 {
		return
	}
	e, ok := g.ends[src]
	if !ok {
		if len(g.ends) >= g.maxTracked {
			g.pruneEndsLocked(now)
		}
		e = &ends{first: now}
		g.ends[src] = e
	}
	if now.Before(e.until) {
		return // already throttled
	}
	if now.Sub(e.first) > g.cfg.ThrottleWindow {
		e.first, e.count = now, 0
	}
	e.count++
	if e.count >= g.cfg.ThrottleAfter {
		e.until = now.Add(g.cfg.ThrottleFor)
		e.first, e.count = now, 0
	}
}

// lowWater is where pruning stops: 90% of the cap, so a full map is pruned
// once per tenth of its size of new sources.
func (g *Gate) lowWater() int { return g.maxTracked - max(g.maxTracked/10, 1) }

// pruneEndsLocked drops expired throttle counts, then the oldest counting
// ones, then the throttles ending soonest, down to lowWater.
func (g *Gate) pruneEndsLocked(now time.Time) {
	type aged struct {
		src netip.Prefix
		at  time.Time
	}
	var counting, throttled []aged
	for src, e := range g.ends {
		switch {
		case now.Before(e.until):
			throttled = append(throttled, aged{src, e.until})
		case now.Sub(e.first) > g.cfg.ThrottleWindow:
			delete(g.ends, src)
		default:
			counting = append(counting, aged{src, e.first})
		}
	}
	for _, group := range [][]aged{counting, throttled} {
		if len(g.ends) <= g.lowWater() {
			return
		}
		sort.Slice(group, func(i, j int) bool { return group[i].at.Before(group[j].at) })
		for _, x := range group {
			if len(g.ends) <= g.lowWater() {
				return
			}
			delete(g.ends, x.src)
		}
	}
}

// pruneTrustLocked drops expired trust, then the trust ending soonest, down
// to lowWater.
func (g *Gate) pruneTrustLocked(now time.Time) {
	type aged struct {
		src   netip.Prefix
		until time.Time
	}
	var live []aged
	for src, until := range g.trust {
		if !now.Before(until) {
			delete(g.trust, src)
			continue
		}
		live = append(live, aged{src, until})
	}
	if len(g.trust) <= g.lowWater() {
		return
	}
	sort.Slice(live, func(i, j int) bool { return live[i].until.Before(live[j].until) })
	for _, x := range live {
		if len(g.trust) <= g.lowWater() {
			return
		}
		delete(g.trust, x.src)
	}
}

// remoteAddr is the peer's IP, unmapped; invalid if the peer is not IP.
func remoteAddr(nc net.Conn) netip.Addr {
	ra := nc.RemoteAddr()
	if ta, ok := ra.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if ra == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(ra.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
