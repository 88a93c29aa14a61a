package alert

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/lifeline-dev/lifeline/shared/atomicfile"
)

// The spool: Dir/alerts/<channel>/<ID>.json, one file per alert the
// channel has not delivered yet, written atomically (temp file, fsync,
// rename, fsync of the directory) and removed only after that channel's
// Sender accepted it. Alerts that failed permanently move to
// Dir/alerts/<channel>/failed/. Dir/alerts/<channel>/overflow.state counts
// alerts that arrived while the channel's spool was full (they are
// summarised, not lost).
//
// Releases before channels kept the same files in Dir/alerts itself;
// migrateLegacy moves them into the channels' folders at start.
const (
	spoolVersion  = 1
	overflowFile  = "overflow.state"
	failedSubdir  = "failed"
	spoolFileMode = 0o600
)

var idPattern = regexp.MustCompile(`^[0-9a-f]{16}-[0-9a-f]{6}-[0-9a-f]{8}$`)

// entry is one spooled alert.
type entry struct {
	Message
	// Subject is who or what the alert is about (operator, agent), for
	// summaries.
	Subject string
}

type envelope struct {
	V       int     `json:"v"`
	Message Message `json:"message"`
	Subject string  `json:"subject,omitempty"`
}

type spool struct {
	dir    string
	failed string
}

// makeSpool creates the spool folder dir (0700) and its failed/ folder.
func makeSpool(dir string) (*spool, error) {
	s := &spool{dir: dir, failed: filepath.Join(dir, failedSubdir)}
	if err := os.MkdirAll(s.failed, 0o700); err != nil {
		return nil, fmt.Errorf("create alert spool %s: %w", s.failed, err)
	}
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("alert spool %s: %w", s.dir, err)
	}
	return s, nil
}

// load removes temp files left by a crash and returns the pending entries
// oldest first and the overflow counts. Files it cannot read are set aside
// into failed/ and reported in bad.
func (s *spool) load() (pending []entry, overflow map[string]int, bad []error, err error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read alert spool %s: %w", s.dir, err)
	}
	for _, de := range des {
		name := de.Name()
		switch {
		case de.IsDir():
			continue
		case atomicfile.IsTemp(name):
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				bad = append(bad, fmt.Errorf("remove stale temp file: %w", err))
			}
		case name == overflowFile:
			overflow, err = s.readOverflow()
			if err != nil {
				bad = append(bad, err)
			}
		case strings.HasSuffix(name, ".json"):
			e, err := s.read(name)
			if err != nil {
				bad = append(bad, err)
				if err := os.Rename(filepath.Join(s.dir, name), filepath.Join(s.failed, "unreadable-"+name)); err != nil {
					bad = append(bad, fmt.Errorf("set aside %s: %w", name, err))
				}
				continue
			}
			pending = append(pending, e)
		}
	}
	sort.Slice(pending, func(i, j int) bool { return pending[i].ID < pending[j].ID })
	return pending, overflow, bad, nil
}

// migrateLegacy moves what a release before channels left in root (the
// spool folder itself) into the channels' spools: every alert file and the
// overflow count into every channel, since no channel delivered them; the
// set-aside failures (root/failed/) into the first channel's failed/, since
// that release had one channel. An alert is copied into every channel
// (durably) before its file in root is removed, so a crash in the middle
// repeats the copy at the next start, which overwrites the same file: it
// runs before any send loop, so no channel has delivered a copy yet. An
// overflow count is added to the channels' own; a crash between that and
// the removal counts it twice in the summary (never less). Unreadable
// files go to the first channel's failed/. It returns how many alerts it
// moved, and every problem; what it could not move stays in root for the
// next start.
func migrateLegacy(root string, chans []*spool) (moved int, bad []error) {
	legacy := &spool{dir: root, failed: filepath.Join(root, failedSubdir)}
	des, err := os.ReadDir(root)
	if err != nil {
		return 0, []error{fmt.Errorf("read alert spool %s: %w", root, err)}
	}
	first := chans[0]
	for _, de := range des {
		name := de.Name()
		path := filepath.Join(root, name)
		switch {
		case de.IsDir():
			continue
		case atomicfile.IsTemp(name):
			if err := os.Remove(path); err != nil {
				bad = append(bad, fmt.Errorf("remove stale temp file: %w", err))
			}
		case name == overflowFile:
			counts, err := legacy.readOverflow()
			if err != nil {
				bad = append(bad, err)
				continue
			}
			if err := addOverflow(chans, counts); err != nil {
				bad = append(bad, err)
				continue
			}
			if err := os.Remove(path); err != nil {
				bad = append(bad, fmt.Errorf("remove migrated overflow count: %w", err))
			}
		case strings.HasSuffix(name, ".json"):
			e, err := legacy.read(name)
			if err != nil {
				bad = append(bad, err)
				if err := os.Rename(path, filepath.Join(first.failed, "unreadable-"+name)); err != nil {
					bad = append(bad, fmt.Errorf("set aside %s: %w", name, err))
				}
				continue
			}
			var werr error
			for _, c := range chans {
				werr = errors.Join(werr, c.write(e))
			}
			if werr != nil {
				bad = append(bad, fmt.Errorf("alert %s stays in %s: %w", e.ID, root, werr))
				continue
			}
			if err := os.Remove(path); err != nil {
				bad = append(bad, fmt.Errorf("remove migrated alert: %w", err))
				continue
			}
			moved++
		}
	}
	bad = append(bad, moveFailed(legacy.failed, first.failed)...)
	return moved, bad
}

// addOverflow adds counts to every channel's overflow count on disk.
func addOverflow(chans []*spool, counts map[string]int) error {
	for _, c := range chans {
		own := map[string]int{}
		if _, err := os.Stat(filepath.Join(c.dir, overflowFile)); err == nil {
			if own, err = c.readOverflow(); err != nil {
				return err
			}
		}
		for k, n := range counts {
			own[k] += n
		}
		if err := c.writeOverflow(own); err != nil {
			return err
		}
	}
	return nil
}

// moveFailed moves the files of from (a legacy failed/ folder; missing is
// fine) into to, then removes from.
func moveFailed(from, to string) []error {
	des, err := os.ReadDir(from)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return []error{fmt.Errorf("read %s: %w", from, err)}
	}
	var bad []error
	for _, de := range des {
		dst := filepath.Join(to, de.Name())
		if _, err := os.Lstat(dst); err == nil {
			dst = filepath.Join(to, "legacy-"+de.Name())
		}
		if err := os.Rename(filepath.Join(from, de.Name()), dst); err != nil {
			bad = append(bad, fmt.Errorf("move set-aside alert %s: %w", de.Name(), err))
		}
	}
	if len(bad) == 0 {
		if err := os.Remove(from); err != nil {
			bad = append(bad, fmt.Errorf("remove %s: %w", from, err))
		}
	}
	return bad
}

func (s *spool) read(name string) (entry, error) {
	id := strings.TrimSuffix(name, ".json")
	if !idPattern.MatchString(id) {
		return entry{}, fmt.Errorf("alert spool file %s: unexpected name", name)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		return entry{}, fmt.Errorf("read alert spool file: %w", err)
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return entry{}, fmt.Errorf("alert spool file %s: %w", name, err)
	}
	if env.V != spoolVersion {
		return entry{}, fmt.Errorf("alert spool file %s: version %d, want %d", name, env.V, spoolVersion)
	}
	if env.Message.ID != id || env.Message.Text == "" {
		return entry{}, fmt.Errorf("alert spool file %s: id or text does not match its name", name)
	}
	return entry{Message: env.Message, Subject: env.Subject}, nil
}

// write stores e durably under its ID.
func (s *spool) write(e entry) error {
	b, err := json.Marshal(envelope{V: spoolVersion, Message: e.Message, Subject: e.Subject})
	if err != nil {
		return fmt.Errorf("encode alert %s: %w", e.ID, err)
	}
	return s.writeFile(e.ID+".json", b)
}

func (s *spool) writeFile(name string, b []byte) error {
	if err := atomicfile.Write(filepath.Join(s.dir, name), b, spoolFileMode); err != nil {
		return fmt.Errorf("spool alert: %w", err)
	}
	return nil
}

// remove deletes a delivered alert.
func (s *spool) remove(id string) error {
	if err := os.Remove(filepath.Join(s.dir, id+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove delivered alert: %w", err)
	}
	return nil
}

// setAside moves an alert that failed permanently into failed/, or deletes
// it when failed/ already holds max files (it is in the audit log).
func (s *spool) setAside(id string, max int) error {
	from := filepath.Join(s.dir, id+".json")
	if n, err := countFiles(s.failed); err == nil && n >= max {
		if err := os.Remove(from); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("drop failed alert: %w", err)
		}
		return nil
	}
	if err := os.Rename(from, filepath.Join(s.failed, id+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("set aside failed alert: %w", err)
	}
	return nil
}

func countFiles(dir string) (int, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", dir, err)
	}
	return len(des), nil
}

type overflowState struct {
	V      int            `json:"v"`
	Counts map[string]int `json:"counts"`
}

func (s *spool) readOverflow() (map[string]int, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, overflowFile))
	if err != nil {
		return nil, fmt.Errorf("read alert overflow count: %w", err)
	}
	var st overflowState
	if err := json.Unmarshal(b, &st); err != nil || st.V != spoolVersion {
		return nil, fmt.Errorf("alert overflow count %s is unreadable (version %d): %v", overflowFile, st.V, err)
	}
	return st.Counts, nil
}

// writeOverflow stores the overflow counts; an empty map removes the file.
func (s *spool) writeOverflow(counts map[string]int) error {
	if len(counts) == 0 {
		if err := os.Remove(filepath.Join(s.dir, overflowFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("clear alert overflow count: %w", err)
		}
		return nil
	}
	b, err := json.Marshal(overflowState{V: spoolVersion, Counts: counts})
	if err != nil {
		return fmt.Errorf("encode alert overflow count: %w", err)
	}
	return s.writeFile(overflowFile, b)
}
