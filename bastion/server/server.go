// Package server is lifeline's jump host: an SSH server that authenticates
// agents and operators by key (bastion/authz), keeps the names agents
// register (bastion/registry), relays operators' direct-tcpip channels to
// the agent holding the name as forwarded-tcpip channels, and refuses
// everything else. It binds no socket for a registered name and never
// connects anywhere by itself: it is never an open proxy.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/bastion/ban"
	"github.com/lifeline-dev/lifeline/bastion/gate"
	"github.com/lifeline-dev/lifeline/bastion/outage"
	"github.com/lifeline-dev/lifeline/bastion/registry"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// Events receives what the server sees that may deserve an alert. Every
// method must return at once (the alerter queues); they are called from the
// paths of logins and registrations.
type Events interface {
	OperatorLogin(id *authz.Identity, user string, src netip.AddrPort)
	AuthFailed(src netip.Addr, user string)
	// AgentUp is called when an agent key gets its first connection holding
	// at least one name; AgentDown when its last such connection is gone.
	AgentUp(id *authz.Identity, names []string)
	AgentDown(id *authz.Identity, names []string)
	// LinkReport is called with each backup-link report taken and the
	// key's previous one (zero: none since the start); the server keeps
	// them. Main-link reports go to MainLink instead.
	LinkReport(id *authz.Identity, names []string, prev, r report.LinkReport)
	// MainLink is called with each main-link report taken (r.LinkKind()
	// is report.LinkMain): the site's main internet down, or back. names
	// are the connection's names, else the key's permitlisten ones.
	MainLink(id *authz.Identity, names []string, r report.LinkReport)
	// SiteRole is called with each wire.SiteRoleRequest taken, before it
	// is answered: whether this bastion is the site's reporter for the
	// agent key id (it texts the site's events) or another bastion is.
	// A key never named here is this bastion's to report.
	SiteRole(id *authz.Identity, reporter bool)
	// NameMoved is called when connections to target start reaching another
	// agent key: a newer registration took it over (takeover), or the
	// holder left and an earlier one still connected has it back.
	NameMoved(target string, to, from *authz.Identity, takeover bool)
}

// Limits bound what one connection, one key and everyone together may hold
// after logging in. Zero fields take the defaults in DefaultLimits.
type Limits struct {
	// MaxChannels caps relayed (direct-tcpip) channels open in total. Each
	// may buffer up to one SSH window (2 MiB) per direction when a side
	// stops reading, so this is the jump host's memory budget for relays.
	MaxChannels int
	// MaxChannelsPerConn caps channels open on one operator connection
	// (relays and the session channel together).
	MaxChannelsPerConn int
	// MaxChannelsPerKey caps channels open by one operator key over all its
	// connections, so one key cannot take every relay.
	MaxChannelsPerKey int
	// MaxChannelsPerAgent caps the relays one operator key may hold to one
	// agent connection: below the agent's own limit (8 by default), so that
	// one key can never fill a site for everyone else.
	MaxChannelsPerAgent int
	// MaxConnsPerKey caps authenticated connections per key; a newer one
	// closes the oldest (the newest wins, as for a reconnecting agent).
	MaxConnsPerKey int
	// MaxNamesPerConn caps the names one agent connection may register.
	MaxNamesPerConn int
	// RequestsPerSecond caps global requests and channel opens per key,
	// over all its connections (bursts of twice as many); beyond it they are
	// refused, and a key that keeps flooding (5 times its per-second
	// allowance refused within 10 s) has its connections closed and its
	// logins refused for a minute.
	RequestsPerSecond int
	// ReportEvery: an agent key's link reports are taken in bursts of 3,
	// then one per interval; more are refused. Backup-link and main-link
	// reports have an allowance each.
	ReportEvery time.Duration
	// IdleTimeout closes an operator connection that has had no channel
	// open for this long (OpenSSH's UnusedConnectionTimeout).
	IdleTimeout time.Duration
}

// DefaultLimits are the limits of a bastion on the smallest instance
// (512 MiB): 64 relays stalled both ways hold about 320 MiB in the worst
// case, and a single key at most a quarter of that.
var DefaultLimits = Limits{
	MaxChannels:         64,
	MaxChannelsPerConn:  10,
	MaxChannelsPerKey:   16,
	MaxChannelsPerAgent: 4,
	MaxConnsPerKey:      8,
	MaxNamesPerConn:     16,
	RequestsPerSecond:   20,
	ReportEvery:         time.Minute,
	IdleTimeout:         15 * time.Minute,
}

func (l *Limits) defaults() {
	d := DefaultLimits
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.MaxChannels, d.MaxChannels)
	set(&l.MaxChannelsPerConn, d.MaxChannelsPerConn)
	set(&l.MaxChannelsPerKey, d.MaxChannelsPerKey)
	set(&l.MaxChannelsPerAgent, d.MaxChannelsPerAgent)
	set(&l.MaxConnsPerKey, d.MaxConnsPerKey)
	set(&l.MaxNamesPerConn, d.MaxNamesPerConn)
	set(&l.RequestsPerSecond, d.RequestsPerSecond)
	if l.ReportEvery <= 0 {
		l.ReportEvery = d.ReportEvery
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
}

// Config of a Server. HostKey, Policy and Log are required.
type Config struct {
	HostKey ssh.Signer
	Policy  *authz.Policy
	Log     *slog.Logger
	// Audit receives one event per login, refusal, registration, jump and
	// disconnect. nil = no audit log (tests only).
	Audit audit.Recorder
	// Events receives alert-worthy events. nil = none.
	Events Events
	// Name of this bastion, shown in status.
	Name string
	// Gate decides which new connections may start a handshake (per-source
	// and global caps, deadlines, throttles, bans). nil = a gate made of
	// LoginGrace, MaxPending and Bans with the other settings at their
	// defaults.
	Gate *gate.Gate
	// LoginGrace bounds the handshake and authentication (default 20s).
	// Used only when Gate is nil.
	LoginGrace time.Duration
	// MaxPending caps connections that have not finished authenticating
	// (default 64). Used only when Gate is nil.
	MaxPending int
	// Bans refuses sources with repeated authentication failures. nil =
	// none. Used only when Gate is nil.
	Bans *ban.List
	// AgentDeadAfter (default 90s) bounds how long an agent whose link
	// went silent keeps its names: the kernel probes an idle agent
	// connection (TCP keepalive: the first probe after 60s without a
	// segment from the agent, then three chances 10s apart) and resets it,
	// like unacknowledged data, at AgentDeadAfter (TCP_USER_TIMEOUT). A
	// newer connection of the agent takes its names at once anyway.
	AgentDeadAfter time.Duration
	// AgentQuiet (default 10m): an agent nothing was heard from this long
	// (lifeline-agent sends a keepalive every 5m) is asked once whether it
	// is alive and closed unless it answers within AgentDeadAfter. That
	// finds an agent whose kernel still answers TCP but whose process
	// hangs. Any packet from the agent is a sign of life, and the bastion
	// sends nothing else to a live agent: its link may be metered.
	AgentQuiet time.Duration
	// OpenTimeout bounds how long an operator waits for the agent to accept
	// a relayed channel (default 30s).
	OpenTimeout time.Duration
	// Limits after login; zero fields take DefaultLimits.
	Limits Limits
	// Alerts, if set, adds the alert queue's section to `status`. It is
	// shown only to operators whose key is not restricted by permitopen:
	// it names other operators and the owner's alert settings.
	Alerts AlertQueue
	// Clock drives every deadline and timestamp of the server: logins'
	// expiry, idle connections, keepalives, rate limits (default
	// clock.Real{}). Socket deadlines use the wall clock.
	Clock clock.Clock
	// Outage, if set, is outage mode's keeper (*outage.Keeper): it is told
	// the number of open operator connections on every change (Sessions),
	// `hold` sets its hold, and `status` shows its section. nil, or a
	// keeper whose outage mode is off: `hold` says outage mode is off and
	// status has no outage section.
	Outage Outage
}

// Outage is outage mode's keeper as the server uses it (*outage.Keeper).
// Its methods must not block: Sessions is called with the server's lock
// held, so it must never call back into the server.
type Outage interface {
	// Sessions is told how many logged-in operator connections are open.
	Sessions(n int)
	// Hold keeps the host up for d on behalf of by (0 releases) and
	// returns the hold's end; outage.ErrOff when outage mode is off.
	Hold(d time.Duration, by string) (time.Time, error)
	// Status returns a snapshot; Status().On is false when outage mode
	// is off.
	Status() outage.Status
}

// AlertQueue is the alert queue as status shows it (*alert.Alerter).
type AlertQueue interface {
	// Status returns a snapshot; it must not block.
	Status() alert.Status
}

// Server is the jump host. Create with New, run with Serve.
type Server struct {
	cfg    Config
	sshcfg map[profile]*ssh.ServerConfig // by the client's software (algos.go)
	policy atomic.Pointer[authz.Policy]
	reg    *registry.Registry[*conn]

	gate *gate.Gate
	wg   sync.WaitGroup

	mu            sync.Mutex
	conns         map[*conn]struct{}
	operators     int            // operator connections in conns (told to Config.Outage)
	agents        map[string]int // agent fingerprint -> connections holding names
	reports       map[string]report.LinkReport
	reportAt      map[string]*reportBudget // agent fingerprint -> link report allowance
	byKey         map[string][]*conn       // fingerprint -> connections, oldest first
	buckets       map[string]*bucket       // fingerprint -> request budget of the key's connections
	penalty       map[string]time.Time     // fingerprint -> logins refused until (flooding)
	keyChans      map[string]int           // operator fingerprint -> channels open
	keyAgentChans map[keyAgent]int         // operator key x agent connection -> relays open
	relays        int                      // relayed channels open
	peak          int                      // most relays open since memory was last returned
	freedAt       time.Time
	closing       bool
	departed      map[string]departure // targetKey -> last holder of a name nobody holds now
	started       time.Time
	telling       chan struct{} // slots to tell banned sources why (refused.go)

	// Guarded by mu too: what agents said of their site (role.go).
	mains  map[string]report.LinkReport // agent fingerprint -> latest main-link report
	mainAt map[string]*reportBudget     // agent fingerprint -> main-link report allowance
	roles  map[string]bool              // agent fingerprint -> last site-role word
}

// departure is what the bastion remembers of a name's last holder once
// nobody holds it: shown in status and in the refusal of a jump to it.
type departure struct {
	target             authz.Target
	agent, fingerprint string
	from               netip.AddrPort
	since              time.Time
	reason             string // why the holder left, e.g. "keepalive timeout: …"
}

// maxDeparted bounds the departures kept (names come from the key files
// and agent certificates, so this is generous); past it the oldest go.
const maxDeparted = 100_000

// targetKey folds ASCII letters only, as the registry does.
func targetKey(name string, port uint32) string {
	b := []byte(name)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return fmt.Sprintf("%s:%d", b, port)
}

type identityKey struct{}
type publicKeyKey struct{}

// New checks cfg and prepares a server. It does not listen.
func New(cfg Config) (*Server, error) {
	var errs []error
	if cfg.HostKey == nil {
		errs = append(errs, errors.New("no host key: the bastion never runs on a throwaway key"))
	}
	if cfg.Policy == nil {
		errs = append(errs, errors.New("no key policy"))
	}
	if cfg.Log == nil {
		errs = append(errs, errors.New("no logger"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("configure server: %w", err)
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.Func(func(audit.Event) {})
	}
	if cfg.AgentDeadAfter <= 0 {
		cfg.AgentDeadAfter = 90 * time.Second
	}
	if cfg.AgentQuiet <= 0 {
		cfg.AgentQuiet = 10 * time.Minute
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	cfg.Limits.defaults()
	g := cfg.Gate
	if g == nil {
		gc := gate.Config{MaxPending: cfg.MaxPending, LoginGrace: cfg.LoginGrace, Bans: cfg.Bans}
		if gc.MaxPending > 0 {
			gc.MaxPendingPerSource = min(gc.MaxPending, gate.DefaultMaxPendingPerSource)
		}
		if gc.LoginGrace > 0 {
			gc.HelloTimeout = min(gc.LoginGrace, gate.DefaultHelloTimeout)
		}
		var err error
		if g, err = gate.New(gc); err != nil {
			return nil, fmt.Errorf("configure server: %w", err)
		}
	}
	s := &Server{
		cfg:           cfg,
		reg:           registry.New[*conn](),
		gate:          g,
		conns:         make(map[*conn]struct{}),
		agents:        make(map[string]int),
		reports:       make(map[string]report.LinkReport),
		reportAt:      make(map[string]*reportBudget),
		mains:         make(map[string]report.LinkReport),
		mainAt:        make(map[string]*reportBudget),
		roles:         make(map[string]bool),
		byKey:         make(map[string][]*conn),
		keyChans:      make(map[string]int),
		keyAgentChans: make(map[keyAgent]int),
		buckets:       make(map[string]*bucket),
		penalty:       make(map[string]time.Time),
		departed:      make(map[string]departure),
		started:       cfg.Clock.Now(),
		telling:       make(chan struct{}, maxTelling),
	}
	s.policy.Store(cfg.Policy)
	s.sshcfg = make(map[profile]*ssh.ServerConfig)
	for _, p := range profiles {
		c := &ssh.ServerConfig{
			Config:                  p.algorithms(),
			PublicKeyAuthAlgorithms: sshalgo.PublicKeyAuthAlgorithms(),
			PublicKeyCallback:       s.authenticate,
			ServerVersion:           serverVersion,
			MaxAuthTries:            6,
		}
		c.AddHostKey(cfg.HostKey)
		s.sshcfg[p] = c
	}
	return s, nil
}

// SetPolicy swaps the key policy (on SIGHUP) and re-checks every live
// connection against it: a connection whose key (or certificate authority)
// is gone, or whose from= no longer admits it, is closed at once; the
// others go on under their updated options (permitopen, permitlisten).
// It returns how many connections were closed.
func (s *Server) SetPolicy(p *authz.Policy) int {
	s.policy.Store(p)
	closed := 0
	for _, c := range s.snapshotConns() {
		if !c.recheck("the key files were reloaded") {
			closed++
		}
	}
	return closed
}

func (s *Server) snapshotConns() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	return all
}

// refusal is a policy refusal kept in ssh.ServerAuthError for the audit log.
type refusal struct {
	user, fingerprint, reason string
}

func (r *refusal) Error() string { return r.reason }

func (s *Server) authenticate(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	remote := addrPort(meta.RemoteAddr())
	now := s.cfg.Clock.Now()
	id, err := s.policy.Load().Authenticate(meta.User(), remote.Addr(), key, now)
	if err != nil {
		return nil, &refusal{user: meta.User(), fingerprint: ssh.FingerprintSHA256(key), reason: err.Error()}
	}
	s.mu.Lock()
	until, penalised := s.penalty[id.Fingerprint]
	if penalised && !now.Before(until) {
		delete(s.penalty, id.Fingerprint)
		penalised = false
	}
	s.mu.Unlock()
	if penalised {
		return nil, &refusal{user: meta.User(), fingerprint: id.Fingerprint,
			reason: fmt.Sprintf("key %s flooded the jump host with requests (LIFELINE_REQUESTS_PER_SECOND): logins refused until %s", id.Fingerprint, until.UTC().Format(time.RFC3339))}
	}
	// The identity travels in Permissions, which x/crypto ties to the key
	// whose signature was verified (never read it from a closure). The key
	// goes with it, so that a reload can re-check the live connection.
	return &ssh.Permissions{ExtraData: map[any]any{identityKey{}: id, publicKeyKey{}: key}}, nil
}

// Serve accepts connections on ln until ctx is done, then closes ln and
// every connection and returns once all goroutines have finished (within a few
// seconds). It returns nil on a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.cfg.Audit.Record(audit.Event{Kind: audit.KindStart, Message: "listening on " + ln.Addr().String()})
	s.cfg.Log.Info("bastion listening", "addr", ln.Addr().String(), "host_key", ssh.FingerprintSHA256(s.cfg.HostKey.PublicKey()))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var err error
	for {
		nc, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				var ne net.Error
				if errors.As(aerr, &ne) && ne.Timeout() {
					continue
				}
				err = fmt.Errorf("accept on %s: %w", ln.Addr(), aerr)
			}
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handleConn(ctx, nc)
		}()
	}
	cancel()
	s.closeAll()
	s.wg.Wait()
	s.cfg.Audit.Record(audit.Event{Kind: audit.KindStop})
	s.cfg.Log.Info("bastion stopped")
	return err
}

func (s *Server) closeAll() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	for _, c := range s.snapshotConns() {
		c.close("bastion shutting down")
	}
}

func (s *Server) handleConn(ctx context.Context, nc net.Conn) {
	remote := addrPort(nc.RemoteAddr())
	ticket, err := s.gate.Admit(nc)
	if err != nil {
		s.cfg.Audit.Record(audit.Event{Kind: audit.KindRefused, Source: remote.String(), Reason: err.Error()})
		if r := (*gate.Refusal)(nil); errors.As(err, &r) {
			s.tellRefused(nc, r)
		}
		nc.Close()
		return
	}
	defer ticket.Done() // a no-op once authenticated
	// Close the socket if we are told to stop mid-handshake.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	// The client's identification line picks the algorithms offered.
	pc, version, err := peekVersion(ticket.Conn())
	if err != nil {
		stop()
		nc.Close()
		s.handshakeFailed(remote, err, ticket.Evicted())
		return
	}
	heard := &heardConn{Conn: pc, now: s.cfg.Clock.Now}
	sc, chans, reqs, err := ssh.NewServerConn(heard, s.sshcfg[profileFor(version)])
	if err != nil {
		stop()
		nc.Close()
		s.handshakeFailed(remote, err, ticket.Evicted())
		return
	}
	ticket.Authenticated()
	id, _ := sc.Permissions.ExtraData[identityKey{}].(*authz.Identity)
	key, _ := sc.Permissions.ExtraData[publicKeyKey{}].(ssh.PublicKey)
	if id == nil || key == nil {
		stop()
		sc.Close()
		s.cfg.Log.Error("authenticated connection without identity", "remote", remote)
		return
	}
	c := s.newConn(sc, nc, id, key, remote)
	c.heard = heard
	if !s.track(c) {
		stop()
		sc.Close()
		return
	}
	// A reload between the key check and track did not see this
	// connection: check it again under the policy in force now.
	if !c.recheck("the key files were reloaded during the login") {
		stop()
		s.untrack(c)
		return
	}
	stop()
	c.run(ctx, chans, reqs)
	s.untrack(c)
}

func (s *Server) handshakeFailed(remote netip.AddrPort, err error, evicted bool) {
	var authErr *ssh.ServerAuthError
	if !errors.As(err, &authErr) {
		// Scanners, ssh-audit, port probes, timeouts and evictions end
		// here; the gate counts them towards its throttle.
		s.cfg.Log.Debug("handshake failed", "remote", remote, "err", err, "evicted", evicted)
		return
	}
	var user, fp string
	var reasons []string
	tried := false
	for _, e := range authErr.Errors {
		if errors.Is(e, ssh.ErrNoAuth) {
			continue
		}
		tried = true
		var r *refusal
		if errors.As(e, &r) {
			user, fp = r.user, r.fingerprint
			reasons = append(reasons, r.fingerprint+": "+r.reason)
		} else {
			reasons = append(reasons, e.Error())
		}
	}
	if !tried {
		s.cfg.Log.Debug("disconnected before authenticating", "remote", remote)
		return
	}
	reason := fmt.Sprintf("%d attempt(s) refused: %v", len(reasons), reasons)
	s.cfg.Audit.Record(audit.Event{Kind: audit.KindAuthFailed, Source: remote.String(), User: user, Fingerprint: fp, Reason: reason})
	s.cfg.Log.Info("authentication failed", "remote", remote, "user", user, "reason", reason)
	if s.cfg.Events != nil {
		s.cfg.Events.AuthFailed(remote.Addr(), user)
	}
	if s.gate.Failed(remote.Addr()) {
		s.cfg.Audit.Record(audit.Event{Kind: audit.KindBanned, Source: remote.String(), Reason: "repeated authentication failures"})
		s.cfg.Log.Warn("source banned after repeated authentication failures", "remote", remote.Addr())
	}
}

// track adds c to the live connections. When its key now has more than
// MaxConnsPerKey connections, the oldest is closed: the newest wins.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false
	}
	fp := c.identity().Fingerprint
	// A connection that authenticated just before its key was penalised
	// for flooding, but was not tracked yet, is not spared.
	if until, ok := s.penalty[fp]; ok && s.cfg.Clock.Now().Before(until) {
		s.mu.Unlock()
		s.cfg.Log.Info("closed a new connection of a flooding key", "key", c.identity().Name, "remote", c.remote)
		return false
	}
	s.conns[c] = struct{}{}
	if !c.isAgent() {
		s.operators++
		s.tellOperators()
	}
	b := s.buckets[fp]
	if b == nil {
		b = newBucket(s.cfg.Limits.RequestsPerSecond, s.cfg.Clock.Now())
		s.buckets[fp] = b
	}
	c.bucket = b
	conns := append(s.byKey[fp], c)
	var oldest *conn
	if len(conns) > s.cfg.Limits.MaxConnsPerKey {
		oldest, conns = conns[0], conns[1:]
	}
	s.byKey[fp] = conns
	s.mu.Unlock()
	if oldest != nil {
		oldest.close(fmt.Sprintf("this key has more than %d connections (LIFELINE_MAX_CONNS_PER_KEY): the oldest is closed", s.cfg.Limits.MaxConnsPerKey))
	}
	return true
}

// penalise closes every connection of a key that floods and refuses its
// logins for floodPenalty.
func (s *Server) penalise(id *authz.Identity, now time.Time) {
	until := now.Add(floodPenalty)
	s.mu.Lock()
	_, already := s.penalty[id.Fingerprint]
	s.penalty[id.Fingerprint] = until
	if len(s.penalty) > maxPenalties { // bounded: only keys on file can be here
		for fp, t := range s.penalty {
			if !now.Before(t) {
				delete(s.penalty, fp)
			}
		}
	}
	conns := slices.Clone(s.byKey[id.Fingerprint])
	s.mu.Unlock()
	if !already {
		s.cfg.Audit.Record(audit.Event{Kind: audit.KindRefused, Role: id.Role.String(), Key: id.Name, Fingerprint: id.Fingerprint,
			Reason: fmt.Sprintf("request flood: more than %d times the allowance of %d requests a second; every connection of the key closed, logins refused until %s",
				floodFactor, s.cfg.Limits.RequestsPerSecond, until.UTC().Format(time.RFC3339))})
		s.cfg.Log.Warn("key flooded the jump host: connections closed, logins refused for a while", "key", id.Name, "fingerprint", id.Fingerprint, "until", until)
	}
	for _, c := range conns {
		c.close(fmt.Sprintf("request flood (LIFELINE_REQUESTS_PER_SECOND): the key's logins are refused until %s", until.UTC().Format(time.RFC3339)))
	}
}

// tellOperators tells Config.Outage the number of open operator
// connections. Callers hold s.mu, so that the keeper hears the changes in
// their order.
func (s *Server) tellOperators() {
	if s.cfg.Outage != nil {
		s.cfg.Outage.Sessions(s.operators)
	}
}

// OperatorConns is how many logged-in operator connections are open now
// (outage.Config.OpenOperators). It must not be called with the keeper's
// lock held.
func (s *Server) OperatorConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.operators
}

// maxPenalties bounds the flood penalties kept before expired ones are swept.
const maxPenalties = 1024

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	if _, ok := s.conns[c]; ok && !c.isAgent() {
		s.operators--
		s.tellOperators()
	}
	delete(s.conns, c)
	fp := c.identity().Fingerprint
	conns := slices.DeleteFunc(s.byKey[fp], func(o *conn) bool { return o == c })
	if len(conns) == 0 {
		delete(s.byKey, fp)
		delete(s.buckets, fp)
	} else {
		s.byKey[fp] = conns
	}
	s.mu.Unlock()
}

// addrPort is the one form addresses are logged in: IPv4-mapped IPv6
// addresses unmapped, no zone.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	if ta, ok := a.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
