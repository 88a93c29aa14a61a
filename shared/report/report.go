// Package report is the wire format of what an agent tells the bastion about
// its backup link. It travels inside the agent's SSH connection as a global
// request of lifeline's own (RequestType) whose payload is one JSON document.
// The format is versioned: a bastion rejects versions it does not know, so an
// old bastion never misreads a newer agent.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// RequestType is the SSH global request that carries a LinkReport. The
// bastion answers true when it stored the report, false (with nothing else)
// when it refused it.
const RequestType = "link-report@lifeline"

// Version is the only version this package writes and reads.
const Version = 1

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

// Encode validates r and returns its payload.
func Encode(r LinkReport) ([]byte, error) {
	r.Version = Version
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

// Decode parses and validates a payload received from an agent.
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
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid link report: %w", err)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Summary is a one-line human description, used in status and alerts. A
// light check says "download not measured" rather than 0 Mbit/s.
func (r *LinkReport) Summary() string {
	var b strings.Builder
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
