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

// Log appends events to a file. Writes are serialised; a write error is
// reported to the onError hook (never silently dropped, never fatal).
type Log struct {
	mu      sync.Mutex
	path    string
	f       *os.File
	now     func() time.Time
	onError func(error)
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
	return &Log{path: path, f: f, now: now, onError: onError}, nil
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
	if _, err := l.f.Write(b); err != nil {
		l.onError(fmt.Errorf("write audit log %s: %w", l.path, err))
	}
}

// Reopen closes and reopens the file, for log rotation (called on SIGHUP).
func (l *Log) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("reopen audit log %s: %w", l.path, err)
	}
	l.mu.Lock()
	old := l.f
	l.f = f
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
