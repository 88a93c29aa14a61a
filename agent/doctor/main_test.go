package doctor

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/mainwatch"
	"github.com/lifeline-dev/lifeline/agent/netsetup"
)

// With LIFELINE_MAIN_GATEWAY set, doctor checks that each target's route
// goes via the main gateway on the LAN, that no target is the Pi's own
// resolver, and probes once.
func TestMainWatchChecks(t *testing.T) {
	t.Parallel()
	gw := netip.MustParseAddr("192.168.1.1")
	targets, err := mainwatch.ParseTargets("dns://1.0.0.1,tcp://1.0.0.1:443,dns://149.112.112.112")
	if err != nil {
		t.Fatal(err)
	}
	viaMain := func(netip.Addr) (netsetup.Lookup, error) { return netsetup.Lookup{Gateway: gw, Device: "eth0"}, nil }
	answered := func(_ context.Context, ts []mainwatch.Target) ([]mainwatch.Result, error) {
		return []mainwatch.Result{{Target: ts[0], Reason: "dns://1.0.0.1:53: no answer within 3s"}, {Target: ts[1], OK: true}}, nil
	}
	resolv := func(t *testing.T, servers ...string) string {
		p := filepath.Join(t.TempDir(), "resolv.conf")
		s := "# generated\nsearch lan\n"
		for _, a := range servers {
			s += "nameserver " + a + "\n"
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name  string
		route func(netip.Addr) (netsetup.Lookup, error)
		probe func(context.Context, []mainwatch.Target) ([]mainwatch.Result, error)
		ns    []string
		check func(t *testing.T, out string)
	}{
		{"all good", viaMain, answered, []string{"192.168.1.1", "1.1.1.1"}, func(t *testing.T, out string) {
			want(t, out, "main internet targets", "✓", "1.0.0.1, 149.112.112.112 routed via the main gateway 192.168.1.1 dev eth0")
			want(t, out, "resolvers", "✓")
			want(t, out, "main internet probe", "✓", "tcp://1.0.0.1:443 answered")
		}},
		{"route via the backup uplink", func(a netip.Addr) (netsetup.Lookup, error) {
			if a == netip.MustParseAddr("149.112.112.112") {
				return netsetup.Lookup{Gateway: netip.MustParseAddr("100.64.0.1"), Device: "usb0"}, nil
			}
			return viaMain(a)
		}, answered, nil, func(t *testing.T, out string) {
			want(t, out, "main internet targets", "✗", "would not leave by the main router", "netsetup apply")
			line(t, out, "149.112.112.112 goes via 100.64.0.1 dev usb0")
		}},
		{"no route", func(netip.Addr) (netsetup.Lookup, error) { return netsetup.Lookup{}, errors.New("no route to host") }, answered, nil, func(t *testing.T, out string) {
			want(t, out, "main internet targets", "✗")
			line(t, out, "1.0.0.1: no route to host")
		}},
		{"a target is the Pi's resolver", viaMain, answered, []string{"149.112.112.112"}, func(t *testing.T, out string) {
			want(t, out, "resolvers", "✗", "149.112.112.112", "cannot resolve names", "LIFELINE_MAIN_TARGETS")
		}},
		{"nothing answers", viaMain, func(_ context.Context, ts []mainwatch.Target) ([]mainwatch.Result, error) {
			return []mainwatch.Result{{Target: ts[0], Reason: "dns://1.0.0.1:53: DNS answer SERVFAIL"}}, nil
		}, nil, func(t *testing.T, out string) {
			want(t, out, "main internet probe", "✗", "no target answered")
			line(t, out, "dns://1.0.0.1:53: DNS answer SERVFAIL")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSite(t, "127.0.0.1:"+strconv.Itoa(closedPort(t)), "pi:22=127.0.0.1:22")
			s.cfg.Agent.Main = &config.MainWatch{Gateway: gw, Targets: targets}
			s.cfg.Net = &netsetup.Config{LANInterface: "eth0"}
			s.cfg.Route, s.cfg.MainProbe, s.cfg.ResolvConf = tc.route, tc.probe, resolv(t, tc.ns...)
			out, _ := s.run(t)
			tc.check(t, out)
		})
	}

	// Without a gateway: no such checks.
	s := newSite(t, "127.0.0.1:"+strconv.Itoa(closedPort(t)), "pi:22=127.0.0.1:22")
	if out, _ := s.run(t); len(out) == 0 || strings.Contains(out, "main internet") {
		t.Errorf("main internet checks without a gateway:\n%s", out)
	}
}
