// Package alert tells people what happens on the bastion: every operator
// login, agents going down and coming back, link checks that fail, bursts of
// failed logins. Events become short texts that are spooled to disk before
// the event call returns and are then delivered by Run through one Notifier
// (Twilio SMS, or the log), with retries, a rate limit that summarises what it
// holds back, and nothing ever dropped silently: every alert is also an audit
// event.
package alert

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jpillora/backoff"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// Defaults for Config.
const (
	DefaultDownAfter        = 5 * time.Minute
	DefaultPerMinute        = 6
	DefaultFailedLoginEvery = 15 * time.Minute
	DefaultFailedLoginMin   = 10
	DefaultRetryMin         = 2 * time.Second
	DefaultRetryMax         = 5 * time.Minute
	DefaultSendTimeout      = time.Minute
	DefaultMaxSpool         = 2000
	// maxFailSources bounds the sources remembered in a failed-login window;
	// more are counted together.
	maxFailSources = 256
)

// Config configures an Alerter.
type Config struct {
	// Dir is the state directory (LIFELINE_STATE_DIR); the spool lives in
	// Dir/alerts (created 0700). Required.
	Dir string
	// Notifier delivers the texts. Required.
	Notifier Notifier
	// Clock drives hysteresis, summaries, the rate limit and retry waits;
	// nil means clock.Real{}.
	Clock clock.Clock
	// Log receives delivery problems. Required.
	Log *slog.Logger
	// Audit receives every alert as an audit.KindAlert event; nil means none.
	Audit audit.Recorder
	// BastionName is named in every text.
	BastionName string
	// QuietFrom: logins from these prefixes are audited but not texted.
	QuietFrom []netip.Prefix
	// DownAfter is how long an agent may stay away before "site down" is
	// sent; zero means DefaultDownAfter.
	DownAfter time.Duration
	// PerMinute is the most texts sent in any minute; when alerts are held
	// back the last text of the minute summarises them. Zero means
	// DefaultPerMinute.
	PerMinute int
	// FailedLoginEvery is the failed-login summary interval; zero means
	// DefaultFailedLoginEvery. FailedLoginMin: fewer failures in an
	// interval are not texted; zero means DefaultFailedLoginMin.
	FailedLoginEvery time.Duration
	FailedLoginMin   int
	// RetryMin and RetryMax bound the jittered exponential backoff between
	// failed deliveries; zero means DefaultRetryMin / DefaultRetryMax.
	RetryMin, RetryMax time.Duration
	// SendTimeout bounds one Notifier.Send; zero means DefaultSendTimeout.
	SendTimeout time.Duration
	// MaxSpool caps the spooled alerts (and the set-aside failures); alerts
	// beyond it are audited and counted into the next summary. Zero means
	// DefaultMaxSpool.
	MaxSpool int
}

func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("alert spool: LIFELINE_STATE_DIR is empty"))
	}
	if c.Notifier == nil {
		errs = append(errs, errors.New("alert: no notifier"))
	}
	if c.Log == nil {
		errs = append(errs, errors.New("alert: no logger"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"LIFELINE_AGENT_DOWN_AFTER", c.DownAfter}, {"failed-login interval", c.FailedLoginEvery}, {"retry minimum", c.RetryMin}, {"retry maximum", c.RetryMax}, {"send timeout", c.SendTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", d.name, d.v))
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"SMS per minute", c.PerMinute}, {"failed-login minimum", c.FailedLoginMin}, {"spool size", c.MaxSpool}} {
		if n.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d is negative", n.name, n.v))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) defaults() {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	setDur := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	setDur(&c.DownAfter, DefaultDownAfter)
	setDur(&c.FailedLoginEvery, DefaultFailedLoginEvery)
	setDur(&c.RetryMin, DefaultRetryMin)
	setDur(&c.RetryMax, DefaultRetryMax)
	setDur(&c.SendTimeout, DefaultSendTimeout)
	if c.RetryMax < c.RetryMin {
		c.RetryMax = c.RetryMin
	}
	if c.PerMinute == 0 {
		c.PerMinute = DefaultPerMinute
	}
	if c.FailedLoginMin == 0 {
		c.FailedLoginMin = DefaultFailedLoginMin
	}
	if c.MaxSpool == 0 {
		c.MaxSpool = DefaultMaxSpool
	}
}

// Login is a successful operator authentication.
type Login struct {
	// Operator is the key comment or the certificate's key id.
	Operator    string
	Fingerprint string // SHA256:...
	User        string // the SSH user name asked for
	Target      string // NAME:PORT when known, else empty
	Source      netip.AddrPort
	Certificate bool
}

// Agent identifies a site agent. Fingerprint keys the agent's state (Name
// when Fingerprint is empty).
type Agent struct {
	Name        string // the key comment
	Fingerprint string
	Names       []string // the names it registers (pi, ...)
}

func (a Agent) key() string {
	if a.Fingerprint != "" {
		return a.Fingerprint
	}
	return a.Name
}

// Status is the alerter's state for `ssh bastion status`.
type Status struct {
	Notifier string `json:"notifier"`
	// Pending alerts are spooled, waiting for delivery.
	Pending int `json:"pending"`
	// Sent is how many texts the Notifier accepted since start (summaries
	// count once).
	Sent     int       `json:"sent"`
	LastSent time.Time `json:"last_sent,omitzero"`
	// RateLimited is how many alerts were held back and covered by a
	// summary text since start; Overflow is how many arrived while the spool
	// was full and wait for the next summary.
	RateLimited int `json:"rate_limited"`
	Overflow    int `json:"overflow"`
	// Quiet is how many logins from LIFELINE_QUIET_FROM were not texted.
	Quiet     int    `json:"quiet"`
	LastQuiet string `json:"last_quiet,omitempty"`
	// LastError is the last transient delivery error ("" after a success).
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Permanent counts alerts that could not be delivered and were set aside
	// (including those found in the spool's failed/ directory at start).
	Permanent     int    `json:"undeliverable"`
	LastPermanent string `json:"last_undeliverable,omitempty"`
}

// Alerter turns bastion events into delivered texts. Create it with New and
// run Run; the event methods are safe for concurrent use and return at once
// (after a local fsync), whether or not Run is running.
type Alerter struct {
	cfg       Config
	sp        *spool
	wakeSend  chan struct{}
	wakeTimer chan struct{}
	running   atomic.Bool
	seq       atomic.Uint64

	mu        sync.Mutex
	pending   []entry
	reserved  int // spool slots taken by writes in progress
	overflow  map[string]int
	sentTimes []time.Time // accepted sends within the last minute, oldest first
	agents    map[string]*agentState
	fails     failWindow
	st        Status
	ovDirty   bool // overflow counts changed since the last write
	ovWriting bool // a goroutine is writing the overflow file
}

type agentState struct {
	agent     Agent
	downSince time.Time
	deadline  time.Time // zero: no "down" pending
	downSent  bool
	verdict   string
	failure   string // failureKinds of the last report
}

type failWindow struct {
	end      time.Time // zero: no window open
	total    int
	bySource map[netip.Addr]int
	others   int
}

// New checks cfg, opens the spool and loads the alerts a previous run left
// undelivered; Run delivers them.
func New(cfg Config) (*Alerter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	sp, pending, overflow, bad, err := openSpool(cfg.Dir)
	if err != nil {
		return nil, err
	}
	for _, e := range bad {
		cfg.Log.Error("alert spool: unreadable entry set aside", "err", e)
	}
	failed, err := countFiles(sp.failed)
	if err != nil {
		return nil, fmt.Errorf("alert spool: %w", err)
	}
	if overflow == nil {
		overflow = map[string]int{}
	}
	a := &Alerter{
		cfg:       cfg,
		sp:        sp,
		wakeSend:  make(chan struct{}, 1),
		wakeTimer: make(chan struct{}, 1),
		pending:   pending,
		overflow:  overflow,
		agents:    map[string]*agentState{},
	}
	a.st.Notifier = cfg.Notifier.Name()
	a.st.Permanent = failed
	if failed > 0 {
		a.st.LastPermanent = fmt.Sprintf("%d undelivered alerts in %s", failed, sp.failed)
	}
	if len(pending) > 0 {
		cfg.Log.Info("alert spool: undelivered alerts from a previous run", "count", len(pending))
	}
	return a, nil
}

// Run delivers spooled alerts and keeps the timers (agent down, failed-login
// summaries) until ctx is done. It then returns nil, leaving undelivered
// alerts on disk for the next New. Only one Run may be active at a time.
func (a *Alerter) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("alerter is already running")
	}
	defer a.running.Store(false)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.sendLoop(ctx) }()
	go func() { defer wg.Done(); a.timeLoop(ctx) }()
	wg.Wait()
	return nil
}

// Status returns a snapshot.
func (a *Alerter) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.st
	s.Pending = len(a.pending) + a.reserved
	s.Overflow = sum(a.overflow)
	return s
}

// Login texts an operator login, unless its source is in QuietFrom (then it
// is only audited and counted in Status).
func (a *Alerter) Login(l Login) {
	now := a.cfg.Clock.Now()
	text := loginText(a.cfg.BastionName, l)
	ev := audit.Event{Time: now, Key: l.Operator, Fingerprint: l.Fingerprint, User: l.User, Target: l.Target}
	if l.Source.IsValid() {
		ev.Source = addrString(l.Source)
	}
	if a.quiet(l.Source.Addr()) {
		ev.Kind, ev.Reason, ev.Message = audit.KindAlert, KindQuietLogin, "not texted (LIFELINE_QUIET_FROM): "+text
		a.record(ev)
		a.mu.Lock()
		a.st.Quiet++
		a.st.LastQuiet = text
		a.mu.Unlock()
		return
	}
	a.enqueue(entry{Message: Message{Kind: KindLogin, Text: text, Created: now}, Subject: clean(l.Operator, 32)}, ev)
}

func (a *Alerter) quiet(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range a.cfg.QuietFrom {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// AuthFailed counts a failed authentication. Failures are summarised at most
// once per FailedLoginEvery, and only when there were at least
// FailedLoginMin of them.
func (a *Alerter) AuthFailed(source netip.Addr, user string) {
	source = source.Unmap()
	now := a.cfg.Clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	w := &a.fails
	if w.end.IsZero() {
		*w = failWindow{end: now.Add(a.cfg.FailedLoginEvery), bySource: map[netip.Addr]int{}}
		wake(a.wakeTimer)
	}
	w.total++
	if _, ok := w.bySource[source]; ok || len(w.bySource) < maxFailSources {
		w.bySource[source]++
	} else {
		w.others++
	}
}

// AgentUp records that agent has a connection. If "site down" was sent, it
// texts "site back" with the outage's length; a pending "down" is cancelled.
func (a *Alerter) AgentUp(agent Agent) {
	now := a.cfg.Clock.Now()
	a.mu.Lock()
	st := a.agent(agent)
	st.deadline = time.Time{}
	back := st.downSent
	since := st.downSince
	st.downSent = false
	a.mu.Unlock()
	wake(a.wakeTimer)
	if back {
		text := backText(a.cfg.BastionName, agent, now.Sub(since))
		a.enqueue(entry{Message: Message{Kind: KindAgentBack, Text: text, Created: now}, Subject: clean(agent.Name, 32)},
			audit.Event{Time: now, Agent: agent.Name, Fingerprint: agent.Fingerprint, DurationMS: now.Sub(since).Milliseconds()})
	}
}

// AgentDown records that agent's last connection is gone. "Site down" is
// texted only if no AgentUp follows within DownAfter.
func (a *Alerter) AgentDown(agent Agent) {
	now := a.cfg.Clock.Now()
	a.mu.Lock()
	st := a.agent(agent)
	if st.deadline.IsZero() && !st.downSent {
		st.downSince = now
		st.deadline = now.Add(a.cfg.DownAfter)
	}
	a.mu.Unlock()
	wake(a.wakeTimer)
}

// NameMoved texts that the name target (NAME:PORT) is now served by agent
// to instead of from: taken over by a newer registration of another key
// (takeover), or handed back to an earlier holder after from left. Both
// mean that connections to the name reach another machine than before.
func (a *Alerter) NameMoved(target string, to, from Agent, takeover bool) {
	now := a.cfg.Clock.Now()
	text := nameMovedText(a.cfg.BastionName, target, to, from, takeover)
	a.enqueue(entry{Message: Message{Kind: KindNameMoved, Text: text, Created: now}, Subject: clean(to.Name, 32)},
		audit.Event{Time: now, Target: target, Agent: to.Name, Fingerprint: to.Fingerprint})
}

// LinkReport texts when an agent's link verdict changes: failed (also as the
// first report), then ok again. Repeats send nothing.
func (a *Alerter) LinkReport(agent Agent, r report.LinkReport) {
	now := a.cfg.Clock.Now()
	a.mu.Lock()
	st := a.agent(agent)
	prev := st.verdict
	st.verdict = r.Verdict
	prevWhy := st.failure
	st.failure = failureKinds(r)
	a.mu.Unlock()
	var e entry
	switch {
	// A new failure, or a failed link failing for another reason (a test
	// error, then the wrong ISP): the owner needs the new reason.
	case r.Verdict == report.VerdictFailed && (prev != report.VerdictFailed || prevWhy != st.failure):
		e.Kind, e.Text = KindLinkFailed, linkFailedText(a.cfg.BastionName, agent, r)
	case r.Verdict == report.VerdictOK && prev == report.VerdictFailed:
		e.Kind, e.Text = KindLinkOK, linkOKText(a.cfg.BastionName, agent, r)
	default:
		return
	}
	e.Created, e.Subject = now, clean(agent.Name, 32)
	a.enqueue(e, audit.Event{Time: now, Agent: agent.Name, Fingerprint: agent.Fingerprint})
}

// failureKinds names what kinds of failure a report has, ignoring the
// figures in them: the first word of each reason ("wrong", "download",
// "latency", "speed"), sorted. Repeats of the same kinds are not texted.
func failureKinds(r report.LinkReport) string {
	if r.Verdict != report.VerdictFailed {
		return ""
	}
	kinds := make([]string, 0, len(r.Reasons))
	for _, why := range r.Reasons {
		if f := strings.Fields(why); len(f) > 0 {
			kinds = append(kinds, strings.ToLower(strings.Trim(f[0], ":")))
		}
	}
	slices.Sort(kinds)
	return strings.Join(slices.Compact(kinds), ",")
}

// agent returns the state of agent; a.mu must be held.
func (a *Alerter) agent(agent Agent) *agentState {
	st := a.agents[agent.key()]
	if st == nil {
		st = &agentState{}
		a.agents[agent.key()] = st
	}
	st.agent = agent
	return st
}

// newID is unique, sorts by creation time, and is a safe file name.
func (a *Alerter) newID(t time.Time) string {
	var r [4]byte
	_, _ = rand.Read(r[:]) // never fails (Go >= 1.24)
	return fmt.Sprintf("%016x-%06x-%08x", uint64(t.UnixNano()), a.seq.Add(1)&0xffffff, binary.BigEndian.Uint32(r[:]))
}

// enqueue audits e and spools it for delivery; when the spool is full it is
// counted into the next summary instead.
func (a *Alerter) enqueue(e entry, ev audit.Event) {
	e.ID = a.newID(e.Created)
	ev.Kind, ev.Reason, ev.Message = audit.KindAlert, e.Kind, e.Text
	a.mu.Lock()
	if len(a.pending)+a.reserved >= a.cfg.MaxSpool {
		a.overflow[e.Kind]++
		a.mu.Unlock()
		ev.Message = "spool full, counted in the next summary: " + e.Text
		a.record(ev)
		a.saveOverflow()
		wake(a.wakeSend)
		return
	}
	a.reserved++
	a.mu.Unlock()
	a.record(ev)
	err := a.sp.write(e)
	if err != nil {
		// Keep it in memory: it is still delivered unless the process dies.
		a.cfg.Log.Error("alert not spooled to disk, kept in memory", "id", e.ID, "err", err)
	}
	a.mu.Lock()
	a.reserved--
	a.pending = append(a.pending, e)
	a.mu.Unlock()
	wake(a.wakeSend)
}

// saveOverflow writes the overflow counts. Writes coalesce: a caller that
// finds a write in progress only marks the counts dirty and returns; the
// writer rewrites while they are dirty, at most a few times, then leaves the
// rest to the sender (flushOverflow), so no Login waits behind a flood.
func (a *Alerter) saveOverflow() {
	a.mu.Lock()
	a.ovDirty = true
	if a.ovWriting {
		a.mu.Unlock()
		return
	}
	a.ovWriting = true
	a.mu.Unlock()
	for i := 0; ; i++ {
		a.mu.Lock()
		if !a.ovDirty || i == 3 {
			break // with a.mu held
		}
		a.ovDirty = false
		counts := make(map[string]int, len(a.overflow))
		for k, n := range a.overflow {
			if n > 0 {
				counts[k] = n
			}
		}
		a.mu.Unlock()
		if err := a.sp.writeOverflow(counts); err != nil {
			a.cfg.Log.Error("alert overflow count not saved", "err", err)
		}
	}
	a.ovWriting = false
	dirty := a.ovDirty
	a.mu.Unlock()
	if dirty {
		wake(a.wakeSend)
	}
}

// flushOverflow saves the overflow counts if a coalesced write left them
// dirty.
func (a *Alerter) flushOverflow() {
	a.mu.Lock()
	dirty := a.ovDirty && !a.ovWriting
	a.mu.Unlock()
	if dirty {
		a.saveOverflow()
	}
}

func (a *Alerter) record(ev audit.Event) {
	if a.cfg.Audit != nil {
		a.cfg.Audit.Record(ev)
	}
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// batch is what the sender delivers next: one alert, or a summary of
// several plus the overflow counts.
type batch struct {
	entries  []entry
	overflow map[string]int
	summary  bool
	msg      Message
}

// next decides what to send now; wait > 0 means the rate limit is reached;
// ok false means there is nothing to send.
func (a *Alerter) next() (b batch, wait time.Duration, ok bool) {
	now := a.cfg.Clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.sentTimes) > 0 && !a.sentTimes[0].Add(time.Minute).After(now) {
		a.sentTimes = a.sentTimes[1:]
	}
	over := sum(a.overflow)
	if len(a.pending) == 0 && over == 0 {
		return b, 0, false
	}
	if len(a.sentTimes) >= a.cfg.PerMinute {
		return b, a.sentTimes[0].Add(time.Minute).Sub(now), true
	}
	last := a.cfg.PerMinute-len(a.sentTimes) == 1
	if len(a.pending) == 0 || over > 0 || (last && len(a.pending) > 1) {
		b.summary = true
		b.entries = slices.Clone(a.pending)
		b.overflow = make(map[string]int, len(a.overflow))
		for k, n := range a.overflow {
			b.overflow[k] = n
		}
		id := a.newID(now)
		if len(b.entries) > 0 {
			id = b.entries[0].ID
		}
		b.msg = Message{ID: fmt.Sprintf("summary-%s-%d", id, len(b.entries)+over), Kind: KindSummary, Text: summaryText(a.cfg.BastionName, b.entries, b.overflow), Created: now}
		return b, 0, true
	}
	b.entries = []entry{a.pending[0]}
	b.msg = a.pending[0].Message
	return b, 0, true
}

func (a *Alerter) sendLoop(ctx context.Context) {
	bo := &backoff.Backoff{Min: a.cfg.RetryMin, Max: a.cfg.RetryMax, Factor: 2, Jitter: true}
	for {
		a.flushOverflow()
		b, wait, ok := a.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-a.wakeSend:
				continue
			}
		}
		if wait > 0 {
			if !a.sleep(ctx, wait) {
				return
			}
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, a.cfg.SendTimeout)
		err := a.cfg.Notifier.Send(sctx, b.msg)
		cancel()
		if ctx.Err() != nil {
			return // shutting down: whatever was not accepted stays spooled
		}
		switch {
		case err == nil:
			bo.Reset()
			a.delivered(b)
			continue
		case errors.Is(err, ErrPermanent):
			a.undeliverable(b, err)
		default:
			a.mu.Lock()
			a.st.LastError = err.Error()
			a.st.LastErrorAt = a.cfg.Clock.Now()
			a.mu.Unlock()
			a.cfg.Log.Warn("alert delivery failed, will retry", "id", b.msg.ID, "notifier", a.cfg.Notifier.Name(), "attempt", int(bo.Attempt())+1, "err", err)
		}
		// After any failure pause before the next attempt: a transient
		// error is retried, and a run of permanent ones (revoked
		// credentials) must not hammer the API.
		if !a.sleep(ctx, bo.Duration()) {
			return
		}
	}
}

// sleep waits d on the Clock; false means ctx ended first.
func (a *Alerter) sleep(ctx context.Context, d time.Duration) bool {
	t := a.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// settle removes b's entries from the pending list and b's overflow counts
// and, in the same critical section, updates the status with update, so
// that Status never shows an alert as neither pending nor accounted for.
func (a *Alerter) settle(b batch, update func(st *Status)) {
	done := make(map[string]bool, len(b.entries))
	for _, e := range b.entries {
		done[e.ID] = true
	}
	a.mu.Lock()
	update(&a.st)
	a.pending = slices.DeleteFunc(a.pending, func(e entry) bool { return done[e.ID] })
	changed := false
	for k, n := range b.overflow {
		a.overflow[k] -= n
		if a.overflow[k] <= 0 {
			delete(a.overflow, k)
		}
		changed = true
	}
	a.mu.Unlock()
	if changed {
		a.saveOverflow()
	}
}

func (a *Alerter) delivered(b batch) {
	now := a.cfg.Clock.Now()
	for _, e := range b.entries {
		if err := a.sp.remove(e.ID); err != nil {
			a.cfg.Log.Error("delivered alert stays in the spool and may be sent again", "id", e.ID, "err", err)
		}
	}
	if b.summary {
		for _, e := range b.entries {
			a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: "rate_limited", Message: "held back by the SMS limit, summarised: " + e.Text})
		}
		a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: KindSummary, Message: b.msg.Text})
	}
	a.settle(b, func(st *Status) {
		a.sentTimes = append(a.sentTimes, now)
		st.Sent++
		st.LastSent = now
		st.LastError = ""
		if b.summary {
			st.RateLimited += len(b.entries) + sum(b.overflow)
		}
	})
}

func (a *Alerter) undeliverable(b batch, err error) {
	now := a.cfg.Clock.Now()
	a.cfg.Log.Error("ALERT UNDELIVERABLE: permanent failure, not retried; fix the SMS configuration", "id", b.msg.ID, "notifier", a.cfg.Notifier.Name(), "text", b.msg.Text, "err", err)
	for _, e := range b.entries {
		if serr := a.sp.setAside(e.ID, a.cfg.MaxSpool); serr != nil {
			a.cfg.Log.Error("undeliverable alert could not be set aside", "id", e.ID, "err", serr)
		}
		a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: KindUndelivered, Message: "not delivered (" + err.Error() + "): " + e.Text})
	}
	if n := sum(b.overflow); n > 0 {
		a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: KindUndelivered, Message: fmt.Sprintf("not delivered (%v): summary of %d alerts that found the spool full", err, n)})
	}
	a.settle(b, func(st *Status) {
		st.Permanent += len(b.entries) + sum(b.overflow)
		st.LastPermanent = fmt.Sprintf("%s: %v", now.UTC().Format(time.RFC3339), err)
	})
}

// timeLoop fires agent-down and failed-login deadlines.
func (a *Alerter) timeLoop(ctx context.Context) {
	for {
		next, ok := a.nextDeadline()
		var t clock.Timer
		var fire <-chan time.Time
		if ok {
			t = a.cfg.Clock.NewTimer(next.Sub(a.cfg.Clock.Now()))
			fire = t.C()
		}
		select {
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			return
		case <-a.wakeTimer:
			if t != nil {
				t.Stop()
			}
		case <-fire:
			a.fireDue()
		}
	}
}

func (a *Alerter) nextDeadline() (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, st := range a.agents {
		consider(st.deadline)
	}
	consider(a.fails.end)
	return next, !next.IsZero()
}

func (a *Alerter) fireDue() {
	now := a.cfg.Clock.Now()
	type due struct {
		e  entry
		ev audit.Event
	}
	var out []due
	a.mu.Lock()
	for _, st := range a.agents {
		if st.deadline.IsZero() || st.deadline.After(now) {
			continue
		}
		st.deadline = time.Time{}
		st.downSent = true
		ag := st.agent
		out = append(out, due{
			entry{Message: Message{Kind: KindAgentDown, Text: downText(a.cfg.BastionName, ag, st.downSince, a.cfg.DownAfter), Created: now}, Subject: clean(ag.Name, 32)},
			audit.Event{Time: now, Agent: ag.Name, Fingerprint: ag.Fingerprint, DurationMS: now.Sub(st.downSince).Milliseconds()},
		})
	}
	if w := a.fails; !w.end.IsZero() && !w.end.After(now) {
		if w.total >= a.cfg.FailedLoginMin {
			out = append(out, due{
				entry{Message: Message{Kind: KindAuthFailed, Text: failedLoginsText(a.cfg.BastionName, w.total, a.cfg.FailedLoginEvery, w.bySource, w.others), Created: now}},
				audit.Event{Time: now},
			})
		}
		a.fails = failWindow{}
	}
	a.mu.Unlock()
	for _, d := range out {
		a.enqueue(d.e, d.ev)
	}
}

// String renders s for `ssh bastion status`, one fact per line.
func (s Status) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "alerts via %s: %d pending, %d texts sent", s.Notifier, s.Pending, s.Sent)
	if !s.LastSent.IsZero() {
		fmt.Fprintf(&b, " (last %s)", s.LastSent.UTC().Format(time.RFC3339))
	}
	b.WriteString("\n")
	if s.RateLimited > 0 || s.Overflow > 0 {
		fmt.Fprintf(&b, "held back by the SMS limit: %d summarised, %d awaiting a summary\n", s.RateLimited, s.Overflow)
	}
	if s.Quiet > 0 {
		fmt.Fprintf(&b, "quiet logins (not texted): %d, last: %s\n", s.Quiet, s.LastQuiet)
	}
	if s.LastError != "" {
		fmt.Fprintf(&b, "retrying after: %s (%s)\n", s.LastError, s.LastErrorAt.UTC().Format(time.RFC3339))
	}
	if s.Permanent > 0 {
		fmt.Fprintf(&b, "UNDELIVERABLE alerts: %d, last: %s\n", s.Permanent, s.LastPermanent)
	}
	return b.String()
}
