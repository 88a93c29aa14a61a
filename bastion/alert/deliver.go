package alert

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jpillora/backoff"

	"github.com/lifeline-dev/lifeline/bastion/audit"
)

// delivery is a channel's send loop's own state; nothing else touches it.
type delivery struct {
	sentTimes []time.Time // accepted sends within the last minute, oldest first
}

// batch is what the sender delivers next: one alert, or a summary of
// several plus the overflow counts.
type batch struct {
	entries  []entry
	overflow map[string]int
	summary  bool
	msg      Message
}

// next decides what c sends now; wait > 0 means its rate limit is reached;
// ok false means there is nothing to send.
func (c *channel) next() (b batch, wait time.Duration, ok bool) {
	cfg := &c.a.cfg
	now := cfg.Clock.Now()
	d := &c.out
	for len(d.sentTimes) > 0 && !d.sentTimes[0].Add(time.Minute).After(now) {
		d.sentTimes = d.sentTimes[1:]
	}
	pending, overflow := c.box.waiting()
	over := sum(overflow)
	if len(pending) == 0 && over == 0 {
		return b, 0, false
	}
	if len(d.sentTimes) >= c.perMinute {
		return b, d.sentTimes[0].Add(time.Minute).Sub(now), true
	}
	last := c.perMinute-len(d.sentTimes) == 1
	if len(pending) == 0 || over > 0 || (last && len(pending) > 1) {
		b.summary, b.entries, b.overflow = true, pending, overflow
		id := c.a.newID(now)
		if len(b.entries) > 0 {
			id = b.entries[0].ID
		}
		text, detail := summaryText(cfg.BastionName, b.entries, b.overflow)
		b.msg = Message{ID: fmt.Sprintf("summary-%s-%d", id, len(b.entries)+over), Kind: KindSummary, Text: text, Detail: detail, Created: now}
		return b, 0, true
	}
	b.entries = pending[:1]
	b.msg = pending[0].Message
	return b, 0, true
}

// sendLoop delivers what c's outbox holds until ctx is done. It is the
// only writer of c's overflow counts on disk. Nothing it waits for (the
// rate limit, a backoff, a Send that hangs until SendTimeout) holds back
// another channel.
func (c *channel) sendLoop(ctx context.Context) {
	cfg := &c.a.cfg
	bo := &backoff.Backoff{Min: cfg.RetryMin, Max: cfg.RetryMax, Factor: 2, Jitter: true}
	for {
		c.box.saveOverflow()
		b, wait, ok := c.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-c.box.wakeSend:
				continue
			}
		}
		if wait > 0 {
			if !c.sleep(ctx, wait) {
				return
			}
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, cfg.SendTimeout)
		err := c.sender.Send(sctx, b.msg)
		cancel()
		if ctx.Err() != nil {
			return // shutting down: whatever was not accepted stays spooled
		}
		switch {
		case err == nil:
			bo.Reset()
			c.delivered(b)
			continue
		case errors.Is(err, ErrPermanent):
			c.undeliverable(b, err)
		default:
			now := cfg.Clock.Now()
			c.box.settle(batch{}, func(st *ChannelStatus) { st.LastError, st.LastErrorAt = err.Error(), now })
			cfg.Log.Warn("alert delivery failed, will retry", "id", b.msg.ID, "channel", c.name, "attempt", int(bo.Attempt())+1, "err", err)
		}
		// After any failure pause before the next attempt: a transient
		// error is retried, and a run of permanent ones (revoked
		// credentials) must not hammer the API.
		if !c.sleep(ctx, bo.Duration()) {
			return
		}
	}
}

// sleep waits d on the Clock; false means ctx ended first.
func (c *channel) sleep(ctx context.Context, d time.Duration) bool {
	t := c.a.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

func (c *channel) delivered(b batch) {
	a := c.a
	now := a.cfg.Clock.Now()
	for _, e := range b.entries {
		if err := c.box.sp.remove(e.ID); err != nil {
			a.cfg.Log.Error("delivered alert stays in the spool and may be sent again", "channel", c.name, "id", e.ID, "err", err)
		}
	}
	if b.summary {
		for _, e := range b.entries {
			a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: "rate_limited", Message: "held back by the " + c.name + " limit, summarised: " + e.Text})
		}
		a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: KindSummary, Message: c.name + ": " + b.msg.Text})
	}
	c.out.sentTimes = append(c.out.sentTimes, now)
	c.box.settle(b, func(st *ChannelStatus) {
		st.Delivered++
		st.LastDelivered = now
		st.LastError = ""
		if b.summary {
			st.RateLimited += len(b.entries) + sum(b.overflow)
		}
	})
}

// undeliverable sets b aside in c's failed/ folder: the other channels'
// copies are theirs and stay.
func (c *channel) undeliverable(b batch, err error) {
	a := c.a
	now := a.cfg.Clock.Now()
	a.cfg.Log.Error("ALERT UNDELIVERABLE: permanent failure, not retried; fix the "+c.name+" configuration", "id", b.msg.ID, "channel", c.name, "text", b.msg.Text, "err", err)
	for _, e := range b.entries {
		if serr := c.box.sp.setAside(e.ID, a.cfg.MaxSpool); serr != nil {
			a.cfg.Log.Error("undeliverable alert could not be set aside", "channel", c.name, "id", e.ID, "err", serr)
		}
		a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: KindUndelivered, Message: "not delivered by " + c.name + " (" + err.Error() + "): " + e.Text})
	}
	if n := sum(b.overflow); n > 0 {
		a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: KindUndelivered, Message: fmt.Sprintf("not delivered by %s (%v): summary of %d alerts that found the spool full", c.name, err, n)})
	}
	c.box.settle(b, func(st *ChannelStatus) {
		st.Failed += len(b.entries) + sum(b.overflow)
		st.LastFailed = fmt.Sprintf("%s: %v", now.UTC().Format(time.RFC3339), err)
	})
	c.box.saveOverflow()
}
