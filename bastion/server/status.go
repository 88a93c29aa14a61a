package server

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// Status is what `ssh bastion status --json` prints.
type Status struct {
	Bastion string    `json:"bastion"`
	Time    time.Time `json:"time"`
	// Started is when this bastion started: what it knows of sites that
	// have not connected since comes from the key files alone.
	Started time.Time `json:"started"`
	// Targets are the names registered now (online).
	Targets []TargetStatus `json:"targets"`
	// Offline are the known names nobody holds: every permitlisten name of
	// the agents file, and every name registered since the start.
	Offline   []OfflineStatus `json:"offline"`
	Operators int             `json:"operators_connected"`
	// Alerts is the alert queue (Config.Alerts), for viewers who see all.
	Alerts *alert.Status `json:"alerts,omitempty"`
	// Outage is outage mode (Config.Outage); absent when it is off. Who
	// holds the host and what keeps it up are for viewers who see all.
	Outage *OutageStatus `json:"outage,omitempty"`
}

// TargetStatus describes one registered name.
type TargetStatus struct {
	Target          string    `json:"target"`
	State           string    `json:"state"` // "online"
	Agent           string    `json:"agent"`
	Fingerprint     string    `json:"fingerprint"`
	Address         string    `json:"address"`
	ConnectedSince  time.Time `json:"connected_since"`
	RegisteredSince time.Time `json:"registered_since"`
	// KeepaliveRTTms is the round trip of the bastion's last keepalive
	// to the agent (it asks only a quiet agent), else the median the
	// agent measured itself and reported.
	KeepaliveRTTms *float64 `json:"keepalive_rtt_ms,omitempty"`
	// LastHeard is when the agent last sent anything.
	LastHeard *time.Time         `json:"last_heard,omitempty"`
	Link      *report.LinkReport `json:"link,omitempty"`
	// MainLink is the latest main-link report of the agent key: the
	// site's main internet down (verdict failed, since) or back.
	MainLink *report.LinkReport `json:"main_link,omitempty"`
	// Reporter: this bastion texts the site's events for the agent key
	// (its last site-role word, or it never sent one); false: another
	// bastion does, this one keeps the reports.
	Reporter bool `json:"reporter"`
}

// OfflineStatus describes a known name that no connection holds.
type OfflineStatus struct {
	Target string `json:"target"`
	State  string `json:"state"` // "offline"
	// Agent and Fingerprint: the key that last held the name, or the key
	// the agents file permits it to (several: the first by name).
	Agent       string `json:"agent,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// OfflineSince is when the last connection holding it left; nil when
	// none held it since the bastion started. LastSeenFrom and LastReason
	// (why that connection ended) are set with it.
	OfflineSince *time.Time `json:"offline_since,omitempty"`
	LastSeenFrom string     `json:"last_seen_from,omitempty"`
	LastReason   string     `json:"last_reason,omitempty"`
	// Link is the latest link report of the agent key (kept after it left).
	Link *report.LinkReport `json:"link,omitempty"`
	// MainLink and Reporter are as in TargetStatus.
	MainLink *report.LinkReport `json:"main_link,omitempty"`
	Reporter bool               `json:"reporter"`
}

// Snapshot returns the status as seen by viewer: an operator restricted by
// permitopen sees only the targets it may open, online or offline. nil
// viewer sees everything. One status command takes one snapshot, and makes
// both its text and its --json from it.
func (s *Server) Snapshot(viewer *authz.Identity) Status {
	now := s.cfg.Clock.Now()
	st := Status{Bastion: s.cfg.Name, Time: now.UTC(), Started: s.started.UTC(), Targets: []TargetStatus{}, Offline: []OfflineStatus{}}
	s.mu.Lock()
	reports := maps.Clone(s.reports)
	mains := maps.Clone(s.mains)
	roles := maps.Clone(s.roles)
	for c := range s.conns {
		if !c.isAgent() {
			st.Operators++
		}
	}
	s.mu.Unlock()
	online := make(map[string]bool)
	for _, b := range s.reg.Snapshot() {
		online[targetKey(b.Name, b.Port)] = true
		t := authz.Target{Host: b.Name, Port: b.Port}
		if viewer != nil && !viewer.MayOpen(t) {
			continue
		}
		a := b.Session
		aid := a.identity()
		ts := TargetStatus{
			Target: b.Target(), State: "online", Agent: aid.Name, Fingerprint: aid.Fingerprint,
			Address: a.remote.String(), ConnectedSince: a.start.UTC(), RegisteredSince: b.Since.UTC(),
		}
		heard := a.lastHeard().UTC()
		ts.LastHeard = &heard
		if r, ok := reports[aid.Fingerprint]; ok {
			ts.Link = &r
		}
		if r, ok := mains[aid.Fingerprint]; ok {
			ts.MainLink = &r
		}
		ts.Reporter = reporterOf(roles, aid.Fingerprint)
		if n := a.rttNanos.Load(); n > 0 {
			ms := float64(n) / 1e6
			ts.KeepaliveRTTms = &ms
		} else if ts.Link != nil && ts.Link.KeepaliveMS != nil && ts.Link.KeepaliveMS.Samples > 0 {
			ms := ts.Link.KeepaliveMS.Median
			ts.KeepaliveRTTms = &ms
		}
		st.Targets = append(st.Targets, ts)
	}
	for _, k := range s.knownSites() {
		if online[targetKey(k.target.Host, k.target.Port)] || viewer != nil && !viewer.MayOpen(k.target) {
			continue
		}
		o := OfflineStatus{Target: k.target.String(), State: "offline", Agent: k.agent, Fingerprint: k.fingerprint}
		if d := k.left; d != nil {
			since := d.since.UTC()
			o.OfflineSince, o.LastSeenFrom, o.LastReason = &since, d.from.String(), d.reason
		}
		if r, ok := reports[o.Fingerprint]; ok {
			o.Link = &r
		}
		if r, ok := mains[o.Fingerprint]; ok {
			o.MainLink = &r
		}
		o.Reporter = reporterOf(roles, o.Fingerprint)
		st.Offline = append(st.Offline, o)
	}
	if s.cfg.Alerts != nil && seesAll(viewer) {
		a := s.cfg.Alerts.Status()
		st.Alerts = &a
	}
	st.Outage = s.outageStatus(viewer)
	return st
}

// seesAll reports whether viewer may see the whole bastion: other
// operators' logins and the alert settings (numbers, account) in the alert
// section. That is an operator whose key carries no permitopen: it may
// reach every site anyway. A key restricted to some targets sees those
// targets only. nil (the bastion itself) sees everything.
func seesAll(viewer *authz.Identity) bool {
	return viewer == nil || viewer.Open == nil
}

// statusWidth is what the text status fits in.
const statusWidth = 100

func (s *Server) writeStatus(w io.Writer, viewer *authz.Identity, asJSON bool) error {
	st := s.Snapshot(viewer)
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	now := st.Time
	var b strings.Builder
	head := fmt.Sprintf("lifeline bastion %s at %s: %d site(s) online, %d offline, %d operator(s) connected",
		st.Bastion, now.Format("2006-01-02 15:04Z"), len(st.Targets), len(st.Offline), st.Operators)
	b.WriteString(clip(head, statusWidth) + "\n")
	if len(st.Targets)+len(st.Offline) > 0 {
		rows := [][]string{{"SITE", "STATE", "FOR", "AGENT", "KEY", "ADDRESS", "RTT"}}
		var details []string
		for _, t := range st.Targets {
			rtt := "-"
			if t.KeepaliveRTTms != nil {
				rtt = fmt.Sprintf("%.0fms", *t.KeepaliveRTTms)
			}
			rows = append(rows, []string{t.Target, "online", shortDuration(now.Sub(t.ConnectedSince)), t.Agent, shortFingerprint(t.Fingerprint), t.Address, rtt})
			details = append(details, "connected since "+shortTime(t.ConnectedSince, now)+"; "+linkLine(t.Link, now)+"\n"+siteLine(t.MainLink, t.Reporter, now))
		}
		for _, o := range st.Offline {
			d, from, detail := "-", "-", "not connected since the bastion started at "+shortTime(st.Started, now)
			if o.OfflineSince != nil {
				d, from = shortDuration(now.Sub(*o.OfflineSince)), o.LastSeenFrom
				short, _, _ := strings.Cut(o.LastReason, ": ") // --json has it whole
				detail = "offline since " + shortTime(*o.OfflineSince, now) + ": " + short
			}
			rows = append(rows, []string{o.Target, "offline", d, o.Agent, shortFingerprint(o.Fingerprint), from, "-"})
			details = append(details, detail+"; "+linkLine(o.Link, now)+"\n"+siteLine(o.MainLink, o.Reporter, now))
		}
		writeTable(&b, rows, details)
	}
	if st.Outage != nil {
		var o strings.Builder
		writeOutage(&o, st.Outage, now)
		b.WriteString(o.String())
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if st.Alerts != nil { // the same snapshot as the rest
		if text := st.Alerts.String(); strings.TrimSpace(text) != "" {
			fmt.Fprintln(w, strings.TrimRight(text, "\n"))
		}
	}
	return nil
}

// columnMax caps each column of the status table, so that a row fits
// statusWidth: SITE, STATE, FOR, AGENT, KEY, ADDRESS, RTT.
var columnMax = []int{22, 7, 6, 14, 15, 22, 6}

// writeTable writes rows as columns two spaces apart, cells clipped to
// columnMax, each data row followed by its detail lines (one per line of
// its detail), indented and clipped to statusWidth.
func writeTable(b *strings.Builder, rows [][]string, details []string) {
	width := make([]int, len(columnMax))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], min(utf8.RuneCountInString(c), columnMax[i]))
		}
	}
	for n, r := range rows {
		var line strings.Builder
		for i, c := range r {
			c = clip(c, columnMax[i])
			line.WriteString(c)
			if i < len(r)-1 {
				line.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)+2))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
		if n > 0 {
			for _, d := range strings.Split(details[n-1], "\n") {
				b.WriteString(clip("  "+d, statusWidth) + "\n")
			}
		}
	}
}

// linkLine is the latest link report in one line.
func linkLine(r *report.LinkReport, now time.Time) string {
	if r == nil {
		return "no link report yet"
	}
	line := fmt.Sprintf("link %s at %s", r.Verdict, shortTime(r.Time, now))
	if len(r.Reasons) > 0 { // what failed matters more than the figures
		line += " (" + strings.Join(r.Reasons, "; ") + ")"
	}
	return line + fmt.Sprintf(": isp %q, %s, %.0f ms", r.ISP, r.Download(), r.LatencyMS)
}

// reporterOf is the site role of an agent key in a copy of Server.roles.
func reporterOf(roles map[string]bool, fingerprint string) bool {
	r, ok := roles[fingerprint]
	return r || !ok
}

// siteLine is who texts the site's events and the site's main internet
// link, from the latest main-link report, in one line: "site events
// texted here; main internet: down since 14:02Z (main_dns_servfail)".
func siteLine(r *report.LinkReport, reporter bool, now time.Time) string {
	who := "site events texted here; "
	if !reporter {
		who = "site events texted by another bastion (site role); "
	}
	line := "main internet: not reported"
	switch {
	case r == nil:
	case r.Verdict == report.VerdictFailed:
		line = "main internet: down since " + shortTime(r.Since, now)
		if codes := r.FailureCodes(); len(codes) > 0 {
			line += " (" + strings.Join(slices.Compact(codes), ", ") + ")"
		}
	default:
		line = "main internet: up"
		if !r.Since.IsZero() {
			line += fmt.Sprintf(" (back at %s after %s down)", shortTime(r.Time, now), shortDuration(r.Time.Sub(r.Since)))
		}
	}
	return who + line
}

// shortFingerprint is the start of a SHA256 fingerprint, enough to tell
// keys apart at a glance; --json has the whole.
func shortFingerprint(fp string) string {
	const n = len("SHA256:") + 8
	if len(fp) <= n {
		return fp
	}
	return fp[:n]
}

// shortTime is t in UTC: the time of day when it is within a day of now,
// else the date too.
func shortTime(t, now time.Time) string {
	t = t.UTC()
	if d := now.Sub(t); d < 24*time.Hour && d > -time.Hour {
		return t.Format("15:04Z")
	}
	return t.Format("2006-01-02 15:04Z")
}

// shortDuration is d in at most two units: 45s, 3m, 1h3m, 5d3h.
func shortDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		h := int(d.Hours())
		return fmt.Sprintf("%dh%dm", h, int(d.Minutes())-60*h)
	}
	days := int(d.Hours()) / 24
	return fmt.Sprintf("%dd%dh", days, int(d.Hours())-24*days)
}

// clip cuts s to n runes, the last one an ellipsis when cut.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// knownSite is a name the bastion expects an agent to hold.
type knownSite struct {
	target             authz.Target
	agent, fingerprint string
	left               *departure // nil: not held since the bastion started
}

// knownSites lists every name of the agents file (permitlisten of plain
// keys) and every name registered since the start, sorted, with what is
// remembered of its last holder.
func (s *Server) knownSites() []knownSite {
	byKey := make(map[string]*knownSite)
	for _, k := range s.policy.Load().AgentKeys() {
		for _, t := range k.Listen {
			tk := targetKey(t.Host, t.Port)
			if _, ok := byKey[tk]; !ok {
				byKey[tk] = &knownSite{target: t, agent: k.Name, fingerprint: k.Fingerprint}
			}
		}
	}
	s.mu.Lock()
	for tk, d := range s.departed {
		d := d
		ks, ok := byKey[tk]
		if !ok {
			ks = &knownSite{target: d.target}
			byKey[tk] = ks
		}
		ks.target, ks.agent, ks.fingerprint, ks.left = d.target, d.agent, d.fingerprint, &d
	}
	s.mu.Unlock()
	out := make([]knownSite, 0, len(byKey))
	for _, ks := range byKey {
		out = append(out, *ks)
	}
	slices.SortFunc(out, func(a, b knownSite) int {
		if c := strings.Compare(strings.ToLower(a.target.Host), strings.ToLower(b.target.Host)); c != 0 {
			return c
		}
		return int(a.target.Port) - int(b.target.Port)
	})
	return out
}
