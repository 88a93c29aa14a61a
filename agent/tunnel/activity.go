package tunnel

import (
	"sync"
	"time"
)

// activity counts the forwarded channels the agent holds over every
// bastion link: an operator's `ssh -J bastion pi` is one of them for as
// long as the connection lasts.
type activity struct {
	mu         sync.Mutex
	open       int
	lastClosed time.Time
}

// Activity returns how many forwarded channels are open now, over all
// bastion links, and when the latest one closed on the Config's Clock (zero
// if none has closed yet). A channel counts from the moment it takes a slot
// until it is released: while its target is dialled, while it is served,
// and when it is turned away because the agent is shutting down. It may be
// called from any goroutine at any time.
func (t *Tunnels) Activity() (open int, lastClosed time.Time) {
	t.act.mu.Lock()
	defer t.act.mu.Unlock()
	return t.act.open, t.act.lastClosed
}

// takeSlot reserves one of the connection's MaxChannels slots for a channel
// and counts it open; it reports false when every slot is taken. A true
// result must be paired with exactly one releaseSlot.
func (s *conn) takeSlot() bool {
	select {
	case s.slots <- struct{}{}:
	default:
		return false
	}
	a := &s.l.t.act
	a.mu.Lock()
	a.open++
	a.mu.Unlock()
	return true
}

// releaseSlot frees the slot of a channel that is over and notes when.
func (s *conn) releaseSlot() {
	<-s.slots
	now := s.cfg.Clock.Now()
	a := &s.l.t.act
	a.mu.Lock()
	a.open--
	a.lastClosed = now
	a.mu.Unlock()
}
