package linkcheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/lifeline-dev/lifeline/shared/jsonlog"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// journal appends reports as JSON lines to path, rotating by size so the
// history never fills the Pi's card (see shared/jsonlog): before a line
// would make the file pass maxBytes, path.(keep-2) is renamed to
// path.(keep-1), …, path to path.1, and a new path is started. At most keep
// files exist. Other processes (a manual check) append to it too.
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

// opts is the journal as a jsonlog: path and path.1 … path.(keep-1), 0640
// in a 0750 directory, every line synced.
func (j *journal) opts() jsonlog.Options {
	return jsonlog.Options{
		Path: j.path, Name: "check history", MaxBytes: j.maxBytes, Backups: max(j.keep-1, 0),
		Mode: 0o640, DirMode: 0o750, Sync: true, OnCreate: giveToDirOwner,
	}
}

// append writes r as one line (the report's own JSON encoding, version
// included). The directory is created (0750) when missing; the file is
// 0640, owned by the directory's owner.
func (j *journal) append(r report.LinkReport) error {
	r.Version = report.Version
	line, err := jsonlog.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode check result: %w", err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return jsonlog.Append(j.opts(), line)
}

// files lists the journal's files, oldest first.
func (j *journal) files() []string { return jsonlog.Files(j.opts()) }

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
	if created {
		if err := giveToDirOwner(f); err != nil {
			f.Close()
			return nil, false, err
		}
	}
	return f, created, nil
}

// giveToDirOwner gives f, just created, to the owner of its directory when
// the process runs as root and the directory belongs to another user.
func giveToDirOwner(f *os.File) error {
	if os.Geteuid() != 0 {
		return nil
	}
	dir, err := os.Stat(filepath.Dir(f.Name()))
	if err != nil {
		return nil
	}
	if st, ok := dir.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("give %s to the state directory's owner: %w", f.Name(), err)
		}
	}
	return nil
}
