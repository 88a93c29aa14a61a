// Package registry maps the names agents register ("pi:22") to the agent
// session holding them. No socket is bound: a name lives only here. Names
// are matched by ASCII case folding (they are DNS-style labels, checked to
// be ASCII before they get here) but the exact spelling the agent
// registered is kept, because OpenSSH clients match the forwarded-tcpip
// "connected address" against it byte for byte.
//
// A name may be held by several sessions at once: the newest registration
// is active (it gets the connections), the earlier ones stand by. When the
// active holder leaves, the newest remaining one takes over again, so a
// name is never lost while any session that registered it is connected.
package registry

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Binding is one registration of a name.
type Binding[S comparable] struct {
	Name    string // as registered by the agent
	Port    uint32
	Session S
	Since   time.Time
}

// Target renders the binding as NAME:PORT.
func (b Binding[S]) Target() string { return fmt.Sprintf("%s:%d", b.Name, b.Port) }

// Move is a change of a name's active holder caused by a departure: From
// left (unregistered or disconnected) and To, an earlier holder still
// connected, is active again.
type Move[S comparable] struct {
	From Binding[S]
	To   Binding[S]
}

// Registry is safe for concurrent use. The zero value is not usable: call New.
type Registry[S comparable] struct {
	mu sync.Mutex
	// m holds every registration of a name, oldest first; the last is active.
	m map[string][]Binding[S]
	// bySession indexes the keys of m per session, so that a session's
	// names are found without scanning every binding (10,000 agents).
	bySession map[S]map[string]struct{}
}

// New returns an empty registry.
func New[S comparable]() *Registry[S] {
	return &Registry[S]{m: make(map[string][]Binding[S]), bySession: make(map[S]map[string]struct{})}
}

func (r *Registry[S]) indexLocked(s S, k string) {
	ks, ok := r.bySession[s]
	if !ok {
		ks = make(map[string]struct{}, 1)
		r.bySession[s] = ks
	}
	ks[k] = struct{}{}
}

func (r *Registry[S]) unindexLocked(s S, k string) {
	if ks, ok := r.bySession[s]; ok {
		delete(ks, k)
		if len(ks) == 0 {
			delete(r.bySession, s)
		}
	}
}

// key folds ASCII letters only: full Unicode folding would make "ſpare"
// (long s) the same name as "spare".
func key(name string, port uint32) string {
	b := []byte(name)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return fmt.Sprintf("%s:%d", b, port)
}

// Register makes s the active holder of name:port; an earlier holder of
// another session stands by. It returns the session that was active before,
// if it was another one.
func (r *Registry[S]) Register(name string, port uint32, s S, now time.Time) (prev S, replaced bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key(name, port)
	hs := r.m[k]
	if n := len(hs); n > 0 && hs[n-1].Session != s {
		prev, replaced = hs[n-1].Session, true
	}
	hs = slices.DeleteFunc(hs, func(b Binding[S]) bool { return b.Session == s })
	r.m[k] = append(hs, Binding[S]{Name: name, Port: port, Session: s, Since: now})
	r.indexLocked(s, k)
	return prev, replaced
}

// removeLocked drops s's registration of k and reports the move if s was
// active and another holder remains.
func (r *Registry[S]) removeLocked(k string, s S) (gone Binding[S], mv *Move[S], ok bool) {
	hs := r.m[k]
	i := slices.IndexFunc(hs, func(b Binding[S]) bool { return b.Session == s })
	if i < 0 {
		return gone, nil, false
	}
	gone = hs[i]
	wasActive := i == len(hs)-1
	hs = slices.Delete(hs, i, i+1)
	if len(hs) == 0 {
		delete(r.m, k)
	} else {
		r.m[k] = hs
		if wasActive {
			mv = &Move[S]{From: gone, To: hs[len(hs)-1]}
		}
	}
	r.unindexLocked(s, k)
	return gone, mv, true
}

// Unregister removes s's registration of name:port and reports whether it
// had one. If s was active and an earlier holder remains, the move to it is
// returned.
func (r *Registry[S]) Unregister(name string, port uint32, s S) (ok bool, mv *Move[S]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, mv, ok = r.removeLocked(key(name, port), s)
	return ok, mv
}

// RemoveSession removes every registration of s. It returns the names s was
// active for and had nobody to take over (gone, sorted), and the names an
// earlier holder took over (moves).
func (r *Registry[S]) RemoveSession(s S) (gone []Binding[S], moves []Move[S]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.bySession[s] {
		hs := r.m[k]
		active := len(hs) > 0 && hs[len(hs)-1].Session == s
		b, mv, ok := r.removeLocked(k, s)
		switch {
		case !ok:
		case mv != nil:
			moves = append(moves, *mv)
		case active:
			gone = append(gone, b)
		}
	}
	delete(r.bySession, s)
	sortBindings(gone)
	slices.SortFunc(moves, func(a, b Move[S]) int { return compareBindings(a.To, b.To) })
	return gone, moves
}

// Of returns every registration of s, active or standing by, sorted.
func (r *Registry[S]) Of(s S) []Binding[S] {
	r.mu.Lock()
	out := make([]Binding[S], 0, len(r.bySession[s]))
	for k := range r.bySession[s] {
		for _, b := range r.m[k] {
			if b.Session == s {
				out = append(out, b)
			}
		}
	}
	r.mu.Unlock()
	sortBindings(out)
	return out
}

// Lookup finds the active binding for name:port.
func (r *Registry[S]) Lookup(name string, port uint32) (Binding[S], bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hs := r.m[key(name, port)]
	if len(hs) == 0 {
		return Binding[S]{}, false
	}
	return hs[len(hs)-1], true
}

// Registered reports whether s has registered name:port, active or
// standing by.
func (r *Registry[S]) Registered(name string, port uint32, s S) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.bySession[s][key(name, port)]
	return ok
}

// Holds reports how many names s has registered, active or standing by.
func (r *Registry[S]) Holds(s S) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bySession[s])
}

// Snapshot returns every active binding, sorted by name then port.
func (r *Registry[S]) Snapshot() []Binding[S] {
	r.mu.Lock()
	out := make([]Binding[S], 0, len(r.m))
	for _, hs := range r.m {
		out = append(out, hs[len(hs)-1])
	}
	r.mu.Unlock()
	sortBindings(out)
	return out
}

func compareBindings[S comparable](a, b Binding[S]) int {
	if c := cmp.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

func sortBindings[S comparable](bs []Binding[S]) {
	slices.SortFunc(bs, compareBindings[S])
}
