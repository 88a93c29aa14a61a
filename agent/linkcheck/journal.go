package linkcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/lifeline-dev/lifeline/shared/report"
)

// journal appends reports as JSON lines to path, rotating by size so the
// history never fills the Pi's card: before a line would make the file
// pass maxBytes, path.(keep-2) is renamed to path.(keep-1), …, path to
// path.1, and a new path is started. At most keep files exist.
type journal struct {
	path     string
	maxBytes int64
	keep     int

	mu sync.Mutex
}

// append writes r as one line (the report's own JSON encoding, version
// included). The directory is created (0750) when missing; the file is
// 0640.
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
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open check history: %w", err)
	}
	if _, err := f.Write(line); err != nil {
		_ = f.Close()
		return fmt.Errorf("append to %s: %w", j.path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", j.path, err)
	}
	return nil
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
