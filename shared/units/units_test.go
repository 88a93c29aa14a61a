package units

import (
	"encoding/json"
	"flag"
	"strings"
	"testing"

	"github.com/kelseyhightower/envconfig"
)

// Compile-time checks that both types plug into envconfig and flag.
var (
	_ envconfig.Decoder = (*ByteSize)(nil)
	_ envconfig.Decoder = (*BitRate)(nil)
	_ flag.Value        = (*ByteSize)(nil)
	_ flag.Value        = (*BitRate)(nil)
)

func TestParseByteSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{in: "50MB", want: 50_000_000},
		{in: "1.5GB", want: 1_500_000_000},
		{in: "512KiB", want: 512 * 1024},
		{in: "0.5KiB", want: 512},
		{in: "1 GiB", want: 1 << 30},
		{in: " 2 TiB ", want: 2 << 40},
		{in: "17", want: 17},
		{in: "17B", want: 17},
		{in: "0", want: 0},
		{in: "3kb", want: 3000},
		{in: "3K", want: 3000},
		{in: "7mi", want: 7 << 20},
		{in: "5 mb", want: 5_000_000},
		{in: "1.", want: 1},
		{in: ".5kB", want: 500},
		{in: "9223372036854775807B", want: 1<<63 - 1},
		{in: "", wantErr: "empty"},
		{in: "MB", wantErr: "non-negative number"},
		{in: "-1MB", wantErr: "non-negative number"},
		{in: "1e3", wantErr: "unknown unit"},
		{in: "1.0001kB", wantErr: "whole number"},
		{in: "0.3B", wantErr: "whole number"},
		{in: "1..5MB", wantErr: "more than one decimal point"},
		{in: "9223372036854775808B", wantErr: "too large"},
		{in: "9EB", wantErr: "unknown unit"},
		{in: "10Mbps", wantErr: "unknown unit"},
		{in: "5  MB", wantErr: "unknown unit"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseByteSize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseByteSize(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseBitRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    BitRate
		wantErr string
	}{
		{in: "10Mbps", want: 10_000_000},
		{in: "512kbps", want: 512_000},
		{in: "512Kbps", want: 512_000},
		{in: "1Gbps", want: 1_000_000_000},
		{in: "1.5Gbps", want: 1_500_000_000},
		{in: "2 Mbit/s", want: 2_000_000},
		{in: "100", want: 100},
		{in: "100bps", want: 100},
		{in: "0", want: 0},
		{in: "0.5kbps", want: 500},
		{in: "10MBps", wantErr: "unknown unit"},
		{in: "10MB/s", wantErr: "unknown unit"},
		{in: "10MBPS", wantErr: "unknown unit"},
		{in: "10Xbps", wantErr: "unknown unit"},
		{in: "0.0005kbps", wantErr: "whole number"},
		{in: "-5Mbps", wantErr: "non-negative number"},
		{in: "10000000Tbps", wantErr: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseBitRate(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseBitRate(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseBitRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	sizes := map[ByteSize]string{
		0:             "0B",
		17:            "17B",
		50 * MB:       "50MB",
		1500 * MB:     "1.5GB",
		512 * KiB:     "512KiB",
		GiB:           "1GiB",
		1536 * MiB:    "1.5GiB",
		1234567:       "1234.567kB",
		1234:          "1.234kB",
		1001:          "1.001kB",
		999:           "999B",
		1_234_567_891: "1234567.891kB",
		1<<63 - 1:     "9223372036854775.807kB",
	}
	for v, want := range sizes {
		if got := v.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(v), got, want)
		}
	}
	rates := map[BitRate]string{
		0:                     "0bps",
		10 * Mbps:             "10Mbps",
		1500 * Mbps:           "1.5Gbps",
		512 * Kbps:            "512kbps",
		1_000_001:             "1000.001kbps",
		1_000_000_007:         "1000000.007kbps",
		1_000_000_000_007 - 1: "1000000000.006kbps",
	}
	for v, want := range rates {
		if got := v.String(); got != want {
			t.Errorf("BitRate(%d).String() = %q, want %q", int64(v), got, want)
		}
	}
}

func TestEnvconfigAndJSON(t *testing.T) {
	t.Setenv("UNITSTEST_BUDGET", "1.5GB")
	t.Setenv("UNITSTEST_MIN", "25Mbps")
	var spec struct {
		Budget ByteSize `envconfig:"BUDGET" default:"50MB"`
		Min    BitRate  `envconfig:"MIN" default:"10Mbps"`
		Dflt   ByteSize `envconfig:"DFLT" default:"512KiB"`
	}
	if err := envconfig.Process("UNITSTEST", &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Budget != 1500*MB || spec.Min != 25*Mbps || spec.Dflt != 512*KiB {
		t.Fatalf("decoded %+v", spec)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"Budget":"1.5GB","Min":"25Mbps","Dflt":"512KiB"}`; string(b) != want {
		t.Fatalf("json %s, want %s", b, want)
	}
	t.Setenv("UNITSTEST_MIN", "25MB/s")
	if err := envconfig.Process("UNITSTEST", &spec); err == nil || !strings.Contains(err.Error(), "unknown unit") {
		t.Fatalf("a byte rate was accepted as a bit rate: %v", err)
	}
}

// FuzzParseByteSize: parsing never panics, never yields a negative size, and
// whatever parses prints back to a string that parses to the same value.
func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"50MB", "1.5GB", "512KiB", "0", "1e3", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseByteSize(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParseByteSize(%q) = %d, negative", s, v)
		}
		back, err := ParseByteSize(v.String())
		if err != nil || back != v {
			t.Fatalf("round trip %q -> %d -> %q -> %d, %v", s, v, v.String(), back, err)
		}
	})
}

// FuzzParseBitRate: the same properties for bit rates.
func FuzzParseBitRate(f *testing.F) {
	for _, s := range []string{"10Mbps", "512kbps", "1.5Gbps", "10MBps", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseBitRate(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParseBitRate(%q) = %d, negative", s, v)
		}
		back, err := ParseBitRate(v.String())
		if err != nil || back != v {
			t.Fatalf("round trip %q -> %d -> %q -> %d, %v", s, v, v.String(), back, err)
		}
	})
}
