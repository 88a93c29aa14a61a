package alert

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jpillora/backoff"

	"github.com/lifeline-dev/lifeline/bastion/audit"
)

// delivery is the send loop's own state; nothing else touches it.
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

// next decides what to send now; wait > 0 means the rate limit is reached;
// ok false means there is nothing to send.
func (a *Alerter) next() (b batch, wait time.Duration, ok bool) {
	now := a.cfg.Clock.Now()
	d := &a.out
	for len(d.sentTimes) > 0 && !d.sentTimes[0].Add(time.Minute).After(now) {
		d.sentTimes = d.sentTimes[1:]
	}
	pending, overflow := a.box.waiting()
	over := sum(overflow)
	if len(pending) == 0 && over == 0 {
		return b, 0, false
	}
	if len(d.sentTimes) >= a.cfg.PerMinute {
		return b, d.sentTimes[0].Add(time.Minute).Sub(now), true
	}
	last := a.cfg.PerMinute-len(d.sentTimes) == 1
	if len(pending) == 0 || over > 0 || (last && len(pending) > 1) {
		b.summary, b.entries, b.overflow = true, pending, overflow
		id := a.box.newID(now)
		if len(b.entries) > 0 {
			id = b.entries[0].ID
		}
		text, detail := summaryText(a.cfg.BastionName, b.entries, b.overflow)
		b.msg = Message{ID: fmt.Sprintf("summary-%s-%d", id, len(b.entries)+over), Kind: KindSummary, Text: text, Detail: detail, Created: now}
		return b, 0, true
	}
	b.entries = pending[:1]
	b.msg = pending[0].Message
	return b, 0, true
}

// sendLoop delivers what the outbox holds until ctx is done. It is the
// only writer of the overflow counts on disk.
func (a *Alerter) sendLoop(ctx context.Context) {
	bo := &backoff.Backoff{Min: a.cfg.RetryMin, Max: a.cfg.RetryMax, Factor: 2, Jitter: true}
	for {
		a.box.saveOverflow()
		b, wait, ok := a.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-a.box.wakeSend:
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
		err := a.cfg.Sender.Send(sctx, b.msg)
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
			now := a.cfg.Clock.Now()
			a.box.settle(batch{}, func(st *Status) { st.LastError, st.LastErrorAt = err.Error(), now })
			a.cfg.Log.Warn("alert delivery failed, will retry", "id", b.msg.ID, "notifier", a.cfg.Sender.Name(), "attempt", int(bo.Attempt())+1, "err", err)
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

func (a *Alerter) delivered(b batch) {
	now := a.cfg.Clock.Now()
	for _, e := range b.entries {
		if err := a.box.sp.remove(e.ID); err != nil {
			a.cfg.Log.Error("delivered alert stays in the spool and may be sent again", "id", e.ID, "err", err)
		}
	}
	if b.summary {
		for _, e := range b.entries {
			a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: "rate_limited", Message: "held back by the SMS limit, summarised: " + e.Text})
		}
		a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: KindSummary, Message: b.msg.Text})
	}
	a.out.sentTimes = append(a.out.sentTimes, now)
	a.box.settle(b, func(st *Status) {
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
	a.cfg.Log.Error("ALERT UNDELIVERABLE: permanent failure, not retried; fix the SMS configuration", "id", b.msg.ID, "notifier", a.cfg.Sender.Name(), "text", b.msg.Text, "err", err)
	for _, e := range b.entries {
		if serr := a.box.sp.setAside(e.ID, a.cfg.MaxSpool); serr != nil {
			a.cfg.Log.Error("undeliverable alert could not be set aside", "id", e.ID, "err", serr)
		}
		a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: KindUndelivered, Message: "not delivered (" + err.Error() + "): " + e.Text})
	}
	if n := sum(b.overflow); n > 0 {
		a.record(audit.Event{Time: now, Kind: audit.KindAlert, Reason: KindUndelivered, Message: fmt.Sprintf("not delivered (%v): summary of %d alerts that found the spool full", err, n)})
	}
	a.box.settle(b, func(st *Status) {
		st.Permanent += len(b.entries) + sum(b.overflow)
		st.LastPermanent = fmt.Sprintf("%s: %v", now.UTC().Format(time.RFC3339), err)
	})
	a.box.saveOverflow()
}
