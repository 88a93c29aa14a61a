// Package audit writes the bastion's audit log: one JSON object per line, one
// line per login, refusal, registration, jump, disconnect and alert.
package audit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
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
)

// Event is one audit record. Empty fields are left out of the JSON.
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
}

// Recorder receives audit events. Record must not block for long: it is
// called on the paths of logins and jumps.
type Recorder interface {
	Record(Event)
}

// Func adapts a function to Recorder.
type Func func(Event)

func (f Func) Record(e Event) { f(e) }

// Rotation: when the log passes MaxBytes it is renamed to audit.jsonl.1
// (older files shift up to .Keep, the oldest is removed) and a new file is
// started, so a bastion scanned by the whole internet never fills its disk.
const (
	MaxBytes = 64 << 20
	Keep     = 5
)

// Log appends events to a file. Writes are serialised; a write error is
// reported to the onError hook (never silently dropped, never fatal).
type Log struct {
	mu       sync.Mutex
	path     string
	f        *os.File
	size     int64
	maxBytes int64
	now      func() time.Time
	onError  func(error)
}

// Open opens (creating with mode 0600) the audit log at path for appending.
// onError is called when a later write fails; nil means ignore.
func Open(path string, now func() time.Time, onError func(error)) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create audit log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	if now == nil {
		now = time.Now
	}
	if onError == nil {
		onError = func(error) {}
	}
	l := &Log{path: path, f: f, now: now, onError: onError, maxBytes: MaxBytes}
	if fi, err := f.Stat(); err == nil {
		l.size = fi.Size()
	}
	return l, nil
}

// Record writes e, stamping its time when unset.
func (l *Log) Record(e Event) {
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
	b, err := json.Marshal(e)
	if err != nil {
		l.onError(fmt.Errorf("encode audit event: %w", err))
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		l.onError(fmt.Errorf("audit log %s is closed", l.path))
		return
	}
	if l.size+int64(len(b)) > l.maxBytes && l.size > 0 {
		if err := l.rotateLocked(); err != nil {
			l.onError(err) // keep writing to the current file
		}
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		l.onError(fmt.Errorf("write audit log %s: %w", l.path, err))
	}
}

// rotateLocked shifts path.1..path.Keep-1 up by one, renames path to
// path.1 and opens a new path. l.mu must be held.
func (l *Log) rotateLocked() error {
	for i := Keep - 1; i >= 1; i-- {
		from := fmt.Sprintf("%s.%d", l.path, i)
		if _, err := os.Stat(from); err == nil {
			if err := os.Rename(from, fmt.Sprintf("%s.%d", l.path, i+1)); err != nil {
				return fmt.Errorf("rotate audit log %s: %w", from, err)
			}
		}
	}
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("rotate audit log %s: %w", l.path, err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("reopen audit log %s after rotation: %w", l.path, err)
	}
	l.f.Close()
	l.f, l.size = f, 0
	return nil
}

// Reopen closes and reopens the file, for log rotation (called on SIGHUP).
func (l *Log) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("reopen audit log %s: %w", l.path, err)
	}
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	l.mu.Lock()
	old := l.f
	l.f, l.size = f, size
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Close flushes and closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
