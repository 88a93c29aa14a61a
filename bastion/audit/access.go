package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lifeline-dev/lifeline/shared/jsonlog"
)

// AccessFile is the name of the access log, in the directory of
// Options.Path. It holds the access class (IsAccess) and is kept by age, not
// by size:
//
// When access.jsonl passes MaxBytes it is renamed to
// access.jsonl.<time of its newest entry, UTC, 20060102T150405Z> (with .1,
// .2, ... appended if that name is taken) and a new file is started. A rotated
// file is deleted only when its newest entry is older than KeepDays.
//
// Why a flood of refusals can never push a login out of it: refusals, failed
// logins and bans are never written here, only to audit.jsonl. What is
// written here needs an authenticated identity (a login, and the jumps,
// status calls and takeovers of a logged-in session) or is the bastion's own
// start, stop and reload; and the server rate-limits what an authenticated
// key may do. An unauthenticated client, however many connections it makes,
// adds nothing to this file, and nothing is deleted because of size while
// the files are under AccessCap.
//
// The files are bounded still: a full disk is worse than a lost record. When
// the access files together would exceed AccessCap (1 GiB by default), the
// oldest are deleted whatever their age and each deletion is reported to
// OnError, so that someone looks at the key that wrote so much.
//
// Tools that rotate logs must leave access.jsonl alone: files they create
// under other names are neither read, counted nor deleted here.
const AccessFile = "access.jsonl"

// stampLayout names rotated access files by the time of their newest entry.
const stampLayout = "20060102T150405Z"

// accessLog is access.jsonl and its retention. Its fields are guarded by
// Log.mu.
type accessLog struct {
	path     string
	w        *jsonlog.Writer // rotates through rotate and prune
	newest   time.Time       // of the entries in the current file; zero when none
	keepFor  time.Duration
	keepDays int
	capBytes int64
}

func (a *accessLog) reopen() error {
	if err := a.w.Reopen(); err != nil {
		return err
	}
	a.newest = newestEntry(a.path)
	return nil
}

// rotate renames access.jsonl after its newest entry (the Writer then
// starts a new one). now names the file when its newest entry is unknown.
func (a *accessLog) rotate(now time.Time) error {
	newest := a.newest
	if newest.IsZero() {
		newest = now
	}
	// Round up: the name must never claim an entry older than it is.
	if r := newest.Truncate(time.Second); !r.Equal(newest) {
		newest = r.Add(time.Second)
	}
	base := a.path + "." + newest.UTC().Format(stampLayout)
	to := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(to); os.IsNotExist(err) {
			break
		}
		to = base + "." + strconv.Itoa(i)
	}
	if err := os.Rename(a.path, to); err != nil {
		return fmt.Errorf("rotate access log %s: %w", a.path, err)
	}
	a.newest = time.Time{}
	return nil
}

// rotatedFile is one old access file.
type rotatedFile struct {
	path   string
	newest time.Time
	seq    int
	size   int64
}

// rotated lists the old access files, oldest first.
func (a *accessLog) rotated() ([]rotatedFile, error) {
	dir, prefix := filepath.Dir(a.path), filepath.Base(a.path)+"."
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list access logs: %w", err)
	}
	var out []rotatedFile
	for _, de := range entries {
		rest, ok := strings.CutPrefix(de.Name(), prefix)
		if !ok || !de.Type().IsRegular() {
			continue
		}
		stamp, seqs, hasSeq := strings.Cut(rest, ".")
		t, err := time.Parse(stampLayout, stamp)
		if err != nil {
			continue
		}
		seq := 0
		if hasSeq {
			if seq, err = strconv.Atoi(seqs); err != nil || seq < 1 {
				continue
			}
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, rotatedFile{path: filepath.Join(dir, de.Name()), newest: t, seq: seq, size: fi.Size()})
	}
	slices.SortFunc(out, func(x, y rotatedFile) int {
		if c := x.newest.Compare(y.newest); c != 0 {
			return c
		}
		return x.seq - y.seq
	})
	return out, nil
}

// prune deletes the old access files whose newest entry is older than
// keepFor, then, while the old files and a current file of maxBytes would
// pass capBytes, the oldest, reporting each such deletion to onError.
func (a *accessLog) prune(now time.Time, maxBytes int64, onError func(error)) {
	files, err := a.rotated()
	if err != nil {
		onError(err)
		return
	}
	cutoff := now.Add(-a.keepFor)
	kept := files[:0]
	var total int64
	for _, f := range files {
		if f.newest.Before(cutoff) {
			if err := os.Remove(f.path); err == nil || os.IsNotExist(err) {
				continue
			}
			onError(fmt.Errorf("delete expired access log: %w", err))
		}
		kept = append(kept, f)
		total += f.size
	}
	for len(kept) > 0 && total+maxBytes > a.capBytes {
		f := kept[0]
		kept = kept[1:]
		total -= f.size
		if err := os.Remove(f.path); err != nil && !os.IsNotExist(err) {
			onError(fmt.Errorf("delete access log over the %d-byte cap: %w", a.capBytes, err))
			continue
		}
		onError(fmt.Errorf("access logs passed their %d-byte cap: deleted %s (%d bytes), whose newest entry (%s) was younger than %d days: find the key that wrote so much",
			a.capBytes, f.path, f.size, f.newest.Format(time.RFC3339), a.keepDays))
	}
}

// tailBytes is how much of the end of a file newestEntry reads: more than
// the longest line Record writes.
const tailBytes = 256 << 10

// newestEntry returns the time of the last complete entry of the access log
// at path, or its modification time when none can be read; zero when the
// file is empty or cannot be opened.
func newestEntry(path string) time.Time {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return time.Time{}
	}
	off := max(fi.Size()-tailBytes, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return fi.ModTime()
	}
	for len(buf) > 0 {
		buf = bytes.TrimRight(buf, "\n")
		i := bytes.LastIndexByte(buf, '\n')
		line := buf[i+1:]
		var e struct {
			Time time.Time `json:"time"`
		}
		if json.Unmarshal(line, &e) == nil && !e.Time.IsZero() {
			return e.Time
		}
		if i < 0 {
			break
		}
		buf = buf[:i]
	}
	return fi.ModTime()
}
