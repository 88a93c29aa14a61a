package server

import (
	"fmt"
	"runtime/debug"
	"sync"
	"time"
)

// acquire reserves a channel of this operator connection: a relay to the
// agent connection agent (direct-tcpip), or the session channel (agent nil).
// It returns the release func, or why the channel is refused.
func (c *conn) acquire(agent *conn) (release func(), reason string) {
	s := c.s
	lim := s.cfg.Limits
	relay := agent != nil
	fp := c.identity().Fingerprint
	ka := keyAgent{fp, agent}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case c.chans >= lim.MaxChannelsPerConn:
		return nil, fmt.Sprintf("this connection already has %d channels open (LIFELINE_MAX_CHANNELS_PER_CONN)", c.chans)
	case !relay && c.sessions >= 1:
		return nil, "one session channel at a time: only `status` and `hold` run here"
	case s.keyChans[fp] >= lim.MaxChannelsPerKey:
		return nil, fmt.Sprintf("this key already has %d channels open over all its connections (LIFELINE_MAX_CHANNELS_PER_KEY)", s.keyChans[fp])
	case relay && s.keyAgentChans[ka] >= lim.MaxChannelsPerAgent:
		return nil, fmt.Sprintf("this key already has %d connections open to this site's agent (LIFELINE_MAX_CHANNELS_PER_AGENT): others may need it too", s.keyAgentChans[ka])
	case relay && s.relays >= lim.MaxChannels:
		return nil, fmt.Sprintf("the jump host has %d relayed connections open, its limit (LIFELINE_MAX_CHANNELS): try again shortly", s.relays)
	}
	c.chans++
	s.keyChans[fp]++
	if relay {
		s.keyAgentChans[ka]++
		s.relays++
		s.peak = max(s.peak, s.relays)
	} else {
		c.sessions++
	}
	c.kick()
	var once sync.Once
	return func() { once.Do(func() { c.releaseChannel(ka) }) }, ""
}

// keyAgent is one operator key's relays to one agent connection.
type keyAgent struct {
	fingerprint string
	agent       *conn
}

func (c *conn) releaseChannel(ka keyAgent) {
	s := c.s
	relay := ka.agent != nil
	fp := ka.fingerprint
	s.mu.Lock()
	c.chans--
	if c.chans == 0 {
		c.idleSince = s.cfg.Clock.Now()
	}
	if s.keyChans[fp]--; s.keyChans[fp] <= 0 {
		delete(s.keyChans, fp)
	}
	free := false
	if relay {
		if s.keyAgentChans[ka]--; s.keyAgentChans[ka] <= 0 {
			delete(s.keyAgentChans, ka)
		}
		s.relays--
		// Relays that stalled hold up to a window each; once they are all
		// gone, give the memory back to the system instead of keeping the
		// peak for the next GC cycles.
		now := s.cfg.Clock.Now()
		if s.relays == 0 && s.peak >= freeAfterRelays && now.Sub(s.freedAt) > 10*time.Second {
			free, s.peak, s.freedAt = true, 0, now
		}
	} else {
		c.sessions--
	}
	s.mu.Unlock()
	c.kick()
	if free {
		debug.FreeOSMemory()
	}
}

// freeAfterRelays: memory is returned at once after this many relays were
// open together (each may have buffered megabytes).
const freeAfterRelays = 4

// bucket is a token bucket: rate requests a second, bursts of twice that.
// The global-request loop and the channel loop share it.
type bucket struct {
	mu      sync.Mutex
	rate    float64
	tokens  float64
	last    time.Time
	window  time.Time // start of the current 10 s flood window
	refused int       // refused in the current window
}

func newBucket(rate int, now time.Time) *bucket {
	return &bucket{rate: float64(rate), tokens: float64(2 * rate), last: now, window: now}
}

// reportBurst link reports may come at once (a reconnect resends the last
// one, and a new check may follow at once); then one per ReportEvery.
const reportBurst = 3

// reportBudget is an agent key's allowance of link reports.
type reportBudget struct {
	tokens float64
	last   time.Time
}

func (b *reportBudget) take(now time.Time, every time.Duration) bool {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.tokens+float64(d)/float64(every), reportBurst)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// floodWindow and floodFactor: a key refused more than floodFactor times
// its per-second allowance within one window is flooding, not bursting: a
// client that honours replies never gets there. floodPenalty: how long a
// flooding key's logins are then refused.
const (
	floodWindow  = 10 * time.Second
	floodFactor  = 5
	floodPenalty = time.Minute
)

// take reports whether a request may go ahead, and whether the key is
// flooding.
func (b *bucket) take(now time.Time) (ok, flooding bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.tokens+d.Seconds()*b.rate, 2*b.rate)
		b.last = now
	}
	if now.Sub(b.window) >= floodWindow {
		b.window, b.refused = now, 0
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, false
	}
	b.refused++
	return false, float64(b.refused) > floodFactor*b.rate
}
