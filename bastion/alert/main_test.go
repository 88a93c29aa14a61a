package alert

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/shared/report"
)

var (
	mainSince = time.Date(2026, 11, 22, 14, 2, 0, 0, time.UTC)
	mainAt    = mainSince.Add(3 * time.Minute)
	mainBack  = mainSince.Add(47 * time.Minute)
)

func mainDownReport(since time.Time) report.LinkReport {
	return report.LinkReport{Version: report.VersionMain, Link: report.LinkMain, Time: since.Add(3 * time.Minute), Since: since, Verdict: report.VerdictFailed,
		Reasons: []string{"dns://192.168.1.1:53: DNS answer SERVFAIL", "tcp://192.0.2.80:443: no answer within 3s"},
		Codes:   []string{report.CodeMainDNSServfail, report.CodeMainUnreachable}}
}

func mainUpReport(since, back time.Time) report.LinkReport {
	return report.LinkReport{Version: report.VersionMain, Link: report.LinkMain, Time: back, Since: since, Verdict: report.VerdictOK}
}

// Main internet down and back: the exact texts, one segment each, the
// detail with every reason, and the kinds.
func TestMainLinkTexts(t *testing.T) {
	t.Parallel()
	a, _, rec, log := roleAlerter(t)
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi:22", "nuc:3389"}}
	a.MainLink(pi, mainDownReport(mainSince))
	a.MainLink(pi, mainUpReport(mainSince, mainBack))
	got := sent(t, a, log)
	if !slices.Equal(kinds(got), []string{KindMainDown, KindMainBack}) {
		t.Fatalf("sent %q, want main down and back", kinds(got))
	}
	for i, want := range []string{
		"pi-agent: MAIN INTERNET DOWN since 14:02Z (backup up; ssh -J bast1 pi)",
		"pi-agent: main internet back after 47m",
	} {
		if got[i].Text != want {
			t.Errorf("text %q\nwant %q", got[i].Text, want)
		}
		if len(got[i].Text) > smsLimit {
			t.Errorf("text of %d characters: %q", len(got[i].Text), got[i].Text)
		}
	}
	for _, w := range []string{"DNS answer SERVFAIL", "no answer within 3s", "2026-11-22T14:02:00Z"} {
		if !strings.Contains(got[0].Detail, w) {
			t.Errorf("down detail %q lacks %q", got[0].Detail, w)
		}
	}
	if !strings.Contains(got[1].Detail, "back at 2026-11-22T14:49:00Z") {
		t.Errorf("back detail %q", got[1].Detail)
	}
	if ev := rec.withReason(KindMainBack); len(ev) != 1 || ev[0].DurationMS != (47*time.Minute).Milliseconds() || ev[0].Fingerprint != "SHA256:pi" {
		t.Errorf("main back audit events %+v", ev)
	}
}

// The texts fit one segment whatever the names, and fall back: no name
// registered drops the ssh hint, no key comment names the fingerprint, an
// outage from another day gives the date, an odd length keeps its seconds.
func TestMainLinkTextForms(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 80)
	tests := []struct {
		name  string
		agent Agent
		r     report.LinkReport
		want  string
	}{
		{"no names", Agent{Name: "pi-agent"}, mainDownReport(mainSince), "pi-agent: MAIN INTERNET DOWN since 14:02Z (backup up)"},
		{"no comment", Agent{Fingerprint: "SHA256:abc", Names: []string{"pi:22"}}, mainDownReport(mainSince), "SHA256:abc: MAIN INTERNET DOWN since 14:02Z (backup up; ssh -J bast1 pi)"},
		{"other day", Agent{Name: "pi-agent", Names: []string{"pi:22"}}, func() report.LinkReport {
			r := mainDownReport(mainSince)
			r.Time = mainSince.Add(20 * time.Hour)
			return r
		}(), "pi-agent: MAIN INTERNET DOWN since 14:02Z Nov 22 (backup up; ssh -J bast1 pi)"},
		{"long names", Agent{Name: long, Fingerprint: "SHA256:abc", Names: []string{long + ":22"}}, mainDownReport(mainSince), ""},
		{"seconds", Agent{Name: "pi-agent"}, mainUpReport(mainSince, mainBack.Add(30*time.Second)), "pi-agent: main internet back after 47m30s"},
		{"hours", Agent{Name: "pi-agent"}, mainUpReport(mainSince, mainSince.Add(2*time.Hour)), "pi-agent: main internet back after 2h"},
	}
	for _, tc := range tests {
		var text string
		if tc.r.Verdict == report.VerdictFailed {
			text, _ = mainDownText("bast1", tc.agent, tc.r)
		} else {
			text, _ = mainBackText(tc.agent, tc.r)
		}
		if len(text) > smsLimit {
			t.Errorf("%s: text of %d characters: %q", tc.name, len(text), text)
		}
		if tc.want != "" && text != tc.want {
			t.Errorf("%s: text %q\nwant %q", tc.name, text, tc.want)
		}
	}
}

// An agent resends its main-link state after a reconnect: the same down
// is texted once, a back once, a back with no down known not at all; a
// new outage is texted again.
func TestMainLinkRepeats(t *testing.T) {
	t.Parallel()
	a, _, _, log := roleAlerter(t)
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi:22"}}
	up := mainUpReport(mainSince, mainBack)
	a.MainLink(pi, up) // a back with no down known: a resend, or from before a restart
	a.MainLink(pi, mainDownReport(mainSince))
	a.MainLink(pi, mainDownReport(mainSince)) // resent after a reconnect
	a.MainLink(pi, up)
	a.MainLink(pi, up) // resent
	next := mainSince.Add(3 * time.Hour)
	a.MainLink(pi, mainDownReport(next))
	got := sent(t, a, log)
	if !slices.Equal(kinds(got), []string{KindMainDown, KindMainBack, KindMainDown}) {
		t.Fatalf("sent %q, want down, back, the next down", kinds(got))
	}
	if !strings.Contains(got[2].Text, "since 17:02Z") {
		t.Errorf("second outage %q", got[2].Text)
	}
}

// Main-link events follow the site role as the site's down does: a down
// is texted by the reporter only, its back by the bastion that texted it.
func TestMainLinkRole(t *testing.T) {
	t.Parallel()
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi:22"}}
	for name, tc := range map[string]struct {
		atDown, atBack bool
		want           []string
	}{
		"reporter":                    {true, true, []string{KindMainDown, KindMainBack}},
		"not reporter":                {false, false, nil},
		"became reporter during it":   {false, true, nil},
		"another became the reporter": {true, false, []string{KindMainDown, KindMainBack}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, _, rec, log := roleAlerter(t)
			a.SiteRole(pi, tc.atDown)
			a.MainLink(pi, mainDownReport(mainSince))
			a.SiteRole(pi, tc.atBack)
			a.MainLink(pi, mainUpReport(mainSince, mainBack))
			got := sent(t, a, log)
			if !slices.Equal(kinds(got), tc.want) {
				t.Errorf("sent %q, want %q", kinds(got), tc.want)
			}
			if n := len(rec.withReason(KindNotReporter)); n != 2-len(tc.want) {
				t.Errorf("%d events audited as not texted, want %d", n, 2-len(tc.want))
			}
		})
	}
}

// A backup-link report given to MainLink is ignored (the caller branches
// on LinkKind), and a main-link report leaves the backup link's texts
// alone; SITE DOWN says the main internet was down when it fits.
func TestMainLinkApart(t *testing.T) {
	t.Parallel()
	a, clk, rec, log := roleAlerter(t)
	pi := Agent{Name: "pi-agent", Fingerprint: "SHA256:pi", Names: []string{"pi:22"}}
	bad := report.LinkReport{Version: 1, Time: t0, ISP: "T-Mobile", Verdict: report.VerdictFailed, Reasons: []string{"high latency 420ms, maximum 100ms"}}
	a.MainLink(pi, bad)
	a.LinkReport(pi, report.LinkReport{}, bad)
	a.MainLink(pi, mainDownReport(mainSince))
	a.LinkReport(pi, bad, bad) // the same failure: nothing, main down or not
	a.AgentUp(pi)
	goDown(t, a, clk, rec, pi)
	got := sent(t, a, log)
	if !slices.Equal(kinds(got), []string{KindLinkFailed, KindMainDown, KindAgentDown}) {
		t.Fatalf("sent %q", kinds(got))
	}
	if want := "(main internet down since 14:02Z)"; !strings.Contains(got[2].Text, want) || len(got[2].Text) > smsLimit {
		t.Errorf("site down %q lacks %q", got[2].Text, want)
	}
}

func TestMainDownTextNamesTheSSHHost(t *testing.T) {
	r := report.LinkReport{Link: report.LinkMain, Verdict: report.VerdictFailed,
		Time: time.Date(2026, 12, 2, 14, 5, 0, 0, time.UTC), Since: time.Date(2026, 12, 2, 14, 2, 0, 0, time.UTC)}
	for _, names := range [][]string{{"nuc:3389", "pi:22"}, {"pi:22", "nuc:3389"}} {
		text, _ := mainDownText("bast1", Agent{Name: "radio", Names: names}, r)
		if want := "radio: MAIN INTERNET DOWN since 14:02Z (backup up; ssh -J bast1 pi)"; text != want {
			t.Errorf("names %v: text %q, want %q", names, text, want)
		}
	}
	text, _ := mainDownText("bast1", Agent{Name: "radio", Names: []string{"nuc:3389"}}, r)
	if !strings.HasSuffix(text, "ssh -J bast1 nuc)") {
		t.Errorf("only a non-SSH name: %q", text)
	}
}
