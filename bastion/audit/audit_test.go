package audit

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
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
	l, err := Open(path, func() time.Time { return now }, func(err error) { errs = append(errs, err) })
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
}
