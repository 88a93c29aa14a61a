package forward

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		spec    string
		want    []Forward
		wantErr []string // substrings the error must contain
	}{
		{name: "default", spec: "pi:22=127.0.0.1:22", want: []Forward{{"pi", 22, "127.0.0.1", 22}}},
		{name: "two with spaces", spec: " pi:22=127.0.0.1:22 , nuc:3389=192.168.1.100:3389 ,",
			want: []Forward{{"pi", 22, "127.0.0.1", 22}, {"nuc", 3389, "192.168.1.100", 3389}}},
		{name: "sshd bind address", spec: "localhost:2201=127.0.0.1:22", want: []Forward{{"localhost", 2201, "127.0.0.1", 22}}},
		{name: "ipv6 target", spec: "pi:22=[::1]:22", want: []Forward{{"pi", 22, "::1", 22}}},
		{name: "lan host name", spec: "nas:445=nas.lan:445", want: []Forward{{"nas", 445, "nas.lan", 445}}},
		{name: "empty", spec: "", wantErr: []string{"no forward given"}},
		{name: "only commas", spec: " , ,", wantErr: []string{"no forward given"}},
		{name: "no equals", spec: "pi:22", wantErr: []string{`forward "pi:22"`, "NAME:PORT=HOST:PORT"}},
		{name: "no port", spec: "pi=127.0.0.1:22", wantErr: []string{"listen side", "missing port"}},
		{name: "port zero", spec: "pi:0=127.0.0.1:22", wantErr: []string{`port "0"`}},
		{name: "port too big", spec: "pi:22=127.0.0.1:65536", wantErr: []string{"target", `port "65536"`}},
		{name: "port with sign", spec: "pi:+22=127.0.0.1:22", wantErr: []string{`port "+22"`}},
		{name: "leading zero port", spec: "pi:022=127.0.0.1:22", wantErr: []string{`port "022"`}},
		{name: "bad name", spec: "p i:22=127.0.0.1:22", wantErr: []string{`host "p i"`}},
		{name: "quote in name", spec: `p"i:22=127.0.0.1:22`, wantErr: []string{"is not allowed"}},
		{name: "empty target host", spec: "pi:22=:22", wantErr: []string{"host is empty"}},
		{name: "zone", spec: "pi:22=[fe80::1%eth0]:22", wantErr: []string{"zoned"}},
		{name: "duplicate", spec: "pi:22=127.0.0.1:22,PI:22=127.0.0.1:2222", wantErr: []string{"listed twice"}},
		{name: "all errors at once", spec: "a,b:0=c:1", wantErr: []string{`forward "a"`, `forward "b:0=c:1"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(tt.spec)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Parse(%q) = %v, want an error", tt.spec, got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Parse(%q) error %q does not contain %q", tt.spec, err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.spec, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q) = %#v, want %#v", tt.spec, got, tt.want)
			}
		})
	}
}

func TestFormatting(t *testing.T) {
	t.Parallel()
	fs, err := Parse("pi:22=127.0.0.1:22,nuc:3389=[::1]:3389")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fs[1].String(), "nuc:3389=[::1]:3389"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := fs[1].Target(), "[::1]:3389"; got != want {
		t.Errorf("Target() = %q, want %q", got, want)
	}
	if got, want := PermitListen(fs), `permitlisten="pi:22",permitlisten="nuc:3389"`; got != want {
		t.Errorf("PermitListen = %q, want %q", got, want)
	}
}

// FuzzParse checks that Parse never panics, that what it accepts prints back
// to a spec that parses to the same forwards, and that accepted names and
// targets can be written into an authorized_keys option without quoting
// trouble.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"pi:22=127.0.0.1:22",
		"pi:22=127.0.0.1:22,nuc:3389=192.168.1.100:3389",
		"localhost:2201=[::1]:22",
		"a:1=b:65535",
		"pi:22",
		"=:",
		"[::1]:22=[fe80::1%eth0]:22",
		"pi:0=x:1,,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		fs, err := Parse(spec)
		if err != nil {
			if fs != nil {
				t.Fatalf("Parse(%q) returned forwards and an error", spec)
			}
			return
		}
		if len(fs) == 0 {
			t.Fatalf("Parse(%q) accepted an empty list", spec)
		}
		parts := make([]string, len(fs))
		for i, fw := range fs {
			if fw.Port == 0 || fw.TargetPort == 0 {
				t.Fatalf("Parse(%q) accepted port 0: %#v", spec, fw)
			}
			if strings.ContainsAny(fw.Name+fw.TargetHost, "\",= \t\n") {
				t.Fatalf("Parse(%q) accepted a host with a separator: %#v", spec, fw)
			}
			parts[i] = fw.String()
		}
		again, err := Parse(strings.Join(parts, ","))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", parts, err)
		}
		if !reflect.DeepEqual(fs, again) {
			t.Fatalf("round trip of %q: %#v != %#v", spec, fs, again)
		}
	})
}
