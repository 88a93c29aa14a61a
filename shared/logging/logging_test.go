package logging

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// streamOf is what systemd would put in JOURNAL_STREAM for f.
func streamOf(t *testing.T, f *os.File) string {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func tempFile(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readBack(t *testing.T, f *os.File) []string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func logAll(t *testing.T, w *os.File, stream string) []string {
	t.Helper()
	log, err := NewEnv(w, "debug", func(k string) string {
		if k == "JOURNAL_STREAM" {
			return stream
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("d", "k", 1)
	log.Info("i", "bastion", "b:22")
	log.With("part", "linkcheck").Warn("w", "err", "line one\nline two")
	log.WithGroup("g").Error("e", "x", "y")
	return readBack(t, w)
}

func TestJournalFormat(t *testing.T) {
	t.Parallel()
	f := tempFile(t, "stderr")
	other := tempFile(t, "other")
	t.Run("journal stream", func(t *testing.T) {
		lines := logAll(t, f, streamOf(t, f))
		want := []string{
			`<7>level=DEBUG msg=d k=1`,
			`<6>level=INFO msg=i bastion=b:22`,
			`<4>level=WARN msg=w part=linkcheck err="line one\nline two"`,
			`<3>level=ERROR msg=e g.x=y`,
		}
		if strings.Join(lines, "\n") != strings.Join(want, "\n") {
			t.Errorf("journal lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
	})
	// Anything but a match keeps the terminal format, time first: the
	// variable is inherited by children whose stderr is elsewhere.
	for name, stream := range map[string]string{
		"another file":   streamOf(t, other),
		"unset":          "",
		"malformed":      "12345",
		"not numbers":    "a:b",
		"inode mismatch": strings.Split(streamOf(t, f), ":")[0] + ":1",
	} {
		t.Run(name, func(t *testing.T) {
			g := tempFile(t, "stderr")
			for _, l := range logAll(t, g, stream) {
				if !strings.HasPrefix(l, "time=") || strings.HasPrefix(l, "<") {
					t.Errorf("line %q: want the plain text format", l)
				}
			}
		})
	}
}

func TestNotAFileIsNeverTheJournal(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if IsJournal(&b, "1:2") {
		t.Error("a buffer is the journal")
	}
	if IsJournal(nil, "1:2") {
		t.Error("nil is the journal")
	}
	var nilFile *os.File
	if IsJournal(nilFile, "1:2") {
		t.Error("a nil file is the journal")
	}
}

// Concurrent records never interleave, and each keeps its own priority.
func TestJournalConcurrent(t *testing.T) {
	t.Parallel()
	f := tempFile(t, "stderr")
	log, err := NewEnv(f, "info", func(string) string { return streamOf(t, f) })
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			l := log.With("g", g)
			for i := range 200 {
				if i%2 == 0 {
					l.Info("even", "i", i)
				} else {
					l.Error("odd", "i", i)
				}
			}
		})
	}
	wg.Wait()
	lines := readBack(t, f)
	if len(lines) != 8*200 {
		t.Fatalf("%d lines, want %d", len(lines), 8*200)
	}
	for _, l := range lines {
		ok := strings.HasPrefix(l, "<6>level=INFO msg=even ") || strings.HasPrefix(l, "<3>level=ERROR msg=odd ")
		if !ok || strings.Count(l, "<") != 1 {
			t.Fatalf("torn or mislabelled line %q", l)
		}
	}
}

func TestLevels(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in      string
		ok      bool
		journal int
	}{
		{"", true, 6}, {"info", true, 6}, {"DEBUG", true, 7}, {"warn", true, 4}, {"warning", true, 4}, {"error", true, 3}, {"loud", false, 0},
	} {
		l, err := ParseLevel(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseLevel(%q) error %v", tt.in, err)
			continue
		}
		if err != nil {
			if !strings.Contains(err.Error(), "LIFELINE_LOG_LEVEL") {
				t.Errorf("error %q does not name the variable", err)
			}
			continue
		}
		if p := Priority(l); p != tt.journal {
			t.Errorf("Priority(%v) = %d, want %d", l, p, tt.journal)
		}
	}
}
