package report

import (
	"encoding/json"
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
		{"future version", `{"v":3,"verdict":"ok"}`, "version 3 is not supported"},
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
	for _, r := range []LinkReport{mainDown(), mainUp()} {
		b, _ := Encode(r)
		f.Add(b)
	}
	f.Add([]byte(`{"v":1,"time":"2026-01-01T00:00:00Z","verdict":"failed","reasons":["wrong ISP"],"codes":["isp_changed"],"link":"backup"}`))
	f.Add([]byte(`{"v":1,"time":"2026-01-01T00:00:00Z","verdict":"ok","link":"main"}`))
	f.Add([]byte(`{"v":2,"time":"2026-01-01T00:00:00Z","since":"2025-12-31T23:00:00Z","verdict":"failed","link":"main","reasons":["x"],"codes":["main_what"]}`))
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
		back, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded report refused: %v", err)
		}
		// The version follows the link, and only backup reports are
		// readable by a bastion that knows version 1 alone.
		if back.Version != r.Version || back.LinkKind() != r.LinkKind() {
			t.Fatalf("re-encoding changed version %d -> %d or link %q -> %q", r.Version, back.Version, r.Link, back.Link)
		}
		if _, err := decodeV1(again); (err == nil) != (r.LinkKind() == LinkBackup) {
			t.Fatalf("old decoder on a %s report: %v", r.LinkKind(), err)
		}
		if c := r.FailureCodes(); len(c) != len(r.Reasons) {
			t.Fatalf("%d codes for %d reasons", len(c), len(r.Reasons))
		}
		_ = r.Summary()
	})
}

// TestBudgetFields: the fields added for the monthly check budget travel,
// are checked, show in the summary, and leave an older report (without
// them) and its summary as they were.
func TestBudgetFields(t *testing.T) {
	t.Parallel()
	old := `{"v":1,"time":"2026-11-22T10:00:00Z","isp":"T-Mobile","ip":"203.0.113.1","server":"fake","latency_ms":42,"jitter_ms":3,"download_bps":25000000,"bytes":31457280,"verdict":"ok","duration_s":12}`
	r, err := Decode([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if r.Manual || r.MonthBytes != 0 || r.MonthBudget != 0 || r.Skipped != 0 || r.Notes != nil {
		t.Errorf("an old report gained values: %+v", r)
	}
	wantOld := `ok at 2026-11-22T10:00:00Z: isp "T-Mobile", download 25.0 Mbit/s, latency 42 ms`
	if s := r.Summary(); s != wantOld {
		t.Errorf("summary of an old report %q, want %q", s, wantOld)
	}
	if b, _ := Encode(r); strings.Contains(string(b), "month") || strings.Contains(string(b), "notes") {
		t.Errorf("zero new fields are written: %s", b)
	}

	r = valid()
	r.Manual, r.MonthBytes, r.MonthBudget, r.Skipped = true, 48e6, 300e6, 3
	r.Notes = []string{"3 scheduled link checks skipped from 2026-11-20T10:00:00Z to 2026-11-20T12:00:00Z: the monthly check budget of 300 MB was used up"}
	b, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Manual || got.MonthBytes != 48e6 || got.MonthBudget != 300e6 || got.Skipped != 3 || len(got.Notes) != 1 {
		t.Errorf("round trip %+v", got)
	}
	if s := got.Summary(); !strings.HasSuffix(s, ", checks this month 48.0 of 300.0 MB, 3 checks skipped (monthly budget used up)") {
		t.Errorf("summary %q", s)
	}

	for name, edit := range map[string]func(*LinkReport){
		"month_bytes":  func(r *LinkReport) { r.MonthBytes = -1 },
		"month_budget": func(r *LinkReport) { r.MonthBudget = -1 },
		"skipped":      func(r *LinkReport) { r.Skipped = -1 },
		"notes":        func(r *LinkReport) { r.Notes = make([]string, MaxNotes+1) },
		"a note":       func(r *LinkReport) { r.Notes = []string{"a\x1b[2Jb"} },
	} {
		r := valid()
		edit(&r)
		if _, err := Encode(r); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

// The largest report the rules allow still fits MaxSize.
func TestLargestReportFits(t *testing.T) {
	t.Parallel()
	r := valid()
	r.Verdict = VerdictFailed
	r.ISP, r.IP, r.Server = strings.Repeat("i", 256), strings.Repeat("p", 256), strings.Repeat("s", 256)
	for range 16 {
		r.Reasons = append(r.Reasons, strings.Repeat("r", 512))
	}
	for range MaxNotes {
		r.Notes = append(r.Notes, strings.Repeat("n", 512))
	}
	r.Manual, r.MonthBytes, r.MonthBudget, r.Skipped = true, 1<<62, 1<<62, 1<<30
	r.Light, r.SpeedNote, r.NextSpeed = true, strings.Repeat("s", 512), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	if _, err := Encode(r); err != nil {
		t.Fatal(err)
	}
}

// TestPacingFields: the fields added for paced speed measurements travel,
// are checked and show in the summary; an older report has none (and
// reads as a speed measurement), and a report that has them still decodes
// where only the older fields are known (an older bastion ignores the
// others).
func TestPacingFields(t *testing.T) {
	t.Parallel()
	next := time.Date(2026, 11, 23, 9, 0, 30, 0, time.UTC)
	r := valid()
	r.DownloadBps, r.Bytes = 0, 41_000
	r.Light, r.NextSpeed = true, next
	r.SpeedNote = "speed not measured this hour: paced to the monthly budget (120.3 MB of 300 MB used in 2026-11), next measurement about Nov 23 09:00 UTC"
	b, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	lightJSON := b
	for _, want := range []string{`"light":true`, `"speed_note":"speed not measured this hour`, `"next_speed":"2026-11-23T09:00:30Z"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Light || got.SpeedNote != r.SpeedNote || !got.NextSpeed.Equal(next) {
		t.Errorf("round trip %+v", got)
	}
	want := `ok at 2026-11-22T10:00:00Z: isp "T-Mobile", download not measured (` + r.SpeedNote + `), latency 42 ms`
	if s := got.Summary(); s != want {
		t.Errorf("summary %q\nwant %q", s, want)
	}
	// A speed measurement with a note (too small to judge) keeps its figure.
	r = valid()
	r.SpeedNote = "download 8.00 Mbit/s over only 0.50s, cut short by the check's data allowance: too small a measurement to judge"
	if s := r.Summary(); !strings.Contains(s, "download 25.0 Mbit/s (download 8.00 Mbit/s over only 0.50s") {
		t.Errorf("summary %q", s)
	}
	// Without them nothing is written.
	if b, _ := Encode(valid()); strings.Contains(string(b), "light") || strings.Contains(string(b), "speed_") || strings.Contains(string(b), "next_") {
		t.Errorf("zero pacing fields are written: %s", b)
	}
	// An older bastion's LinkReport knew only the fields before these.
	var old struct {
		Version     int       `json:"v"`
		Time        time.Time `json:"time"`
		ISP         string    `json:"isp"`
		DownloadBps float64   `json:"download_bps"`
		Verdict     string    `json:"verdict"`
		MonthBytes  int64     `json:"month_bytes,omitempty"`
	}
	if err := json.Unmarshal(lightJSON, &old); err != nil || old.Version != Version || old.Verdict != VerdictOK || old.ISP != "T-Mobile" {
		t.Errorf("an older reader: %+v, %v", old, err)
	}
	for name, edit := range map[string]func(*LinkReport){
		"speed_note":  func(r *LinkReport) { r.SpeedNote = "a\nb" },
		"speed_note ": func(r *LinkReport) { r.SpeedNote = strings.Repeat("x", 513) },
	} {
		r := valid()
		edit(&r)
		if _, err := Encode(r); err == nil || !strings.Contains(err.Error(), strings.TrimSpace(name)) {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

func TestDownloadText(t *testing.T) {
	r := LinkReport{DownloadBps: 24.1e6}
	if got := r.Download(); got != "24.1 Mbit/s" {
		t.Errorf("Download() = %q", got)
	}
	r.Light = true
	if got := r.Download(); got != "speed not measured" {
		t.Errorf("a light check's Download() = %q, want speed not measured", got)
	}
}
