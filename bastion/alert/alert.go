// Package alert tells people what happens on the bastion: every operator
// login, agents going down and coming back, link checks that fail, bursts of
// failed logins. Events become short texts that are spooled to disk before
// the event call returns and are then delivered by Run through every
// channel (Twilio SMS, e-mail, a webhook, or the log), with retries, a rate
// limit that summarises what it holds back, and nothing ever dropped
// silently: every alert is also an audit event.
//
// Channels are independent: each has its own copy of every alert in its own
// spool folder, its own send loop, rate limit, backoff and set-aside
// failures, so a channel that is down, slow or out of credit neither delays
// nor loses what the others deliver, and an alert leaves a channel's outbox
// only when that channel accepted it.
//
// The work is split by job: intake.go turns events into alerts (the agent
// down/back and link state machines, failed-login windows), outbox.go keeps
// each channel's alerts durably until delivered (the spool, spool.go on
// disk), deliver.go sends them, rate-limited, summarising what it holds
// back; channel.go opens the channels.
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
	// 0700), one folder per channel (Dir/alerts/<channel name>, 0700).
	// Required.
	Dir string
	// Channels deliver every alert, each its own copy, in this order of
	// importance: the first one fills the top-level fields of Status.
	// Empty means one channel of Sender, limited by PerMinute.
	Channels []Channel
	// Sender is the only channel when Channels is empty; required then,
	// ignored otherwise.
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
	// PerMinute is the most messages a channel sends in any minute (a
	// Channel's own PerMinute wins); when alerts are held back the last
	// message of the minute summarises them. Zero means DefaultPerMinute.
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
	// MaxSpool caps the spooled alerts of each channel (and its set-aside
	// failures); alerts beyond it are audited and counted into that
	// channel's next summary. Zero means DefaultMaxSpool.
	MaxSpool int
}

// Channel is one way alerts reach people.
type Channel struct {
	// Sender delivers the channel's messages. Required. Each Sender takes
	// the form of Message it suits: an SMS sends Text (one segment), e-mail
	// and webhooks send Detail.
	Sender Sender
	// Name names the channel in status, logs and audit events, and is its
	// spool folder's name: keep it stable across restarts, or alerts
	// spooled under the old name are not delivered. Lowercase letters,
	// digits and '-'; unique; empty means Sender.Name().
	Name string
	// PerMinute is the most messages the channel sends in any minute; zero
	// means Config.PerMinute.
	PerMinute int
}

func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("alert spool: no state directory"))
	}
	if len(c.Channels) == 0 && c.Sender == nil {
		errs = append(errs, errors.New("alert: no sender"))
	}
	errs = append(errs, checkChannels(c.Channels)...)
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
	if len(c.Channels) == 0 {
		c.Channels = []Channel{{Sender: c.Sender}}
	}
	chans := make([]Channel, len(c.Channels))
	for i, ch := range c.Channels {
		if ch.Name == "" {
			ch.Name = ch.Sender.Name()
		}
		if ch.PerMinute == 0 {
			ch.PerMinute = c.PerMinute
		}
		chans[i] = ch
	}
	c.Channels = chans
}

// Status is the alerter's state for `ssh bastion status`. The top-level
// delivery fields are those of the first channel (the --json names of the
// releases before channels); Channels has every channel.
type Status struct {
	// Sender names the first channel ("twilio", "log").
	Sender string `json:"notifier"`
	// Pending alerts are spooled, waiting for delivery.
	Pending int `json:"pending"`
	// Sent is how many messages the Sender accepted since start (summaries
	// count once).
	Sent     int       `json:"sent"`
	LastSent time.Time `json:"last_sent,omitzero"`
	// RateLimited is how many alerts were held back and covered by a
	// summary since start; Overflow is how many arrived while the spool
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
	// Channels is every channel, in Config.Channels order.
	Channels []ChannelStatus `json:"channels"`
}

// ChannelStatus is one channel's delivery state.
type ChannelStatus struct {
	// Name is the channel's name ("twilio", "email", "webhook", "log").
	Name string `json:"name"`
	// PerMinute is the channel's rate limit.
	PerMinute int `json:"per_minute"`
	// Pending alerts are in the channel's outbox, waiting for it.
	Pending int `json:"pending"`
	// Delivered is how many messages the channel accepted since start
	// (summaries count once); LastDelivered when it last did.
	Delivered     int       `json:"delivered"`
	LastDelivered time.Time `json:"last_delivered,omitzero"`
	// RateLimited and Overflow are as in Status, for this channel.
	RateLimited int `json:"rate_limited"`
	Overflow    int `json:"overflow"`
	// LastError is the last transient error ("" after a success), and
	// when it happened.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Failed counts alerts set aside after a permanent failure (including
	// those in the channel's failed/ folder at start); LastFailed says when
	// and why the last one was.
	Failed     int    `json:"failed"`
	LastFailed string `json:"last_failed,omitempty"`
}

// Alerter turns bastion events into delivered messages. Create it with New
// and run Run; the event methods are safe for concurrent use and return at
// once (after a local fsync per channel), whether or not Run is running.
type Alerter struct {
	cfg     Config
	running atomic.Bool
	seq     atomic.Uint64 // for newID
	in      intake        // events -> alerts (intake.go)
	chans   []*channel    // each with its outbox and send loop (channel.go)
}

// New checks cfg, opens every channel's spool, moves the alerts a release
// before channels left in the spool into every channel, and loads what a
// previous run left undelivered; Run delivers them.
func New(cfg Config) (*Alerter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	a := &Alerter{cfg: cfg}
	if err := a.openChannels(); err != nil {
		return nil, err
	}
	a.in.init()
	return a, nil
}

// Run delivers spooled alerts, every channel on its own, and keeps the
// timers (agent down, failed-login summaries) until ctx is done. It then
// returns nil, leaving undelivered alerts on disk for the next New. Only
// one Run may be active at a time.
func (a *Alerter) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("alerter is already running")
	}
	defer a.running.Store(false)
	var wg sync.WaitGroup
	wg.Add(1 + len(a.chans))
	for _, c := range a.chans {
		go func() { defer wg.Done(); c.sendLoop(ctx) }()
	}
	go func() { defer wg.Done(); a.timeLoop(ctx) }()
	wg.Wait()
	return nil
}

// Status returns a snapshot.
func (a *Alerter) Status() Status {
	var s Status
	for _, c := range a.chans {
		s.Channels = append(s.Channels, c.status())
	}
	first := s.Channels[0]
	s.Sender, s.Pending = first.Name, first.Pending
	s.Sent, s.LastSent = first.Delivered, first.LastDelivered
	s.RateLimited, s.Overflow = first.RateLimited, first.Overflow
	s.LastError, s.LastErrorAt = first.LastError, first.LastErrorAt
	s.Permanent, s.LastPermanent = first.Failed, first.LastFailed
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

// String renders s for `ssh bastion status`, one fact per line: with one
// channel as before channels existed, with several one block per channel.
func (s Status) String() string {
	var b strings.Builder
	if len(s.Channels) <= 1 {
		fmt.Fprintf(&b, "alerts via %s: %d pending, %d texts sent", s.Sender, s.Pending, s.Sent)
		if !s.LastSent.IsZero() {
			fmt.Fprintf(&b, " (last %s)", s.LastSent.UTC().Format(time.RFC3339))
		}
		b.WriteString("\n")
		if s.RateLimited > 0 || s.Overflow > 0 {
			fmt.Fprintf(&b, "held back by the SMS limit: %d summarised, %d awaiting a summary\n", s.RateLimited, s.Overflow)
		}
	} else {
		names := make([]string, len(s.Channels))
		for i, c := range s.Channels {
			names[i] = c.Name
		}
		fmt.Fprintf(&b, "alerts via %d channels: %s\n", len(s.Channels), strings.Join(names, ", "))
		for _, c := range s.Channels {
			c.write(&b)
		}
	}
	if s.Quiet > 0 {
		fmt.Fprintf(&b, "quiet logins (not texted): %d, last: %s\n", s.Quiet, s.LastQuiet)
	}
	if len(s.Channels) <= 1 {
		if s.LastError != "" {
			fmt.Fprintf(&b, "retrying after: %s (%s)\n", s.LastError, s.LastErrorAt.UTC().Format(time.RFC3339))
		}
		if s.Permanent > 0 {
			fmt.Fprintf(&b, "UNDELIVERABLE alerts: %d, last: %s\n", s.Permanent, s.LastPermanent)
		}
	}
	return b.String()
}

// write renders c as the lines of one channel, indented.
func (c ChannelStatus) write(b *strings.Builder) {
	fmt.Fprintf(b, "  %s: %d pending, %d delivered", c.Name, c.Pending, c.Delivered)
	if !c.LastDelivered.IsZero() {
		fmt.Fprintf(b, " (last %s)", c.LastDelivered.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(b, ", at most %d a minute\n", c.PerMinute)
	if c.RateLimited > 0 || c.Overflow > 0 {
		fmt.Fprintf(b, "    held back by its limit: %d summarised, %d awaiting a summary\n", c.RateLimited, c.Overflow)
	}
	if c.LastError != "" {
		fmt.Fprintf(b, "    retrying after: %s (%s)\n", c.LastError, c.LastErrorAt.UTC().Format(time.RFC3339))
	}
	if c.Failed > 0 {
		fmt.Fprintf(b, "    UNDELIVERABLE alerts: %d, last: %s\n", c.Failed, c.LastFailed)
	}
}
