package gate

import (
	"net/netip"

	"github.com/lifeline-dev/lifeline/bastion/ban"
)

// Stats is a snapshot of the gate, for tests.
type Stats struct {
	Pending   int               // connections admitted, neither Authenticated nor Done nor evicted
	Sources   int               // sources holding at least one of them
	Throttled int               // sources throttled now
	Trusted   int               // sources trusted now
	Tracked   int               // entries in the throttle-count map (at most MaxTracked)
	Evictions uint64            // pending connections closed to make room, since New
	Refused   map[Reason]uint64 // refusals since New, by reason
}

// Trusted reports whether a's source authenticated a key within TrustFor.
func (g *Gate) Trusted(a netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.trustedLocked(ban.Source(a), g.cfg.Clock.Now())
}

// Stats returns a snapshot. It walks the per-source maps.
func (g *Gate) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.cfg.Clock.Now()
	s := Stats{
		Pending:   g.total,
		Sources:   len(g.pending),
		Tracked:   len(g.ends),
		Evictions: g.evictions,
		Refused:   make(map[Reason]uint64, len(g.refused)),
	}
	for r, n := range g.refused {
		s.Refused[r] = n
	}
	for _, e := range g.ends {
		if now.Before(e.until) {
			s.Throttled++
		}
	}
	for _, until := range g.trust {
		if now.Before(until) {
			s.Trusted++
		}
	}
	return s
}
