package alert

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/lifeline-dev/lifeline/shared/report"
)

// smsLimit is one GSM-7 SMS segment. Texts are built from a core that is
// always sent and extras that are added only while the text still fits.
const smsLimit = 160

// clean makes s safe and cheap for an SMS: printable ASCII only (anything
// else becomes '?', which also keeps the GSM-7 alphabet and stops terminal
// escapes from key comments or user names), the characters GSM-7 stores in
// two septets replaced, at most max characters.
func clean(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n >= max {
			b.WriteString("..")
			break
		}
		switch {
		case r == '[' || r == '{':
			r = '('
		case r == ']' || r == '}':
			r = ')'
		case r == '\\' || r == '|' || r == '^' || r == '~' || r == '`':
			r = '/'
		case r < 0x20 || r > 0x7e:
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// fit appends extras to core in order while the result stays within one
// SMS, skipping those that do not fit.
func fit(core string, extras ...string) string {
	for _, e := range extras {
		if e != "" && len(core)+len(e) <= smsLimit {
			core += e
		}
	}
	return core
}

// fitFirst appends to core the first of alternatives that keeps it within
// one SMS (the longest first), or none.
func fitFirst(core string, alternatives ...string) string {
	for _, e := range alternatives {
		if e != "" && len(core)+len(e) <= smsLimit {
			return core + e
		}
	}
	return core
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return "?"
	}
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()).String()
}

func loginText(bastion string, l Login) string {
	who := clean(l.Operator, 32)
	if who == "" {
		who = "?"
	}
	kind := "key"
	if l.Certificate {
		kind = "cert"
	}
	core := fmt.Sprintf("%s: login %s (%s %s) from %s", clean(bastion, 24), who, kind, clean(l.Fingerprint, 64), addrString(l.Source))
	var user string
	if l.User != "" {
		user = " user " + clean(l.User, 24)
	}
	return fit(core, user)
}

func agentLabel(a Agent) string {
	name := clean(a.Name, 32)
	if name == "" {
		name = clean(a.Fingerprint, 64)
	}
	if len(a.Names) > 0 {
		names := make([]string, 0, len(a.Names))
		for _, n := range a.Names {
			names = append(names, clean(n, 24))
		}
		name += " (" + strings.Join(names, ",") + ")"
	}
	return name
}

// downText is the SITE DOWN text; mainSince, when not zero, is when the
// site's main internet went down as the agent last reported it (both links
// gone, then), said if it fits.
func downText(bastion string, a Agent, since time.Time, after time.Duration, mainSince time.Time) string {
	var main string
	if !mainSince.IsZero() {
		main = " (main internet down since " + timeOfDay(mainSince, since) + ")"
	}
	return fit(fmt.Sprintf("%s: SITE DOWN: agent %s gone since %s", clean(bastion, 24), agentLabel(a), since.UTC().Format("15:04Z Jan 2")),
		main, fmt.Sprintf(" (no reconnect in %s)", shortDuration(after)))
}

// siteName names an agent's site in the texts about its main link: its key
// comment, else its fingerprint.
func siteName(a Agent) string {
	if name := clean(a.Name, 32); name != "" {
		return name
	}
	return clean(a.Fingerprint, 64)
}

// sshHost is the name an operator would give `ssh -J bastion NAME`: the
// agent's first registered name on port 22 (the Pi's own sshd), else its
// first name, without the port ("pi" of "pi:22"); "" when it has none.
func sshHost(a Agent) string {
	if len(a.Names) == 0 {
		return ""
	}
	host := a.Names[0]
	for _, n := range a.Names {
		if strings.HasSuffix(n, ":22") {
			host = n
			break
		}
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return clean(host, 24)
}

// timeOfDay is t as "14:02Z", with the date ("14:02Z Nov 21") when it is
// not on now's day (UTC).
func timeOfDay(t, now time.Time) string {
	t, now = t.UTC(), now.UTC()
	if t.YearDay() == now.YearDay() && t.Year() == now.Year() {
		return t.Format("15:04Z")
	}
	return t.Format("15:04Z Jan 2")
}

// mainDownText is the text of a main-link down report, and its detail:
// the reasons uncut. The way in over the backup link (ssh -J) is added
// when it fits and the agent has a name. When the agent reports that it
// started the jump host (outage mode: r.Jump.StartedAt), the text says so
// and when it was ready (r.Jump.ReadyAt, else the report's time).
func mainDownText(bastion string, a Agent, r report.LinkReport) (text, detail string) {
	core := fmt.Sprintf("%s: MAIN INTERNET DOWN since %s", siteName(a), timeOfDay(r.Since, r.Time))
	host, b := sshHost(a), clean(bastion, 24)
	var way string
	if host != "" && b != "" {
		way = fmt.Sprintf(" (backup up; ssh -J %s %s)", b, host)
	}
	if j := r.Jump; j != nil && !j.StartedAt.IsZero() {
		ready := j.ReadyAt
		if ready.IsZero() {
			ready = r.Time
		}
		at := timeOfDay(ready, r.Time)
		var started string
		if host != "" && b != "" {
			started = fmt.Sprintf("; jump host started, ssh -J %s %s ready at %s", b, host, at)
		}
		text = fitFirst(core, started, "; jump host started, ready at "+at, "; jump host started")
	} else {
		text = fitFirst(core, way, " (backup up)")
	}
	detail = fmt.Sprintf("%s: %s (down since %s)", text, clean(strings.Join(r.Reasons, "; "), 16*512), r.Since.UTC().Format(time.RFC3339))
	if j := r.Jump; j != nil {
		detail += fmt.Sprintf("; jump host start: %d attempt(s), last %s", j.Attempts, clean(j.LastCode, report.MaxCode))
		if j.LastMessage != "" {
			detail += " (" + clean(j.LastMessage, 512) + ")"
		}
		if !j.StartedAt.IsZero() {
			detail += ", started " + j.StartedAt.UTC().Format(time.RFC3339)
		}
		if !j.ReadyAt.IsZero() {
			detail += ", ready " + j.ReadyAt.UTC().Format(time.RFC3339)
		}
	}
	return text, detail
}

// jumpFailedText is the text of a down report whose agent could not start
// the jump host (r.Jump.LastCode, not "ok"), and its detail uncut.
func jumpFailedText(a Agent, r report.LinkReport) (text, detail string) {
	j := r.Jump
	core := fmt.Sprintf("%s: could not start the jump host: %s", siteName(a), clean(j.LastCode, report.MaxCode))
	tail := fmt.Sprintf("attempt %d)", j.Attempts)
	if j.LastMessage == "" {
		text = fit(core, " ("+tail)
	} else {
		room := max(smsLimit-len(core)-len(" (")-len(", ")-len(tail)-2, 10) // 2: the ".." of a cut
		text = fitFirst(core, " ("+clean(j.LastMessage, room)+", "+tail, " ("+tail)
	}
	detail = fmt.Sprintf("%s: could not start the jump host: %s (%s, attempt %d; main internet down since %s)",
		siteName(a), clean(j.LastCode, report.MaxCode), clean(j.LastMessage, 512), j.Attempts, r.Since.UTC().Format(time.RFC3339))
	return text, detail
}

// mainBackText is the text of a main-link up report (r.Since: when it went
// down), and its detail with both times.
func mainBackText(a Agent, r report.LinkReport) (text, detail string) {
	text = fmt.Sprintf("%s: main internet back after %s", siteName(a), outageLength(r.Time.Sub(r.Since)))
	detail = fmt.Sprintf("%s (down since %s, back at %s)", text, r.Since.UTC().Format(time.RFC3339), r.Time.UTC().Format(time.RFC3339))
	return text, detail
}

// outageLength is shortDuration without the zero seconds and minutes of a
// round figure: 47m, 1h5m, 2h, but 47m30s.
func outageLength(d time.Duration) string {
	s := shortDuration(d)
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func backText(bastion string, a Agent, outage time.Duration) string {
	return fmt.Sprintf("%s: site back: agent %s reconnected after %s down", clean(bastion, 24), agentLabel(a), shortDuration(outage))
}

func nameMovedText(bastion, target string, to, from Agent, takeover bool) string {
	label := func(a Agent) string {
		if n := clean(a.Name, 32); n != "" {
			return n
		}
		return clean(a.Fingerprint, 64)
	}
	if takeover {
		return fit(fmt.Sprintf("%s: name %s taken over by key %s from %s", clean(bastion, 24), clean(target, 40), label(to), label(from)),
			" (both keys are permitted it; the newest wins)")
	}
	return fmt.Sprintf("%s: name %s back with key %s after %s left", clean(bastion, 24), clean(target, 40), label(to), label(from))
}

// linkFailedText is the SMS text of a failed link check and its detail:
// every reason uncut, and the figures.
func linkFailedText(bastion string, a Agent, r report.LinkReport) (text, detail string) {
	core := fmt.Sprintf("%s: LINK FAILED at %s:", clean(bastion, 24), agentLabel(a))
	figures := fmt.Sprintf(" (isp %s, %s, %.0f ms)", clean(r.ISP, 24), r.Download(), r.LatencyMS)
	reasons := strings.Join(r.Reasons, "; ")
	// The reasons are the point of the text: they get the room left, cut
	// short if need be, before the figures are added when they still fit.
	room := max(smsLimit-len(core)-3, 40) // " " and the ".." of a cut
	text = fit(core+" "+clean(reasons, room), figures)
	return text, core + " " + clean(reasons, len(reasons)) + figures
}

func linkOKText(bastion string, a Agent, r report.LinkReport) string {
	return fit(fmt.Sprintf("%s: link ok again at %s", clean(bastion, 24), agentLabel(a)),
		fmt.Sprintf(": isp %s, %s, %.0f ms", clean(r.ISP, 24), r.Download(), r.LatencyMS))
}

func failedLoginsText(bastion string, total int, every time.Duration, bySource map[netip.Addr]int, others int) string {
	core := fmt.Sprintf("%s: %d failed logins in %s from %d sources", clean(bastion, 24), total, shortDuration(every), len(bySource)+others)
	type kv struct {
		a netip.Addr
		n int
	}
	var top []kv
	for a, n := range bySource {
		top = append(top, kv{a, n})
	}
	sort.Slice(top, func(i, j int) bool {
		if top[i].n != top[j].n {
			return top[i].n > top[j].n
		}
		return top[i].a.Less(top[j].a)
	})
	extras := []string{":"}
	for i, e := range top {
		if i == 3 {
			break
		}
		sep := " "
		if i > 0 {
			sep = ", "
		}
		extras = append(extras, fmt.Sprintf("%s%s x%d", sep, e.a, e.n))
	}
	text := fit(core, extras...)
	return strings.TrimSuffix(text, ":")
}

// summaryText summarises alerts held back by the rate limit (held) and
// alerts that found the spool full (overflow counts by kind). The detail
// adds the held alerts themselves, one a line.
func summaryText(bastion string, held []entry, overflow map[string]int) (text, detail string) {
	text = summaryCore(bastion, held, overflow)
	lines := []string{text}
	for _, e := range held {
		lines = append(lines, "- "+e.Created.UTC().Format(time.RFC3339)+" "+e.Text)
	}
	if n := sum(overflow); n > 0 {
		lines = append(lines, fmt.Sprintf("- %d more that found the alert spool full: see the audit log", n))
	}
	return text, strings.Join(lines, "\n")
}

func summaryCore(bastion string, held []entry, overflow map[string]int) string {
	byKind := map[string]int{}
	subjects := map[string]int{}
	total := 0
	for _, e := range held {
		byKind[e.Kind]++
		total++
		if e.Subject != "" {
			subjects[e.Subject]++
		}
	}
	for k, n := range overflow {
		byKind[k] += n
		total += n
	}
	core := fmt.Sprintf("%s: %d alerts held back by the SMS limit", clean(bastion, 24), total)
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		if byKind[kinds[i]] != byKind[kinds[j]] {
			return byKind[kinds[i]] > byKind[kinds[j]]
		}
		return kinds[i] < kinds[j]
	})
	parts := []string{":"}
	for i, k := range kinds {
		sep := " "
		if i > 0 {
			sep = ", "
		}
		parts = append(parts, fmt.Sprintf("%s%d %s", sep, byKind[k], strings.ReplaceAll(k, "_", " ")))
	}
	subs := make([]string, 0, len(subjects))
	for s := range subjects {
		subs = append(subs, s)
	}
	sort.Slice(subs, func(i, j int) bool {
		if subjects[subs[i]] != subjects[subs[j]] {
			return subjects[subs[i]] > subjects[subs[j]]
		}
		return subs[i] < subs[j]
	})
	if len(subs) > 0 {
		parts = append(parts, ". Who:")
		for i, s := range subs {
			sep := " "
			if i > 0 {
				sep = ", "
			}
			parts = append(parts, fmt.Sprintf("%s%s x%d", sep, clean(s, 32), subjects[s]))
		}
	}
	text := strings.TrimSuffix(strings.TrimSuffix(fit(core, parts...), ". Who:"), ":")
	return fit(text, ". See audit log")
}

func shortDuration(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return d.Truncate(time.Minute).String()
	case d >= time.Minute:
		return d.Truncate(time.Second).String()
	default:
		return d.Round(time.Second).String()
	}
}
