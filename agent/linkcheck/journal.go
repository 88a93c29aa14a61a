package linkcheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/lifeline-dev/lifeline/shared/report"
)

// journal appends reports as JSON lines to path, rotating by size so the
// history never fills the Pi's card: before a line would make the file
// pass maxBytes, path.(keep-2) is renamed to path.(keep-1), …, path to
// path.1, and a new path is started. At most keep files exist.
//
// Every line is on disk (fsync) before append returns, and a new file's
// name is too (the directory is synced), so a power cut or a kill -9
// loses no line that was appended before it. A line torn by one (the last
// line without its newline) is cut off by the next append and skipped by
// readers.
type journal struct {
	path     string
	maxBytes int64
	keep     int

	mu sync.Mutex
}

// maxLine bounds a line that readers accept (a report is at most
// report.MaxSize; the rest is slack).
const maxLine = 4 * report.MaxSize

// append writes r as one line (the report's own JSON encoding, version
// included). The directory is created (0750) when missing; the file is
// 0640, owned by the directory's owner.
func (j *journal) append(r report.LinkReport) error {
	r.Version = report.Version
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode check result: %w", err)
	}
	line = append(line, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(j.path), 0o750); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if err := j.rotateFor(int64(len(line))); err != nil {
		return err
	}
	f, created, err := openInStateDir(j.path, os.O_RDWR|os.O_APPEND)
	if err != nil {
		return fmt.Errorf("open check history: %w", err)
	}
	defer f.Close()
	if err := cutTornTail(f); err != nil {
		return fmt.Errorf("repair %s: %w", j.path, err)
	}
	if _, err := f.Write(line); err != nil {
		return fmt.Errorf("append to %s: %w", j.path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", j.path, err)
	}
	if created {
		if err := syncDir(filepath.Dir(j.path)); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", j.path, err)
	}
	return nil
}

// cutTornTail truncates f after its last newline when its last byte is
// not one: what follows is a line whose write was interrupted.
func cutTornTail(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size == 0 {
		return nil
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	n := min(size, maxLine)
	tail := make([]byte, n)
	if _, err := f.ReadAt(tail, size-n); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	keep := int64(0)
	if i := bytes.LastIndexByte(tail, '\n'); i >= 0 {
		keep = size - n + int64(i) + 1
	} else if size > n {
		// Longer than any line: end it, readers skip it.
		_, err := f.Write([]byte{'\n'})
		return err
	}
	return f.Truncate(keep)
}

func (j *journal) rotateFor(n int64) error {
	st, err := os.Stat(j.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check history: %w", err)
	}
	if st.Size() == 0 || st.Size()+n <= j.maxBytes {
		return nil
	}
	if j.keep <= 1 {
		if err := os.Remove(j.path); err != nil {
			return fmt.Errorf("rotate check history: %w", err)
		}
		return nil
	}
	for i := j.keep - 1; i >= 1; i-- {
		from := j.path
		if i > 1 {
			from = fmt.Sprintf("%s.%d", j.path, i-1)
		}
		err := os.Rename(from, fmt.Sprintf("%s.%d", j.path, i))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate check history: %w", err)
		}
	}
	return nil
}

// files lists the journal's files, oldest first.
func (j *journal) files() []string {
	var out []string
	for i := j.keep - 1; i >= 1; i-- {
		out = append(out, fmt.Sprintf("%s.%d", j.path, i))
	}
	return append(out, j.path)
}

// entry is what the schedule and the monthly budget need of a line.
type entry struct {
	Time  time.Time
	Bytes int64
	Light bool // a check that measured no speed (report.LinkReport.Light)
}

// scan calls f for every readable line of every file, oldest first. Lines
// that are not JSON (a torn last line) are counted in bad, not passed.
// Missing files are skipped; another error reading a file is returned.
func (j *journal) scan(f func(entry)) (bad int, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	buf := make([]byte, 0, 4<<10)
	for _, p := range j.files() {
		fh, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return bad, fmt.Errorf("read check history: %w", err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(buf, maxLine)
		for sc.Scan() {
			e, ok := parseEntry(sc.Bytes())
			if !ok {
				bad++
				continue
			}
			f(e)
		}
		err = sc.Err()
		fh.Close()
		if errors.Is(err, bufio.ErrTooLong) {
			bad++
			continue
		}
		if err != nil {
			return bad, fmt.Errorf("read %s: %w", p, err)
		}
	}
	return bad, nil
}

// parseEntry reads the time, bytes and light mark of a journal line. It
// allocates next to nothing (the agent reads up to three MiB of history at
// start, and garbage would stay in its small heap): the line is checked to
// be JSON, then the top-level keys json.Marshal wrote are found by their
// text (a key's quotes inside a string value would be escaped). A line
// without "light" (every line of an older agent) is a check that measured
// speed.
func parseEntry(line []byte) (entry, bool) {
	if len(line) == 0 || line[0] != '{' || !json.Valid(line) {
		return entry{}, false
	}
	var e entry
	i := bytes.Index(line, []byte(`"time":"`))
	if i < 0 {
		return entry{}, false
	}
	v := line[i+len(`"time":"`):]
	end := bytes.IndexByte(v, '"')
	if end < 0 {
		return entry{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(v[:end]))
	if err != nil || t.IsZero() {
		return entry{}, false
	}
	e.Time = t
	if i := bytes.Index(line, []byte(`"bytes":`)); i >= 0 {
		for _, c := range line[i+len(`"bytes":`):] {
			if c < '0' || c > '9' {
				break
			}
			if e.Bytes > (1<<62)/10 {
				return entry{}, false
			}
			e.Bytes = e.Bytes*10 + int64(c-'0')
		}
	}
	e.Light = bytes.Contains(line, []byte(`"light":true`))
	return e, true
}

// stamp identifies a version of the journal's newest file: a change means
// another process appended (or rotated) since.
type stamp struct {
	ino, size int64
	mtime     time.Time
}

func (j *journal) stamp() (stamp, error) {
	st, err := os.Stat(j.path)
	if errors.Is(err, fs.ErrNotExist) {
		return stamp{}, nil
	}
	if err != nil {
		return stamp{}, fmt.Errorf("check history: %w", err)
	}
	s := stamp{size: st.Size(), mtime: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.ino = int64(sys.Ino)
	}
	return s, nil
}

// openInStateDir opens (creating, 0640) a file of the state directory.
// When the process runs as root and the directory belongs to another user
// (the agent's), a file it creates is given to that user, so that a
// manual `sudo lifeline-agent check` never leaves the service a file it
// cannot write. created reports whether the file was new.
func openInStateDir(path string, flag int) (f *os.File, created bool, err error) {
	f, err = os.OpenFile(path, flag, 0)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.OpenFile(path, flag|os.O_CREATE|os.O_EXCL, 0o640)
		created = err == nil
		if errors.Is(err, fs.ErrExist) {
			f, err = os.OpenFile(path, flag, 0)
		}
	}
	if err != nil {
		return nil, false, err
	}
	if created && os.Geteuid() == 0 {
		if dir, err := os.Stat(filepath.Dir(path)); err == nil {
			if st, ok := dir.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
				if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil {
					f.Close()
					return nil, false, fmt.Errorf("give %s to the state directory's owner: %w", path, err)
				}
			}
		}
	}
	return f, created, nil
}

// syncDir makes a file created or renamed in dir survive a power cut.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state directory %s: %w", dir, err)
	}
	return nil
}
