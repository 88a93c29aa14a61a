package linkcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// LockName is the file in Config.StateDir that serialises checks between
// the agent and `lifeline-agent check` (flock) and, while a check runs,
// holds what it may use: a check whose process died (kill -9, power cut)
// leaves it behind and is counted at that allowance by whoever takes the
// lock next.
const LockName = "check.lock"

// ErrBusy is returned when another process (the agent, or another
// `lifeline-agent check`) is running a check.
var ErrBusy = errors.New("a link check is already running (the agent's own, or another `lifeline-agent check`)")

// marker is the content of LockName while a check runs.
type marker struct {
	Start  time.Time `json:"start"`
	Budget int64     `json:"budget"`
	Manual bool      `json:"manual,omitempty"`
	Light  bool      `json:"light,omitempty"`
}

// history is what the schedule and the monthly budget know of past
// checks: read from the journal (all its files) and kept up to date by
// add. It rereads the journal when the newest file changed under it
// (another process appended). Its methods are safe for concurrent use.
type history struct {
	journal  *journal
	lockPath string

	mu     sync.Mutex
	loaded bool
	seen   stamp
	last   time.Time        // latest check start
	months map[string]int64 // "2006-01" (UTC) -> bytes
	speed  speedCheck       // the latest check that was not light
	lights lightStats       // every light check known
	bad    int              // unreadable lines at the last read
}

// speedCheck is a check that measured speed, or tried to.
type speedCheck struct {
	at    time.Time
	bytes int64
}

// lightStats sums the light checks, for what one is taken to use.
type lightStats struct {
	n     int
	bytes int64
}

func (l *lightStats) add(b int64) {
	l.n++
	l.bytes += max(b, 0)
}

func newHistory(dir string, j *journal) *history {
	return &history{journal: j, lockPath: filepath.Join(dir, LockName), months: map[string]int64{}}
}

func monthOf(t time.Time) string { return t.UTC().Format("2006-01") }

// refresh rereads the journal if it changed since the last read. On an
// error what is known stays (within this process the budget still holds).
func (h *history) refresh() error {
	st, err := h.journal.stamp()
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.loaded && st == h.seen {
		return nil
	}
	var (
		last   time.Time
		speed  speedCheck
		lights lightStats
	)
	months := map[string]int64{}
	bad, err := h.journal.scan(func(e entry) {
		if e.Time.After(last) {
			last = e.Time
		}
		months[monthOf(e.Time)] += max(e.Bytes, 0)
		if e.Light {
			lights.add(e.Bytes)
		} else if !e.Time.Before(speed.at) {
			speed = speedCheck{at: e.Time, bytes: max(e.Bytes, 0)}
		}
	})
	if err != nil {
		return err
	}
	h.loaded, h.seen, h.bad = true, st, bad
	// Keep what this process added if the file lost it (a rotation that
	// dropped the oldest file keeps the current month in practice).
	if last.After(h.last) {
		h.last = last
	}
	for m, b := range months {
		h.months[m] = max(h.months[m], b)
	}
	if !speed.at.Before(h.speed.at) {
		h.speed = speed
	}
	if lights.n >= h.lights.n {
		h.lights = lights
	}
	return nil
}

// add records r (appending it to the journal) and counts it, also when the
// journal cannot be written: the error is returned for the caller to log.
func (h *history) add(r report.LinkReport) error {
	err := h.journal.append(r)
	st, serr := h.journal.stamp()
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Time.After(h.last) {
		h.last = r.Time
	}
	h.months[monthOf(r.Time)] += max(r.Bytes, 0)
	if r.Light {
		h.lights.add(r.Bytes)
	} else if !r.Time.Before(h.speed.at) {
		h.speed = speedCheck{at: r.Time, bytes: max(r.Bytes, 0)}
	}
	if err == nil && serr == nil {
		h.seen = st
	}
	return err
}

// lastCheck is when the latest check started (zero: none known).
func (h *history) lastCheck() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// monthBytes is what checks used in t's calendar month (UTC).
func (h *history) monthBytes(t time.Time) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.months[monthOf(t)]
}

// usage is what pacing a check at now needs of the history.
func (h *history) usage(now time.Time) usage {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := usage{last: h.last, lastSpeed: h.speed.at, speedBytes: h.speed.bytes, light: int64(lightEstimate)}
	month := now
	if h.last.After(now) {
		month = h.last
	}
	for i, t := range []time.Time{month, nextMonth(month)} {
		u.months[i] = monthUse{key: monthKey(t), bytes: h.months[monthOf(t)]}
	}
	if h.lights.n > 0 {
		u.light = min(max(h.lights.bytes/int64(h.lights.n), u.light), int64(lightAllowance))
	}
	return u
}

// unreadable is how many lines the last read skipped.
func (h *history) unreadable() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bad
}

// checkLock is the held LockName.
type checkLock struct {
	f *os.File
}

// lock takes LockName without waiting: ErrBusy when another process (or
// another lock in this one) holds it.
func (h *history) lock() (*checkLock, error) {
	if err := os.MkdirAll(filepath.Dir(h.lockPath), 0o750); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	f, _, err := openInStateDir(h.lockPath, os.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", h.lockPath, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, fmt.Errorf("lock %s: %w", h.lockPath, err)
	}
	return &checkLock{f: f}, nil
}

// release unlocks (closing the file drops the flock). A nil lock is fine.
func (l *checkLock) release() {
	if l != nil {
		l.f.Close()
	}
}

// begin writes m: from here on, the check counts even if the process dies.
func (l *checkLock) begin(m marker) error {
	if l == nil {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode check marker: %w", err)
	}
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("write %s: %w", l.f.Name(), err)
	}
	if _, err := l.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("write %s: %w", l.f.Name(), err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", l.f.Name(), err)
	}
	return nil
}

// end clears the marker once the check is in the journal.
func (l *checkLock) end() error {
	if l == nil {
		return nil
	}
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("clear %s: %w", l.f.Name(), err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", l.f.Name(), err)
	}
	return nil
}

// leftover returns the marker of a check whose process died before it
// ended (ok false when there is none). An unreadable marker (torn by a
// power cut) counts from the file's time at fallback bytes.
func (l *checkLock) leftover(fallback int64) (m marker, ok bool, err error) {
	st, err := l.f.Stat()
	if err != nil {
		return marker{}, false, fmt.Errorf("read %s: %w", l.f.Name(), err)
	}
	if st.Size() == 0 {
		return marker{}, false, nil
	}
	b := make([]byte, min(st.Size(), 4<<10))
	n, _ := l.f.ReadAt(b, 0)
	if err := json.Unmarshal(b[:n], &m); err != nil || m.Start.IsZero() {
		m = marker{Start: st.ModTime().UTC(), Budget: fallback}
	}
	return m, true, nil
}

// interrupted is the journal line for a check whose process died: failed,
// at its whole allowance (what it moved is unknown; it may all be gone).
func interrupted(m marker) report.LinkReport {
	return report.LinkReport{
		Version: report.Version,
		Time:    m.Start.UTC(),
		Bytes:   max(m.Budget, 0),
		Verdict: report.VerdictFailed,
		Manual:  m.Manual,
		Light:   m.Light,
		Reasons: []string{fmt.Sprintf("check interrupted: its process ended during it (crash, kill or power cut); counted at its whole allowance of %s", mb(m.Budget))},
		Codes:   []string{report.CodeCheckInterrupted},
	}
}

// mb prints a byte count for people, in decimal megabytes as the budgets
// are written (kilobytes below one megabyte).
func mb(b int64) string {
	if b > 0 && b < int64(units.MB) {
		return fmt.Sprintf("%d kB", (b+500)/1000)
	}
	if b%int64(units.MB) == 0 {
		return fmt.Sprintf("%d MB", b/int64(units.MB))
	}
	return fmt.Sprintf("%.1f MB", float64(b)/1e6)
}
