package alert

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/audit"
)

// outbox holds the alerts one channel has not delivered yet: durably in
// the channel's spool folder and in memory, plus the counts of alerts that
// found the channel's spool full. The intake adds to it; only the
// channel's send loop takes from it and only that loop writes the overflow
// counts to disk.
type outbox struct {
	sp       *spool
	maxSpool int
	log      *slog.Logger
	wakeSend chan struct{} // an alert or an overflow count is waiting

	mu       sync.Mutex
	pending  []entry
	reserved int            // spool slots taken by writes in progress
	overflow map[string]int // alerts by kind that found the spool full
	ovSaved  bool           // overflow is what the spool's file says
	// st holds the delivery counters (Delivered, RateLimited, LastError,
	// Failed...): they change together with the pending list they
	// account for.
	st ChannelStatus
}

// open loads what a previous run left in sp, the spool of channel name.
func (o *outbox) open(sp *spool, cfg Config, name string) error {
	pending, overflow, bad, err := sp.load()
	if err != nil {
		return err
	}
	for _, e := range bad {
		cfg.Log.Error("alert spool: unreadable entry set aside", "channel", name, "err", e)
	}
	failed, err := countFiles(sp.failed)
	if err != nil {
		return fmt.Errorf("alert spool: %w", err)
	}
	if overflow == nil {
		overflow = map[string]int{}
	}
	o.sp, o.maxSpool, o.log = sp, cfg.MaxSpool, cfg.Log
	o.wakeSend = make(chan struct{}, 1)
	o.pending, o.overflow, o.ovSaved = pending, overflow, true
	o.st.Failed = failed
	if failed > 0 {
		o.st.LastFailed = fmt.Sprintf("%d undelivered alerts in %s", failed, sp.failed)
	}
	if len(pending) > 0 {
		cfg.Log.Info("alert spool: undelivered alerts from a previous run", "channel", name, "count", len(pending))
	}
	return nil
}

// newID is unique, sorts by creation time, and is a safe file name.
func (a *Alerter) newID(t time.Time) string {
	var r [4]byte
	_, _ = rand.Read(r[:]) // never fails (Go >= 1.24)
	return fmt.Sprintf("%016x-%06x-%08x", uint64(t.UnixNano()), a.seq.Add(1)&0xffffff, binary.BigEndian.Uint32(r[:]))
}

// enqueue audits e once and spools a copy of it in every channel's
// outbox (each durably, one after the other, before it returns); a
// channel whose spool is full counts it into its next summary instead.
func (a *Alerter) enqueue(e entry, ev audit.Event) {
	e.ID = a.newID(e.Created)
	if e.Detail == "" {
		e.Detail = e.Text
	}
	ev.Kind, ev.Reason, ev.Message = audit.KindAlert, e.Kind, e.Text
	var queued, full []*channel
	for _, c := range a.chans {
		if c.box.reserve(e.Kind) {
			queued = append(queued, c)
		} else {
			full = append(full, c)
		}
	}
	switch {
	case len(full) > 0 && len(a.chans) == 1:
		ev.Message = "spool full, counted in the next summary: " + e.Text
	case len(full) > 0:
		ev.Message = "spool of " + channelNames(full) + " full, counted in its next summary: " + e.Text
	}
	a.record(ev)
	for _, c := range full {
		wake(c.box.wakeSend)
	}
	for _, c := range queued {
		c.box.add(e, c.name)
	}
}

// add spools e into a slot reserve took and wakes the send loop.
func (o *outbox) add(e entry, channel string) {
	if err := o.sp.write(e); err != nil {
		// Keep it in memory: it is still delivered unless the process dies.
		o.log.Error("alert not spooled to disk, kept in memory", "channel", channel, "id", e.ID, "err", err)
	}
	o.mu.Lock()
	o.reserved--
	o.pending = append(o.pending, e)
	o.mu.Unlock()
	wake(o.wakeSend)
}

// reserve takes a spool slot for an alert of kind, or, when the spool is
// full, counts it into the overflow and reports false.
func (o *outbox) reserve(kind string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.pending)+o.reserved >= o.maxSpool {
		o.overflow[kind]++
		o.ovSaved = false
		return false
	}
	o.reserved++
	return true
}

// waiting returns copies of the pending alerts, oldest first, and of the
// overflow counts.
func (o *outbox) waiting() ([]entry, map[string]int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ov := make(map[string]int, len(o.overflow))
	for k, n := range o.overflow {
		if n > 0 {
			ov[k] = n
		}
	}
	return slices.Clone(o.pending), ov
}

// saveOverflow writes the overflow counts if they changed since the last
// write. Only the send loop calls it, so writes never race.
func (o *outbox) saveOverflow() {
	o.mu.Lock()
	if o.ovSaved {
		o.mu.Unlock()
		return
	}
	o.ovSaved = true
	counts := make(map[string]int, len(o.overflow))
	for k, n := range o.overflow {
		if n > 0 {
			counts[k] = n
		}
	}
	o.mu.Unlock()
	if err := o.sp.writeOverflow(counts); err != nil {
		o.log.Error("alert overflow count not saved", "err", err)
	}
}

// settle removes b's entries from the pending list and b's overflow counts
// and, in the same critical section, updates the delivery counters with
// update, so that Status never shows an alert as neither pending nor
// accounted for.
func (o *outbox) settle(b batch, update func(st *ChannelStatus)) {
	done := make(map[string]bool, len(b.entries))
	for _, e := range b.entries {
		done[e.ID] = true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	update(&o.st)
	o.pending = slices.DeleteFunc(o.pending, func(e entry) bool { return done[e.ID] })
	for k, n := range b.overflow {
		o.overflow[k] -= n
		if o.overflow[k] <= 0 {
			delete(o.overflow, k)
		}
		o.ovSaved = false
	}
}

// status is the outbox's part of ChannelStatus: pending and overflow, and
// the delivery counters.
func (o *outbox) status() ChannelStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.st
	s.Pending = len(o.pending) + o.reserved
	s.Overflow = sum(o.overflow)
	return s
}
