package netsetup

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// fakeFirewall keeps lifeline's rules in memory.
type fakeFirewall struct {
	mu        sync.Mutex
	installed *Rules
	applies   int
	failApply error
	warnings  []string
}

func (f *fakeFirewall) Apply(r Rules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failApply != nil {
		return f.failApply
	}
	f.applies++
	f.installed = &r
	return nil
}

func (f *fakeFirewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.installed = nil
	return nil
}

func (f *fakeFirewall) Inspect(r Rules) (FirewallState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := FirewallState{Present: f.installed != nil, Warnings: f.warnings}
	if f.installed != nil && *f.installed != r {
		st.Differences = []string{fmt.Sprintf("have %+v", *f.installed)}
	}
	return st, nil
}

func (f *fakeFirewall) get() *Rules {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.installed
}

// fakeRouter is a main routing table holding lifeline's routes (and others',
// in foreign, which it never lets lifeline delete).
type fakeRouter struct {
	mu      sync.Mutex
	owned   []Route
	foreign []Route
	failAdd map[netip.Addr]error
	// lookup answers Get first (as a policy rule would); then lifeline's
	// routes; anything else goes via defaultGW dev eth0.
	lookup    map[netip.Addr]Lookup
	defaultGW netip.Addr
}

func (f *fakeRouter) Owned() ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.owned), nil
}

func (f *fakeRouter) Add(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failAdd[r.Dst]; err != nil {
		return fmt.Errorf("add route %s: %w", r, err)
	}
	for _, have := range append(slices.Clone(f.owned), f.foreign...) {
		if have.Dst == r.Dst && have.Metric == r.Metric {
			return fmt.Errorf("add route %s: exists", r)
		}
	}
	f.owned = append(f.owned, r)
	return nil
}

func (f *fakeRouter) Delete(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.Index(f.owned, r)
	if i < 0 {
		return fmt.Errorf("delete route %s: no such process", r)
	}
	f.owned = slices.Delete(f.owned, i, i+1)
	return nil
}

func (f *fakeRouter) Get(dst netip.Addr) (Lookup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.lookup[dst]; ok {
		return l, nil
	}
	for _, r := range f.owned {
		if r.Dst == dst && !r.Unreachable {
			dev := r.Dev
			if dev == "" {
				dev = "up0"
			}
			return Lookup{Gateway: r.Gateway, Device: dev}, nil
		}
	}
	return Lookup{Gateway: f.defaultGW, Device: "eth0"}, nil
}

func (f *fakeRouter) routes() []Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.owned)
	sortRoutes(out)
	return out
}

type fakeSysctl struct {
	mu      sync.Mutex
	vals    map[string]string
	failSet error
}

func (f *fakeSysctl) Get(name string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vals[name]
	if !ok {
		return "", fmt.Errorf("read sysctl %s: no such file", name)
	}
	return v, nil
}

func (f *fakeSysctl) Set(name, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSet != nil {
		return fmt.Errorf("write sysctl %s: %w", name, f.failSet)
	}
	f.vals[name] = value
	return nil
}

func (f *fakeSysctl) get(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.vals[name]
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	a, ok := f[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	return a, nil
}

// world is one set of fakes.
type world struct {
	fw     *fakeFirewall
	router *fakeRouter
	sysctl *fakeSysctl
	ifaces []string
}

func newWorld() *world {
	return &world{
		fw:     &fakeFirewall{},
		router: &fakeRouter{defaultGW: netip.MustParseAddr("192.168.1.1")},
		sysctl: &fakeSysctl{vals: map[string]string{ipForward: "0"}},
		ifaces: []string{"lo", "eth0", "tun0", "wlan0"},
	}
}

func (w *world) options() Options {
	return Options{
		Firewall: w.fw,
		Router:   w.router,
		Sysctl:   w.sysctl,
		Resolver: fakeResolver{
			"bastion.example": {netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8::10")},
			"b2.example":      {netip.MustParseAddr("203.0.113.11"), netip.MustParseAddr("203.0.113.10")},
		},
		Interfaces: func() ([]string, error) { return slices.Clone(w.ifaces), nil },
	}
}
