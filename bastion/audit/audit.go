// Package audit writes the bastion's audit log: one JSON object per line, one
// line per login, refusal, registration, jump, status call, disconnect and
// alert.
//
// Two files live side by side in one directory (mode 0700, files 0600):
//
//   - audit.jsonl holds every event. It is rotated by size and only Keep old
//     files are kept, so a bastion scanned by the whole internet never fills
//     its disk; under a flood its oldest lines go first.
//   - access.jsonl holds only the access class (see IsAccess): who logged in,
//     jumped where, asked for status, took a name over, and when the bastion
//     started, stopped and reloaded. It is rotated by size too, but an old
//     file is deleted only when its newest entry is older than KeepDays, so
//     no flood of refusals can flush a login out of it (see AccessFile).
//
// Refusals are best recorded through a Summarizer, which passes the first
// refusal from each source through in full and counts the rest.
package audit

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/jsonlog"
)

// Event kinds.
const (
	KindStart      = "start"
	KindStop       = "stop"
	KindReload     = "reload"
	KindLogin      = "login"
	KindAuthFailed = "auth_failed"
	KindBanned     = "banned"
	KindRefused    = "refused"
	KindRegister   = "register"
	KindUnregister = "unregister"
	KindTakeover   = "takeover"
	KindJump       = "jump"
	KindJumpEnd    = "jump_end"
	KindDisconnect = "disconnect"
	KindReport     = "link_report"
	KindAlert      = "alert"
	// KindStatus: an operator ran `status`.
	KindStatus = "status"
	// KindSiteRole: an agent said whether this bastion is its site's
	// reporter (Reason "reporter" or "not reporter").
	KindSiteRole = "site_role"
	// KindHold: an operator ran `hold` (outage mode): Reason says what came
	// of it ("held until ...", "released", or the refusal).
	KindHold = "hold"
	// Outage mode's events (bastion/outage), one per event of the keeper:
	// the jump host started (Message: how the previous run ended), the
	// first agent connected, the host is powering off (Reason: why), an
	// operator's hold began or ended, the power-off request could not be
	// written, the host is still up after its request.
	KindOutageStarted       = "outage_started"
	KindOutageReady         = "outage_ready"
	KindOutageStopping      = "outage_stopping"
	KindOutageHeld          = "outage_held"
	KindOutageReleased      = "outage_released"
	KindOutageRequestFailed = "outage_request_failed"
	KindOutageNotStopped    = "outage_not_stopped"
)

// Event is one audit record. Empty fields are left out of the JSON.
//
// A summary written by a Summarizer is an event of the kind it summarises
// (there is no separate summary kind) with Count > 0: it stands for Count
// events of that kind, not shown one by one, from Source (an address without
// port, an IPv6 /64, or "" for the bucket of sources over the tracking
// limit) over DurationMS milliseconds. So the number of refusals in a log is
// the number of refused lines without a count plus the sum of the counts
// (jq -s '[.[] | select(.event=="refused") | .count // 1] | add').
type Event struct {
	Time        time.Time `json:"time"`
	Kind        string    `json:"event"`
	Session     string    `json:"session,omitempty"`
	Role        string    `json:"role,omitempty"`
	User        string    `json:"user,omitempty"`
	Key         string    `json:"key,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Source      string    `json:"source,omitempty"`
	Target      string    `json:"target,omitempty"`
	Agent       string    `json:"agent,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	BytesIn     int64     `json:"bytes_in,omitempty"`
	BytesOut    int64     `json:"bytes_out,omitempty"`
	DurationMS  int64     `json:"duration_ms,omitempty"`
	Message     string    `json:"message,omitempty"`
	Count       int64     `json:"count,omitempty"`
}

// Recorder receives audit events. Record must not block for long: it is
// called on the paths of logins and jumps.
type Recorder interface {
	Record(Event)
}

// Func adapts a function to Recorder.
type Func func(Event)

func (f Func) Record(e Event) { f(e) }

// IsAccess reports whether events of kind belong to the access class, which
// is also written to access.jsonl: logins, jumps and their ends, status
// calls, takeovers, and the bastion's own start, stop and reload. Refusals,
// failed logins, bans, registrations, link reports, disconnects and alerts
// are not: most of them can be caused by anyone on the internet or by an
// agent at a high rate. Outage mode's holds (the command and its effect)
// and the jump host's own starts and power-offs are access too.
func IsAccess(kind string) bool {
	switch kind {
	case KindLogin, KindJump, KindJumpEnd, KindStatus, KindTakeover, KindReload, KindStart, KindStop,
		KindHold, KindOutageStarted, KindOutageStopping, KindOutageHeld, KindOutageReleased:
		return true
	}
	return false
}

// Defaults of Options.
const (
	// MaxBytes is the size at which audit.jsonl and access.jsonl are rotated.
	MaxBytes = 64 << 20
	// Keep is the number of rotated audit.jsonl files kept (audit.jsonl.1
	// newest to audit.jsonl.Keep oldest).
	Keep = 5
	// KeepDays is how long a rotated access file is kept after its newest
	// entry.
	KeepDays = 90
	// AccessCap bounds all access files together; see AccessFile.
	AccessCap = 1 << 30
	// MaxField is the longest string field, in bytes, written for one event;
	// a longer one is cut and ends in "…".
	MaxField = 1024
)

// Options configures OpenWith. The zero value of each field means its
// default.
type Options struct {
	// Path is the main log, conventionally <state dir>/audit.jsonl. The
	// access log is AccessFile in the same directory. Required.
	Path string
	// MaxBytes is the rotation size of each of the two files; 0 means
	// MaxBytes.
	MaxBytes int64
	// Keep is the number of rotated audit.jsonl files kept; 0 means Keep.
	Keep int
	// KeepDays: a rotated access file is deleted once its newest entry is
	// older than this many days; 0 means KeepDays.
	KeepDays int
	// AccessCap bounds the access files together, in bytes: past it the
	// oldest are deleted whatever their age, each deletion reported to
	// OnError. 0 means AccessCap; it must be at least 2*MaxBytes.
	AccessCap int64
	// Clock stamps events without a time and dates the access files; nil
	// means clock.Real{}.
	Clock clock.Clock
	// OnError is called when a write, rotation or deletion fails, and when
	// the hard cap deleted an access file younger than KeepDays. It is called
	// with the log's lock held: it must not call back into the Log. nil
	// means ignore.
	OnError func(error)
	// OnWarn is told when a file or the directory was readable or writable
	// by group or other and has been fixed, e.g. "audit log
	// /var/lib/lifeline/audit.jsonl was mode 0644: set to 0600". The same
	// rule as for OnError applies. nil means ignore (the mode is still fixed).
	OnWarn func(string)
}

// Log appends events to audit.jsonl and the access class also to
// access.jsonl. Writes are serialised; a write error is reported to OnError
// (never silently dropped, never fatal). Every string field is cut to
// MaxField bytes, so that no single event can be huge.
type Log struct {
	mu       sync.Mutex
	path     string
	main     *jsonlog.Writer // audit.jsonl
	access   accessLog
	maxBytes int64
	clock    clock.Clock
	onError  func(error)
	closed   bool
}

// OpenWith creates the directory of o.Path (mode 0700) if needed, fixes the
// modes of an existing directory and of existing log files readable or
// writable by group or other (reporting each to OnWarn), opens both files
// for appending, and deletes access files past their retention. Its errors
// name the file; the caller must Close the Log.
func OpenWith(o Options) (*Log, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	l := &Log{
		path: o.Path, maxBytes: o.MaxBytes, clock: o.Clock, onError: o.OnError,
		access: accessLog{
			path:     filepath.Join(filepath.Dir(o.Path), AccessFile),
			keepFor:  time.Duration(o.KeepDays) * 24 * time.Hour,
			keepDays: o.KeepDays,
			capBytes: o.AccessCap,
		},
	}
	// Both files: 0600 in a 0700 directory, wider modes fixed.
	file := jsonlog.Options{Name: "audit log", MaxBytes: o.MaxBytes, Mode: 0o600, DirMode: 0o700, Tighten: true, OnWarn: o.OnWarn}
	mainOpts := file
	mainOpts.Path, mainOpts.Backups = o.Path, o.Keep
	accessOpts := file
	accessOpts.Path = l.access.path
	accessOpts.Rotate = func(string) error {
		now := l.clock.Now()
		err := l.access.rotate(now)
		l.access.prune(now, l.maxBytes, l.onError)
		return err
	}
	var err error
	if l.main, err = jsonlog.Open(mainOpts); err != nil {
		return nil, err
	}
	if l.access.w, err = jsonlog.Open(accessOpts); err != nil {
		l.main.Close()
		return nil, err
	}
	l.access.newest = newestEntry(l.access.path)
	l.access.prune(l.clock.Now(), l.maxBytes, l.onError)
	return l, nil
}

func (o *Options) fill() error {
	if o.MaxBytes == 0 {
		o.MaxBytes = MaxBytes
	}
	if o.Keep == 0 {
		o.Keep = Keep
	}
	if o.KeepDays == 0 {
		o.KeepDays = KeepDays
	}
	if o.AccessCap == 0 {
		o.AccessCap = AccessCap
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.OnError == nil {
		o.OnError = func(error) {}
	}
	if o.OnWarn == nil {
		o.OnWarn = func(string) {}
	}
	var errs []error
	if o.Path == "" {
		errs = append(errs, errors.New("audit log: Path is empty"))
	}
	if o.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("audit log: MaxBytes %d is negative", o.MaxBytes))
	}
	if o.Keep < 0 {
		errs = append(errs, fmt.Errorf("audit log: Keep %d is negative", o.Keep))
	}
	if o.KeepDays < 0 {
		errs = append(errs, fmt.Errorf("audit log: KeepDays %d is negative", o.KeepDays))
	}
	if o.AccessCap < 2*o.MaxBytes {
		errs = append(errs, fmt.Errorf("audit log: AccessCap %d is below twice MaxBytes (%d)", o.AccessCap, 2*o.MaxBytes))
	}
	return errors.Join(errs...)
}

// Record writes e, stamping its time when unset, to audit.jsonl and, for the
// access class, to access.jsonl.
func (l *Log) Record(e Event) {
	if e.Time.IsZero() {
		e.Time = l.clock.Now()
	}
	e.Time = e.Time.UTC()
	capFields(&e)
	b, err := jsonlog.Marshal(e)
	if err != nil {
		l.onError(fmt.Errorf("encode audit event: %w", err))
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.onError(fmt.Errorf("audit log %s is closed", l.path))
		return
	}
	// A failed rotation is reported and the line written to the current
	// file all the same.
	if err := l.main.Write(b); err != nil {
		l.onError(err)
	}
	if !IsAccess(e.Kind) {
		return
	}
	if err := l.access.w.Write(b); err != nil {
		l.onError(err)
	}
	if e.Time.After(l.access.newest) {
		l.access.newest = e.Time
	}
}

// Reopen closes and reopens both files, for log rotation by another tool
// (called on SIGHUP). A file that is still there is appended to; a new one is
// created with mode 0600. An existing file with a wider mode is fixed and
// reported to OnWarn.
func (l *Log) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("reopen audit log %s: closed", l.path)
	}
	return errors.Join(l.main.Reopen(), l.access.reopen())
}

// Close flushes and closes both files. Record after Close reports an error
// to OnError.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return errors.Join(l.main.Close(), l.access.w.Close())
}

// capFields cuts every string field of e to MaxField bytes.
func capFields(e *Event) {
	for _, s := range []*string{&e.Kind, &e.Session, &e.Role, &e.User, &e.Key, &e.Fingerprint,
		&e.Source, &e.Target, &e.Agent, &e.Reason, &e.Message} {
		*s = cut(*s, MaxField)
	}
}

// ellipsis ends a string that was cut.
const ellipsis = "…"

// cut returns s if it has at most n bytes, otherwise its longest prefix that
// ends on a character boundary and leaves room for "…", followed by "…".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := max(n-len(ellipsis), 0)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + ellipsis
}
