// Package report is the wire format of what an agent tells the bastion about
// its links: the backup link (the result of a link check) and the site's main
// internet link (down, and back). It travels inside the agent's SSH
// connection as a global request of lifeline's own (RequestType) whose
// payload is one JSON document.
//
// The format is versioned: a bastion rejects versions it does not know, so an
// old bastion never misreads a newer agent. Backup-link reports are version 1
// (Version) and stay so, fields added to them being ignored by older readers;
// main-link reports are version 2 (VersionMain), which a bastion that reads
// only version 1 refuses instead of taking them for backup-link reports.
// Decode reads both.
//
// Failures carry machine-readable codes (Codes, one per reason) beside the
// reasons for people. A decoder must tolerate codes it does not know (a newer
// agent may send more): treat one as a failure of its own kind, show its
// reason. FailureCodes gives codes for an older agent's report too.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// RequestType is the SSH global request that carries a LinkReport. The
// bastion answers true when it stored the report, false (with nothing else)
// when it refused it.
const RequestType = "link-report@lifeline"

// Version is the version of backup-link reports, the only version an older
// bastion reads. Encode writes it for every report whose Link is not LinkMain.
const Version = 1

// VersionMain is the version of main-link reports (Link == LinkMain). Decode
// accepts Version and VersionMain; a report of version 1 that says it is about
// the main link is refused, as is a version 2 report about another link.
const VersionMain = 2

// Links a report can be about (LinkReport.Link).
const (
	// LinkBackup is the backup link the tunnel runs over. An empty Link
	// means LinkBackup: that is every report of an agent that predates Link.
	LinkBackup = "backup"
	// LinkMain is the site's main internet link, watched through the site's
	// main router (agent/mainwatch).
	LinkMain = "main"
)

// MaxSize bounds a report's encoded size.
const MaxSize = 16 << 10

// Verdicts.
const (
	VerdictOK     = "ok"
	VerdictFailed = "failed"
)

// LinkReport is the result of one link check, plus the tunnel's own
// keepalive round trips since the previous report. It is also the JSON line
// the agent appends to checks.jsonl.
//
// The fields after DurationSecs were added later in version 1: they are
// omitted when zero, so a report from an older agent decodes with them
// zero, and an older bastion (which ignores unknown fields) still reads a
// newer agent's report.
type LinkReport struct {
	Version      int       `json:"v"`
	Time         time.Time `json:"time"`
	ISP          string    `json:"isp"`
	IP           string    `json:"ip"`
	Server       string    `json:"server"`
	LatencyMS    float64   `json:"latency_ms"`
	JitterMS     float64   `json:"jitter_ms"`
	DownloadBps  float64   `json:"download_bps"`
	UploadBps    float64   `json:"upload_bps,omitempty"`
	Bytes        int64     `json:"bytes"`
	Verdict      string    `json:"verdict"`
	Reasons      []string  `json:"reasons,omitempty"`
	KeepaliveMS  *RTT      `json:"keepalive_rtt_ms,omitempty"`
	DurationSecs float64   `json:"duration_s"`
	// Manual marks a check run by `lifeline-agent check` rather than the
	// agent's schedule.
	Manual bool `json:"manual,omitempty"`
	// MonthBytes is what link checks used in the calendar month (UTC) of
	// Time, this check included; MonthBudget is the agent's monthly cap
	// for them (0: none).
	MonthBytes  int64 `json:"month_bytes,omitempty"`
	MonthBudget int64 `json:"month_budget,omitempty"`
	// Skipped counts scheduled checks not run since the previous report
	// because the monthly budget was used up.
	Skipped int `json:"skipped,omitempty"`
	// Notes say what the bastion should know that is not a failure of the
	// link (checks skipped, a check interrupted): at most MaxNotes, each
	// like a reason.
	Notes []string `json:"notes,omitempty"`
	// Light marks a check that proved the link (ISP, latency) without
	// measuring its speed, because the agent paces its speed measurements
	// to the monthly budget: DownloadBps and UploadBps are then 0 for
	// "not measured", not for a dead link, and no speed was judged.
	Light bool `json:"light,omitempty"`
	// SpeedNote says, for people, what to know of the speed figures that
	// is not a failure: why a light check measured none and when the next
	// measurement is due, or that a measurement was too small to judge
	// against the minimum. Like a reason (at most 512 bytes).
	SpeedNote string `json:"speed_note,omitempty"`
	// NextSpeed is about when the agent expects to measure speed next
	// (zero: not known, or not before the month's budget renews).
	NextSpeed time.Time `json:"next_speed,omitzero"`

	// Codes are machine-readable failure codes (the Code constants), one
	// per reason and in the same order, so that a reader need not parse
	// the English of Reasons. Empty: the agent gave none (an older agent;
	// FailureCodes then derives them). A reader must tolerate codes it
	// does not know.
	Codes []string `json:"codes,omitempty"`
	// Link is what the report is about: LinkBackup (also when empty) or
	// LinkMain. A main-link report has Verdict failed when the main link
	// went down (Reasons and Codes say how it failed; Time is when the
	// agent decided so) and ok when it came back (Time is when it came
	// back); Since is when it went down. Its backup-link fields (ISP,
	// speeds, Bytes...) are zero.
	Link string `json:"link,omitempty"`
	// Since is, for a main-link report, when the main link went down (the
	// first failed probe round); required when the verdict is failed.
	Since time.Time `json:"since,omitzero"`
	// Jump is, for a main-link report in outage mode, what the agent did
	// to start the stopped jump host (EC2 StartInstances): nil when it did
	// not try.
	Jump *JumpStart `json:"jump,omitempty"`
}

// JumpStart is what an agent in outage mode did to start the jump host
// during one outage of the main link.
type JumpStart struct {
	// StartedAt is when the first start call of this outage succeeded
	// (zero: none did yet).
	StartedAt time.Time `json:"started_at,omitzero"`
	// ReadyAt is when the agent's tunnel to a bastion first came up after
	// that start (zero: not yet).
	ReadyAt time.Time `json:"ready_at,omitzero"`
	// Attempts is how many start calls the agent made in this outage.
	Attempts int `json:"attempts"`
	// LastCode is the machine-readable outcome of the latest call ("ok",
	// "auth_failed", "denied", "not_found", "capacity", "throttled",
	// "network", "timeout", ...), LastMessage its text for people.
	LastCode    string `json:"last_code,omitempty"`
	LastMessage string `json:"last_message,omitempty"`
}

// MaxCode bounds the length of one code.
const MaxCode = 64

// Failure codes of the backup link, one for each kind of reason that
// agent/linkcheck gives today (the reason's start is in brackets).
const (
	// CodeUnreachable: the speed test could not measure: its servers
	// could not be reached, or a measurement broke off ("speed test: ...").
	CodeUnreachable = "unreachable"
	// CodeISPUnknown: the ISP was not learnt while one is expected
	// ("ISP unknown, expected ...").
	CodeISPUnknown = "isp_unknown"
	// CodeISPChanged: another ISP than expected: traffic may leave by
	// another link ("wrong ISP ...").
	CodeISPChanged = "isp_changed"
	// CodeLatencyHigh: latency above LIFELINE_MAX_LATENCY ("high latency ...").
	CodeLatencyHigh = "latency_high"
	// CodeDownloadSlow: download below LIFELINE_MIN_DOWNLOAD ("low download speed ...").
	CodeDownloadSlow = "download_slow"
	// CodeCheckFailed: the check itself went wrong, not the link: the link
	// check program was missing, crashed, was killed or wrote no result,
	// or the check panicked ("link check program ...", "link check
	// request: ...", "check failed unexpectedly: ...").
	CodeCheckFailed = "check_failed"
	// CodeCheckInterrupted: the check's process ended during it ("check
	// interrupted: ...").
	CodeCheckInterrupted = "check_interrupted"
	// CodeMore: the reasons after the 15th, cut ("and N more").
	CodeMore = "more"
	// CodeUnknown: a reason of no known kind.
	CodeUnknown = "unknown"
)

// Failure codes of the main link (agent/mainwatch).
const (
	// CodeMainUnreachable: no target answered in time (or the path to it
	// was refused or unreachable): the main link is down.
	CodeMainUnreachable = "main_unreachable"
	// CodeMainDNSServfail: a DNS target answered SERVFAIL, as the main
	// router's forwarder does when its upstream is gone.
	CodeMainDNSServfail = "main_dns_servfail"
	// CodeMainDNSRefused: a DNS target answered REFUSED.
	CodeMainDNSRefused = "main_dns_refused"
	// CodeMainDNSError: a DNS target answered with another error rcode.
	CodeMainDNSError = "main_dns_error"
	// CodeMainTCPRefused: a TCP target refused the connection (a reset,
	// which anything on the path can send, so it proves nothing).
	CodeMainTCPRefused = "main_tcp_refused"
)

// reasonCodes maps how agent/linkcheck's reasons start to their codes, for
// reports of agents that send no codes. Checked in order.
var reasonCodes = []struct{ prefix, code string }{
	{"speed test:", CodeUnreachable},
	{"ISP unknown", CodeISPUnknown},
	{"wrong ISP", CodeISPChanged},
	{"high latency", CodeLatencyHigh},
	{"low download speed", CodeDownloadSlow},
	{"link check program", CodeCheckFailed},
	{"link check request", CodeCheckFailed},
	{"check failed unexpectedly", CodeCheckFailed},
	{"check interrupted", CodeCheckInterrupted},
	{"and ", CodeMore},
}

// CodeOf is the code of a backup-link reason as agent/linkcheck words it
// today, CodeUnknown for any other. It exists for reports without Codes;
// prefer a report's own codes (FailureCodes).
func CodeOf(reason string) string {
	for _, rc := range reasonCodes {
		if strings.HasPrefix(reason, rc.prefix) {
			return rc.code
		}
	}
	return CodeUnknown
}

// FailureCodes is one code per reason: the report's own Codes when it has
// them, otherwise (an older agent) CodeOf each reason. Nil for a report
// without reasons.
func (r *LinkReport) FailureCodes() []string {
	if len(r.Reasons) == 0 {
		return nil
	}
	if len(r.Codes) == len(r.Reasons) {
		return slices.Clone(r.Codes)
	}
	codes := make([]string, len(r.Reasons))
	for i, why := range r.Reasons {
		codes[i] = CodeOf(why)
	}
	return codes
}

// LinkKind is r.Link, with the empty Link of an older agent's report given
// as LinkBackup.
func (r *LinkReport) LinkKind() string {
	if r.Link == "" {
		return LinkBackup
	}
	return r.Link
}

// versionFor is the version a report about link is encoded as.
func versionFor(link string) int {
	if link == LinkMain {
		return VersionMain
	}
	return Version
}

// MaxNotes bounds LinkReport.Notes.
const MaxNotes = 4

// RTT summarises keepalive round trips over an interval.
type RTT struct {
	Samples int     `json:"samples"`
	Median  float64 `json:"median"`
	Worst   float64 `json:"worst"`
	Missed  int     `json:"missed"`
}

// OK reports whether the verdict is ok.
func (r *LinkReport) OK() bool { return r.Verdict == VerdictOK }

// Encode validates r and returns its payload, of version VersionMain when
// r.Link is LinkMain and of Version otherwise (whatever r.Version says).
func Encode(r LinkReport) ([]byte, error) {
	r.Version = versionFor(r.Link)
	if err := r.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode link report: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("encode link report: %d bytes exceeds the %d byte limit", len(b), MaxSize)
	}
	return b, nil
}

// Decode parses and validates a payload received from an agent: version 1
// (a backup-link report) or 2 (a main-link report). Unknown fields and
// unknown codes are ignored.
func Decode(payload []byte) (LinkReport, error) {
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
	if *probe.Version != Version && *probe.Version != VersionMain {
		return r, fmt.Errorf("link report version %d is not supported (this bastion reads versions %d and %d)", *probe.Version, Version, VersionMain)
	}
	if err := json.Unmarshal(payload, &r); err != nil {
		return r, fmt.Errorf("decode link report: %w", err)
	}
	if want := versionFor(r.Link); r.Version != want {
		return LinkReport{}, fmt.Errorf("link report version %d is not supported for the %s link (its reports are version %d)", r.Version, r.LinkKind(), want)
	}
	if err := r.Validate(); err != nil {
		return LinkReport{}, err
	}
	return r, nil
}

// Validate reports every problem with r at once.
func (r *LinkReport) Validate() error {
	var errs []error
	if r.Verdict != VerdictOK && r.Verdict != VerdictFailed {
		errs = append(errs, fmt.Errorf("verdict %q is neither %q nor %q", r.Verdict, VerdictOK, VerdictFailed))
	}
	if r.Verdict == VerdictFailed && len(r.Reasons) == 0 {
		errs = append(errs, errors.New("a failed verdict must give at least one reason"))
	}
	if r.Time.IsZero() {
		errs = append(errs, errors.New("time is missing"))
	}
	for name, v := range map[string]float64{"latency_ms": r.LatencyMS, "jitter_ms": r.JitterMS, "download_bps": r.DownloadBps, "upload_bps": r.UploadBps, "duration_s": r.DurationSecs} {
		if v < 0 || v != v {
			errs = append(errs, fmt.Errorf("%s is %v: it must be a non-negative number", name, v))
		}
	}
	for name, v := range map[string]int64{"bytes": r.Bytes, "month_bytes": r.MonthBytes, "month_budget": r.MonthBudget, "skipped": int64(r.Skipped)} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s is %d: it must not be negative", name, v))
		}
	}
	for name, s := range map[string]string{"isp": r.ISP, "ip": r.IP, "server": r.Server} {
		if len(s) > 256 || strings.ContainsFunc(s, isControl) {
			errs = append(errs, fmt.Errorf("%s is longer than 256 bytes or holds control characters", name))
		}
	}
	if len(r.Reasons) > 16 {
		errs = append(errs, fmt.Errorf("%d reasons: at most 16", len(r.Reasons)))
	}
	for _, s := range r.Reasons {
		if len(s) > 512 || strings.ContainsFunc(s, isControl) {
			errs = append(errs, errors.New("a reason is longer than 512 bytes or holds control characters"))
			break
		}
	}
	if len(r.Notes) > MaxNotes {
		errs = append(errs, fmt.Errorf("%d notes: at most %d", len(r.Notes), MaxNotes))
	}
	for _, s := range r.Notes {
		if len(s) > 512 || strings.ContainsFunc(s, isControl) {
			errs = append(errs, errors.New("a note is longer than 512 bytes or holds control characters"))
			break
		}
	}
	if len(r.SpeedNote) > 512 || strings.ContainsFunc(r.SpeedNote, isControl) {
		errs = append(errs, errors.New("speed_note is longer than 512 bytes or holds control characters"))
	}
	if r.Link != "" && r.Link != LinkBackup && r.Link != LinkMain {
		errs = append(errs, fmt.Errorf("link %q is neither %q nor %q", clip(r.Link), LinkBackup, LinkMain))
	}
	if len(r.Codes) > 0 && len(r.Codes) != len(r.Reasons) {
		errs = append(errs, fmt.Errorf("%d codes for %d reasons: there must be one code per reason, or none", len(r.Codes), len(r.Reasons)))
	}
	for _, c := range r.Codes {
		if c == "" || len(c) > MaxCode || strings.ContainsFunc(c, notCodeChar) {
			errs = append(errs, fmt.Errorf("a code is empty, longer than %d bytes, or holds other than a-z, 0-9 and _", MaxCode))
			break
		}
	}
	if r.Link == LinkMain && r.Verdict == VerdictFailed && r.Since.IsZero() {
		errs = append(errs, errors.New("a failed main-link report must say since when (since)"))
	}
	if !r.Since.IsZero() && !r.Time.IsZero() && r.Since.After(r.Time) {
		errs = append(errs, errors.New("since is after time"))
	}
	if j := r.Jump; j != nil {
		if r.Link != LinkMain {
			errs = append(errs, errors.New("jump is only for main-link reports"))
		}
		if j.Attempts < 0 || j.Attempts > 1<<20 {
			errs = append(errs, fmt.Errorf("jump attempts %d is out of range", j.Attempts))
		}
		if len(j.LastCode) > MaxCode || strings.ContainsFunc(j.LastCode, notCodeChar) {
			errs = append(errs, fmt.Errorf("jump last_code is longer than %d bytes or holds other than a-z, 0-9 and _", MaxCode))
		}
		if len(j.LastMessage) > 512 || strings.ContainsFunc(j.LastMessage, isControl) {
			errs = append(errs, errors.New("jump last_message is longer than 512 bytes or holds control characters"))
		}
		if !j.ReadyAt.IsZero() && !j.StartedAt.IsZero() && j.ReadyAt.Before(j.StartedAt) {
			errs = append(errs, errors.New("jump ready_at is before started_at"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid link report: %w", err)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func notCodeChar(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '_') }

// clip quotes at most 32 bytes of s in an error.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// Summary is a one-line human description, used in status and alerts. A
// light check says "download not measured" rather than 0 Mbit/s.
//
// A main-link report reads "main link down since T: reasons" or "main link
// back at T after D (down since T)".
func (r *LinkReport) Summary() string {
	var b strings.Builder
	if r.Link == LinkMain {
		return r.mainSummary()
	}
	fmt.Fprintf(&b, "%s at %s: isp %q, ", r.Verdict, r.Time.UTC().Format(time.RFC3339), r.ISP)
	if r.Light {
		b.WriteString("download not measured")
	} else {
		fmt.Fprintf(&b, "download %.1f Mbit/s", r.DownloadBps/1e6)
	}
	if r.SpeedNote != "" {
		fmt.Fprintf(&b, " (%s)", r.SpeedNote)
	}
	fmt.Fprintf(&b, ", latency %.0f ms", r.LatencyMS)
	if len(r.Reasons) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(r.Reasons, "; "))
	}
	if r.MonthBudget > 0 {
		fmt.Fprintf(&b, ", checks this month %.1f of %.1f MB", float64(r.MonthBytes)/1e6, float64(r.MonthBudget)/1e6)
	}
	if r.Skipped > 0 {
		fmt.Fprintf(&b, ", %d checks skipped (monthly budget used up)", r.Skipped)
	}
	return b.String()
}

// Download is the download speed for people: "24.1 Mbit/s", or "speed not
// measured" for a light check (ISP and latency only).
func (r *LinkReport) Download() string {
	if r.Light {
		return "speed not measured"
	}
	return fmt.Sprintf("%.1f Mbit/s", r.DownloadBps/1e6)
}

func (r *LinkReport) mainSummary() string {
	const layout = time.RFC3339
	if r.Verdict == VerdictFailed {
		s := "main link down since " + r.Since.UTC().Format(layout)
		if len(r.Reasons) > 0 {
			s += ": " + strings.Join(r.Reasons, "; ")
		}
		return s
	}
	s := "main link up at " + r.Time.UTC().Format(layout)
	if !r.Since.IsZero() {
		s = fmt.Sprintf("main link back at %s after %s (down since %s)", r.Time.UTC().Format(layout), r.Time.Sub(r.Since).Round(time.Second), r.Since.UTC().Format(layout))
	}
	return s
}
