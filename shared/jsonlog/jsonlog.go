// Package jsonlog appends JSON values, one a line, to a file it rotates by
// size, so that a log never fills its disk: before a line would take the
// file past MaxBytes, Path is renamed to Path.1 (Path.1 to Path.2, and so
// on, the oldest beyond Backups dropped) and a new Path is started. A file
// that holds nothing is never rotated, so a line longer than MaxBytes gets
// a file of its own; otherwise no file passes MaxBytes and the files
// together hold at most (Backups+1)*MaxBytes. A line is written with one
// write to a file opened for appending: it is never split across files.
//
// A Writer holds its file open (one process writes). Append opens, writes
// and closes the file at each call, for files that several processes
// append to.
package jsonlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Options describes a log. Path, MaxBytes and Mode are required.
type Options struct {
	// Path is the current file.
	Path string
	// Name is what errors and warnings call the file, e.g. "audit log";
	// "" means "log".
	Name string
	// MaxBytes is the size no line may take the file past; it must be
	// positive.
	MaxBytes int64
	// Backups is the number of rotated files kept, Path.1 (newest) to
	// Path.<Backups> (oldest). 0 means none: rotation deletes the file.
	Backups int
	// Rotate, when set, moves the full file at path away instead of the
	// numbered shift (Backups is then unused), and keeping or deleting
	// what it moved is the caller's. When it returns an error the file is
	// written on, not replaced. It is called with the Writer's lock held.
	Rotate func(path string) error
	// Mode is the mode of a file created here.
	Mode fs.FileMode
	// DirMode, when not 0, creates the directory of Path (and its parents)
	// with this mode when missing. 0 means the directory must exist.
	DirMode fs.FileMode
	// Tighten sets the directory (when DirMode is set), Path and every
	// Path.* beside it to DirMode and Mode at Open when group or other may
	// read, write or search them beyond those modes, and Path again at
	// Reopen; each change is told to OnWarn. Append ignores it.
	Tighten bool
	// OnWarn is told what Tighten changed, e.g. "audit log
	// /var/lib/lifeline/audit.jsonl was mode 0644: set to 0600". nil
	// means ignore.
	OnWarn func(string)
	// Sync puts every line on disk (fsync) before the write returns, and
	// the name of every file created too (the directory is synced), so
	// that a power cut loses no line written before it. A line torn by
	// one (the last, without its newline) is cut off when the file is
	// next opened. Without Sync lines reach the disk when the system
	// writes them back.
	Sync bool
	// OnCreate, when set, is called with every file created here before
	// anything is written to it (e.g. to chown it); an error fails the
	// write or the Open.
	OnCreate func(*os.File) error
}

// Marshal returns v's JSON encoding followed by a newline: a line for
// Writer.Write and Append. (encoding/json never writes a raw newline.)
func Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Writer appends lines to a log it holds open. Safe for concurrent use.
type Writer struct {
	o    Options
	mu   sync.Mutex
	f    *os.File // nil once closed
	size int64
}

// Open creates the directory when o.DirMode is set, opens (creating with
// o.Mode) o.Path for appending, and applies Tighten. Its errors name the
// file. The caller must Close the Writer.
func Open(o Options) (*Writer, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if err := o.mkdir(); err != nil {
		return nil, err
	}
	w := &Writer{o: o}
	if err := w.open(); err != nil {
		return nil, err
	}
	if err := o.tightenRotated(); err != nil {
		w.f.Close()
		return nil, err
	}
	return w, nil
}

// Write appends line, which must end in its only newline, rotating the file
// first if the line would take it past MaxBytes. When the rotation fails,
// the line is written to the current file all the same (no line is lost for
// a failed rename) and the rotation's error is returned with any other.
func (w *Writer) Write(line []byte) error {
	if err := checkLine(line); err != nil {
		return fmt.Errorf("write %s %s: %w", w.o.name(), w.o.Path, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("write %s %s: closed", w.o.name(), w.o.Path)
	}
	var rotErr error
	if w.o.full(w.size, len(line)) {
		rotErr = w.rotateLocked()
	}
	n, err := w.f.Write(line)
	w.size += int64(n)
	if err == nil && w.o.Sync {
		err = w.f.Sync()
	}
	if err != nil {
		err = fmt.Errorf("write %s %s: %w", w.o.name(), w.o.Path, err)
	}
	return errors.Join(rotErr, err)
}

// Reopen opens Path again and closes the previous file, for rotation by
// another tool: a file still there is appended to, a missing one created.
// On error the previous file stays in use.
func (w *Writer) Reopen() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("reopen %s %s: closed", w.o.name(), w.o.Path)
	}
	if err := w.reopenLocked(); err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	return nil
}

// Close closes the file; Write and Reopen then fail. A second Close does
// nothing.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return fmt.Errorf("close %s %s: %w", w.o.name(), w.o.Path, err)
	}
	return nil
}

func (w *Writer) open() error {
	flag := os.O_WRONLY | os.O_APPEND
	if w.o.Sync {
		flag = os.O_RDWR | os.O_APPEND // to cut a torn line
	}
	f, _, err := w.o.openFile(flag)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat %s %s: %w", w.o.name(), w.o.Path, err)
	}
	if w.o.Tighten {
		if err := w.o.tighten(w.o.Path, fi.Mode().Perm(), w.o.Mode, "", f.Chmod); err != nil {
			f.Close()
			return err
		}
	}
	w.f, w.size = f, fi.Size()
	return nil
}

func (w *Writer) reopenLocked() error {
	old := w.f
	if err := w.open(); err != nil {
		w.f = old
		return err
	}
	old.Close()
	return nil
}

func (w *Writer) rotateLocked() error {
	if err := w.o.rotate(false); err != nil {
		return err
	}
	if err := w.reopenLocked(); err != nil {
		return fmt.Errorf("after rotation: reopen: %w", err)
	}
	return nil
}

// Append appends line to o.Path as Writer.Write does, but holds nothing
// open: it creates the directory when o.DirMode is set, takes the file's
// size from the disk, rotates, opens, writes and closes, so that other
// processes may append and rotate too (renames of files another process
// already moved are skipped). Unlike Write it writes nothing when the
// rotation fails.
func Append(o Options, line []byte) error {
	if err := o.check(); err != nil {
		return err
	}
	if err := checkLine(line); err != nil {
		return fmt.Errorf("write %s %s: %w", o.name(), o.Path, err)
	}
	if err := o.mkdir(); err != nil {
		return err
	}
	st, err := os.Stat(o.Path)
	switch {
	case err == nil:
		if o.full(st.Size(), len(line)) {
			if err := o.rotate(true); err != nil {
				return err
			}
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w", o.name(), err)
	}
	f, _, err := o.openFile(os.O_RDWR | os.O_APPEND)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(line); err != nil {
		return fmt.Errorf("write %s %s: %w", o.name(), o.Path, err)
	}
	if o.Sync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync %s %s: %w", o.name(), o.Path, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s %s: %w", o.name(), o.Path, err)
	}
	return nil
}

// Files lists the files of a log with numbered rotation, oldest first:
// Path.<Backups> … Path.1, Path. Any of them may be missing.
func Files(o Options) []string {
	out := make([]string, 0, o.Backups+1)
	for i := o.Backups; i >= 1; i-- {
		out = append(out, numbered(o.Path, i))
	}
	return append(out, o.Path)
}

func (o *Options) check() error {
	var errs []error
	if o.Path == "" {
		errs = append(errs, errors.New("jsonlog: Path is empty"))
	}
	if o.MaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("jsonlog: MaxBytes %d is not positive", o.MaxBytes))
	}
	if o.Backups < 0 {
		errs = append(errs, fmt.Errorf("jsonlog: Backups %d is negative", o.Backups))
	}
	if o.Mode == 0 {
		errs = append(errs, errors.New("jsonlog: Mode is 0"))
	}
	return errors.Join(errs...)
}

func (o *Options) name() string {
	if o.Name == "" {
		return "log"
	}
	return o.Name
}

func (o *Options) warn(msg string) {
	if o.OnWarn != nil {
		o.OnWarn(msg)
	}
}

// full reports whether a line of n bytes must go to a new file.
func (o *Options) full(size int64, n int) bool {
	return size > 0 && size+int64(n) > o.MaxBytes
}

func checkLine(line []byte) error {
	if i := bytes.IndexByte(line, '\n'); i != len(line)-1 {
		return errors.New("not one line ending in a newline")
	}
	return nil
}

func numbered(path string, i int) string { return path + "." + strconv.Itoa(i) }

func (o *Options) mkdir() error {
	if o.DirMode == 0 {
		return nil
	}
	dir := filepath.Dir(o.Path)
	if err := os.MkdirAll(dir, o.DirMode); err != nil {
		return fmt.Errorf("create %s directory: %w", o.name(), err)
	}
	if !o.Tighten {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat %s directory: %w", o.name(), err)
	}
	return o.tighten(dir, fi.Mode().Perm(), o.DirMode, " directory", chmodPath(dir))
}

// tighten sets path, of permissions m, to mode with chmod when group or
// other may use it beyond mode, and says so. what follows the log's name in
// messages.
func (o *Options) tighten(path string, m, mode fs.FileMode, what string, chmod func(fs.FileMode) error) error {
	if m&0o077&^mode == 0 {
		return nil
	}
	if err := chmod(mode); err != nil {
		return fmt.Errorf("%s%s %s is mode %04o and cannot be set to %04o: %w", o.name(), what, path, m, mode, err)
	}
	o.warn(fmt.Sprintf("%s%s %s was mode %04o: set to %04o", o.name(), what, path, m, mode))
	return nil
}

// tightenRotated applies Tighten to the files named Path.* beside Path.
func (o *Options) tightenRotated() error {
	if !o.Tighten {
		return nil
	}
	dir, prefix := filepath.Dir(o.Path), filepath.Base(o.Path)+"."
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s directory: %w", o.name(), err)
	}
	for _, de := range entries {
		if !de.Type().IsRegular() || !strings.HasPrefix(de.Name(), prefix) {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		p := filepath.Join(dir, de.Name())
		if err := o.tighten(p, fi.Mode().Perm(), o.Mode, "", chmodPath(p)); err != nil {
			return err
		}
	}
	return nil
}

func chmodPath(path string) func(fs.FileMode) error {
	return func(m fs.FileMode) error { return os.Chmod(path, m) }
}

// rotate moves Path away: through o.Rotate, by deleting it when Backups is
// 0, or by the numbered shift. shared skips files that are missing (another
// process rotated first).
func (o *Options) rotate(shared bool) error {
	if o.Rotate != nil {
		return o.Rotate(o.Path)
	}
	ignore := func(err error) bool { return err == nil || shared && errors.Is(err, fs.ErrNotExist) }
	if o.Backups == 0 {
		if err := os.Remove(o.Path); !ignore(err) {
			return fmt.Errorf("rotate %s %s: %w", o.name(), o.Path, err)
		}
		return nil
	}
	for i := o.Backups - 1; i >= 1; i-- {
		from := numbered(o.Path, i)
		if err := os.Rename(from, numbered(o.Path, i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate %s %s: %w", o.name(), from, err)
		}
	}
	if err := os.Rename(o.Path, numbered(o.Path, 1)); !ignore(err) {
		return fmt.Errorf("rotate %s %s: %w", o.name(), o.Path, err)
	}
	return nil
}

// openFile opens Path with flag, creating it with Mode when missing (then
// calling OnCreate and, with Sync, syncing the directory). With Sync a torn
// last line is cut off. created reports whether the file was new.
func (o *Options) openFile(flag int) (f *os.File, created bool, err error) {
	f, err = os.OpenFile(o.Path, flag, 0)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.OpenFile(o.Path, flag|os.O_CREATE|os.O_EXCL, o.Mode)
		created = err == nil
		if errors.Is(err, fs.ErrExist) { // another process was first
			f, err = os.OpenFile(o.Path, flag, 0)
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("open %s %s: %w", o.name(), o.Path, err)
	}
	if created && o.OnCreate != nil {
		if err := o.OnCreate(f); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("open %s %s: %w", o.name(), o.Path, err)
		}
	}
	if created && o.Sync {
		if err := syncDir(filepath.Dir(o.Path)); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("%s: %w", o.name(), err)
		}
	}
	if !created && o.Sync {
		if err := cutTornTail(f, o.MaxBytes); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("repair %s %s: %w", o.name(), o.Path, err)
		}
	}
	return f, created, nil
}

// cutTornTail truncates f after its last newline when its last byte is not
// one: what follows is a line whose write was interrupted. Only the last
// maxLine bytes are looked at: a longer tail is ended with a newline
// instead, leaving a line that is not JSON, which readers skip.
func cutTornTail(f *os.File, maxLine int64) error {
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
	i := bytes.LastIndexByte(tail, '\n')
	if i < 0 && size > n {
		_, err := f.Write([]byte{'\n'})
		return err
	}
	return f.Truncate(size - n + int64(i) + 1)
}

// syncDir makes a file created or renamed in dir survive a power cut.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
