package outage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline/shared/atomicfile"
	"github.com/lifeline-dev/lifeline/shared/clock"
)

// Defaults and limits.
const (
	// DefaultIdle is the idle time the configuration should default to.
	// (Config.Idle itself has no default: zero means outage mode is off.)
	DefaultIdle = 30 * time.Minute
	// MinIdle is the shortest Config.Idle accepted.
	MinIdle = 5 * time.Minute
	// DefaultMaxHold is the longest hold when Config.MaxHold is zero.
	DefaultMaxHold = 24 * time.Hour
	// DefaultRequestPath is the power-off request file lifeline-poweroff.path
	// watches (in the bastion's RuntimeDirectory=lifeline).
	DefaultRequestPath = "/run/lifeline/poweroff"
	// StateFile is the name of the stop record in Config.StateDir.
	StateFile = "outage.json"
	// RetryMin and RetryMax bound the backoff between failed request writes.
	RetryMin = 30 * time.Second
	RetryMax = 10 * time.Minute
	// NotStoppedAfter is how long after its request a host that is still up
	// says so (NotStopped) and writes the request again.
	NotStoppedAfter = 10 * time.Minute
)

// ErrOff is Hold's error when outage mode is off.
var ErrOff = errors.New("outage mode is off: this jump host never powers itself off")

// Config configures a Keeper.
type Config struct {
	// Idle is how long nothing must keep the host up before it powers off;
	// zero means outage mode is off (the Keeper does nothing); otherwise at
	// least MinIdle.
	Idle time.Duration
	// MaxHold is the longest Hold; zero means DefaultMaxHold.
	MaxHold time.Duration
	// StateDir holds StateFile (the stop record). Required when Idle is
	// set; it must exist.
	StateDir string
	// RequestPath is the power-off request file; empty means
	// DefaultRequestPath. Its folder must exist and be writable (the
	// service's RuntimeDirectory).
	RequestPath string
	// OpenOperators, when set, is asked right before the request is written
	// how many operator connections are open: a belt to Sessions' braces
	// (a count above zero cancels the power-off and starts a new idle
	// period). It is called from Run's goroutine and must not block. Nil
	// means Sessions alone is trusted.
	OpenOperators func() int
	// Notify receives every Event, from Run's goroutine, in order; it must
	// not block for long. Nil means events are only logged.
	Notify func(Event)
	// Clock drives the idle periods, holds and retries; nil means
	// clock.Real{}.
	Clock clock.Clock
	// Log receives every event and every problem. Required.
	Log *slog.Logger
}

// Stop is what a power-off request says, and the stop record kept in
// StateFile for the next start.
type Stop struct {
	// Time is when the request was written.
	Time time.Time `json:"time"`
	// Reason says why, in English: how long idle, since what.
	Reason string `json:"reason"`
	// IdleSince is when the idle period began; Idle is its length.
	IdleSince time.Time     `json:"idle_since"`
	Idle      time.Duration `json:"idle_ns"`
	// By is the program that asked ("lifeline-bastion") and PID its process.
	By  string `json:"by"`
	PID int    `json:"pid"`
}

// state is the content of StateFile.
type state struct {
	// Started is when the run that wrote it started.
	Started time.Time `json:"started"`
	// Stop is set when that run asked to power off; nil when it did not
	// (yet): the host was stopped, or the service restarted, another way.
	Stop *Stop `json:"stop,omitempty"`
}

// Kind is the kind of an Event.
type Kind int

// The kinds of Event. Each is emitted once per transition.
const (
	// Started: Run began. PrevStarted and PrevStop describe the run before
	// (zero and nil on a first start).
	Started Kind = iota + 1
	// Ready: the first agent connection since the start (Site).
	Ready
	// Stopping: the host is about to power off (Reason, IdleSince, Idle).
	// It is sent just before the request is written, once per idle period
	// that ran out, however many writes it takes.
	Stopping
	// Held: an operator holds the host up (Until, By).
	Held
	// Released: the hold ended (By: who released it; empty when it ran out).
	Released
	// RequestFailed: the request could not be written (Err); it is retried.
	// Sent once until a write succeeds.
	RequestFailed
	// NotStopped: the host is still up NotStoppedAfter after its request
	// (Requested): is lifeline-poweroff.path enabled? Sent once per request.
	NotStopped
)

var kindNames = map[Kind]string{
	Started: "started", Ready: "ready", Stopping: "stopping", Held: "held",
	Released: "released", RequestFailed: "request-failed", NotStopped: "not-stopped",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Event is something the owner may want texted or audited.
type Event struct {
	Kind Kind
	Time time.Time
	// Started: the previous run's start (zero: none recorded) and its stop
	// (nil: it did not power itself off: stopped by hand or restarted).
	PrevStarted time.Time
	PrevStop    *Stop
	// Ready: the site (agent key) that connected.
	Site string
	// Stopping: why, since when, how long idle.
	Reason    string
	IdleSince time.Time
	Idle      time.Duration
	// Held: until when, by whom. Released: by whom (empty: ran out).
	Until time.Time
	By    string
	// RequestFailed: the error.
	Err error
	// NotStopped: when the request was written.
	Requested time.Time
}

// String says the event in one line of English, for texts and logs.
func (e Event) String() string {
	ts := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }
	switch e.Kind {
	case Started:
		switch {
		case e.PrevStop != nil:
			return fmt.Sprintf("jump host up (outage mode); it last powered itself off at %s: %s", ts(e.PrevStop.Time), e.PrevStop.Reason)
		case !e.PrevStarted.IsZero():
			return fmt.Sprintf("jump host up (outage mode); its previous run (from %s) ended without powering itself off", ts(e.PrevStarted))
		default:
			return "jump host up (outage mode), first start"
		}
	case Ready:
		return "jump host ready: agent " + e.Site + " connected"
	case Stopping:
		return "jump host powering off: " + e.Reason
	case Held:
		return fmt.Sprintf("jump host held up until %s by %s", ts(e.Until), e.By)
	case Released:
		if e.By == "" {
			return "jump host hold ran out"
		}
		return "jump host hold released by " + e.By
	case RequestFailed:
		return fmt.Sprintf("jump host cannot power itself off: %v (retrying)", e.Err)
	case NotStopped:
		return fmt.Sprintf("jump host still up %s after its power-off request: is lifeline-poweroff.path enabled?", e.Time.Sub(e.Requested).Round(time.Second))
	}
	return e.Kind.String()
}

// Status is a snapshot of the Keeper.
type Status struct {
	// On is whether outage mode is on; nothing else is set when it is off.
	On   bool
	Idle time.Duration
	// Started is when Run began (zero: not yet).
	Started time.Time
	// IdleSince is when the current idle period began; zero while something
	// keeps the host up. PowerOffAt is IdleSince+Idle.
	IdleSince  time.Time
	PowerOffAt time.Time
	// HoldUntil and HoldBy describe the hold in force, if any.
	HoldUntil time.Time
	HoldBy    string
	// SitesDown are the connected sites reporting their main link down;
	// Sites every connected site; Operators the open operator connections.
	SitesDown []string
	Sites     []string
	Operators int
	// Requested is when the power-off request was written (zero: it was
	// not); Failing whether writing it fails (it is retried).
	Requested time.Time
	Failing   bool
	// PrevStop is the previous run's stop, read at Run (nil: none).
	PrevStop *Stop
}

// KeptUpBy lists, in English, what keeps the host up now (empty: nothing).
func (s Status) KeptUpBy() []string {
	var out []string
	if s.Operators > 0 {
		out = append(out, fmt.Sprintf("%d operator connection(s) open", s.Operators))
	}
	for _, site := range s.SitesDown {
		out = append(out, "site "+site+" reports its main link down")
	}
	if !s.HoldUntil.IsZero() {
		out = append(out, fmt.Sprintf("held by %s until %s", s.HoldBy, s.HoldUntil.UTC().Format(time.RFC3339)))
	}
	return out
}

type phase int

const (
	watching  phase = iota
	requested       // the request file is written
	retrying        // writing it failed; retryAt is the next try
)

// Keeper decides when the host powers off. Its methods may be called from
// any goroutine.
type Keeper struct {
	cfg  Config
	on   bool
	clk  clock.Clock
	log  *slog.Logger
	wake chan struct{}

	mu      sync.Mutex
	ran     bool
	started time.Time
	// The idle period begins at freeAt (the end of the last thing that kept
	// the host up, or the start), cause says what that was.
	freeAt    time.Time
	cause     string
	operators int
	sites     map[string]bool // connected; true: reports main down
	ready     bool
	holdUntil time.Time // zero: no hold
	holdBy    string
	queue     []Event
	prevStop  *Stop

	phase      phase
	stop       *Stop // the request in force (requested, retrying)
	requestAt  time.Time
	checkAt    time.Time // requested: when to say NotStopped / write again
	notStopped bool
	retryAt    time.Time
	delay      time.Duration
	failSent   bool

	// For tests: gen counts inputs; seen is the gen Run last planned with,
	// armed the deadline it then waits for (zero: none).
	gen, seen, parks uint64
	armed            time.Time
}

// New checks cfg and returns a Keeper; nothing happens until Run.
func New(cfg Config) (*Keeper, error) {
	var errs []error
	if cfg.Log == nil {
		errs = append(errs, errors.New("outage: no logger"))
	}
	if cfg.Idle < 0 {
		errs = append(errs, fmt.Errorf("outage idle time %s is negative", cfg.Idle))
	}
	if cfg.Idle > 0 && cfg.Idle < MinIdle {
		errs = append(errs, fmt.Errorf("outage idle time %s is below the minimum %s (the agent that started the host must have time to connect)", cfg.Idle, MinIdle))
	}
	if cfg.MaxHold < 0 {
		errs = append(errs, fmt.Errorf("outage maximum hold %s is negative", cfg.MaxHold))
	}
	if cfg.RequestPath == "" {
		cfg.RequestPath = DefaultRequestPath
	}
	if !filepath.IsAbs(cfg.RequestPath) {
		errs = append(errs, fmt.Errorf("outage power-off request path %q is not absolute", cfg.RequestPath))
	}
	if cfg.Idle > 0 && cfg.StateDir == "" {
		errs = append(errs, errors.New("outage mode: no state directory"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.MaxHold == 0 {
		cfg.MaxHold = DefaultMaxHold
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return &Keeper{
		cfg: cfg, on: cfg.Idle > 0, clk: cfg.Clock, log: cfg.Log,
		wake: make(chan struct{}, 1), sites: map[string]bool{}, seen: ^uint64(0),
	}, nil
}

// poke tells Run that something changed. Callers hold k.mu.
func (k *Keeper) poke() {
	k.gen++
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// freed records, at now, the end of something that kept the host up.
// Callers hold k.mu.
func (k *Keeper) freed(now time.Time, cause string) {
	k.freeAt, k.cause = now, cause
}

// AgentSeen records a connection of the agent site (its key's name or
// fingerprint); the first since the start emits Ready. Call it when an
// agent key gets its first connection.
func (k *Keeper) AgentSeen(site string) {
	if !k.on {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.sites[site]; !ok {
		k.sites[site] = false
	}
	if !k.ready {
		k.ready = true
		k.queue = append(k.queue, Event{Kind: Ready, Time: k.clk.Now(), Site: site})
	}
	k.poke()
}

// MainLink records a connected agent's report about its site's main link:
// down, or back up. A site whose main link is down keeps the host up until
// it reports it back or AgentGone.
func (k *Keeper) MainLink(site string, down bool) {
	if !k.on {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	was := k.sites[site]
	k.sites[site] = down
	if was && !down {
		k.freed(k.clk.Now(), "site "+site+"'s main link came back")
	}
	k.poke()
}

// AgentGone records that the last connection of site ended: its main-link
// state no longer counts.
func (k *Keeper) AgentGone(site string) {
	if !k.on {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	down, ok := k.sites[site]
	if !ok {
		return
	}
	delete(k.sites, site)
	if down {
		k.freed(k.clk.Now(), "site "+site+"'s agent left while its main link was down")
	}
	k.poke()
}

// Sessions records how many logged-in operator connections are open now.
// Call it whenever the number changes. While it is above zero the host never
// powers off; the idle period restarts when it falls to zero.
func (k *Keeper) Sessions(n int) {
	if !k.on {
		return
	}
	n = max(n, 0)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.operators > 0 && n == 0 {
		k.freed(k.clk.Now(), "the last operator connection closed")
	}
	k.operators = n
	k.poke()
}

// Hold keeps the host up for d from now, on behalf of by (an operator's
// name), replacing any hold in force, and returns its end. d zero releases
// the hold (a zero time comes back); the idle period starts again at the
// release. Errors: ErrOff when outage mode is off, a negative d, and a d
// above the maximum hold (the error names it).
func (k *Keeper) Hold(d time.Duration, by string) (until time.Time, err error) {
	if !k.on {
		return time.Time{}, ErrOff
	}
	if d < 0 {
		return time.Time{}, fmt.Errorf("hold %s is negative", d)
	}
	if d > k.cfg.MaxHold {
		return time.Time{}, fmt.Errorf("hold %s is longer than the maximum %s", d, k.cfg.MaxHold)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.clk.Now()
	if d == 0 {
		if !k.holdUntil.IsZero() {
			k.holdUntil, k.holdBy = time.Time{}, ""
			k.freed(now, "the hold was released by "+by)
			k.queue = append(k.queue, Event{Kind: Released, Time: now, By: by})
			k.poke()
		}
		return time.Time{}, nil
	}
	k.holdUntil, k.holdBy = now.Add(d), by
	k.queue = append(k.queue, Event{Kind: Held, Time: now, Until: k.holdUntil, By: by})
	k.poke()
	return k.holdUntil, nil
}

// Status returns a snapshot.
func (k *Keeper) Status() Status {
	if !k.on {
		return Status{}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	s := Status{
		On: true, Idle: k.cfg.Idle, Started: k.started, Operators: k.operators,
		HoldUntil: k.holdUntil, HoldBy: k.holdBy, PrevStop: k.prevStop,
		Sites: slices.Sorted(maps.Keys(k.sites)), Failing: k.phase == retrying,
	}
	for _, site := range s.Sites {
		if k.sites[site] {
			s.SitesDown = append(s.SitesDown, site)
		}
	}
	if k.phase == requested {
		s.Requested = k.requestAt
	}
	if k.ran && !k.blocked() {
		s.IdleSince = k.freeAt
		s.PowerOffAt = k.freeAt.Add(k.cfg.Idle)
	}
	return s
}

// blocked reports whether something keeps the host up. Callers hold k.mu.
func (k *Keeper) blocked() bool {
	if k.operators > 0 || !k.holdUntil.IsZero() {
		return true
	}
	for _, down := range k.sites {
		if down {
			return true
		}
	}
	return false
}

// action is what Run does after planning.
type action int

const (
	wait     action = iota
	doStop          // write the stop record and the request
	withdraw        // something keeps the host up again: undo the request
	again           // requested, still up: say so once, write it again
)

// plan looks at the state at now and says what to do and, for wait, until
// when (zero: until something changes). Callers hold k.mu.
func (k *Keeper) plan(now time.Time) (action, time.Time) {
	if !k.holdUntil.IsZero() && !now.Before(k.holdUntil) {
		if k.holdUntil.After(k.freeAt) {
			k.freed(k.holdUntil, "the hold by "+k.holdBy+" ran out")
		}
		k.queue = append(k.queue, Event{Kind: Released, Time: k.holdUntil})
		k.holdUntil, k.holdBy = time.Time{}, ""
	}
	if k.blocked() {
		if k.phase != watching {
			return withdraw, time.Time{}
		}
		return wait, k.holdUntil // zero without a hold
	}
	switch k.phase {
	case requested:
		if !now.Before(k.checkAt) {
			return again, time.Time{}
		}
		return wait, k.checkAt
	case retrying:
		if !now.Before(k.retryAt) {
			return doStop, time.Time{}
		}
		return wait, k.retryAt
	}
	deadline := k.freeAt.Add(k.cfg.Idle)
	if !now.Before(deadline) {
		return doStop, time.Time{}
	}
	return wait, deadline
}

// Run runs the decision loop until ctx is done, then returns nil. With
// outage mode off it only waits for ctx. It may be called once; its start is
// the start of the first idle period.
func (k *Keeper) Run(ctx context.Context) error {
	if !k.on {
		<-ctx.Done()
		return nil
	}
	k.mu.Lock()
	if k.ran {
		k.mu.Unlock()
		return errors.New("outage: Run called twice")
	}
	k.ran = true
	now := k.clk.Now()
	k.started = now
	k.freed(now, "the start")
	k.mu.Unlock()

	prev, err := k.readState()
	if err != nil {
		k.log.Warn("outage: previous stop record unreadable, ignored", "err", err)
	}
	k.writeState(&state{Started: now})
	// A request left by an earlier run of this boot is not this run's.
	if err := os.Remove(k.cfg.RequestPath); err == nil {
		k.log.Warn("outage: removed a power-off request left by an earlier run", "path", k.cfg.RequestPath)
	}
	k.mu.Lock()
	k.prevStop = prev.Stop
	k.queue = append([]Event{{Kind: Started, Time: now, PrevStarted: prev.Started, PrevStop: prev.Stop}}, k.queue...)
	k.mu.Unlock()
	k.log.Info("outage mode on", "idle", k.cfg.Idle, "max_hold", k.cfg.MaxHold, "request", k.cfg.RequestPath)

	for {
		k.mu.Lock()
		now := k.clk.Now()
		act, until := k.plan(now)
		gen := k.gen
		events := k.queue
		k.queue = nil
		k.mu.Unlock()
		k.deliver(events)

		switch act {
		case doStop:
			k.attempt()
			continue
		case withdraw:
			k.withdraw()
			continue
		case again:
			k.rewrite()
			continue
		}
		var t clock.Timer
		var fired <-chan time.Time
		if !until.IsZero() {
			t = k.clk.NewTimer(until.Sub(now))
			fired = t.C()
		}
		k.mu.Lock()
		k.seen, k.armed = gen, until
		k.parks++
		k.mu.Unlock()
		select {
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			return nil
		case <-k.wake:
		case <-fired:
		}
		if t != nil {
			t.Stop()
		}
	}
}

func (k *Keeper) deliver(events []Event) {
	for _, e := range events {
		attrs := []any{"event", e.Kind.String()}
		if e.Err != nil {
			attrs = append(attrs, "err", e.Err)
		}
		if e.Kind == RequestFailed || e.Kind == NotStopped {
			k.log.Error("outage: "+e.String(), attrs...)
		} else {
			k.log.Info("outage: "+e.String(), attrs...)
		}
		if k.cfg.Notify != nil {
			k.cfg.Notify(e)
		}
	}
}

// attempt writes the stop record and the request: the first try of an idle
// period that ran out (Stopping first), or a retry.
func (k *Keeper) attempt() {
	k.mu.Lock()
	now := k.clk.Now()
	first := k.phase == watching
	if first {
		k.stop = &Stop{
			Time: now, IdleSince: k.freeAt, Idle: k.cfg.Idle, By: "lifeline-bastion", PID: os.Getpid(),
			Reason: fmt.Sprintf("idle for %s since %s (%s): no connected site reports its main link down, no operator connection is open, no hold",
				k.cfg.Idle, k.freeAt.UTC().Format(time.RFC3339), k.cause),
		}
	}
	stop := *k.stop
	stop.Time = now
	started := k.started
	k.mu.Unlock()

	if k.cfg.OpenOperators != nil {
		if n := k.cfg.OpenOperators(); n > 0 {
			k.log.Warn("outage: power-off cancelled: operator connections are open that Sessions did not count", "open", n)
			k.mu.Lock()
			k.phase, k.stop = watching, nil
			k.freed(now, "an operator connection was found open")
			k.mu.Unlock()
			if !first {
				k.writeState(&state{Started: started}) // undo the retried stop's record
			}
			return
		}
	}
	if first {
		k.deliver([]Event{{Kind: Stopping, Time: now, Reason: stop.Reason, IdleSince: stop.IdleSince, Idle: stop.Idle}})
	}
	k.writeState(&state{Started: started, Stop: &stop})
	err := k.writeRequest(&stop)

	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		if k.phase != retrying {
			k.delay = RetryMin
		} else {
			k.delay = min(2*k.delay, RetryMax)
		}
		k.phase, k.retryAt = retrying, now.Add(k.delay)
		k.log.Error("outage: power-off request not written", "err", err, "retry_in", k.delay)
		if !k.failSent {
			k.failSent = true
			k.queue = append(k.queue, Event{Kind: RequestFailed, Time: now, Err: err})
		}
		return
	}
	k.failSent = false
	k.phase, k.requestAt, k.checkAt, k.notStopped = requested, now, now.Add(NotStoppedAfter), false
	k.log.Info("outage: power-off requested", "path", k.cfg.RequestPath)
}

// rewrite says once that the host is still up after its request, and
// writes the request again.
func (k *Keeper) rewrite() {
	k.mu.Lock()
	now := k.clk.Now()
	if !k.notStopped {
		k.notStopped = true
		k.queue = append(k.queue, Event{Kind: NotStopped, Time: now, Requested: k.requestAt})
	}
	k.checkAt = now.Add(NotStoppedAfter)
	stop := *k.stop
	stop.Time = now
	k.mu.Unlock()
	if err := k.writeRequest(&stop); err != nil {
		k.log.Error("outage: power-off request not written again", "err", err)
	}
}

// withdraw undoes a request: something keeps the host up again.
func (k *Keeper) withdraw() {
	k.mu.Lock()
	ph := k.phase
	k.phase, k.stop = watching, nil
	started := k.started
	k.mu.Unlock()
	if ph == requested {
		if err := os.Remove(k.cfg.RequestPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			k.log.Error("outage: power-off request not withdrawn", "err", err)
		}
	}
	k.writeState(&state{Started: started})
	k.log.Warn("outage: power-off withdrawn: something keeps the host up again")
}

func (k *Keeper) writeRequest(s *Stop) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return atomicfile.Write(k.cfg.RequestPath, append(data, '\n'), 0o600)
}

func (k *Keeper) statePath() string { return filepath.Join(k.cfg.StateDir, StateFile) }

// readState reads StateFile; a missing one is a first start.
func (k *Keeper) readState() (state, error) {
	var s state
	data, err := os.ReadFile(k.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return state{}, fmt.Errorf("%s: %w", k.statePath(), err)
	}
	return s, nil
}

// writeState records s. A failure is logged, never fatal: the record only
// informs the next start's text.
func (k *Keeper) writeState(s *state) {
	data, err := json.MarshalIndent(s, "", "  ")
	if err == nil {
		err = atomicfile.Write(k.statePath(), append(data, '\n'), 0o600)
	}
	if err != nil {
		k.log.Error("outage: stop record not written", "err", err)
	}
}

// ParseHold parses the argument of the `hold` command: a Go duration (2h,
// 90m, 1h30m), or 0, "off" or "release" to release the hold. Negative
// durations are refused; the maximum is Hold's to check.
func ParseHold(arg string) (time.Duration, error) {
	arg = strings.TrimSpace(arg)
	switch strings.ToLower(arg) {
	case "0", "off", "release":
		return 0, nil
	case "":
		return 0, errors.New("hold: say for how long (hold 2h), or hold 0 to release")
	}
	d, err := time.ParseDuration(arg)
	if err != nil {
		return 0, fmt.Errorf("hold: %q is not a duration like 2h or 90m", arg)
	}
	if d < 0 {
		return 0, fmt.Errorf("hold: %s is negative", d)
	}
	return d, nil
}
