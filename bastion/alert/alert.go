// Package alert tells people what happens on the bastion: every operator
// login, agents going down and coming back, link checks that fail, bursts of
// failed logins. Events become short texts that are spooled to disk before
// the event call returns and are then delivered by Run through one Sender
// (Twilio SMS, or the log), with retries, a rate limit that summarises what it
// holds back, and nothing ever dropped silently: every alert is also an audit
// event.
//
// The work is split by job: intake.go turns events into alerts (the agent
// down/back and link state machines, failed-login windows), outbox.go keeps
// them durably until delivered (the spool, spool.go on disk), deliver.go
// sends them, rate-limited, summarising what it holds back.
package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/shared/clock"
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
)

// Config configures an Alerter.
type Config struct {
	// Dir is the state directory; the spool lives in Dir/alerts (created
	// 0700). Required.
	Dir string
	// Sender delivers the texts. Required.
	Sender Sender
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
	// QuietSetting names the setting QuietFrom comes from in the audit
	// event of a quiet login ("not texted (QuietSetting): ..."); empty
	// means "quiet source".
	QuietSetting string
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
	// SendTimeout bounds one Sender.Send; zero means DefaultSendTimeout.
	SendTimeout time.Duration
	// MaxSpool caps the spooled alerts (and the set-aside failures); alerts
	// beyond it are audited and counted into the next summary. Zero means
	// DefaultMaxSpool.
	MaxSpool int
}

func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("alert spool: no state directory"))
	}
	if c.Sender == nil {
		errs = append(errs, errors.New("alert: no sender"))
	}
	if c.Log == nil {
		errs = append(errs, errors.New("alert: no logger"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"agent down-after", c.DownAfter}, {"failed-login interval", c.FailedLoginEvery}, {"retry minimum", c.RetryMin}, {"retry maximum", c.RetryMax}, {"send timeout", c.SendTimeout}} {
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
	if c.QuietSetting == "" {
		c.QuietSetting = "quiet source"
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

// Status is the alerter's state for `ssh bastion status`.
type Status struct {
	// Sender names the Sender ("twilio", "log").
	Sender string `json:"notifier"`
	// Pending alerts are spooled, waiting for delivery.
	Pending int `json:"pending"`
	// Sent is how many texts the Sender accepted since start (summaries
	// count once).
	Sent     int       `json:"sent"`
	LastSent time.Time `json:"last_sent,omitzero"`
	// RateLimited is how many alerts were held back and covered by a
	// summary text since start; Overflow is how many arrived while the spool
	// was full and wait for the next summary.
	RateLimited int `json:"rate_limited"`
	Overflow    int `json:"overflow"`
	// Quiet is how many logins from Config.QuietFrom were not texted.
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
	cfg     Config
	running atomic.Bool
	in      intake   // events -> alerts (intake.go)
	box     outbox   // alerts kept until delivered (outbox.go)
	out     delivery // the send loop's own state (deliver.go)
}

// New checks cfg, opens the spool and loads the alerts a previous run left
// undelivered; Run delivers them.
func New(cfg Config) (*Alerter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	a := &Alerter{cfg: cfg}
	if err := a.box.open(cfg); err != nil {
		return nil, err
	}
	a.in.init()
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
	s := a.box.status()
	s.Sender = a.cfg.Sender.Name()
	s.Quiet, s.LastQuiet = a.in.quietCount()
	return s
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

// String renders s for `ssh bastion status`, one fact per line.
func (s Status) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "alerts via %s: %d pending, %d texts sent", s.Sender, s.Pending, s.Sent)
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
