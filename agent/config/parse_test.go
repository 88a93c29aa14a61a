package config

import (
	"net"
	"strings"
	"testing"
)

func TestParseBastions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in        string
		want      []string // nil: an error
		wantHosts []string
	}{
		{"bastion.example:22", []string{"bastion.example:22"}, []string{"bastion.example"}},
		{" a:22 , b:2222,a:443", []string{"a:22", "b:2222", "a:443"}, []string{"a", "b"}},
		{"[2001:db8::1]:22,203.0.113.10:22", []string{"[2001:db8::1]:22", "203.0.113.10:22"}, []string{"2001:db8::1", "203.0.113.10"}},
		{"a:22,", []string{"a:22"}, []string{"a"}},
		{"a", nil, nil}, {"a:", nil, nil}, {"a:0", nil, nil}, {"a:65536", nil, nil}, {":22", nil, nil}, {"a b:22", nil, nil},
		{"a/b:22", nil, nil}, {"a:22,a:22", nil, nil}, {"", nil, nil}, {" , ", nil, nil},
	}
	for _, tc := range tests {
		got, err := ParseBastions(tc.in)
		if tc.want == nil {
			if err == nil {
				t.Errorf("ParseBastions(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("ParseBastions(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if hosts := BastionHosts(got); strings.Join(hosts, ",") != strings.Join(tc.wantHosts, ",") {
			t.Errorf("BastionHosts(%v) = %v, want %v", got, hosts, tc.wantHosts)
		}
	}
}

func TestParseInterfaceName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		wildcard bool
		ok       bool
	}{
		{"eth0", false, true}, {"enp1s0.100", false, true}, {"wlan-backup_1", false, true}, {"abcdefghijklmno", false, true},
		{"abcdefghijklmnop", false, false}, {"", false, false}, {".", false, false}, {"..", false, false},
		{"a/b", false, false}, {"eth0:1", false, false}, {"tun 0", false, false}, {"tun\x00", false, false}, {"é", false, false},
		{"zt+", true, true}, {"zt+", false, false}, {"+", true, false}, {"z+t", true, false}, {"zt++", true, false},
		{"abcdefghijklmn+", true, true}, {"abcdefghijklmno+", true, false},
	}
	for _, tc := range tests {
		err := ParseInterfaceName(tc.in, tc.wildcard)
		if (err == nil) != tc.ok {
			t.Errorf("ParseInterfaceName(%q, %v) = %v, want ok %v", tc.in, tc.wildcard, err, tc.ok)
		}
	}
}

func FuzzParseBastions(f *testing.F) {
	for _, s := range []string{"bastion.example:22", "a:22,b:2222", "[2001:db8::1]:22", " a:22 ,a:443", "a", "a:0", ",", "a:22,,b:1", "[::1]:22,[::1]:23"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		bastions, err := ParseBastions(s)
		if err != nil {
			return
		}
		if len(bastions) == 0 || len(bastions) > strings.Count(s, ",")+1 {
			t.Fatalf("ParseBastions(%q) = %d bastions", s, len(bastions))
		}
		hosts := BastionHosts(bastions)
		if len(hosts) == 0 || len(hosts) > len(bastions) {
			t.Fatalf("BastionHosts(%q) = %d hosts", bastions, len(hosts))
		}
		seen := map[string]bool{}
		for _, h := range hosts {
			if h == "" || seen[h] || strings.ContainsAny(h, " \t\n/") {
				t.Fatalf("ParseBastions(%q): empty, repeated or bad host %q", s, h)
			}
			seen[h] = true
			// Every host reads back through the same host:port form.
			if _, _, err := net.SplitHostPort(net.JoinHostPort(h, "22")); err != nil {
				t.Fatalf("host %q does not round-trip: %v", h, err)
			}
		}
	})
}
