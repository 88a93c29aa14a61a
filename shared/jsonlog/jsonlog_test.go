package jsonlog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type rec struct {
	Seq  int    `json:"seq"`
	Text string `json:"text"`
}

func line(t *testing.T, seq int, text string) []byte {
	t.Helper()
	b, err := Marshal(rec{Seq: seq, Text: text})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readAll returns the records of files in order, failing on a line that is
// not one whole record.
func readAll(t *testing.T, files []string) []rec {
	t.Helper()
	var out []rec
	for _, p := range files {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r rec
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: line %q is not a whole record: %v", p, sc.Text(), err)
			}
			out = append(out, r)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// checkFiles fails t unless dir holds exactly the files of o, each of at
// most MaxBytes and mode want, and the records in them are 0..n-1 minus a
// prefix of the oldest, in order.
func checkFiles(t *testing.T, o Options, n int, want fs.FileMode) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(o.Path))
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, de := range entries {
		p := filepath.Join(filepath.Dir(o.Path), de.Name())
		if !slices.Contains(Files(o), p) {
			t.Errorf("unexpected file %s", de.Name())
			continue
		}
		fi, err := de.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > o.MaxBytes {
			t.Errorf("%s: %d bytes, over MaxBytes %d", de.Name(), fi.Size(), o.MaxBytes)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", de.Name(), fi.Mode().Perm(), want)
		}
		total += fi.Size()
	}
	if limit := int64(o.Backups+1) * o.MaxBytes; total > limit {
		t.Errorf("files hold %d bytes, over (Backups+1)*MaxBytes = %d", total, limit)
	}
	got := readAll(t, Files(o))
	if len(got) == 0 || got[len(got)-1].Seq != n-1 {
		t.Fatalf("the newest record is missing: %v", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq != got[i-1].Seq+1 {
			t.Fatalf("records out of order or lost: %v", got)
		}
	}
}

// TestRotation: through a Writer and through Append, the files rotate at
// MaxBytes, keep Backups old files, and hold every line whole and in order.
func TestRotation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		backups int
		shared  bool
		sync    bool
	}{
		{name: "writer", backups: 3},
		{name: "writer, synced", backups: 2, sync: true},
		{name: "writer, no backups", backups: 0},
		{name: "append", backups: 2, shared: true, sync: true},
		{name: "append, no backups", backups: 0, shared: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "a", "b") // created
			o := Options{Path: filepath.Join(dir, "log.jsonl"), MaxBytes: 500, Backups: tc.backups, Mode: 0o640, DirMode: 0o750, Sync: tc.sync}
			const n = 300
			write := func(b []byte) error { return Append(o, b) }
			if !tc.shared {
				w, err := Open(o)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				write = w.Write
			}
			for i := range n {
				if err := write(line(t, i, strings.Repeat("x", i%40))); err != nil {
					t.Fatal(err)
				}
			}
			checkFiles(t, o, n, 0o640)
			fi, err := os.Stat(dir)
			if err != nil || fi.Mode().Perm() != 0o750 {
				t.Errorf("directory: %v, %v", fi, err)
			}
			if _, err := os.Stat(o.Path + ".1"); (err == nil) != (tc.backups > 0) {
				t.Errorf("%s.1 with %d backups: %v", o.Path, tc.backups, err)
			}
			if got := len(readAll(t, Files(o))); got > n || got < tc.backups*500/70 {
				t.Errorf("%d records kept of %d", got, n)
			}
		})
	}
}

// TestRotatesBeforeTheLimit: a line that would take the file past MaxBytes
// starts the next file; one that fits exactly does not; one longer than
// MaxBytes gets a file of its own.
func TestRotatesBeforeTheLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	o := Options{Path: filepath.Join(dir, "log.jsonl"), MaxBytes: 100, Backups: 5, Mode: 0o600}
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	exact := func(seq, size int) []byte { // a line of size bytes
		b := line(t, seq, "")
		return line(t, seq, strings.Repeat("y", size-len(b)))
	}
	for _, b := range [][]byte{exact(0, 60), exact(1, 40), exact(2, 30), exact(3, 250), exact(4, 25)} {
		if err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	var sizes []int64
	for _, p := range Files(o) {
		if fi, err := os.Stat(p); err == nil {
			sizes = append(sizes, fi.Size())
		}
	}
	if want := []int64{100, 30, 250, 25}; !slices.Equal(sizes, want) {
		t.Errorf("file sizes, oldest first: %v, want %v", sizes, want)
	}
	if err := w.Write([]byte("two\nlines\n")); err == nil {
		t.Error("a write of two lines succeeded")
	}
	if err := w.Write([]byte("no newline")); err == nil {
		t.Error("a write without a newline succeeded")
	}
}

// TestTighten: Open sets the directory, the file and its rotated files to
// their modes and says so; without Tighten nothing is changed.
func TestTighten(t *testing.T) {
	t.Parallel()
	for _, tighten := range []bool{true, false} {
		t.Run(fmt.Sprint("tighten ", tighten), func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "d")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			files := map[string]fs.FileMode{"log.jsonl": 0o644, "log.jsonl.1": 0o660, "log.jsonl.old": 0o604, "log.jsonl.2": 0o400, "other": 0o644}
			for name, mode := range files {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, mode); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			var warned []string
			o := Options{Path: filepath.Join(dir, "log.jsonl"), Name: "test log", MaxBytes: 100, Mode: 0o600, DirMode: 0o700,
				Tighten: tighten, OnWarn: func(s string) { warned = append(warned, strings.ReplaceAll(s, dir, "D")) }}
			w, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			w.Close()
			slices.Sort(warned)
			var want []string
			if tighten {
				want = []string{
					"test log D/log.jsonl was mode 0644: set to 0600",
					"test log D/log.jsonl.1 was mode 0660: set to 0600",
					"test log D/log.jsonl.old was mode 0604: set to 0600",
					"test log directory D was mode 0755: set to 0700",
				}
			}
			if !slices.Equal(warned, want) {
				t.Errorf("warned %q\nwant %q", warned, want)
			}
			for name, mode := range files {
				if tighten && name != "other" && name != "log.jsonl.2" {
					mode = 0o600
				}
				if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != mode {
					t.Errorf("%s: %v, want mode %04o", name, fi.Mode(), mode)
				}
			}
		})
	}
}

// TestReopen: after another tool moved the file away, Reopen starts a new
// one; after Close, Write and Reopen fail.
func TestReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	o := Options{Path: filepath.Join(dir, "log.jsonl"), MaxBytes: 1 << 20, Backups: 1, Mode: 0o600}
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(line(t, 0, "")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(o.Path, o.Path+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(line(t, 1, "")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, []string{o.Path + ".moved"}); len(got) != 1 || got[0].Seq != 0 {
		t.Errorf("moved file holds %v", got)
	}
	if got := readAll(t, []string{o.Path}); len(got) != 1 || got[0].Seq != 1 {
		t.Errorf("new file holds %v", got)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(line(t, 2, "")); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Write after Close: %v", err)
	}
	if err := w.Reopen(); err == nil {
		t.Error("Reopen after Close succeeded")
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestFailedRotation: a Writer writes the line to the full file and reports
// the rotation; Append reports it and writes nothing.
func TestFailedRotation(t *testing.T) {
	t.Parallel()
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprint("append ", shared), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			o := Options{Path: filepath.Join(dir, "log.jsonl"), Name: "test log", MaxBytes: 50, Backups: 1, Mode: 0o600}
			if err := os.MkdirAll(filepath.Join(o.Path+".1", "x"), 0o700); err != nil { // cannot be replaced by a file
				t.Fatal(err)
			}
			write := func(b []byte) error { return Append(o, b) }
			if !shared {
				w, err := Open(o)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				write = w.Write
			}
			if err := write(line(t, 0, strings.Repeat("z", 20))); err != nil {
				t.Fatal(err)
			}
			err := write(line(t, 1, strings.Repeat("z", 20)))
			if err == nil || !strings.Contains(err.Error(), "rotate test log "+o.Path) {
				t.Fatalf("second write: %v, want the rotation's error", err)
			}
			want := 2
			if shared {
				want = 1
			}
			if got := readAll(t, []string{o.Path}); len(got) != want {
				t.Errorf("file holds %v, want %d records", got, want)
			}
		})
	}
}

// TestRotateHook: Options.Rotate replaces the numbered shift.
func TestRotateHook(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := 0
	o := Options{Path: filepath.Join(dir, "log.jsonl"), MaxBytes: 50, Backups: 3, Mode: 0o600}
	o.Rotate = func(p string) error {
		n++
		return os.Rename(p, filepath.Join(dir, fmt.Sprintf("old-%d", n)))
	}
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 3 {
		if err := w.Write(line(t, i, strings.Repeat("z", 20))); err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, []string{filepath.Join(dir, "old-1"), filepath.Join(dir, "old-2"), o.Path})
	if n != 2 || len(got) != 3 {
		t.Errorf("%d rotations, records %v", n, got)
	}
	if _, err := os.Stat(o.Path + ".1"); err == nil {
		t.Error("numbered rotation despite Rotate")
	}
}

// TestCutsTornLine: with Sync, a last line without its newline (a write cut
// short by a crash) is removed before the next line.
func TestCutsTornLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, before, want string
	}{
		{"torn after whole lines", `{"seq":0}` + "\n" + `{"seq":1,"te`, `{"seq":0}` + "\n" + `{"seq":2,"text":""}` + "\n"},
		{"only a torn line", `{"seq":1`, `{"seq":2,"text":""}` + "\n"},
		{"whole lines", `{"seq":0}` + "\n", `{"seq":0}` + "\n" + `{"seq":2,"text":""}` + "\n"},
		{"torn tail longer than MaxBytes", strings.Repeat("q", 300), strings.Repeat("q", 300) + "\n" + `{"seq":2,"text":""}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			o := Options{Path: filepath.Join(dir, "log.jsonl"), MaxBytes: 1000, Mode: 0o600, Sync: true}
			if tc.name == "torn tail longer than MaxBytes" {
				o.MaxBytes = 200 // the tail is left, ended
				o.Backups = 0
			}
			if err := os.WriteFile(o.Path, []byte(tc.before), 0o600); err != nil {
				t.Fatal(err)
			}
			if len(tc.before) > int(o.MaxBytes) {
				// Append would rotate the oversized file away: open it
				// through a Writer, which repairs at Open.
				w, err := Open(o)
				if err != nil {
					t.Fatal(err)
				}
				w.Close()
				b, _ := os.ReadFile(o.Path)
				if want := tc.before + "\n"; string(b) != want {
					t.Errorf("after Open the file holds %q, want %q", b, want)
				}
				return
			}
			if err := Append(o, line(t, 2, "")); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(o.Path)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("file holds %q, want %q", b, tc.want)
			}
		})
	}
}

// TestOnCreate: OnCreate sees each created file once, and its error fails
// the write.
func TestOnCreate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var created []string
	o := Options{Path: filepath.Join(dir, "log.jsonl"), MaxBytes: 50, Backups: 1, Mode: 0o600,
		OnCreate: func(f *os.File) error { created = append(created, filepath.Base(f.Name())); return nil }}
	for i := range 3 {
		if err := Append(o, line(t, i, strings.Repeat("z", 20))); err != nil {
			t.Fatal(err)
		}
	}
	if len(created) != 3 {
		t.Errorf("created %v, want a new file for each line", created)
	}
	o.Path = filepath.Join(dir, "other.jsonl")
	o.OnCreate = func(*os.File) error { return errors.New("no chown") }
	if err := Append(o, line(t, 0, "")); err == nil || !strings.Contains(err.Error(), "no chown") {
		t.Errorf("Append with a failing OnCreate: %v", err)
	}
}

func TestOptionsChecked(t *testing.T) {
	t.Parallel()
	_, err := Open(Options{Backups: -1})
	for _, want := range []string{"Path is empty", "MaxBytes 0", "Backups -1", "Mode is 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open: error %v does not mention %q", err, want)
		}
	}
}
