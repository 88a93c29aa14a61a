package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
)

func readEvents(t *testing.T, path string) []Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

func TestRecordReopenClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "audit.jsonl")
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.FixedZone("X", 3600))
	var errs []error
	l, err := OpenWith(Options{Path: path, Clock: clocktest.New(now),
		OnError: func(err error) { errs = append(errs, err) },
		OnWarn:  func(msg string) { errs = append(errs, errors.New(msg)) }})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Kind: KindLogin, Key: "alice", Source: "198.51.100.20:4242"})
	l.Record(Event{Kind: KindJumpEnd, Target: "pi:22", BytesIn: 10, BytesOut: 20, DurationMS: 30})
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit log mode: %v %v", fi, err)
	}
	// logrotate moves the file away, then SIGHUP reopens.
	rotated := path + ".1"
	os.Rename(path, rotated)
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Kind: KindReload})
	l.Close()
	l.Record(Event{Kind: KindStop}) // after Close: reported, not lost silently
	old := readEvents(t, rotated)
	if len(old) != 2 || old[0].Kind != KindLogin || old[1].BytesOut != 20 || !old[0].Time.Equal(now) || old[0].Time.Location() != time.UTC {
		t.Fatalf("rotated file holds %+v", old)
	}
	cur := readEvents(t, path)
	if len(cur) != 1 || cur[0].Kind != KindReload {
		t.Fatalf("new file holds %+v", cur)
	}
	if len(errs) != 1 {
		t.Fatalf("errors reported: %v; want one for the write after Close", errs)
	}
	// The access class went to access.jsonl as well, across the Reopen.
	acc := readEvents(t, filepath.Join(dir, "sub", AccessFile))
	if len(acc) != 3 || acc[0].Kind != KindLogin || acc[1].Kind != KindJumpEnd || acc[2].Kind != KindReload {
		t.Fatalf("access log holds %+v", acc)
	}
}

func TestRotatesBySize(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := OpenWith(Options{Path: path, MaxBytes: 1000, OnError: func(err error) { t.Errorf("audit error: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		l.Record(Event{Kind: KindAuthFailed, Source: "198.51.100.20:1", Reason: fmt.Sprintf("attempt %03d", i)})
	}
	l.Close()
	for _, name := range []string{"audit.jsonl", "audit.jsonl.1", "audit.jsonl.5"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi.Size() > 1000 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %d bytes, mode %v", name, fi.Size(), fi.Mode().Perm())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "audit.jsonl.6")); err == nil {
		t.Error("more than Keep rotated files")
	}
	// The newest event is in the current file, in order after the rotated one.
	cur := readEvents(t, path)
	prev := readEvents(t, path+".1")
	if len(cur) == 0 || cur[len(cur)-1].Reason != "attempt 199" || prev[len(prev)-1].Reason >= cur[0].Reason {
		t.Fatalf("events out of order across rotation: %d + %d", len(prev), len(cur))
	}
}
