// Package linkcheck knows whether the backup link works before the day it is
// needed: on a schedule it measures the link with speedtest-go (ISP and
// public address, latency and jitter to a test server, download speed, and
// upload when asked), judges the result against the configured thresholds,
// appends it to a rotated JSON-lines history and hands it to the caller to
// report to the bastion.
//
// The measurement itself runs in a short-lived child process, the link
// check program lifeline-linkcheck (see ProgramMain and FindProgram), so
// that the agent, idle between two checks, never loads speedtest-go,
// net/http or TLS: this package does not import them (agent/linkcheck/measure
// does, and only the program links it). Scheduling, the history, the
// monthly budget and the verdict's reporting stay in the calling process.
//
// A check never moves more than LIFELINE_CHECK_BUDGET bytes and never runs
// much longer than its capture time after it is cancelled; a check that
// cannot reach anything is a failed verdict with that reason, never an
// error or a crash.
//
// Checks are scheduled from the history in the state directory, not from
// the process's start: every check (the agent's and `lifeline-agent
// check`'s) is in checks.jsonl with its time and bytes, the next is due
// LIFELINE_CHECK_EVERY after the latest, and all of a calendar month's
// (UTC) together stay within LIFELINE_CHECK_MONTHLY_BUDGET. Under that
// budget every check proves ISP and latency (a light check, tens of kB)
// and the speed measurement is paced so that the month's light checks
// all fit and speed is still measured regularly (see pace.go). A restart,
// a crash or a power cut therefore never causes an extra check; a check
// whose process died is counted at its whole allowance (see LockName).
package linkcheck

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// Checker runs link checks. Make it with New; its methods may be called
// from several goroutines, but checks are meant to run one at a time (Run
// never overlaps them).
type Checker struct {
	cfg     Config
	log     *slog.Logger
	tester  SpeedTester // nil: measure in the link check program
	program func() (string, error)
	clock   clock.Clock
	journal *journal
	hist    *history
	status  func(string)
	// The program is told to stop (SIGTERM) stopGrace after the check's
	// deadline, and killed killGrace plus its capture times after that.
	stopGrace, killGrace time.Duration

	paceMu        sync.Mutex
	loggedEvery   time.Duration // the spacing notePacing last logged
	loggedNoSpeed bool          // notePacing said speed is not measured this month
}

// JournalName is the history file in Config.StateDir.
const JournalName = "checks.jsonl"

// Journal rotation: the file is rotated before it would pass journalMax
// bytes, keeping journalKeep files in all (checks.jsonl, .1, .2).
const (
	journalMax  = 1 << 20
	journalKeep = 3
)

// New validates cfg and returns a Checker. A nil log discards log output.
// The state directory is not touched until Run or CheckNow reads it, and
// the link check program is looked for at each check (so installing it
// mends the next check without a restart).
func New(cfg Config, log *slog.Logger) (*Checker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("link check configuration: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Checker{
		cfg:       cfg,
		log:       log,
		tester:    cfg.Tester,
		program:   FindProgram,
		clock:     cfg.Clock,
		journal:   &journal{path: filepath.Join(cfg.StateDir, JournalName), maxBytes: journalMax, keep: journalKeep},
		status:    cfg.Status,
		stopGrace: programStopGrace,
		killGrace: programKillGrace,
	}
	if cfg.Program != "" {
		c.program = func() (string, error) { return cfg.Program, nil }
	}
	if c.clock == nil {
		c.clock = clock.Real{}
	}
	c.hist = newHistory(cfg.StateDir, c.journal)
	return c, nil
}

// limits are the bounds a measurement with this data allowance gets; a
// light one measures no speed.
func (c *Checker) limits(budget int64, light bool) Limits {
	lim := Limits{Budget: budget, Duration: c.cfg.CheckDuration, Connections: c.cfg.CheckConnections, Upload: c.cfg.Upload, Light: light}
	if light {
		lim.Upload = false
	}
	return lim
}

// MaxDuration is the longest a check may take before it is cancelled: the
// control steps' timeouts plus the capture time of each measured phase and
// some slack. A cancelled measurement still takes up to one capture time to
// end (speedtest-go ends its phases only then).
func (c *Checker) MaxDuration() time.Duration {
	return 3*ControlTimeout + c.phases()*c.cfg.CheckDuration + 30*time.Second
}

// phases is the number of measured phases (download, and upload).
func (c *Checker) phases() time.Duration {
	if c.cfg.Upload {
		return 2
	}
	return 1
}

// check measures within lim, in the link check program or (with
// Config.Tester) here, and gives the result its time, verdict, duration
// by c.clock and its light mark. It never panics and never returns an
// error: whatever went wrong is a failed verdict whose reasons name every
// problem (test errors, wrong ISP, low speed, high latency, a link check
// program that is missing, crashed, wrote no result or had to be killed).
// The result has no keepalive figures (Run adds them) and passes
// report.Validate. It returns within MaxDuration plus one capture time (two
// with upload), sooner when ctx ends: a link check program still running
// 5 s after the check's deadline is told to stop (SIGTERM), and killed if
// it has not ended its capture time(s) plus 10 s after that. It neither
// reads nor writes the history, nor minds the monthly budget: Run and
// CheckNow do.
func (c *Checker) check(ctx context.Context, lim Limits) (r report.LinkReport) {
	start := c.clock.Now()
	defer func() {
		if p := recover(); p != nil {
			r.Reasons = append(r.Reasons, fmt.Sprintf("check failed unexpectedly: %v", p))
		}
		r.Light = lim.Light
		finish(&r, start, c.clock.Now())
		c.logResult(r)
	}()
	if c.tester == nil {
		return c.measureInProgram(ctx, lim)
	}
	return c.measureHere(ctx, lim, c.MaxDuration())
}

// finish completes a measured r: version, time (start), verdict (failed
// when there is a reason), duration, and every field within report's
// limits.
func finish(r *report.LinkReport, start, end time.Time) {
	r.Version = report.Version
	r.Time = start.UTC()
	if r.Light {
		r.DownloadBps, r.UploadBps = 0, 0
	}
	if len(r.Reasons) > 0 {
		r.Verdict = report.VerdictFailed
	} else {
		r.Verdict = report.VerdictOK
	}
	r.DurationSecs = nonNegative(end.Sub(start).Seconds())
	sanitise(r)
}

// measureHere measures within lim with c.tester in this process, for at
// most timeout, and judges the result (no time, verdict or duration yet:
// see finish). A panic of the tester is a reason.
func (c *Checker) measureHere(ctx context.Context, lim Limits, timeout time.Duration) (r report.LinkReport) {
	defer func() {
		if p := recover(); p != nil {
			r.Reasons = append(r.Reasons, fmt.Sprintf("check failed unexpectedly: %v", p))
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := c.tester.Measure(ctx, lim)
	if lim.Light { // whatever the tester did, a light check judges no speed
		m.HaveDownload, m.HaveUpload = false, false
	}
	r.ISP, r.IP, r.Server, r.Bytes = m.ISP, m.IP, m.Server, max(m.Bytes, 0)
	if m.HaveLatency {
		r.LatencyMS = nonNegative(float64(m.Latency) / float64(time.Millisecond))
		r.JitterMS = nonNegative(float64(m.Jitter) / float64(time.Millisecond))
	}
	if m.HaveDownload {
		r.DownloadBps = nonNegative(m.DownloadBps)
	}
	if m.HaveUpload {
		r.UploadBps = nonNegative(m.UploadBps)
	}
	r.Reasons, r.Codes, r.SpeedNote = assess(c.cfg, m)
	return r
}

// minJudgeTime is how long a download must have moved data to be called
// slow when its data allowance cut it short: a fast link reaches a steady
// rate within a second or two (TCP's slow start, the test server's
// connections), so a shorter measurement below LIFELINE_MIN_DOWNLOAD says
// little about the link.
const minJudgeTime = 2 * time.Second

// assess lists every reason the measurement m fails cfg's thresholds, and
// the code of each (codes[i] is reasons[i]'s, a report.Code constant); an
// empty list is an ok verdict. Thresholds apply only to what was measured;
// whatever could not be measured is explained by m.Errors, each of which is
// a reason. A download below LIFELINE_MIN_DOWNLOAD that its data allowance
// cut short in less than minJudgeTime is no reason: it is too small to
// judge, and speedNote says so.
func assess(cfg Config, m Measurement) (reasons, codes []string, speedNote string) {
	add := func(code, reason string) {
		reasons = append(reasons, reason)
		codes = append(codes, code)
	}
	for _, err := range m.Errors {
		if err != nil {
			add(report.CodeUnreachable, "speed test: "+err.Error())
		}
	}
	if cfg.ExpectISP != "" {
		switch {
		case m.ISP == "":
			add(report.CodeISPUnknown, fmt.Sprintf("ISP unknown, expected %q", cfg.ExpectISP))
		case !strings.Contains(strings.ToLower(m.ISP), strings.ToLower(cfg.ExpectISP)):
			add(report.CodeISPChanged, fmt.Sprintf("wrong ISP %q, expected %q: traffic may be leaving by another link", m.ISP, cfg.ExpectISP))
		}
	}
	if m.HaveLatency && cfg.MaxLatency > 0 && m.Latency > cfg.MaxLatency {
		add(report.CodeLatencyHigh, fmt.Sprintf("high latency %s, maximum %s", m.Latency.Round(time.Millisecond), cfg.MaxLatency))
	}
	if m.HaveDownload && cfg.MinDownload > 0 && m.DownloadBps < cfg.MinDownload.BitsPerSecond() {
		if m.DownloadCut && m.DownloadTime < minJudgeTime {
			speedNote = fmt.Sprintf("download %s over only %s, cut short by the check's data allowance: too small a measurement to judge against the minimum of %s",
				mbit(m.DownloadBps), m.DownloadTime.Round(10*time.Millisecond), mbit(cfg.MinDownload.BitsPerSecond()))
		} else {
			add(report.CodeDownloadSlow, fmt.Sprintf("low download speed %s, minimum %s", mbit(m.DownloadBps), mbit(cfg.MinDownload.BitsPerSecond())))
		}
	}
	return reasons, codes, speedNote
}

func mbit(bps float64) string {
	if bps < 10e6 {
		return fmt.Sprintf("%.2f Mbit/s", bps/1e6)
	}
	return fmt.Sprintf("%.1f Mbit/s", bps/1e6)
}

func (c *Checker) logResult(r report.LinkReport) {
	download := mbit(r.DownloadBps)
	if r.Light {
		download = "not measured (light check)"
	}
	attrs := []any{"isp", r.ISP, "ip", r.IP, "server", r.Server, "latency_ms", math.Round(r.LatencyMS*10) / 10,
		"download", download, "bytes", r.Bytes, "took", time.Duration(r.DurationSecs * float64(time.Second)).Round(time.Millisecond)}
	if r.SpeedNote != "" {
		attrs = append(attrs, "speed_note", r.SpeedNote)
	}
	if r.OK() {
		c.log.Info("link check ok", attrs...)
		return
	}
	c.log.Warn("link check failed", append(attrs, "reasons", strings.Join(r.Reasons, "; "))...)
}

func nonNegative(v float64) float64 {
	if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// Report limits (see report.LinkReport.Validate).
const (
	maxField   = 256
	maxReason  = 512
	maxReasons = 16
)

// sanitise makes r pass report.Validate whatever the network said: control
// characters dropped, fields and reasons cut to their limits, at most
// maxReasons reasons, and one code per reason. Reasons added without a code
// (a program's error, a panic) get report.CodeOf's; the reasons beyond the
// 15th become "and N more", whose code is report.CodeMore.
func sanitise(r *report.LinkReport) {
	r.ISP = clean(r.ISP, maxField)
	r.IP = clean(r.IP, maxField)
	r.Server = clean(r.Server, maxField)
	r.SpeedNote = clean(r.SpeedNote, maxReason)
	if r.Verdict == report.VerdictFailed && len(r.Reasons) == 0 {
		r.Reasons, r.Codes = []string{"unknown failure"}, []string{report.CodeUnknown}
	}
	codes := make([]string, len(r.Reasons))
	for i, why := range r.Reasons {
		if i < len(r.Codes) && validCode(r.Codes[i]) {
			codes[i] = r.Codes[i]
		} else {
			codes[i] = report.CodeOf(why)
		}
	}
	if len(r.Reasons) > maxReasons {
		extra := len(r.Reasons) - (maxReasons - 1)
		r.Reasons = append(r.Reasons[:maxReasons-1], fmt.Sprintf("and %d more", extra))
		codes = append(codes[:maxReasons-1], report.CodeMore)
	}
	r.Codes = codes
	if len(r.Codes) == 0 {
		r.Codes = nil
	}
	for i, s := range r.Reasons {
		r.Reasons[i] = clean(s, maxReason)
	}
}

// validCode reports whether c passes report.Validate as a code.
func validCode(c string) bool {
	if c == "" || len(c) > report.MaxCode {
		return false
	}
	return !strings.ContainsFunc(c, func(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '_') })
}

// clean removes control characters (newlines become spaces) and cuts s to
// at most n bytes on a character boundary.
func clean(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t' || r == '\r':
			return ' '
		case isControl(r) || r == utf8.RuneError:
			return -1
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
