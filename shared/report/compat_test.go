package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// decodeV1 is Decode as it was before main-link reports and codes (git show
// HEAD:shared/report/report.go at ada6f32), verbatim: the decoder of every
// bastion already deployed. It calls today's Validate, which checks more
// than the old one did (link, codes, since) and nothing less, so what
// decodeV1 accepts here the old bastion accepts too.
func decodeV1(payload []byte) (LinkReport, error) {
	var r LinkReport
	if len(payload) > MaxSize {
		return r, fmt.Errorf("link report of %d bytes exceeds the %d byte limit", len(payload), MaxSize)
	}
	var probe struct {
		Version *int `json:"v"`
	}
	if err := json.Unmarshal(payload, &probe); err != nil {
		return r, fmt.Errorf("link report is not JSON: %w", err)
	}
	if probe.Version == nil {
		return r, errors.New("link report has no version field \"v\"")
	}
	if *probe.Version != Version {
		return r, fmt.Errorf("link report version %d is not supported (this bastion reads version %d)", *probe.Version, Version)
	}
	if err := json.Unmarshal(payload, &r); err != nil {
		return r, fmt.Errorf("decode link report: %w", err)
	}
	if err := r.Validate(); err != nil {
		return LinkReport{}, err
	}
	return r, nil
}

var (
	downSince = time.Date(2026, 11, 22, 9, 55, 0, 0, time.UTC)
	downAt    = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	backAt    = time.Date(2026, 11, 22, 10, 42, 30, 0, time.UTC)
)

func mainDown() LinkReport {
	return LinkReport{Link: LinkMain, Time: downAt, Since: downSince, Verdict: VerdictFailed,
		Reasons: []string{"dns://192.0.2.53:53: DNS answer SERVFAIL", "tcp://192.0.2.80:443: no answer within 3s"},
		Codes:   []string{CodeMainDNSServfail, CodeMainUnreachable}}
}

func mainUp() LinkReport {
	return LinkReport{Link: LinkMain, Time: backAt, Since: downSince, Verdict: VerdictOK}
}

// The version this package must keep writing for backup-link reports: the
// only one deployed bastions read (decodeV1 depends on it).
func TestVersionOneStays(t *testing.T) {
	t.Parallel()
	if Version != 1 || VersionMain != 2 {
		t.Fatalf("Version %d, VersionMain %d: backup reports must stay version 1, main ones 2", Version, VersionMain)
	}
}

// (a) An old agent's report, as today's agent writes it, decodes on the new
// decoder as a backup-link report without codes; FailureCodes derives its
// codes from the reasons.
func TestOldAgentReportDecodes(t *testing.T) {
	t.Parallel()
	old := `{"v":1,"time":"2026-11-22T10:00:00Z","isp":"T-Mobile","ip":"203.0.113.1","server":"fake","latency_ms":420,"jitter_ms":3,"download_bps":2500000,"bytes":31457280,"verdict":"failed","reasons":["wrong ISP \"T-Mobile\", expected \"starlink\": traffic may be leaving by another link","high latency 420ms, maximum 100ms","low download speed 2.50 Mbit/s, minimum 10.0 Mbit/s"],"keepalive_rtt_ms":{"samples":700,"median":40,"worst":900,"missed":1},"duration_s":12}`
	r, err := Decode([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if r.Link != "" || r.LinkKind() != LinkBackup || r.Codes != nil || !r.Since.IsZero() || r.Version != Version {
		t.Errorf("old report decoded as %+v", r)
	}
	want := []string{CodeISPChanged, CodeLatencyHigh, CodeDownloadSlow}
	if got := r.FailureCodes(); !slices.Equal(got, want) {
		t.Errorf("FailureCodes %v, want %v", got, want)
	}
	if b, _ := Encode(r); strings.Contains(string(b), `"codes":`) || strings.Contains(string(b), `"link":`) || strings.Contains(string(b), `"since":`) {
		t.Errorf("re-encoding the old report adds fields: %s", b)
	}
}

// (b) A new agent's backup-link report (with codes) is version 1 and the old
// decoder accepts it; a main-link report is version 2 and the old decoder
// refuses it rather than take it for a backup-link report.
func TestNewAgentOldBastion(t *testing.T) {
	t.Parallel()
	for _, link := range []string{"", LinkBackup} {
		r := valid()
		r.Link = link
		r.Verdict = VerdictFailed
		r.Reasons = []string{"high latency 420ms, maximum 100ms", "some reason of a later agent"}
		r.Codes = []string{CodeLatencyHigh, "a_code_of_the_future"}
		b, err := Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"v":1,`) {
			t.Errorf("backup report %s is not version 1", b)
		}
		got, err := decodeV1(b)
		if err != nil {
			t.Fatalf("the old decoder refuses a new backup report (link %q): %v", link, err)
		}
		if got.Verdict != VerdictFailed || len(got.Reasons) != 2 || got.ISP != "T-Mobile" {
			t.Errorf("the old decoder read %+v", got)
		}
		// The new decoder keeps the codes, the unknown one included.
		got, err = Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.FailureCodes(), r.Codes) {
			t.Errorf("codes %v, want %v", got.FailureCodes(), r.Codes)
		}
	}
	for name, r := range map[string]LinkReport{"down": mainDown(), "up": mainUp()} {
		b, err := Encode(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(string(b), `"v":2,`) {
			t.Errorf("%s: main report %s is not version 2", name, b)
		}
		if _, err := decodeV1(b); err == nil || !strings.Contains(err.Error(), "version 2 is not supported") {
			t.Errorf("%s: the old decoder: %v, want version 2 refused", name, err)
		}
	}
}

// (c) Round trips of main-link reports, and their summaries.
func TestMainRoundTrip(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		r       LinkReport
		summary string
	}{
		"down": {mainDown(), "main link down since 2026-11-22T09:55:00Z: dns://192.0.2.53:53: DNS answer SERVFAIL; tcp://192.0.2.80:443: no answer within 3s"},
		"up":   {mainUp(), "main link back at 2026-11-22T10:42:30Z after 47m30s (down since 2026-11-22T09:55:00Z)"},
	} {
		b, err := Encode(tc.r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := tc.r
		want.Version = VersionMain
		if got.Link != LinkMain || got.Version != VersionMain || !got.Since.Equal(want.Since) || !got.Time.Equal(want.Time) ||
			got.Verdict != want.Verdict || !slices.Equal(got.Reasons, want.Reasons) || !slices.Equal(got.Codes, want.Codes) {
			t.Errorf("%s: round trip %+v, want %+v", name, got, want)
		}
		if s := got.Summary(); s != tc.summary {
			t.Errorf("%s: summary %q\nwant %q", name, s, tc.summary)
		}
	}
}

func TestDecodeRefusesLinkAndCodes(t *testing.T) {
	t.Parallel()
	const base = `"time":"2026-01-01T00:00:00Z"`
	tests := []struct {
		name, payload, want string
	}{
		{"v1 about the main link", `{"v":1,` + base + `,"verdict":"ok","link":"main"}`, "version 1 is not supported for the main link"},
		{"v2 about the backup link", `{"v":2,` + base + `,"verdict":"ok"}`, "version 2 is not supported for the backup link"},
		{"v2 explicitly backup", `{"v":2,` + base + `,"verdict":"ok","link":"backup"}`, "version 2 is not supported for the backup link"},
		{"unknown link", `{"v":1,` + base + `,"verdict":"ok","link":"satellite"}`, `link "satellite" is neither`},
		{"fewer codes than reasons", `{"v":1,` + base + `,"verdict":"failed","reasons":["a","b"],"codes":["x"]}`, "1 codes for 2 reasons"},
		{"codes without reasons", `{"v":1,` + base + `,"verdict":"ok","codes":["x"]}`, "1 codes for 0 reasons"},
		{"bad code", `{"v":1,` + base + `,"verdict":"failed","reasons":["a"],"codes":["Latency High"]}`, "a code is"},
		{"empty code", `{"v":1,` + base + `,"verdict":"failed","reasons":["a"],"codes":[""]}`, "a code is"},
		{"long code", `{"v":1,` + base + `,"verdict":"failed","reasons":["a"],"codes":["` + strings.Repeat("x", MaxCode+1) + `"]}`, "a code is"},
		{"main failed without since", `{"v":2,` + base + `,"verdict":"failed","link":"main","reasons":["a"],"codes":["main_unreachable"]}`, "since"},
		{"since after time", `{"v":2,` + base + `,"since":"2026-01-02T00:00:00Z","verdict":"ok","link":"main"}`, "since is after time"},
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
	// Encode refuses the same reports (it sets the version itself).
	r := mainDown()
	r.Since = time.Time{}
	if _, err := Encode(r); err == nil {
		t.Error("a failed main report without since encoded")
	}
}

// CodeOf classifies the reasons agent/linkcheck gives today (copied from
// its check.go, program.go and history.go; shared cannot import the agent).
func TestCodeOf(t *testing.T) {
	t.Parallel()
	for reason, want := range map[string]string{
		"speed test: fetch client info: dial tcp: i/o timeout":                                            CodeUnreachable,
		"speed test: latency to fake: context deadline exceeded":                                          CodeUnreachable,
		`ISP unknown, expected "starlink"`:                                                                CodeISPUnknown,
		`wrong ISP "T-Mobile USA", expected "starlink": traffic may be leaving by another link`:           CodeISPChanged,
		"high latency 101ms, maximum 100ms":                                                               CodeLatencyHigh,
		"low download speed 9.99 Mbit/s, minimum 10.0 Mbit/s":                                             CodeDownloadSlow,
		"check failed unexpectedly: boom":                                                                 CodeCheckFailed,
		"link check program /usr/lib/lifeline/lifeline-linkcheck not found: tried ...":                    CodeCheckFailed,
		"link check program /x killed: no result in time (the check's deadline was 2m0s after its start)": CodeCheckFailed,
		"link check request: json: unsupported value":                                                     CodeCheckFailed,
		"check interrupted: its process ended during it (crash, kill or power cut); counted at its whole": CodeCheckInterrupted,
		"and 25 more":     CodeMore,
		"unknown failure": CodeUnknown,
		"something else":  CodeUnknown,
		"":                CodeUnknown,
	} {
		if got := CodeOf(reason); got != want {
			t.Errorf("CodeOf(%q) = %q, want %q", reason, got, want)
		}
	}
	// Every code constant is a valid code.
	for _, c := range []string{CodeUnreachable, CodeISPUnknown, CodeISPChanged, CodeLatencyHigh, CodeDownloadSlow, CodeCheckFailed,
		CodeCheckInterrupted, CodeMore, CodeUnknown, CodeMainUnreachable, CodeMainDNSServfail, CodeMainDNSRefused, CodeMainDNSError, CodeMainTCPRefused} {
		r := valid()
		r.Verdict, r.Reasons, r.Codes = VerdictFailed, []string{"x"}, []string{c}
		if err := r.Validate(); err != nil {
			t.Errorf("code %q: %v", c, err)
		}
	}
}

// FailureCodes prefers the report's codes, and falls back to the reasons
// when the counts disagree (which Validate refuses on the wire).
func TestFailureCodes(t *testing.T) {
	t.Parallel()
	r := mainDown()
	if got := r.FailureCodes(); !slices.Equal(got, r.Codes) {
		t.Errorf("FailureCodes %v", got)
	}
	got := r.FailureCodes()
	got[0] = "changed"
	if r.Codes[0] == "changed" {
		t.Error("FailureCodes returns the report's own slice")
	}
	if (&LinkReport{Verdict: VerdictOK}).FailureCodes() != nil {
		t.Error("codes for no reasons")
	}
}

func TestJumpStartOnMainReports(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 14, 2, 0, 0, time.UTC)
	r := LinkReport{Version: VersionMain, Link: LinkMain, Verdict: VerdictFailed, Time: t0.Add(3 * time.Minute), Since: t0,
		Reasons: []string{"dns://1.0.0.1:53: no answer within 3s"}, Codes: []string{CodeMainUnreachable},
		Jump: &JumpStart{StartedAt: t0.Add(time.Minute), ReadyAt: t0.Add(2 * time.Minute), Attempts: 1, LastCode: "ok"}}
	b, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Jump == nil || *got.Jump != *r.Jump {
		t.Fatalf("jump round trip: %+v, want %+v", got.Jump, r.Jump)
	}
	// The old decoder never sees it: main reports are version 2.
	if _, err := decodeV1(b); err == nil {
		t.Error("the old decoder accepted a main report with jump")
	}
	bad := r
	bad.Jump = &JumpStart{Attempts: 1, LastCode: "Bad Code"}
	if err := bad.Validate(); err == nil {
		t.Error("a jump code with spaces and capitals was accepted")
	}
	backup := LinkReport{Version: Version, Verdict: VerdictOK, Time: t0, Jump: &JumpStart{Attempts: 1}}
	if err := backup.Validate(); err == nil {
		t.Error("jump on a backup report was accepted")
	}
}
