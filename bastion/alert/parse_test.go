package alert

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lifeline-dev/lifeline/shared/report"
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

// failureKinds judges by failure codes: a report's own (a new agent's,
// unknown codes included), or those derived from an older agent's English
// reasons, so that the figures in a reason never make a repeat look new.
func TestFailureKinds(t *testing.T) {
	t.Parallel()
	// A version 1 report as agents before codes wrote it, decoded as the
	// server does.
	old, err := report.Decode([]byte(`{"v":1,"time":"2026-11-22T10:00:00Z","isp":"T-Mobile","ip":"203.0.113.1","server":"fake","latency_ms":420,"jitter_ms":3,"download_bps":2500000,"bytes":31457280,"verdict":"failed","reasons":["high latency 420ms, maximum 100ms","low download speed 2.50 Mbit/s, minimum 10.0 Mbit/s"],"duration_s":12}`))
	if err != nil {
		t.Fatal(err)
	}
	failed := func(reasons []string, codes ...string) report.LinkReport {
		return report.LinkReport{Version: 1, Time: t0, Verdict: report.VerdictFailed, Reasons: reasons, Codes: codes}
	}
	tests := []struct {
		name string
		r    report.LinkReport
		want string
	}{
		{"ok", report.LinkReport{Verdict: report.VerdictOK}, ""},
		{"old agent", old, "download_slow,latency_high"},
		{"old agent, other figures", failed([]string{"low download speed 1.00 Mbit/s, minimum 10.0 Mbit/s", "high latency 900ms, maximum 100ms"}), "download_slow,latency_high"},
		{"old agent, check errors told apart", failed([]string{"check interrupted: its process ended", "check failed unexpectedly: boom"}), "check_failed,check_interrupted"},
		{"old agent, reasons of no known kind", failed([]string{"Something odd: 1", "another thing"}), "unknown:another,unknown:something"},
		{"new agent", failed([]string{"high latency 420ms, maximum 100ms", "wrong ISP"}, report.CodeLatencyHigh, report.CodeISPChanged), "isp_changed,latency_high"},
		{"new agent, codes over words", failed([]string{"latency was high", "latency again"}, report.CodeLatencyHigh, report.CodeLatencyHigh), "latency_high"},
		{"unknown code", failed([]string{"a reason of a later agent", "high latency 420ms"}, "a_code_of_the_future", report.CodeLatencyHigh), "a_code_of_the_future,latency_high"},
	}
	for _, tc := range tests {
		if got := failureKinds(tc.r); got != tc.want {
			t.Errorf("%s: failureKinds %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The link state machine over old and new reports: a repeat with other
// figures is not texted, a new kind (an unknown code too) is.
func TestLinkFailureCodes(t *testing.T) {
	t.Parallel()
	a, _, _, log := roleAlerter(t)
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi:22"}}
	oldSlow := report.LinkReport{Version: 1, Time: t0, ISP: "T-Mobile", Verdict: report.VerdictFailed, Reasons: []string{"low download speed 2.50 Mbit/s, minimum 10.0 Mbit/s"}}
	oldSlower := oldSlow
	oldSlower.Reasons = []string{"low download speed 0.50 Mbit/s, minimum 10.0 Mbit/s"}
	newSlow := oldSlower
	newSlow.Codes = []string{report.CodeDownloadSlow}
	future := newSlow
	future.Reasons = append(slices.Clone(newSlow.Reasons), "the modem reports no signal")
	future.Codes = []string{report.CodeDownloadSlow, "no_signal"}
	ok := report.LinkReport{Version: 1, Time: t0, ISP: "T-Mobile", DownloadBps: 40e6, Verdict: report.VerdictOK}
	var prev report.LinkReport
	for _, r := range []report.LinkReport{oldSlow, oldSlower, newSlow, future, future, ok} {
		a.LinkReport(pi, prev, r)
		prev = r
	}
	got := sent(t, a, log)
	if !slices.Equal(kinds(got), []string{KindLinkFailed, KindLinkFailed, KindLinkOK}) {
		t.Fatalf("sent %q, want the failure, the unknown code, ok again", kinds(got))
	}
	if !strings.Contains(got[1].Text, "no signal") {
		t.Errorf("the unknown code's reason is not shown: %q", got[1].Text)
	}
}

// Link verdicts follow the site role: a failure is texted by the reporter
// only, "ok again" by the bastion that texted the failure.
func TestLinkReportRole(t *testing.T) {
	t.Parallel()
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi:22"}}
	bad := report.LinkReport{Version: 1, Time: t0, ISP: "T-Mobile", Verdict: report.VerdictFailed, Reasons: []string{"high latency 420ms, maximum 100ms"}}
	ok := report.LinkReport{Version: 1, Time: t0, ISP: "T-Mobile", Verdict: report.VerdictOK}
	for name, tc := range map[string]struct {
		atFail, atOK bool
		want         []string
	}{
		"reporter":                    {true, true, []string{KindLinkFailed, KindLinkOK}},
		"not reporter":                {false, false, nil},
		"became reporter":             {false, true, nil},
		"another became the reporter": {true, false, []string{KindLinkFailed, KindLinkOK}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, _, rec, log := roleAlerter(t)
			a.SiteRole(pi, tc.atFail)
			a.LinkReport(pi, report.LinkReport{}, bad)
			a.SiteRole(pi, tc.atOK)
			a.LinkReport(pi, bad, ok)
			if got := sent(t, a, log); !slices.Equal(kinds(got), tc.want) {
				t.Errorf("sent %q, want %q", kinds(got), tc.want)
			}
			if n := len(rec.withReason(KindNotReporter)); n != 2-len(tc.want) {
				t.Errorf("%d events audited as not texted, want %d", n, 2-len(tc.want))
			}
		})
	}
}
