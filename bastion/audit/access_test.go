package audit

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
)

var day0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// errorList collects what OnError and OnWarn are told.
type errorList struct {
	mu   sync.Mutex
	errs []string
}

func (l *errorList) onError(err error) { l.add(err.Error()) }
func (l *errorList) onWarn(msg string) { l.add(msg) }

func (l *errorList) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, s)
}

func (l *errorList) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}

// stateDir returns a new directory of mode 0700 (t.TempDir's are wider
// under some umasks, which Open would fix and report).
func stateDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// accessFiles returns the rotated access files of dir, oldest first, then
// the current one.
func accessFiles(t *testing.T, dir string) []string {
	t.Helper()
	a := accessLog{path: filepath.Join(dir, AccessFile)}
	old, err := a.rotated()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range old {
		out = append(out, f.path)
	}
	return append(out, a.path)
}

// keysIn returns the keys of the events in files, in order.
func keysIn(t *testing.T, files []string) []string {
	t.Helper()
	var keys []string
	for _, f := range files {
		for _, e := range readEvents(t, f) {
			keys = append(keys, e.Key)
		}
	}
	return keys
}

// checkRetention fails t unless the newest entry of every rotated file in
// files (the last is the current one) is at most KeepDays old at now.
func checkRetention(t *testing.T, files []string, now time.Time) {
	t.Helper()
	cutoff := now.Add(-KeepDays * 24 * time.Hour)
	for _, f := range files[:len(files)-1] {
		ev := readEvents(t, f)
		if len(ev) == 0 {
			t.Errorf("%s is empty", f)
			continue
		}
		newest := ev[0].Time
		for _, e := range ev {
			if e.Time.After(newest) {
				newest = e.Time
			}
		}
		if newest.Before(cutoff) {
			t.Errorf("%s: newest entry %s is older than %d days, still kept", f, newest, KeepDays)
		}
		if name := filepath.Base(f); !strings.Contains(name, newest.Format(stampLayout)) {
			t.Errorf("%s is not named after its newest entry %s", name, newest)
		}
	}
}

func countPrefix(keys []string, prefix string) int {
	n := 0
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

// TestAccessRetentionByAge: access.jsonl keeps every rotated file until its
// newest entry is older than KeepDays, however many there are, and deletes
// it after (at rotation and at Open).
func TestAccessRetentionByAge(t *testing.T) {
	t.Parallel()
	dir := stateDir(t)
	clk := clocktest.New(day0)
	var errs errorList
	opts := Options{Path: filepath.Join(dir, "audit.jsonl"), MaxBytes: 2000, Clock: clk, OnError: errs.onError, OnWarn: errs.onWarn}
	l, err := OpenWith(opts)
	if err != nil {
		t.Fatal(err)
	}
	logins := func(prefix string, n int) {
		for i := range n {
			l.Record(Event{Kind: KindLogin, Key: fmt.Sprintf("%s-%03d", prefix, i), Source: "192.0.2.1:5000", Reason: "authorized by operators:3"})
		}
	}
	logins("day0", 100) // all at one instant: rotated names collide and get .1, .2, ...
	clk.Advance(30 * 24 * time.Hour)
	logins("day30", 100)
	clk.Advance(59 * 24 * time.Hour) // day 89: day-0 files are 89 days old
	logins("day89", 30)
	keys := keysIn(t, accessFiles(t, dir))
	if n := countPrefix(keys, "day0-"); n != 100 {
		t.Fatalf("at day 89, %d of 100 day-0 logins left; want all", n)
	}
	if n := len(accessFiles(t, dir)) - 1; n <= Keep {
		t.Fatalf("only %d rotated access files: the test does not rotate past Keep", n)
	}
	// Main audit.jsonl kept only Keep old files.
	if _, err := os.Stat(opts.Path + "." + fmt.Sprint(Keep+1)); err == nil {
		t.Fatal("audit.jsonl kept more than Keep files")
	}

	clk.Advance(2 * 24 * time.Hour) // day 91
	logins("day91", 30)
	files := accessFiles(t, dir)
	checkRetention(t, files, clk.Now())
	keys = keysIn(t, files)
	if n := countPrefix(keys, "day0-"); n > 20 { // one 2000-byte file holds about 13
		t.Errorf("at day 91, %d day-0 logins left; want only those that share a file with a newer entry", n)
	}
	for _, p := range []string{"day30-", "day89-", "day91-"} {
		want := 100
		if p != "day30-" {
			want = 30
		}
		if n := countPrefix(keys, p); n != want {
			t.Errorf("at day 91, %d %s logins left; want %d", n, p, want)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Open prunes too: at day 121 the files whose newest entry is from day
	// 30 go, the rest stay.
	clk.Advance(30 * 24 * time.Hour)
	l, err = OpenWith(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	files = accessFiles(t, dir)
	checkRetention(t, files, clk.Now())
	keys = keysIn(t, files)
	if n := countPrefix(keys, "day30-"); n == 100 {
		t.Error("at day 121, every day-30 login is still there")
	}
	if n := countPrefix(keys, "day91-"); n != 30 {
		t.Errorf("at day 121, %d of 30 day-91 logins left", n)
	}
	if e := errs.list(); len(e) != 0 {
		t.Errorf("errors or warnings reported: %q", e)
	}
}

// TestAccessHardCap: past AccessCap the oldest access files go whatever their
// age, and each deletion is reported.
func TestAccessHardCap(t *testing.T) {
	t.Parallel()
	dir := stateDir(t)
	var errs errorList
	l, err := OpenWith(Options{Path: filepath.Join(dir, "audit.jsonl"), MaxBytes: 1000, AccessCap: 4000,
		Clock: clocktest.New(day0), OnError: errs.onError, OnWarn: errs.onWarn})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		l.Record(Event{Kind: KindJump, Key: fmt.Sprintf("k-%03d", i), Target: "pi:22"})
	}
	l.Close()
	var total int64
	files := accessFiles(t, dir)
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	if total > 4000 {
		t.Errorf("access files hold %d bytes, over the 4000-byte cap", total)
	}
	keys := keysIn(t, files)
	if len(keys) == 0 || keys[len(keys)-1] != "k-199" || slices.Contains(keys, "k-000") {
		t.Errorf("access files hold %v; want the newest kept and the oldest gone", keys)
	}
	reported := errs.list()
	if len(reported) == 0 {
		t.Fatal("hard-cap deletions not reported")
	}
	for _, e := range reported {
		if !strings.Contains(e, "4000-byte cap: deleted") || !strings.Contains(e, "younger than 90 days") {
			t.Errorf("unexpected report %q", e)
		}
	}
}

func TestOpenWithRejectsBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts Options
		want []string
	}{
		{Options{MaxBytes: -1, Keep: -1, KeepDays: -1}, []string{"Path is empty", "MaxBytes -1", "Keep -1", "KeepDays -1"}},
		{Options{Path: "x", MaxBytes: 100, AccessCap: 199}, []string{"AccessCap 199 is below twice MaxBytes (200)"}},
	} {
		_, err := OpenWith(tc.opts)
		for _, want := range tc.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("OpenWith(%+v): error %v does not mention %q", tc.opts, err, want)
			}
		}
	}
}

// TestFixesModes: Open sets existing files and the directory to owner-only
// and says so.
func TestFixesModes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		dirMode fs.FileMode
		files   map[string]fs.FileMode
		want    []string
	}{
		{name: "fresh", dirMode: 0o700},
		{name: "already tight", dirMode: 0o700, files: map[string]fs.FileMode{"audit.jsonl": 0o600, "access.jsonl": 0o600, "audit.jsonl.1": 0o400}},
		{
			name: "wide files", dirMode: 0o700,
			files: map[string]fs.FileMode{"audit.jsonl": 0o644, "access.jsonl": 0o660, "audit.jsonl.2": 0o604, "access.jsonl.20260101T000000Z": 0o640, "unrelated": 0o644},
			want: []string{
				"audit log DIR/access.jsonl was mode 0660: set to 0600",
				"audit log DIR/access.jsonl.20260101T000000Z was mode 0640: set to 0600",
				"audit log DIR/audit.jsonl was mode 0644: set to 0600",
				"audit log DIR/audit.jsonl.2 was mode 0604: set to 0600",
			},
		},
		{name: "wide dir", dirMode: 0o755, files: map[string]fs.FileMode{"audit.jsonl": 0o600},
			want: []string{"audit log directory DIR was mode 0755: set to 0700"}},
		{name: "wide dir and file", dirMode: 0o750, files: map[string]fs.FileMode{"audit.jsonl": 0o640},
			want: []string{"audit log DIR/audit.jsonl was mode 0640: set to 0600", "audit log directory DIR was mode 0750: set to 0700"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := stateDir(t)
			for name, mode := range tc.files {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(`{"time":"2026-01-01T00:00:00Z","event":"login"}`+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, mode); err != nil { // not subject to the umask
					t.Fatal(err)
				}
			}
			if err := os.Chmod(dir, tc.dirMode); err != nil {
				t.Fatal(err)
			}
			var got errorList
			path := filepath.Join(dir, "audit.jsonl")
			l, err := OpenWith(Options{Path: path, Clock: clocktest.New(day0), OnError: got.onError, OnWarn: got.onWarn})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			msgs := got.list()
			for i := range msgs {
				msgs[i] = strings.ReplaceAll(msgs[i], dir, "DIR")
			}
			slices.Sort(msgs)
			if !slices.Equal(msgs, tc.want) {
				t.Errorf("reported %q\nwant %q", msgs, tc.want)
			}
			checkMode(t, dir, 0o700)
			checkMode(t, path, 0o600)
			checkMode(t, filepath.Join(dir, AccessFile), 0o600)
			for name, mode := range tc.files {
				if name == "unrelated" {
					checkMode(t, filepath.Join(dir, name), mode)
				} else if mode&0o077 != 0 {
					checkMode(t, filepath.Join(dir, name), 0o600)
				}
			}
		})
	}
}

// TestReopenFixesMode: a file created by another tool at rotation is set to
// 0600 on Reopen, and both files are written again.
func TestReopenFixesMode(t *testing.T) {
	t.Parallel()
	dir := stateDir(t)
	path := filepath.Join(dir, "audit.jsonl")
	var got errorList
	l, err := OpenWith(Options{Path: path, Clock: clocktest.New(day0), OnError: got.onError, OnWarn: got.onWarn})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Record(Event{Kind: KindStart})
	for _, name := range []string{"audit.jsonl", AccessFile} {
		p := filepath.Join(dir, name)
		if err := os.Rename(p, p+".rotated"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Kind: KindReload})
	want := []string{
		"audit log " + filepath.Join(dir, "audit.jsonl") + " was mode 0644: set to 0600",
		"audit log " + filepath.Join(dir, AccessFile) + " was mode 0644: set to 0600",
	}
	if msgs := got.list(); !slices.Equal(msgs, want) {
		t.Errorf("reported %q\nwant %q", msgs, want)
	}
	for _, name := range []string{"audit.jsonl", AccessFile} {
		checkMode(t, filepath.Join(dir, name), 0o600)
		if ev := readEvents(t, filepath.Join(dir, name)); len(ev) != 1 || ev[0].Kind != KindReload {
			t.Errorf("%s after Reopen holds %+v", name, ev)
		}
		if ev := readEvents(t, filepath.Join(dir, name+".rotated")); len(ev) != 1 || ev[0].Kind != KindStart {
			t.Errorf("%s.rotated holds %+v", name, ev)
		}
	}
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if m := fi.Mode().Perm(); m != want {
		t.Errorf("%s: mode %04o, want %04o", path, m, want)
	}
}

// TestFieldsCapped: no field of one event is written longer than MaxField,
// and a cut field stays valid UTF-8.
func TestFieldsCapped(t *testing.T) {
	t.Parallel()
	dir := stateDir(t)
	path := filepath.Join(dir, "audit.jsonl")
	l, err := OpenWith(Options{Path: path, Clock: clocktest.New(day0)})
	if err != nil {
		t.Fatal(err)
	}
	huge := "x" + strings.Repeat("é", 1<<20) // 2 MiB, odd offset of every rune
	l.Record(Event{Kind: KindRefused, Reason: huge, Message: huge, User: huge, Source: "198.51.100.7:22"})
	l.Record(Event{Kind: KindLogin, Reason: "short"})
	l.Close()
	ev := readEvents(t, path)
	if len(ev) != 2 || ev[1].Reason != "short" {
		t.Fatalf("read %d events", len(ev))
	}
	for name, s := range map[string]string{"reason": ev[0].Reason, "message": ev[0].Message, "user": ev[0].User} {
		if len(s) > MaxField || !strings.HasSuffix(s, "…") || !utf8.ValidString(s) || !strings.HasPrefix(s, "xéé") {
			t.Errorf("%s: %d bytes, valid %v, ends %q", name, len(s), utf8.ValidString(s), s[max(len(s)-8, 0):])
		}
	}
	if fi, _ := os.Stat(path); fi.Size() > 4*MaxField {
		t.Errorf("log is %d bytes after one huge event", fi.Size())
	}
}

func TestCut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 5, ""},
		{"hello", 5, "hello"},
		{"hello!", 5, "he…"},
		{"ééé", 5, "é…"},  // 6 bytes; 2 left for text: one é
		{"ééé", 6, "ééé"}, // fits
		{"aéé", 4, "a…"},  // 1 byte left for text: the é would be split
		{"aééé", 6, "aé…"},
		{"abcdef", 2, "…"},
	} {
		got := cut(tc.in, tc.n)
		if got != tc.want {
			t.Errorf("cut(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// TestRecordErrorsAreReported: a failed write is reported, not fatal.
func TestRecordErrorsAreReported(t *testing.T) {
	t.Parallel()
	dir := stateDir(t)
	var got errorList
	l, err := OpenWith(Options{Path: filepath.Join(dir, "audit.jsonl"), OnError: got.onError})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	l.Record(Event{Kind: KindLogin})
	if err := l.Reopen(); err == nil {
		t.Error("Reopen after Close succeeded")
	}
	if msgs := got.list(); len(msgs) != 1 || !strings.Contains(msgs[0], "closed") {
		t.Errorf("reported %q", msgs)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
