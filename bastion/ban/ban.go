// Package ban is the bastion's built-in fail2ban: a source that fails to
// authenticate too often within a window is refused at accept for a while.
// IPv6 sources are counted per /64, since one host usually owns a whole /64.
package ban

import (
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline/shared/clock"
)

// MaxTracked bounds memory under a scan from many addresses. When the list
// is full, expired entries are pruned first, then sources that are counting
// failures but not banned, then the bans ending soonest, down to 90% of
// MaxTracked (so a flood costs amortized O(log n) per new source).
const MaxTracked = 100_000

// List tracks failures per source. Safe for concurrent use.
type List struct {
	max    int // MaxTracked; tests lower it
	mu     sync.Mutex
	after  int
	window time.Duration
	banFor time.Duration
	clock  clock.Clock
	m      map[netip.Prefix]*entry
}

type entry struct {
	first    time.Time
	failures int
	until    time.Time
}

// New returns a list that bans a source for banFor after `after` failures
// within window, reading the time from clk (nil means clock.Real{}).
// after <= 0 disables banning.
func New(after int, window, banFor time.Duration, clk clock.Clock) *List {
	if clk == nil {
		clk = clock.Real{}
	}
	return &List{max: MaxTracked, after: after, window: window, banFor: banFor, clock: clk, m: make(map[netip.Prefix]*entry)}
}

// Source is the unit failures are counted per: an IPv4 address, or the /64
// holding an IPv6 address. IPv4-mapped IPv6 addresses are unmapped first
// and zones dropped; an invalid address gives the zero Prefix.
func Source(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// Banned reports whether a is banned now, and until when.
func (l *List) Banned(a netip.Addr) (bool, time.Time) {
	if l.after <= 0 {
		return false, time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[Source(a)]
	if !ok {
		return false, time.Time{}
	}
	if now := l.clock.Now(); now.Before(e.until) {
		return true, e.until
	}
	return false, time.Time{}
}

// Fail records one failed authentication from a and reports whether this
// failure started a ban.
func (l *List) Fail(a netip.Addr) (banned bool) {
	if l.after <= 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	k := Source(a)
	e, ok := l.m[k]
	if !ok || now.Sub(e.first) > l.window && !now.Before(e.until) {
		if len(l.m) >= l.max {
			l.pruneLocked(now)
		}
		e = &entry{first: now}
		l.m[k] = e
	}
	if now.Before(e.until) {
		return false
	}
	e.failures++
	if e.failures >= l.after {
		e.until = now.Add(l.banFor)
		e.failures = 0
		e.first = now
		return true
	}
	return false
}

// pruneLocked makes room: see MaxTracked.
func (l *List) pruneLocked(now time.Time) {
	low := l.max - max(l.max/10, 1)
	var banned []netip.Prefix
	for k, e := range l.m {
		switch {
		case now.Before(e.until):
			banned = append(banned, k)
		case now.Sub(e.first) > l.window:
			delete(l.m, k)
		}
	}
	// Still full (a flood within one window): drop unbanned entries.
	if len(l.m) > low {
		for k, e := range l.m {
			if !now.Before(e.until) {
				delete(l.m, k)
			}
		}
	}
	// Still full (a flood of bans): drop the bans ending soonest.
	if len(l.m) > low {
		sort.Slice(banned, func(i, j int) bool { return l.m[banned[i]].until.Before(l.m[banned[j]].until) })
		for _, k := range banned[:len(l.m)-low] {
			delete(l.m, k)
		}
	}
}
