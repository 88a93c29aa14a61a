// Package registry maps the names agents register ("pi:22") to the agent
// session holding them. No socket is bound: a name lives only here. Names
// are matched case-insensitively (they are DNS-style labels) but the exact
// spelling the agent registered is kept, because OpenSSH clients match the
// forwarded-tcpip "connected address" against it byte for byte.
package registry

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Binding is one registered name.
type Binding[S comparable] struct {
	Name    string // as registered by the agent
	Port    uint32
	Session S
	Since   time.Time
}

// Target renders the binding as NAME:PORT.
func (b Binding[S]) Target() string { return fmt.Sprintf("%s:%d", b.Name, b.Port) }

// Registry is safe for concurrent use. The zero value is not usable: call New.
type Registry[S comparable] struct {
	mu sync.Mutex
	m  map[string]Binding[S]
	// bySession indexes the keys of m per session, so that a session's
	// names are found without scanning every binding (10,000 agents).
	bySession map[S]map[string]struct{}
}

// New returns an empty registry.
func New[S comparable]() *Registry[S] {
	return &Registry[S]{m: make(map[string]Binding[S]), bySession: make(map[S]map[string]struct{})}
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

func key(name string, port uint32) string {
	return fmt.Sprintf("%s:%d", strings.ToLower(name), port)
}

// Register binds name:port to s, replacing any other session's binding (the
// newest authenticated session wins). It returns the replaced session, if any.
func (r *Registry[S]) Register(name string, port uint32, s S, now time.Time) (prev S, replaced bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key(name, port)
	old, ok := r.m[k]
	r.m[k] = Binding[S]{Name: name, Port: port, Session: s, Since: now}
	r.indexLocked(s, k)
	if ok && old.Session != s {
		r.unindexLocked(old.Session, k)
		return old.Session, true
	}
	return prev, false
}

// Unregister removes name:port only if s holds it, and reports whether it did.
func (r *Registry[S]) Unregister(name string, port uint32, s S) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key(name, port)
	if b, ok := r.m[k]; ok && b.Session == s {
		delete(r.m, k)
		r.unindexLocked(s, k)
		return true
	}
	return false
}

// RemoveSession removes every binding s holds and returns them.
func (r *Registry[S]) RemoveSession(s S) []Binding[S] {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Binding[S]
	for k := range r.bySession[s] {
		out = append(out, r.m[k])
		delete(r.m, k)
	}
	delete(r.bySession, s)
	sortBindings(out)
	return out
}

// Of returns the bindings s holds, sorted.
func (r *Registry[S]) Of(s S) []Binding[S] {
	r.mu.Lock()
	out := make([]Binding[S], 0, len(r.bySession[s]))
	for k := range r.bySession[s] {
		out = append(out, r.m[k])
	}
	r.mu.Unlock()
	sortBindings(out)
	return out
}

// Lookup finds the binding for name:port.
func (r *Registry[S]) Lookup(name string, port uint32) (Binding[S], bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.m[key(name, port)]
	return b, ok
}

// Holds reports how many bindings s holds.
func (r *Registry[S]) Holds(s S) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bySession[s])
}

// Snapshot returns every binding, sorted by name then port.
func (r *Registry[S]) Snapshot() []Binding[S] {
	r.mu.Lock()
	out := make([]Binding[S], 0, len(r.m))
	for _, b := range r.m {
		out = append(out, b)
	}
	r.mu.Unlock()
	sortBindings(out)
	return out
}

// Len is the number of bindings.
func (r *Registry[S]) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

func sortBindings[S comparable](bs []Binding[S]) {
	slices.SortFunc(bs, func(a, b Binding[S]) int {
		if c := cmp.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)); c != 0 {
			return c
		}
		return cmp.Compare(a.Port, b.Port)
	})
}
