package netsetup

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func testConfig(t *testing.T) Config {
	t.Helper()
	return Config{
		LANInterface:    "eth0",
		TunnelInterface: "tun0",
		MSS:             "1452",
		UplinkGateway:   "100.64.0.1",
		Bastion:         "bastion.example:22",
		SysctlDir:       t.TempDir(),
		StateDir:        filepath.Join(t.TempDir(), "state"),
	}
}

func routesOf(gw string, dsts ...string) []Route {
	var out []Route
	for _, d := range dsts {
		out = append(out, Route{Dst: netip.MustParseAddr(d), Gateway: netip.MustParseAddr(gw)})
	}
	return out
}

func mustSetup(t *testing.T, cfg Config, w *world) *Setup {
	t.Helper()
	s, err := New(cfg, w.options())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestApplyThenRemove(t *testing.T) {
	t.Parallel()
	w := newWorld()
	cfg := testConfig(t)
	cfg.Bastion = "bastion.example:22, b2.example:443,203.0.113.9:22"
	s := mustSetup(t, cfg, w)
	ctx := context.Background()

	for range 2 {
		if err := s.Apply(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := w.fw.get(), (&Rules{LAN: "eth0", Tunnel: "tun0", MSS: 1452}); !reflect.DeepEqual(got, want) {
		t.Errorf("firewall = %+v, want %+v", got, want)
	}
	// IPv6 left out, duplicates merged, sorted.
	if got, want := w.router.routes(), routesOf("100.64.0.1", "203.0.113.9", "203.0.113.10", "203.0.113.11"); !reflect.DeepEqual(got, want) {
		t.Errorf("routes = %v, want %v", got, want)
	}
	if got := w.sysctl.get(ipForward); got != "1" {
		t.Errorf("ip_forward = %s, want 1", got)
	}
	st, err := readState(filepath.Join(cfg.StateDir, StateFile))
	if err != nil || st == nil || st.PriorIPForward != "0" {
		t.Fatalf("state after two applies = %+v, %v; want prior ip_forward 0 (not the 1 of the first apply)", st, err)
	}
	rep, err := s.Status(ctx)
	if err != nil || !rep.OK() {
		t.Errorf("status after apply: %v\n%s", err, rep)
	}

	if err := s.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if w.fw.get() != nil || len(w.router.routes()) != 0 || w.sysctl.get(ipForward) != "0" {
		t.Errorf("after remove: firewall %v, routes %v, ip_forward %s", w.fw.get(), w.router.routes(), w.sysctl.get(ipForward))
	}
	for _, p := range []string{filepath.Join(cfg.SysctlDir, SysctlFile), filepath.Join(cfg.StateDir, StateFile)} {
		if exists(t, p) {
			t.Errorf("%s left after remove", p)
		}
	}
	if err := s.Remove(ctx); err != nil {
		t.Errorf("second remove: %v", err)
	}
}

func TestApplyRollsBack(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	tests := []struct {
		name     string
		previous bool // a successful apply (MSS 1400, one bastion) came first
		rebooted bool // then a reboot dropped its rules and routes
		breakIt  func(w *world)
		wantStep string
	}{
		{"firewall fails on first apply", false, false, func(w *world) { w.fw.failApply = boom }, "install firewall table"},
		{"second route fails on first apply", false, false, func(w *world) {
			w.router.failAdd = map[netip.Addr]error{netip.MustParseAddr("203.0.113.11"): boom}
		}, "set uplink routes"},
		{"sysctl fails on first apply", false, false, func(w *world) { w.sysctl.failSet = boom }, "set net.ipv4.ip_forward=1"},
		{"firewall fails on re-apply", true, false, func(w *world) { w.fw.failApply = boom }, "install firewall table"},
		{"route fails on re-apply", true, false, func(w *world) {
			w.router.failAdd = map[netip.Addr]error{netip.MustParseAddr("203.0.113.11"): boom}
		}, "set uplink routes"},
		{"route fails on apply after a reboot", true, true, func(w *world) {
			w.router.failAdd = map[netip.Addr]error{netip.MustParseAddr("203.0.113.11"): boom}
		}, "set uplink routes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld()
			cfg := testConfig(t)
			ctx := context.Background()
			statePath := filepath.Join(cfg.StateDir, StateFile)
			sysctlPath := filepath.Join(cfg.SysctlDir, SysctlFile)
			if tc.previous {
				old := cfg
				old.MSS = "1400"
				if err := mustSetup(t, old, w).Apply(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if tc.rebooted {
				w.fw.installed, w.router.owned = nil, nil
			}
			wantFW, wantRoutes, wantFwd := w.fw.get(), w.router.routes(), w.sysctl.get(ipForward)
			wantState, _ := os.ReadFile(statePath)

			tc.breakIt(w)
			cfg.Bastion = "bastion.example:22,b2.example:22"
			err := mustSetup(t, cfg, w).Apply(ctx)
			if err == nil || !errors.Is(err, boom) || !strings.Contains(err.Error(), tc.wantStep) {
				t.Fatalf("apply error = %v, want one naming %q and wrapping the cause", err, tc.wantStep)
			}
			w.fw.failApply, w.router.failAdd, w.sysctl.failSet = nil, nil, nil
			if got := w.fw.get(); !reflect.DeepEqual(got, wantFW) {
				t.Errorf("firewall after rollback = %v, want %v", got, wantFW)
			}
			if got := w.router.routes(); !slices.Equal(got, wantRoutes) {
				t.Errorf("routes after rollback = %v, want %v", got, wantRoutes)
			}
			if got := w.sysctl.get(ipForward); got != wantFwd {
				t.Errorf("ip_forward after rollback = %s, want %s", got, wantFwd)
			}
			gotState, _ := os.ReadFile(statePath)
			if !bytes.Equal(gotState, wantState) {
				t.Errorf("state file after rollback:\n%s\nwant:\n%s", gotState, wantState)
			}
			if exists(t, sysctlPath) != tc.previous {
				t.Errorf("sysctl file present = %v after rollback, want %v", !tc.previous, tc.previous)
			}
		})
	}
}

func TestApplyResolvesBeforeChangingAnything(t *testing.T) {
	t.Parallel()
	w := newWorld()
	cfg := testConfig(t)
	cfg.Bastion = "unknown.example:22"
	err := mustSetup(t, cfg, w).Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "resolve bastion unknown.example") {
		t.Fatalf("apply error = %v, want a resolution error", err)
	}
	if w.fw.get() != nil || w.sysctl.get(ipForward) != "0" || exists(t, filepath.Join(cfg.StateDir, StateFile)) {
		t.Error("apply changed something before resolving the bastion")
	}
}

func TestApplyWithoutTunnelOrGateway(t *testing.T) {
	t.Parallel()
	w := newWorld()
	cfg := testConfig(t)
	cfg.TunnelInterface, cfg.UplinkGateway, cfg.Bastion, cfg.MSS = "", "", "", "PMTU"
	s := mustSetup(t, cfg, w)
	if err := s.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := w.fw.get(); got == nil || *got != (Rules{LAN: "eth0", MSS: 0}) {
		t.Errorf("firewall = %v, want only the pmtu clamp", got)
	}
	if len(w.router.routes()) != 0 {
		t.Errorf("routes without a gateway: %v", w.router.routes())
	}
}

func TestRemoveGoesOnPastFailuresAndKeepsState(t *testing.T) {
	t.Parallel()
	w := newWorld()
	cfg := testConfig(t)
	s := mustSetup(t, cfg, w)
	ctx := context.Background()
	if err := s.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	w.sysctl.failSet = errors.New("read-only file system")
	err := s.Remove(ctx)
	if err == nil || !strings.Contains(err.Error(), "restore net.ipv4.ip_forward") {
		t.Fatalf("remove error = %v, want the ip_forward failure", err)
	}
	if w.fw.get() != nil || len(w.router.routes()) != 0 {
		t.Error("remove stopped at the first failure")
	}
	if !exists(t, filepath.Join(cfg.StateDir, StateFile)) {
		t.Fatal("state file deleted although ip_forward was not restored")
	}
	w.sysctl.failSet = nil
	if err := s.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w.sysctl.get(ipForward); got != "0" {
		t.Errorf("ip_forward after the second remove = %s, want 0", got)
	}
}

func TestRemoveWithoutStateLeavesIPForward(t *testing.T) {
	t.Parallel()
	w := newWorld()
	w.sysctl.vals[ipForward] = "1"
	w.router.owned = routesOf("100.64.0.1", "203.0.113.10")
	w.router.foreign = routesOf("192.168.1.1", "10.0.0.1")
	if err := mustSetup(t, testConfig(t), w).Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := w.sysctl.get(ipForward); got != "1" {
		t.Errorf("ip_forward = %s, want it left at 1 (no record of its prior value)", got)
	}
	if len(w.router.routes()) != 0 || len(w.router.foreign) != 1 {
		t.Errorf("routes: lifeline's %v (want none), others' %v (want kept)", w.router.routes(), w.router.foreign)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		prepare   func(t *testing.T, w *world, cfg *Config)
		apply     bool
		wantOK    bool
		wantLines []string
	}{
		{
			name:      "nothing applied",
			wantLines: []string{"differs  net.ipv4.ip_forward = 0, want 1", "differs  firewall table ip lifeline missing", "differs  route 203.0.113.10/32 via 100.64.0.1 missing", "missing or changed"},
		},
		{
			name:      "applied",
			apply:     true,
			wantOK:    true,
			wantLines: []string{"ok       firewall table ip lifeline: MSS clamp 1452, tun0->eth0 accepted with masquerade, eth0->tun0 replies only", "ok       route 203.0.113.10/32 via 100.64.0.1", "applied as configured"},
		},
		{
			name:  "interfaces missing and drop policy elsewhere",
			apply: true,
			prepare: func(t *testing.T, w *world, cfg *Config) {
				w.ifaces = []string{"lo", "wlan0", "tun"}
				w.fw.warnings = []string{"chain ip filter FORWARD has a forward hook with policy drop"}
			},
			wantOK:    true,
			wantLines: []string{"warning  LAN interface eth0 does not exist", "warning  tunnel interface tun0 does not exist", "warning  chain ip filter FORWARD"},
		},
		{
			name:  "sysctl file edited",
			apply: true,
			prepare: func(t *testing.T, w *world, cfg *Config) {
				if err := os.WriteFile(filepath.Join(cfg.SysctlDir, SysctlFile), []byte("net.ipv4.ip_forward = 0\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantLines: []string{"90-lifeline.conf missing or changed"},
		},
		{
			name:  "someone else's route of lifeline's protocol that config does not want",
			apply: true,
			prepare: func(t *testing.T, w *world, cfg *Config) {
				w.router.owned = append(w.router.owned, routesOf("100.64.0.1", "198.51.100.99")...)
			},
			wantLines: []string{"differs  route 198.51.100.99/32 via 100.64.0.1 not wanted"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld()
			cfg := testConfig(t)
			ctx := context.Background()
			if tc.apply {
				if err := mustSetup(t, cfg, w).Apply(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if tc.prepare != nil {
				tc.prepare(t, w, &cfg)
			}
			rep, err := mustSetup(t, cfg, w).Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() != tc.wantOK {
				t.Errorf("OK = %v, want %v\n%s", rep.OK(), tc.wantOK, rep)
			}
			for _, l := range tc.wantLines {
				if !strings.Contains(rep.String(), l) {
					t.Errorf("status lacks %q:\n%s", l, rep)
				}
			}
		})
	}
}

func TestStatusRouteWrongWay(t *testing.T) {
	t.Parallel()
	w := newWorld()
	cfg := testConfig(t)
	ctx := context.Background()
	if err := mustSetup(t, cfg, w).Apply(ctx); err != nil {
		t.Fatal(err)
	}
	// A policy rule elsewhere sends the bastion via the main router
	// although lifeline's route is in place.
	w.router.mu.Lock()
	w.router.lookup = map[netip.Addr]Lookup{netip.MustParseAddr("203.0.113.10"): {Gateway: netip.MustParseAddr("192.168.1.1"), Device: "eth0"}}
	w.router.mu.Unlock()
	rep, err := mustSetup(t, cfg, w).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := "warning  traffic to bastion 203.0.113.10 goes via 192.168.1.1 dev eth0, not via the uplink gateway 100.64.0.1"
	if !strings.Contains(rep.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, rep)
	}
}
