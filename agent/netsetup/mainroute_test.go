package netsetup

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// mainWorld is a world whose LAN holds the main router 192.168.1.1: the
// kernel reaches it directly on eth0.
func mainWorld() *world {
	w := newWorld()
	w.router.lookup = map[netip.Addr]Lookup{netip.MustParseAddr("192.168.1.1"): {Device: "eth0"}}
	return w
}

func mainRoutes(gw, dev string, dsts ...string) []Route {
	var out []Route
	for _, d := range dsts {
		a := netip.MustParseAddr(d)
		out = append(out, Route{Dst: a, Gateway: netip.MustParseAddr(gw), Dev: dev})
		out = append(out, Route{Dst: a, Unreachable: true, Metric: FallbackMetric})
	}
	return out
}

// The main internet watch's targets get a host route each via the main
// gateway on the LAN interface, plus an unreachable fallback; beside the
// bastion's uplink routes, idempotently; a changed target list leaves
// exactly the new routes; remove takes them all.
func TestApplyMainRoutes(t *testing.T) {
	t.Parallel()
	w := mainWorld()
	cfg := testConfig(t)
	cfg.MainGateway = "192.168.1.1"
	cfg.MainTargets = "dns://1.0.0.1, dns://149.112.112.112, tcp://1.0.0.1:443"
	ctx := context.Background()
	s := mustSetup(t, cfg, w)
	for range 2 {
		if err := s.Apply(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := append(mainRoutes("192.168.1.1", "eth0", "1.0.0.1", "149.112.112.112"), routesOf("100.64.0.1", "203.0.113.10")...)
	sortRoutes(want)
	if got := w.router.routes(); !reflect.DeepEqual(got, want) {
		t.Errorf("routes\n%v\nwant\n%v", got, want)
	}
	rep, err := s.Status(ctx)
	if err != nil || !rep.OK() || !strings.Contains(rep.String(), "ok       route 1.0.0.1/32 via 192.168.1.1 dev eth0\n") ||
		!strings.Contains(rep.String(), "ok       route unreachable 1.0.0.1/32 metric 65535\n") || len(rep.Warnings) != 0 {
		t.Errorf("status: %v\n%s", err, rep)
	}

	cfg.MainTargets = "tcp://192.0.2.80:443"
	s = mustSetup(t, cfg, w)
	if err := s.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	want = append(mainRoutes("192.168.1.1", "eth0", "192.0.2.80"), routesOf("100.64.0.1", "203.0.113.10")...)
	sortRoutes(want)
	if got := w.router.routes(); !reflect.DeepEqual(got, want) {
		t.Errorf("routes after changing the targets\n%v\nwant\n%v", got, want)
	}
	if err := s.Remove(ctx); err != nil || len(w.router.routes()) != 0 {
		t.Errorf("remove: %v, routes left %v", err, w.router.routes())
	}
}

// Without an uplink gateway, the main routes alone.
func TestApplyMainRoutesOnly(t *testing.T) {
	t.Parallel()
	w := mainWorld()
	cfg := testConfig(t)
	cfg.UplinkGateway, cfg.Bastion = "", ""
	cfg.MainGateway, cfg.MainTargets = "192.168.1.1", "dns://9.9.9.10"
	s := mustSetup(t, cfg, w)
	if err := s.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := w.router.routes(), mainRoutes("192.168.1.1", "eth0", "9.9.9.10"); !reflect.DeepEqual(got, want) {
		t.Errorf("routes %v, want %v", got, want)
	}
}

// What apply refuses, before changing anything: a target that is a
// bastion's address (resolved from its name), a main gateway that is not
// on the LAN; and what the configuration refuses.
func TestApplyMainRoutesRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*Config, *world)
		want   []string
	}{
		{"target is a bastion by name", func(c *Config, _ *world) {
			c.Bastion = "b2.example:22"
			c.MainTargets = "dns://1.0.0.1,tcp://203.0.113.11:443"
		},
			[]string{"203.0.113.11 is an address of a bastion", "backup uplink"}},
		{"target is a bastion by name, no uplink gateway", func(c *Config, _ *world) {
			c.UplinkGateway, c.Bastion, c.MainTargets = "", "bastion.example:22", "tcp://203.0.113.10:22"
		}, []string{"203.0.113.10 is an address of a bastion"}},
		{"gateway not on the LAN", func(c *Config, w *world) {
			w.router.lookup = map[netip.Addr]Lookup{netip.MustParseAddr("192.168.1.1"): {Gateway: netip.MustParseAddr("100.64.0.1"), Device: "up0"}}
		}, []string{"LIFELINE_MAIN_GATEWAY=192.168.1.1 is not on a subnet of the LAN interface eth0", "via 100.64.0.1 dev up0", "nothing changed"}},
		{"gateway on another interface", func(c *Config, w *world) {
			w.router.lookup = map[netip.Addr]Lookup{netip.MustParseAddr("192.168.1.1"): {Device: "wlan0"}}
		}, []string{"not on a subnet of the LAN interface eth0", "directly dev wlan0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := mainWorld()
			cfg := testConfig(t)
			cfg.MainGateway, cfg.MainTargets = "192.168.1.1", "dns://1.0.0.1"
			tc.change(&cfg, w)
			s := mustSetup(t, cfg, w)
			err := s.Apply(context.Background())
			if err == nil {
				t.Fatal("apply accepted it")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if len(w.router.routes()) != 0 || w.fw.get() != nil || w.sysctl.get(ipForward) != "0" {
				t.Errorf("a refused apply changed something: routes %v, firewall %v", w.router.routes(), w.fw.get())
			}
			rep, err := s.Status(context.Background())
			if err != nil || rep.OK() {
				t.Errorf("status: %v, %s", err, rep)
			}
		})
	}
	for name, cfg := range map[string]func(*Config){
		"gateway not an address": func(c *Config) { c.MainGateway = "router" },
		"target is a literal bastion": func(c *Config) {
			c.Bastion, c.MainGateway, c.MainTargets = "203.0.113.10:22", "192.168.1.1", "tcp://203.0.113.10:443"
		},
		"IPv6 target": func(c *Config) { c.MainGateway, c.MainTargets = "192.168.1.1", "dns://2620:fe::fe" },
	} {
		c := testConfig(t)
		cfg(&c)
		if _, err := New(c, newWorld().options()); err == nil || !strings.Contains(err.Error(), "LIFELINE_MAIN_") {
			t.Errorf("%s: New = %v, want an error naming the variable", name, err)
		}
	}
}
