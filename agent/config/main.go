package config

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/lifeline-dev/lifeline/agent/mainwatch"
)

// The defaults of the main-link watch's variables are mainwatch's; their
// tags in Config spell them out (a test keeps them equal).
const (
	defaultMainEvery     = mainwatch.DefaultEvery
	defaultMainDownAfter = mainwatch.DefaultDownAfter
)

// MainWatch is the configuration of the main-link watch (agent/mainwatch),
// parsed by ParseMainWatch.
type MainWatch struct {
	// Gateway is the main router's LAN address (LIFELINE_MAIN_GATEWAY).
	Gateway netip.Addr
	// Targets are probed in order (LIFELINE_MAIN_TARGETS), all IPv4.
	Targets []mainwatch.Target
	// Every and DownAfter are LIFELINE_MAIN_EVERY and LIFELINE_MAIN_DOWN_AFTER.
	Every, DownAfter time.Duration
}

// ParseMainGateway checks LIFELINE_MAIN_GATEWAY: the main router's address
// on the site LAN, an IPv4 literal (netsetup's host routes are IPv4). That
// it lies on a LAN subnet only the running system can tell: netsetup and
// doctor check it.
func ParseMainGateway(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("LIFELINE_MAIN_GATEWAY=%q: not an IP address: give the main router's address on the site LAN (the Pi's default gateway when it is not the router), e.g. 192.168.1.1", s)
	}
	a = a.Unmap()
	switch {
	case !a.Is4():
		return netip.Addr{}, fmt.Errorf("LIFELINE_MAIN_GATEWAY=%q: give the main router's IPv4 address on the LAN (netsetup routes the probes over IPv4 only)", s)
	case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Addr{}, fmt.Errorf("LIFELINE_MAIN_GATEWAY=%q: not a router's unicast address on the LAN", s)
	}
	return a, nil
}

// ParseMainTargets checks LIFELINE_MAIN_TARGETS (mainwatch.ParseTargets)
// against the watch's gateway and the bastions (LIFELINE_BASTION as
// ParseBastions returns it; nil: not checked): every target is IPv4 (the
// host routes through the gateway are), none is the gateway itself (a
// router answers from its own cache while its uplink is down), and none is
// a bastion given as an address (the tunnel must leave by the backup link,
// not by a host route through the main one). Bastions given by name are
// checked by netsetup, which resolves them.
func ParseMainTargets(s string, gateway netip.Addr, bastions []string) ([]mainwatch.Target, error) {
	targets, err := mainwatch.ParseTargets(s)
	if err != nil {
		return nil, fmt.Errorf("LIFELINE_MAIN_TARGETS=%q: %w", s, err)
	}
	var errs []error
	for _, t := range targets {
		a := t.Addr.Addr()
		switch {
		case !a.Is4():
			errs = append(errs, fmt.Errorf("LIFELINE_MAIN_TARGETS: %s is IPv6: give IPv4 targets (netsetup routes them through LIFELINE_MAIN_GATEWAY over IPv4)", t))
		case a == gateway:
			errs = append(errs, fmt.Errorf("LIFELINE_MAIN_TARGETS: %s is LIFELINE_MAIN_GATEWAY itself, which answers from its cache while its uplink is down: give addresses beyond it (the default %s)", t, mainwatch.DefaultTargets))
		}
	}
	for _, b := range BastionHosts(bastions) {
		ba, err := netip.ParseAddr(b)
		if err != nil {
			continue
		}
		for _, a := range mainwatch.Addrs(targets) {
			if a == ba.Unmap() {
				errs = append(errs, fmt.Errorf("LIFELINE_MAIN_TARGETS: %s is the bastion %s: its host route through the main gateway would take the tunnel off the backup link; give other addresses", a, b))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return targets, nil
}

// validateMain checks the LIFELINE_MAIN_* variables and fills c.Main.
func (c *Config) validateMain() []error {
	c.Main = nil
	var errs []error
	if c.MainEvery < time.Second || c.MainEvery > time.Hour {
		errs = append(errs, fmt.Errorf("LIFELINE_MAIN_EVERY=%s: must be from 1s to 1h", c.MainEvery))
	}
	if c.MainDownAfter < c.MainEvery || c.MainDownAfter > 24*time.Hour {
		errs = append(errs, fmt.Errorf("LIFELINE_MAIN_DOWN_AFTER=%s: must be from LIFELINE_MAIN_EVERY (%s) to 24h", c.MainDownAfter, c.MainEvery))
	}
	if c.MainGateway == "" {
		// Without a gateway there is no watch: a target list or timing
		// given anyway means a watch was wanted, and running without it
		// would leave the site's main link unwatched in silence.
		for _, v := range []struct {
			name string
			set  bool
		}{
			{"LIFELINE_MAIN_TARGETS", c.MainTargets != mainwatch.DefaultTargets},
			{"LIFELINE_MAIN_EVERY", c.MainEvery != defaultMainEvery},
			{"LIFELINE_MAIN_DOWN_AFTER", c.MainDownAfter != defaultMainDownAfter},
		} {
			if v.set {
				errs = append(errs, fmt.Errorf("%s is set but LIFELINE_MAIN_GATEWAY is not: the main internet watch runs only with a gateway; set LIFELINE_MAIN_GATEWAY to the main router's LAN address, or remove %s", v.name, v.name))
			}
		}
		return errs
	}
	gw, err := ParseMainGateway(c.MainGateway)
	if err != nil {
		return append(errs, err)
	}
	targets, err := ParseMainTargets(c.MainTargets, gw, c.Bastions)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errs
	}
	c.Main = &MainWatch{Gateway: gw, Targets: targets, Every: c.MainEvery, DownAfter: c.MainDownAfter}
	return nil
}
