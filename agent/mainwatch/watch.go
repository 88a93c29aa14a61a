// Package mainwatch watches the site's main internet link, the one the site
// normally uses through its main router, from the agent, whose own tunnel
// runs over the backup link. When the main link goes down, and when it comes
// back, it tells the caller (an Event), which sends it through the tunnel to
// the bastion, which texts the owner.
//
// # Probes
//
// Every Config.Every the watch runs a round: it probes the targets in order
// and stops at the first that answers, so a healthy day costs one probe per
// round. A round fails only when every target failed. There is no ICMP
// (carriers throttle pings to public resolvers):
//
//   - dns://IP[:port]: one DNS query over UDP (a random ID, the question
//     "a.root-servers.net. A", recursion desired) from a connected socket,
//     so only datagrams from the target's address and port are read. A
//     reply with the query's ID and question is up when its rcode is
//     NOERROR or NXDOMAIN, and a failure naming the rcode otherwise
//     (SERVFAIL is what a router's forwarder answers when its upstream is
//     gone). Garbage, other IDs or questions and truncated replies are
//     ignored until the probe's deadline: an off-path sender must guess
//     the source port and the ID to fake an answer.
//   - tcp://IP:port: a TCP connect, closed at once. Only a completed
//     handshake is up. A refused connection is a failure: a reset proves
//     that something answered, not that the far host did (the site's own
//     router, a firewall's reject or a captive portal sends them too), and
//     a false "up" would hide the very outage the watch is for.
//
// Each probe has Config.Timeout (at most Every), by the watch's clock.
//
// # Routes
//
// The probes must leave by the main link while the agent's own traffic
// (and its default route) is pinned to the backup link. The agent's netsetup
// therefore installs a host route to each target address (Addrs) through
// the main gateway (LIFELINE_MAIN_GATEWAY); the unprivileged watch needs no
// capability. Without those routes the probes would leave by the backup
// link and a dead main link would look up: doctor should check them (ip
// route get). A target's address is thus reached only by the main link,
// for every program on the Pi: do not use it as the Pi's DNS resolver.
//
// # State
//
// The state starts Unknown. It becomes Down, with a Down event, when every
// round has failed for at least DownAfter, counted from the first failed
// round (so Down needs at least two failed rounds, and also comes from the
// Unknown state: a link that is down at start is reported). It becomes Up
// after UpAfter consecutive good rounds: from Down with an Up event, from
// Unknown silently (no "back" at start). A good round ends a run of
// failures, so flapping shorter than DownAfter sends nothing.
package mainwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// Defaults, for the agent's configuration (LIFELINE_MAIN_*).
const (
	// DefaultTargets (LIFELINE_MAIN_TARGETS) are the secondary addresses
	// of two independent public resolvers, then a TCP connect to the
	// first's HTTPS port: anycast services that answer from anywhere,
	// run by different operators (one's outage, like 1.1.1.1's of July
	// 2025, is not the site's), and the TCP target still answers where
	// outbound UDP port 53 is blocked. Secondary addresses, because each
	// target gets a host route through the main gateway and the Pi's own
	// resolver is more often a primary (1.1.1.1, 9.9.9.9).
	DefaultTargets = "dns://1.0.0.1,dns://149.112.112.112,tcp://1.0.0.1:443"
	// DefaultEvery (LIFELINE_MAIN_EVERY) is the time between rounds.
	DefaultEvery = 30 * time.Second
	// DefaultDownAfter (LIFELINE_MAIN_DOWN_AFTER) is 5 minutes of failed
	// rounds (11 rounds at 30 s): longer than a modem's retrain, a DHCP
	// renewal or a router's reboot (1 to 4 minutes), which the owner need
	// not be texted about, and the same as the bastion's
	// LIFELINE_AGENT_DOWN_AFTER, so that both alerts mean "gone for 5
	// minutes".
	DefaultDownAfter = 5 * time.Minute
	// DefaultUpAfter is 2 good rounds (30 s apart): one answer on a link
	// that drops most packets is not "back", and waiting one more round
	// delays the text by only Every.
	DefaultUpAfter = 2
	// DefaultTimeout is a probe's deadline: a resolver answers from its
	// cache within a round trip, and 3 s covers a congested or satellite
	// path (Linux's first SYN retransmission is at 1 s).
	DefaultTimeout = 3 * time.Second
)

// Config configures a Watcher. Zero durations and counts take the defaults.
type Config struct {
	// Targets are probed in this order (ParseTargets); at least one. The
	// host routes for their addresses (Addrs) must be in place.
	Targets []Target
	// Every is the time from one round's start to the next (DefaultEvery).
	Every time.Duration
	// DownAfter is how long every round must have failed before the main
	// link counts as down (DefaultDownAfter).
	DownAfter time.Duration
	// UpAfter is how many consecutive good rounds make the link up
	// (DefaultUpAfter).
	UpAfter int
	// Timeout is each probe's deadline (DefaultTimeout), cut to Every.
	Timeout time.Duration
	// Clock tells time and makes the timers of rounds and probes (nil:
	// clock.Real{}).
	Clock clock.Clock
	// Log gets a line per transition and per first failure (nil: none).
	Log *slog.Logger
	// OnEvent is told each transition (a Down or an Up), on Run's
	// goroutine, with Run's ctx: it should return promptly (a slow OnEvent
	// delays the next round, it loses nothing). Nil: transitions are seen
	// only in Status.
	OnEvent func(context.Context, Event)
}

// Event is a transition of the main link: Down or Up.
type Event interface {
	// Report is the event as a main-link report for the bastion
	// (report.Encode writes it as version 2).
	Report() report.LinkReport
	isEvent()
}

// Down: the main link has been down for DownAfter.
type Down struct {
	// Since is when it went down: the start of the first failed round.
	Since time.Time
	// At is when the watch decided: the start of the round that made
	// DownAfter.
	At time.Time
	// Reason says how that round's probes failed, all targets in order
	// ("dns://1.0.0.1:53: no answer within 3s; ..."); Code is the most
	// telling of their codes: the first DNS rcode's, else
	// main_tcp_refused, else main_unreachable.
	Reason, Code string
}

// Up: the main link is back after a Down.
type Up struct {
	// Since is when it went down (the Down's Since).
	Since time.Time
	// Back is the start of the first of the UpAfter good rounds.
	Back time.Time
	// Outage is Back - Since.
	Outage time.Duration
}

func (Down) isEvent() {}
func (Up) isEvent()   {}

// Report is d as a failed main-link report.
func (d Down) Report() report.LinkReport {
	return report.LinkReport{Link: report.LinkMain, Time: d.At.UTC(), Since: d.Since.UTC(), Verdict: report.VerdictFailed,
		Reasons: []string{clean(d.Reason, maxReason)}, Codes: []string{d.Code}}
}

// Report is u as an ok main-link report.
func (u Up) Report() report.LinkReport {
	return report.LinkReport{Link: report.LinkMain, Time: u.Back.UTC(), Since: u.Since.UTC(), Verdict: report.VerdictOK}
}

// State is what the watch knows of the main link.
type State int

const (
	// StateUnknown: no verdict yet (the first rounds after start).
	StateUnknown State = iota
	StateUp
	StateDown
)

func (s State) String() string {
	switch s {
	case StateUp:
		return "up"
	case StateDown:
		return "down"
	}
	return "unknown"
}

// Status is a snapshot of the watch, for `status` and doctor.
type Status struct {
	State State
	// Since is when State began: for Down when the link went down, for
	// Up when it came back (or was first seen up). Zero when Unknown.
	Since time.Time
	// FailingSince is the first failed round of the current run of
	// failures; zero when the last round was good.
	FailingSince time.Time
	// LastRound is the start of the latest round (zero: none yet); LastOK
	// its result; Answered the target that answered it (zero when it
	// failed); LastReason and LastCode why it failed.
	LastRound            time.Time
	LastOK               bool
	Answered             Target
	LastReason, LastCode string
	// Rounds and Probes count what was done since New; Bytes estimates
	// what the probes moved (see Result.Bytes).
	Rounds, Probes int64
	Bytes          int64
}

// Watcher watches the main link. Make it with New, run it with Run (once);
// Status may be called from any goroutine.
type Watcher struct {
	targets   []Target
	every     time.Duration
	downAfter time.Duration
	upAfter   int
	timeout   time.Duration
	clock     clock.Clock
	log       *slog.Logger
	onEvent   func(context.Context, Event)

	mu        sync.Mutex
	ran       bool
	st        Status
	goodIn    int       // consecutive good rounds
	goodSince time.Time // the first of them
	downSince time.Time // when the latest Down began

	started atomic.Int64 // probes begun, for tests
}

// New checks cfg (every problem at once) and returns a Watcher.
func New(cfg Config) (*Watcher, error) {
	w := &Watcher{targets: cfg.Targets, every: cfg.Every, downAfter: cfg.DownAfter, upAfter: cfg.UpAfter, timeout: cfg.Timeout,
		clock: cfg.Clock, log: cfg.Log, onEvent: cfg.OnEvent}
	if w.every == 0 {
		w.every = DefaultEvery
	}
	if w.downAfter == 0 {
		w.downAfter = DefaultDownAfter
	}
	if w.upAfter == 0 {
		w.upAfter = DefaultUpAfter
	}
	if w.timeout == 0 {
		w.timeout = DefaultTimeout
	}
	if w.clock == nil {
		w.clock = clock.Real{}
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if len(w.targets) == 0 {
		errs = append(errs, errors.New("no targets (LIFELINE_MAIN_TARGETS)"))
	}
	if len(w.targets) > MaxTargets {
		errs = append(errs, fmt.Errorf("%d targets: at most %d", len(w.targets), MaxTargets))
	}
	for _, t := range w.targets {
		if (t.Kind != DNS && t.Kind != TCP) || !t.Addr.IsValid() || t.Addr.Port() == 0 {
			errs = append(errs, fmt.Errorf("target %+v is not valid: make targets with ParseTargets", t))
		}
	}
	if w.every < 0 {
		errs = append(errs, fmt.Errorf("every %s must be positive (LIFELINE_MAIN_EVERY)", w.every))
	}
	if w.downAfter < 0 {
		errs = append(errs, fmt.Errorf("down after %s must be positive (LIFELINE_MAIN_DOWN_AFTER)", w.downAfter))
	}
	if w.upAfter < 0 {
		errs = append(errs, fmt.Errorf("up after %d rounds must be positive", w.upAfter))
	}
	if w.timeout < 0 {
		errs = append(errs, fmt.Errorf("probe timeout %s must be positive", w.timeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("main link watch: %w", err)
	}
	w.timeout = min(w.timeout, w.every)
	return w, nil
}

// Status is a snapshot of the watch.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

// Run probes every Every until ctx ends, then returns nil once its probe
// (and the goroutine watching the probe's deadline) has ended. It never
// returns because a network is down. Run may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.ran {
		w.mu.Unlock()
		return errors.New("main link watch: Run called twice")
	}
	w.ran = true
	w.mu.Unlock()
	w.log.Info("main link watch started", "targets", targetList(w.targets), "every", w.every, "down_after", w.downAfter)
	p := &prober{w: w, buf: make([]byte, maxDatagram)}
	for {
		start := w.clock.Now()
		results, err := w.round(ctx, p)
		if err != nil {
			return nil // ctx ended
		}
		if ev := w.judge(start, results); ev != nil {
			w.logEvent(ev)
			if w.onEvent != nil {
				w.onEvent(ctx, ev)
			}
		}
		t := w.clock.NewTimer(start.Add(w.every).Sub(w.clock.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// ProbeOnce runs one round as Run does (the targets in order, up to the
// first that answers) and returns every probe's result, without judging
// the round: Status and events are untouched. It is for doctor, and may be
// called beside Run or without it. It returns ctx's error when ctx ends
// first.
func (w *Watcher) ProbeOnce(ctx context.Context) ([]Result, error) {
	return w.round(ctx, &prober{w: w, buf: make([]byte, maxDatagram)})
}

// round probes the targets in order up to the first that answers.
func (w *Watcher) round(ctx context.Context, p *prober) ([]Result, error) {
	var results []Result
	for _, t := range w.targets {
		r, err := p.probe(ctx, t)
		if err != nil {
			return nil, err
		}
		results = append(results, r)
		if r.OK {
			break
		}
	}
	return results, nil
}

// judge records the round that started at start and returns the transition
// it makes, if any.
func (w *Watcher) judge(start time.Time, results []Result) Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := &w.st
	st.Rounds++
	st.LastRound = start
	for _, r := range results {
		st.Probes++
		st.Bytes += r.Bytes
	}
	last := results[len(results)-1]
	st.LastOK = last.OK
	if last.OK {
		st.Answered, st.LastReason, st.LastCode = last.Target, "", ""
		if !st.FailingSince.IsZero() {
			w.log.Info("main link answered again", "target", last.Target.String(), "failing_since", st.FailingSince)
		}
		st.FailingSince = time.Time{}
		w.goodIn++
		if w.goodIn == 1 {
			w.goodSince = start
		}
		if st.State == StateUp || w.goodIn < w.upAfter {
			return nil
		}
		prev := st.State
		st.State, st.Since = StateUp, w.goodSince
		if prev == StateUnknown {
			return nil // no "back" at start
		}
		return Up{Since: w.downSince, Back: w.goodSince, Outage: w.goodSince.Sub(w.downSince)}
	}
	w.goodIn = 0
	var reasons []string
	code := ""
	for _, r := range results {
		reasons = append(reasons, r.Reason)
		if code == "" || rank(r.Code) > rank(code) {
			code = r.Code
		}
	}
	st.Answered, st.LastReason, st.LastCode = Target{}, strings.Join(reasons, "; "), code
	if st.FailingSince.IsZero() {
		st.FailingSince = start
		if st.State != StateDown {
			w.log.Warn("main link probe round failed", "reason", st.LastReason, "code", code)
		}
	}
	if st.State == StateDown || start.Sub(st.FailingSince) < w.downAfter {
		return nil
	}
	st.State, st.Since = StateDown, st.FailingSince
	w.downSince = st.FailingSince
	return Down{Since: st.FailingSince, At: start, Reason: st.LastReason, Code: code}
}

// rank orders codes by how much they tell: a DNS answer (something
// answered, and said what is wrong) over a refused connection (something
// answered) over no answer.
func rank(code string) int {
	switch code {
	case report.CodeMainUnreachable:
		return 0
	case report.CodeMainTCPRefused:
		return 1
	}
	return 2
}

func (w *Watcher) logEvent(ev Event) {
	switch e := ev.(type) {
	case Down:
		w.log.Warn("main link down", "since", e.Since, "reason", e.Reason, "code", e.Code)
	case Up:
		w.log.Info("main link back", "since", e.Since, "back", e.Back, "outage", e.Outage)
	}
}

func targetList(ts []Target) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return strings.Join(s, ",")
}

const maxReason = 512

// clean makes s a valid report reason: control characters dropped, at most
// n bytes on a character boundary.
func clean(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xc0 == 0x80 {
		cut--
	}
	return s[:cut]
}
