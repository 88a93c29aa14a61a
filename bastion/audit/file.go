package audit

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// logFile is one append-only file and the bytes it holds.
type logFile struct {
	path string
	f    *os.File
	size int64
}

// open opens (creating with mode 0600) path for appending; an existing file
// readable or writable by group or other is set to 0600 and reported to
// warn.
func (lf *logFile) open(warn func(string)) error {
	f, err := os.OpenFile(lf.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit log %s: %w", lf.path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat audit log %s: %w", lf.path, err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return fmt.Errorf("audit log %s is mode %04o and cannot be set to 0600: %w", lf.path, m, err)
		}
		warn(fmt.Sprintf("audit log %s was mode %04o: set to 0600", lf.path, m))
	}
	lf.f, lf.size = f, fi.Size()
	return nil
}

// reopen opens path again and closes the previous file; on error the
// previous file stays in use.
func (lf *logFile) reopen(warn func(string)) error {
	old := *lf
	if err := lf.open(warn); err != nil {
		*lf = old
		return fmt.Errorf("reopen: %w", err)
	}
	if old.f != nil {
		old.f.Close()
	}
	return nil
}

func (lf *logFile) write(b []byte, onError func(error)) {
	if lf.f == nil {
		onError(fmt.Errorf("write audit log %s: not open", lf.path))
		return
	}
	n, err := lf.f.Write(b)
	lf.size += int64(n)
	if err != nil {
		onError(fmt.Errorf("write audit log %s: %w", lf.path, err))
	}
}

func (lf *logFile) close() error {
	if lf.f == nil {
		return nil
	}
	err := lf.f.Close()
	lf.f = nil
	if err != nil {
		return fmt.Errorf("close audit log %s: %w", lf.path, err)
	}
	return nil
}

// fixMode sets path, a directory, to mode when it is readable, writable or
// searchable by group or other, and reports the change to warn.
func fixMode(path string, mode fs.FileMode, warn func(string)) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat audit log directory: %w", err)
	}
	m := fi.Mode().Perm()
	if m&0o077 == 0 {
		return nil
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("audit log directory %s is mode %04o and cannot be set to %04o: %w", path, m, mode, err)
	}
	warn(fmt.Sprintf("audit log directory %s was mode %04o: set to %04o", path, m, mode))
	return nil
}

// fixRotatedModes sets the rotated files of both logs to 0600 when they are
// readable or writable by group or other: they hold the same records.
func (l *Log) fixRotatedModes() error {
	dir := filepath.Dir(l.main.path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list audit log directory: %w", err)
	}
	mainBase, accessBase := filepath.Base(l.main.path), filepath.Base(l.access.path)
	for _, de := range entries {
		name := de.Name()
		if !de.Type().IsRegular() || !(strings.HasPrefix(name, mainBase+".") || strings.HasPrefix(name, accessBase+".")) {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if m := fi.Mode().Perm(); m&0o077 != 0 {
			p := filepath.Join(dir, name)
			if err := os.Chmod(p, 0o600); err != nil {
				return fmt.Errorf("audit log %s is mode %04o and cannot be set to 0600: %w", p, m, err)
			}
			l.onWarn(fmt.Sprintf("audit log %s was mode %04o: set to 0600", p, m))
		}
	}
	return nil
}

// rotateMainLocked shifts audit.jsonl.1..Keep-1 up by one (dropping the
// oldest), renames audit.jsonl to audit.jsonl.1 and opens a new audit.jsonl.
// l.mu must be held.
func (l *Log) rotateMainLocked() error {
	p := l.main.path
	for i := l.keep - 1; i >= 1; i-- {
		from := p + "." + strconv.Itoa(i)
		if _, err := os.Stat(from); err == nil {
			if err := os.Rename(from, p+"."+strconv.Itoa(i+1)); err != nil {
				return fmt.Errorf("rotate audit log %s: %w", from, err)
			}
		}
	}
	if err := os.Rename(p, p+".1"); err != nil {
		return fmt.Errorf("rotate audit log %s: %w", p, err)
	}
	if err := l.main.reopen(l.onWarn); err != nil {
		return fmt.Errorf("after rotation: %w", err)
	}
	return nil
}
