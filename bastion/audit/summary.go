package audit

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline/shared/clock"
)

// Defaults of SummaryOptions.
const (
	// SummaryInterval is how often a Summarizer writes its summaries.
	SummaryInterval = time.Minute
	// SummaryKeys is how many sources (or sessions) a Summarizer tracks one
	// by one in an interval.
	SummaryKeys = 10000
)

// lastReasonBytes bounds the reason of the last event quoted in a summary;
// identityBytes bounds each identity field a Summarizer keeps of a session.
const (
	lastReasonBytes = 200
	identityBytes   = 256
)

// SummaryOptions configures NewSummarizer. The zero value of each field
// means its default.
type SummaryOptions struct {
	// Interval between summaries; 0 means SummaryInterval.
	Interval time.Duration
	// MaxKeys bounds the sources tracked one by one in an interval; events
	// from further sources are counted together. 0 means SummaryKeys.
	MaxKeys int
	// Clock times the intervals; nil means clock.Real{}.
	Clock clock.Clock
}

// Summarizer is a Recorder that keeps refusals from flooding the log it
// wraps. For events of the kinds KindRefused, KindAuthFailed and KindBanned,
// the first event of each kind from one source in an interval is passed on
// in full and the rest are only counted; at the end of the interval one
// summary event (see Event) per source stands for them, with the same Kind,
// Count set, Source the address without port, and a Reason such as
//
//	41 more refusals like this from 198.51.100.7 in 1m0s (last: more than 64 connections pending authentication)
//
// A source is the address of Event.Source ("ip:port" or "[ip]:port"): an
// IPv4 address (v4-mapped IPv6 addresses count as IPv4) or the /64 of an
// IPv6 address, since one host may hold a whole /64. An event with a Session
// is counted per session instead, and its summary also carries the session
// and identity of the first event.
//
// Memory is bounded: past MaxKeys sources in one interval, events from
// further sources are not passed on but counted in one bucket per kind,
// summarised with Source "" and a Reason such as "N refusals from M other
// sources in 1m0s (...)"; M is exact up to MaxKeys, then "more than M". So a
// Summarizer holds at most 2*MaxKeys keys, and the log gets at most two lines
// per tracked source and interval plus one per kind, however large the flood.
//
// Other events, and events that already carry a Count, are passed on at
// once, unchanged and in order. Record calls the wrapped Recorder with the
// Summarizer's lock held: it must not call back into the Summarizer.
//
// The caller must run Run for summaries to be written while the bastion runs,
// and call Flush after the last Record (after the server has stopped, before
// the wrapped log is closed) so that no count is lost.
type Summarizer struct {
	next     Recorder
	clock    clock.Clock
	interval time.Duration
	maxKeys  int

	mu        sync.Mutex
	tallies   map[tallyKey]*tally
	order     []*tally // tallies in order of their first event
	others    map[string]*otherTally
	otherSeen map[tallyKey]struct{} // at most maxKeys
}

// tallyKey is what events are counted by: kind, and "a <address>" or
// "s <session>".
type tallyKey struct{ kind, who string }

type tally struct {
	first Event // identity of the first event (its session and source)
	since time.Time
	count int64
	last  string // reason of the last counted event, cut
}

type otherTally struct {
	since    time.Time
	count    int64
	sources  int  // distinct keys seen, exact unless overflow
	overflow bool // more keys than otherSeen could hold
	last     string
}

// summarised are the kinds a Summarizer counts, in the order their "other
// sources" summaries are written, with the nouns for one and more of them.
var summarised = []struct{ kind, one, many string }{
	{KindRefused, "refusal", "refusals"},
	{KindAuthFailed, "failed login", "failed logins"},
	{KindBanned, "ban", "bans"},
}

func isSummarised(kind string) bool {
	return slices.ContainsFunc(summarised, func(s struct{ kind, one, many string }) bool { return s.kind == kind })
}

// counted returns "<n> <more><noun>" for n events of kind, e.g. "1 more
// refusal" or "2 failed logins".
func counted(n int64, more, kind string) string {
	noun := kind + " events"
	for _, s := range summarised {
		if s.kind == kind {
			noun = s.many
			if n == 1 {
				noun = s.one
			}
		}
	}
	return fmt.Sprintf("%d %s%s", n, more, noun)
}

// NewSummarizer returns a Summarizer passing events on to next; nil next
// means the events are discarded.
func NewSummarizer(next Recorder, o SummaryOptions) *Summarizer {
	if next == nil {
		next = Func(func(Event) {})
	}
	if o.Interval <= 0 {
		o.Interval = SummaryInterval
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = SummaryKeys
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	return &Summarizer{
		next: next, clock: o.Clock, interval: o.Interval, maxKeys: o.MaxKeys,
		tallies: make(map[tallyKey]*tally), others: make(map[string]*otherTally),
		otherSeen: make(map[tallyKey]struct{}),
	}
}

// Record passes e on, or counts it for a summary.
func (s *Summarizer) Record(e Event) {
	if !isSummarised(e.Kind) || e.Count > 0 {
		s.next.Record(e)
		return
	}
	src := sourceGroup(e.Source)
	k := tallyKey{kind: e.Kind, who: "a " + src}
	if e.Session != "" {
		k.who = "s " + cut(e.Session, identityBytes)
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tallies[k]; ok {
		t.count++
		t.last = cut(e.Reason, lastReasonBytes)
		return
	}
	if len(s.tallies) < s.maxKeys {
		first := Event{Kind: e.Kind, Source: src}
		if e.Session != "" {
			first.Session, first.Role, first.User = cut(e.Session, identityBytes), cut(e.Role, identityBytes), cut(e.User, identityBytes)
			first.Key, first.Fingerprint = cut(e.Key, identityBytes), cut(e.Fingerprint, identityBytes)
		}
		t := &tally{first: first, since: now}
		s.tallies[k] = t
		s.order = append(s.order, t)
		s.next.Record(e)
		return
	}
	o := s.others[e.Kind]
	if o == nil {
		o = &otherTally{since: now}
		s.others[e.Kind] = o
	}
	o.count++
	o.last = cut(e.Reason, lastReasonBytes)
	if _, seen := s.otherSeen[k]; !seen {
		if len(s.otherSeen) < s.maxKeys {
			s.otherSeen[k] = struct{}{}
			o.sources++
		} else {
			o.overflow = true
		}
	}
}

// Run writes the summaries at the end of every interval until ctx is done,
// then writes the remaining ones and returns nil.
func (s *Summarizer) Run(ctx context.Context) error {
	for {
		t := s.clock.NewTimer(s.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			s.Flush()
			return nil
		case <-t.C():
			s.Flush()
		}
	}
}

// Flush writes a summary for every source with events counted since the last
// Flush, in the order of their first events, then those of the other sources,
// and starts a new interval: the next event from each source is passed on in
// full again.
func (s *Summarizer) Flush() {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.order {
		if t.count == 0 {
			continue
		}
		span := now.Sub(t.since)
		e := t.first
		e.Time, e.Count, e.DurationMS = now, t.count, span.Milliseconds()
		from := "from " + t.first.Source
		if t.first.Source == "" {
			from = "from an unknown source"
		}
		if e.Session != "" {
			from = "in session " + e.Session + " " + from
		}
		e.Reason = fmt.Sprintf("%s like this %s in %s%s", counted(t.count, "more ", e.Kind), from, roundSpan(span), lastNote("", t.last))
		s.next.Record(e)
	}
	for _, k := range summarised {
		o := s.others[k.kind]
		if o == nil || o.count == 0 {
			continue
		}
		span := now.Sub(o.since)
		sources := fmt.Sprintf("%d other sources", o.sources)
		if o.overflow {
			sources = "more than " + sources
		}
		s.next.Record(Event{
			Time: now, Kind: k.kind, Count: o.count, DurationMS: span.Milliseconds(),
			Reason: fmt.Sprintf("%s from %s in %s (past the limit of %d sources tracked one by one%s)",
				counted(o.count, "", k.kind), sources, roundSpan(span), s.maxKeys, lastNote("; ", o.last)),
		})
	}
	clear(s.tallies)
	clear(s.order)
	s.order = s.order[:0]
	clear(s.others)
	clear(s.otherSeen)
}

// lastNote quotes the reason of the last counted event: " (last: r)" when
// sep is "", "; last: r" otherwise, or nothing when r is empty.
func lastNote(sep, r string) string {
	switch {
	case r == "":
		return ""
	case sep == "":
		return " (last: " + r + ")"
	default:
		return sep + "last: " + r
	}
}

// roundSpan rounds d for reading: to the second from one second up.
func roundSpan(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// sourceGroup returns the source an event is counted by: the IPv4 address
// (unmapped from IPv6) or IPv6 /64 of src, which is "ip:port", "[ip]:port"
// or a bare address; src itself, cut, when it is none of these.
func sourceGroup(src string) string {
	if src == "" {
		return ""
	}
	if ap, err := netip.ParseAddrPort(src); err == nil {
		return addrGroup(ap.Addr())
	}
	if a, err := netip.ParseAddr(src); err == nil {
		return addrGroup(a)
	}
	if host, _, err := net.SplitHostPort(src); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return addrGroup(a)
		}
	}
	return cut(src, 64)
}

func addrGroup(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}
