// Package ban is the bastion's built-in fail2ban: a source that fails to
// authenticate too often within a window is refused at accept for a while.
// IPv6 sources are counted per /64, since one host usually owns a whole /64.
package ban

import (
	"net/netip"
	"sync"
	"time"
)

// MaxTracked bounds memory under a scan from many addresses: beyond it, the
// oldest-expiring entries are pruned first.
const MaxTracked = 100_000

// List tracks failures per source. Safe for concurrent use.
type List struct {
	mu     sync.Mutex
	after  int
	window time.Duration
	banFor time.Duration
	now    func() time.Time
	m      map[netip.Prefix]*entry
}

type entry struct {
	first    time.Time
	failures int
	until    time.Time
}

// New returns a list that bans a source for banFor after `after` failures
// within window. after <= 0 disables banning.
func New(after int, window, banFor time.Duration, now func() time.Time) *List {
	if now == nil {
		now = time.Now
	}
	return &List{after: after, window: window, banFor: banFor, now: now, m: make(map[netip.Prefix]*entry)}
}

func source(a netip.Addr) netip.Prefix {
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
	e, ok := l.m[source(a)]
	if !ok {
		return false, time.Time{}
	}
	if now := l.now(); now.Before(e.until) {
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
	now := l.now()
	k := source(a)
	e, ok := l.m[k]
	if !ok || now.Sub(e.first) > l.window && !now.Before(e.until) {
		if len(l.m) >= MaxTracked {
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

// Len is the number of sources tracked.
func (l *List) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

func (l *List) pruneLocked(now time.Time) {
	for k, e := range l.m {
		if now.Sub(e.first) > l.window && !now.Before(e.until) {
			delete(l.m, k)
		}
	}
	// Still full (a flood within one window): drop unbanned entries.
	if len(l.m) >= MaxTracked {
		for k, e := range l.m {
			if !now.Before(e.until) {
				delete(l.m, k)
			}
		}
	}
}
