package alert

import (
	"reflect"
	"strings"
	"testing"
)

func TestSplitNumbers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "", want: nil},
		{in: "  ", want: nil},
		{in: "+15551234567", want: []string{"+15551234567"}},
		{in: "+15551234567, +447700900123", want: []string{"+15551234567", "+447700900123"}},
		{in: "15551234567", wantErr: `"15551234567"`},
		{in: "+1555123456x", wantErr: `"+1555123456x"`},
		{in: "+05551234567", wantErr: `"+05551234567"`},
		{in: "+1234567890123456", wantErr: `"+1234567890123456"`},
		{in: "+15551234567,,+15551234568", wantErr: "number 2"},
		{in: "+15551234567,+15551234567", wantErr: "twice"},
		{in: "+1 555 123 4567", wantErr: `"+1 555 123 4567"`},
	}
	for _, tt := range tests {
		got, err := SplitNumbers(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("SplitNumbers(%q) error %v, want one naming %s", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SplitNumbers(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestParseCIDRs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "", want: nil},
		{in: "10.0.0.0/8", want: []string{"10.0.0.0/8"}},
		{in: "192.0.2.7", want: []string{"192.0.2.7/32"}},
		{in: "2001:db8::1", want: []string{"2001:db8::1/128"}},
		{in: "10.1.2.3/8, 2001:db8::/32", want: []string{"10.0.0.0/8", "2001:db8::/32"}},
		{in: "::ffff:10.0.0.0/104", want: []string{"10.0.0.0/8"}},
		{in: "::ffff:10.1.1.1", want: []string{"10.1.1.1/32"}},
		{in: "10.0.0.0/33", wantErr: `"10.0.0.0/33"`},
		{in: "10.0.0.0/8,nope", wantErr: `"nope"`},
		{in: "10.0.0.0/8,", wantErr: "element 2"},
		{in: "fe80::1%eth0", wantErr: `"fe80::1%eth0"`},
		{in: "::ffff:10.0.0.0/90", wantErr: "shorter than /96"},
	}
	for _, tt := range tests {
		got, err := ParseCIDRs(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseCIDRs(%q) error %v, want one naming %s", tt.in, err, tt.wantErr)
			}
			continue
		}
		var gs []string
		for _, p := range got {
			gs = append(gs, p.String())
		}
		if err != nil || !reflect.DeepEqual(gs, tt.want) {
			t.Errorf("ParseCIDRs(%q) = %q, %v; want %q", tt.in, gs, err, tt.want)
		}
	}
}

func FuzzSplitNumbers(f *testing.F) {
	for _, s := range []string{"", "+15551234567", "+15551234567, +447700900123", "+1,,+2", "+1555\x00", "+" + strings.Repeat("9", 20), " , "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := SplitNumbers(s)
		if err != nil {
			return
		}
		for _, n := range got {
			if !e164.MatchString(n) {
				t.Fatalf("SplitNumbers(%q) returned %q, not E.164", s, n)
			}
		}
		again, err := SplitNumbers(strings.Join(got, ","))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("round trip of %q: %q, %v", got, again, err)
		}
	})
}

func FuzzParseCIDRs(f *testing.F) {
	for _, s := range []string{"", "10.0.0.0/8", "192.0.2.7", "2001:db8::/32, 10.1.2.3", "::ffff:10.0.0.0/104", "fe80::1%eth0", "1.2.3.4/99", ",", "0.0.0.0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseCIDRs(s)
		if err != nil {
			return
		}
		var parts []string
		for _, p := range got {
			if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				t.Fatalf("ParseCIDRs(%q) returned %v: not a clean masked prefix", s, p)
			}
			parts = append(parts, p.String())
		}
		again, err := ParseCIDRs(strings.Join(parts, ","))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("round trip of %v: %v, %v", got, again, err)
		}
		for _, p := range got {
			if !p.Contains(p.Addr()) {
				t.Fatalf("%v does not contain its own address", p)
			}
		}
	})
}
