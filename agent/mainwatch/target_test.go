package mainwatch

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseTargets(t *testing.T) {
	t.Parallel()
	ap := netip.MustParseAddrPort
	tests := []struct {
		in   string
		want []Target // nil: an error
		err  string   // in the error
	}{
		{in: "dns://1.0.0.1", want: []Target{{DNS, ap("1.0.0.1:53")}}},
		{in: "dns://1.0.0.1:5353", want: []Target{{DNS, ap("1.0.0.1:5353")}}},
		{in: "DNS://9.9.9.9", want: []Target{{DNS, ap("9.9.9.9:53")}}},
		{in: "tcp://1.0.0.1:443", want: []Target{{TCP, ap("1.0.0.1:443")}}},
		{in: "dns://2620:fe::fe", want: []Target{{DNS, ap("[2620:fe::fe]:53")}}},
		{in: "dns://[2620:fe::fe]", want: []Target{{DNS, ap("[2620:fe::fe]:53")}}},
		{in: "dns://[2620:fe::fe]:853", want: []Target{{DNS, ap("[2620:fe::fe]:853")}}},
		{in: "tcp://[2606:4700::1111]:443", want: []Target{{TCP, ap("[2606:4700::1111]:443")}}},
		{in: "dns://[::ffff:1.2.3.4]", want: []Target{{DNS, ap("1.2.3.4:53")}}},
		{in: " dns://1.0.0.1 , tcp://127.0.0.1:22 ", want: []Target{{DNS, ap("1.0.0.1:53")}, {TCP, ap("127.0.0.1:22")}}},
		{in: DefaultTargets, want: []Target{{DNS, ap("1.0.0.1:53")}, {DNS, ap("149.112.112.112:53")}, {TCP, ap("1.0.0.1:443")}}},

		{in: "", err: "no targets"},
		{in: "  ", err: "no targets"},
		{in: "dns://1.0.0.1,,tcp://1.0.0.1:443", err: "target 2 of"},
		{in: "dns://1.0.0.1,", err: "target 2 of"},
		{in: "1.0.0.1", err: `target "1.0.0.1": no scheme: want dns://IP[:port]`},
		{in: "icmp://1.0.0.1", err: "ICMP is not offered"},
		{in: "udp://1.0.0.1:53", err: `scheme "udp" is neither dns nor tcp`},
		{in: "dns://one.one.one.one", err: `"one.one.one.one" is a host name, not an IP address: targets must be IP literals, because the agent routes`},
		{in: "tcp://example.com:443", err: `"example.com" is a host name`},
		{in: "dns://localhost", err: "host name"},
		{in: "tcp://1.0.0.1", err: "a tcp target needs a port"},
		{in: "tcp://[2606:4700::1111]", err: "a tcp target needs a port"},
		{in: "dns://1.0.0.1:0", err: `port "0" is not a number from 1 to 65535`},
		{in: "dns://1.0.0.1:65536", err: "port"},
		{in: "dns://1.0.0.1:", err: "port"},
		{in: "dns://1.0.0.1:dns", err: "port"},
		{in: "dns://[1.0.0.1]:53", err: "not an IPv6 address"},
		{in: "dns://[2620:fe::fe", err: "missing ]"},
		{in: "dns://[2620:fe::fe]53", err: "after ]"},
		{in: "dns://1.0.0.1/path", err: "not an IP address"},
		{in: "dns://01.0.0.1", err: "not an IP address"},
		{in: "dns://0.0.0.0", err: "cannot be probed"},
		{in: "dns://[::]", err: "cannot be probed"},
		{in: "dns://224.0.0.251:5353", err: "cannot be probed"},
		{in: "dns://255.255.255.255", err: "cannot be probed"},
		{in: "dns://fe80::1%eth0", err: "zone"},
		{in: "dns://1.0.0.1,dns://1.0.0.1:53", err: `"dns://1.0.0.1:53" is listed twice`},
		{in: strings.Repeat("dns://1.0.0.1,", MaxTargets) + "dns://1.0.0.2", err: "at most 8"},
	}
	for _, tc := range tests {
		got, err := ParseTargets(tc.in)
		if tc.want == nil {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseTargets(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseTargets(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	// Every error names what is accepted, or the entry's own problem.
	if _, err := ParseTargets("dns://,"); err == nil || !strings.Contains(err.Error(), `target "dns://"`) {
		t.Errorf("an empty address: %v", err)
	}
}

func TestAddrs(t *testing.T) {
	t.Parallel()
	ts, err := ParseTargets(DefaultTargets + ",dns://[2620:fe::9]")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("1.0.0.1"), netip.MustParseAddr("149.112.112.112"), netip.MustParseAddr("2620:fe::9")}
	if got := Addrs(ts); !slices.Equal(got, want) {
		t.Errorf("Addrs = %v, want %v", got, want)
	}
	if Addrs(nil) != nil {
		t.Error("Addrs(nil) is not nil")
	}
}

// FuzzParseTargets: ParseTargets never panics, and what it accepts is
// valid, prints as it reads (String re-parses to the same targets) and has
// distinct entries.
func FuzzParseTargets(f *testing.F) {
	for _, s := range []string{DefaultTargets, "dns://[::1]:53", "tcp://127.0.0.1:22", "dns://one.one.one.one", "dns://[fe80::1%eth0]",
		"dns://1.0.0.1,,", "tcp://[::ffff:10.0.0.1]:1", "dns://1.2.3.4:65535", " DNS://9.9.9.9 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseTargets(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if len(ts) == 0 || len(ts) > MaxTargets {
			t.Fatalf("%d targets accepted", len(ts))
		}
		strs := make([]string, len(ts))
		for i, tg := range ts {
			a := tg.Addr.Addr()
			if (tg.Kind != DNS && tg.Kind != TCP) || tg.Addr.Port() == 0 || a.Zone() != "" || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() {
				t.Fatalf("%q: invalid target %+v", s, tg)
			}
			strs[i] = tg.String()
		}
		again, err := ParseTargets(strings.Join(strs, ","))
		if err != nil || !slices.Equal(again, ts) {
			t.Fatalf("%q: printed as %v, read back as %v, %v", s, strs, again, err)
		}
		if len(Addrs(ts)) > len(ts) {
			t.Fatal("more addresses than targets")
		}
	})
}

func netipAddrPort(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
}
