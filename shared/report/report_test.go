package report

import (
	"strings"
	"testing"
	"time"
)

func valid() LinkReport {
	return LinkReport{
		Time: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC), ISP: "T-Mobile", IP: "203.0.113.1", Server: "fake",
		LatencyMS: 42, JitterMS: 3, DownloadBps: 25e6, Bytes: 30 << 20, Verdict: VerdictOK, DurationSecs: 12,
		KeepaliveMS: &RTT{Samples: 700, Median: 40, Worst: 900, Missed: 1},
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	b, err := Encode(valid())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"v":1`) {
		t.Fatalf("no version in %s", b)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ISP != "T-Mobile" || got.KeepaliveMS.Worst != 900 || !got.OK() || got.Version != Version {
		t.Fatalf("round trip changed the report: %+v", got)
	}
}

func TestDecodeRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, payload, want string
	}{
		{"not JSON", `hello`, "not JSON"},
		{"no version", `{"verdict":"ok"}`, "no version"},
		{"future version", `{"v":2,"verdict":"ok"}`, "version 2 is not supported"},
		{"bad verdict", `{"v":1,"time":"2026-01-01T00:00:00Z","verdict":"great"}`, "neither"},
		{"failed without reason", `{"v":1,"time":"2026-01-01T00:00:00Z","verdict":"failed"}`, "at least one reason"},
		{"no time", `{"v":1,"verdict":"ok"}`, "time is missing"},
		{"negative speed", `{"v":1,"time":"2026-01-01T00:00:00Z","verdict":"ok","download_bps":-1}`, "download_bps"},
		{"control characters", `{"v":1,"time":"2026-01-01T00:00:00Z","verdict":"ok","isp":"a\u001b[2Jb"}`, "control characters"},
		{"too big", `{"v":1,"isp":"` + strings.Repeat("x", MaxSize) + `"}`, "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode([]byte(tc.payload))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	t.Parallel()
	r := valid()
	r.Verdict = VerdictFailed
	if _, err := Encode(r); err == nil {
		t.Fatal("failed verdict without reasons encoded")
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := Encode(valid())
	f.Add(b)
	f.Add([]byte(`{"v":1,"time":"2026-01-01T00:00:00Z","verdict":"failed","reasons":["wrong ISP"]}`))
	f.Add([]byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := Decode(payload)
		if err != nil {
			return
		}
		// Whatever is accepted is valid, re-encodes, and decodes the same.
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted an invalid report: %v", err)
		}
		again, err := Encode(r)
		if err != nil {
			t.Fatalf("accepted report does not re-encode: %v", err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("re-encoded report refused: %v", err)
		}
		_ = r.Summary()
	})
}
