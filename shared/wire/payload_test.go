package wire

import (
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestParseForward(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		payload []byte
		want    Forward
		wantErr string
	}{
		{"name", Forward{"pi", 22}.Marshal(), Forward{"pi", 22}, ""},
		{"empty host", Forward{"", 22}.Marshal(), Forward{}, "bind address is empty"},
		{"port zero", Forward{"pi", 0}.Marshal(), Forward{}, "bind port 0"},
		{"port too big", Forward{"pi", 70000}.Marshal(), Forward{}, "bind port 70000"},
		{"control char", Forward{"p\ni", 22}.Marshal(), Forward{}, "control characters"},
		{"long", Forward{strings.Repeat("a", 256), 22}.Marshal(), Forward{}, "longer than"},
		{"truncated", []byte{0, 0, 0, 5, 'p'}, Forward{}, "malformed"},
		{"trailing", append(Forward{"pi", 22}.Marshal(), 0), Forward{}, "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseForward(tc.payload)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseDirectTCPIP(t *testing.T) {
	t.Parallel()
	ok := DirectTCPIP{"pi", 22, "198.51.100.20", 50000}
	got, err := ParseDirectTCPIP(ok.Marshal())
	if err != nil || got != ok {
		t.Fatalf("got %+v, %v", got, err)
	}
	// What OpenSSH's ssh -W sends (origin 127.0.0.1:65535) must parse.
	if _, err := ParseDirectTCPIP(ssh.Marshal(struct {
		H  string
		P  uint32
		O  string
		OP uint32
	}{"pi", 22, "127.0.0.1", 65535})); err != nil {
		t.Fatalf("ssh -W payload: %v", err)
	}
	for _, bad := range []DirectTCPIP{{"", 22, "", 0}, {"pi", 0, "", 0}, {"pi i", 22, "", 0}, {"pi", 22, strings.Repeat("x", 300), 0}} {
		if _, err := ParseDirectTCPIP(bad.Marshal()); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func FuzzParseForward(f *testing.F) {
	f.Add(Forward{"pi", 22}.Marshal())
	f.Add(Forward{"localhost", 2201}.Marshal())
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		fw, err := ParseForward(b)
		if err != nil {
			return
		}
		// A decoded request re-encodes to the same bytes and is within bounds.
		if string(fw.Marshal()) != string(b) {
			t.Fatalf("round trip changed %x", b)
		}
		if fw.BindPort == 0 || fw.BindPort > 65535 || fw.BindAddr == "" || len(fw.BindAddr) > MaxHostLen {
			t.Fatalf("out of bounds accepted: %+v", fw)
		}
	})
}

func FuzzParseDirectTCPIP(f *testing.F) {
	f.Add(DirectTCPIP{"pi", 22, "198.51.100.20", 40000}.Marshal())
	f.Add(DirectTCPIP{"127.0.0.1", 22, "", 0}.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDirectTCPIP(b)
		if err != nil {
			return
		}
		if string(d.Marshal()) != string(b) {
			t.Fatalf("round trip changed %x", b)
		}
		if d.Port == 0 || d.Port > 65535 || d.Host == "" {
			t.Fatalf("out of bounds accepted: %+v", d)
		}
	})
}

func TestParseForwardedTCPIP(t *testing.T) {
	t.Parallel()
	good := ForwardedTCPIP{"pi", 22, "198.51.100.20", 40000}
	got, err := ParseForwardedTCPIP(good.Marshal())
	if err != nil || got != good {
		t.Fatalf("ParseForwardedTCPIP(%+v) = %+v, %v", good, got, err)
	}
	for _, bad := range []ForwardedTCPIP{{"", 22, "", 0}, {"pi", 0, "", 0}, {"pi", 70000, "", 0}, {"p\ni", 22, "", 0}, {"pi", 22, strings.Repeat("x", 300), 0}} {
		if _, err := ParseForwardedTCPIP(bad.Marshal()); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := ParseForwardedTCPIP(append(good.Marshal(), 0)); err == nil {
		t.Error("trailing byte accepted")
	}
}

func FuzzParseForwardedTCPIP(f *testing.F) {
	f.Add(ForwardedTCPIP{"pi", 22, "198.51.100.20", 40000}.Marshal())
	f.Add(ForwardedTCPIP{"localhost", 2201, "", 0}.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseForwardedTCPIP(b)
		if err != nil {
			return
		}
		if string(p.Marshal()) != string(b) {
			t.Fatalf("round trip changed %x", b)
		}
		if p.Port == 0 || p.Port > 65535 || p.Addr == "" || len(p.Addr) > MaxHostLen || len(p.OriginAddr) > MaxHostLen {
			t.Fatalf("out of bounds accepted: %+v", p)
		}
	})
}

func TestParseSiteRole(t *testing.T) {
	t.Parallel()
	for _, want := range []SiteRole{{true}, {false}} {
		got, err := ParseSiteRole(want.Marshal())
		if err != nil || got != want {
			t.Errorf("ParseSiteRole(%+v) = %+v, %v", want, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {1, 0}} {
		if r, err := ParseSiteRole(bad); err == nil {
			t.Errorf("ParseSiteRole(%x) = %+v, accepted", bad, r)
		}
	}
}
