package child

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestFind: the first directory that has the program wins; a directory
// or a file without x does not count, and the error names every path
// tried (each once) and why.
func TestFind(t *testing.T) {
	t.Parallel()
	const name = "lifeline-test"
	first, second, none := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []string{first, second} {
		if err := os.WriteFile(filepath.Join(d, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := Find("test program", name, []string{first, second}); err != nil || p != filepath.Join(first, name) {
		t.Errorf("first directory: %q %v", p, err)
	}
	if p, err := Find("test program", name, []string{none, second}); err != nil || p != filepath.Join(second, name) {
		t.Errorf("second directory: %q %v", p, err)
	}
	d := t.TempDir()
	if err := os.Mkdir(filepath.Join(d, name), 0o755); err != nil {
		t.Fatal(err)
	}
	noexec := t.TempDir()
	if err := os.WriteFile(filepath.Join(noexec, name), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Find("test program", name, []string{d, noexec, d, none})
	want := "test program " + name + " not found: tried " + filepath.Join(d, name) + " (not a file), " + filepath.Join(noexec, name) + " (not executable), " +
		filepath.Join(none, name) + " (no such file or directory); it comes with the lifeline-agent package (" + filepath.Join(Dir, name) + "), or goes next to lifeline-agent"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant %s", err, want)
	}
}

// TestDirs: next to the executable first, then the package's directory.
func TestDirs(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	if got := Dirs(); !reflect.DeepEqual(got, []string{filepath.Dir(exe), Dir}) {
		t.Errorf("Dirs %q", got)
	}
}

// TestLowestLevel: the lowest level a logger logs.
func TestLowestLevel(t *testing.T) {
	t.Parallel()
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelError + 4} {
		log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: l}))
		if got, want := LowestLevel(context.Background(), log), min(l, slog.LevelError); got != want {
			t.Errorf("level %v: %v, want %v", l, got, want)
		}
	}
}

// TestEnv: the variables kept, in order; nothing kept is no variable, not
// the whole environment.
func TestEnv(t *testing.T) {
	t.Parallel()
	env := []string{"PATH=/usr/bin", "NOTIFY_SOCKET=/run/systemd/notify", "A=b=c", "HOME=/"}
	got := Env(env, func(k string) bool { return k != "NOTIFY_SOCKET" })
	if want := []string{"PATH=/usr/bin", "A=b=c", "HOME=/"}; !reflect.DeepEqual(got, want) {
		t.Errorf("env %q, want %q", got, want)
	}
	if got := Env(env, func(string) bool { return false }); got == nil || len(got) != 0 {
		t.Errorf("env %q, want empty, not nil", got)
	}
}

// TestCappedBuffer: the first Max bytes are kept, the rest accepted and
// dropped.
func TestCappedBuffer(t *testing.T) {
	t.Parallel()
	b := &CappedBuffer{Max: 5}
	for _, s := range []string{"abc", "d", "efg", "h"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("write %q: %d %v", s, n, err)
		}
	}
	if string(b.Bytes()) != "abcde" || !b.Over() {
		t.Errorf("kept %q, over %v", b.Bytes(), b.Over())
	}
	b = &CappedBuffer{Max: 5}
	if _, err := b.Write([]byte("abcde")); err != nil || b.Over() || string(b.Bytes()) != "abcde" {
		t.Errorf("exactly Max: kept %q, over %v", b.Bytes(), b.Over())
	}
}

func textLog(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
}

// TestLog: records are logged again at their level with their
// attributes, in whatever pieces they arrive; text lines as they are.
func TestLog(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := &Log{Ctx: context.Background(), Logger: textLog(&buf).With("part", "linkcheck"), Label: "link check program", MaxLines: 64, MaxLine: 2 << 10, ErrAttr: true}
	in := `{"time":"2026-05-10T12:00:00Z","level":"WARN","msg":"slow","bps":1234567,"server":"a b","nested":{"k":1}}` + "\n" +
		`{"level":"DEBUG+2","msg":"detail"}` + "\n\n" +
		"fatal error: out of memory\n" +
		`{"level":"ERROR","msg":"cannot measure","err":"boom"}` + "\n" +
		"no newline at the end"
	for i := 0; i < len(in); i += 7 {
		if _, err := l.Write([]byte(in[i:min(i+7, len(in))])); err != nil {
			t.Fatal(err)
		}
	}
	l.Flush()
	want := `level=WARN msg=slow part=linkcheck bps=1234567 nested=map[k:1] server="a b"
level=DEBUG+2 msg=detail part=linkcheck
level=WARN msg="link check program output" part=linkcheck line="fatal error: out of memory"
level=ERROR msg="cannot measure" part=linkcheck err=boom
level=WARN msg="link check program output" part=linkcheck line="no newline at the end"
`
	if got := buf.String(); got != want {
		t.Errorf("logged\n%s\nwant\n%s", got, want)
	}
	if p := l.Problem(); p != "fatal error: out of memory" {
		t.Errorf("problem %q", p)
	}
}

// TestLogBounds: at most MaxLines lines of at most MaxLine bytes, a cut
// line marked; Flush counts the lines not logged. Without a text line,
// the problem is the last error record, with its err when ErrAttr.
func TestLogBounds(t *testing.T) {
	t.Parallel()
	for _, errAttr := range []bool{true, false} {
		var buf bytes.Buffer
		l := &Log{Ctx: context.Background(), Logger: textLog(&buf), Label: "test program", MaxLines: 2, MaxLine: 8, ErrAttr: errAttr}
		in := `{"level":"ERROR","msg":"first","err":"e1"}` + "\n" + "0123456789\n" + `{"level":"ERROR","msg":"last","err":"e2"}` + "\n" + "more\n"
		if _, err := l.Write([]byte(in)); err != nil {
			t.Fatal(err)
		}
		l.Flush()
		// The records are longer than MaxLine: cut, they are text.
		want := `level=WARN msg="test program output" line="{\"level\" …"` + "\n" +
			`level=WARN msg="test program output" line="01234567 …"` + "\n" +
			`level=WARN msg="test program: more output not logged" lines=2` + "\n"
		if got := buf.String(); got != want {
			t.Errorf("ErrAttr %v: logged\n%s\nwant\n%s", errAttr, got, want)
		}
		if p := l.Problem(); p != `{"level" …` {
			t.Errorf("problem %q", p)
		}

		buf.Reset()
		l = &Log{Ctx: context.Background(), Logger: textLog(&buf), Label: "test program", MaxLines: 1, MaxLine: 1 << 10, ErrAttr: errAttr}
		if _, err := l.Write([]byte(`{"level":"ERROR","msg":"first","err":"e1"}` + "\n" + `{"level":"ERROR","msg":"last","err":"e2","n":1}` + "\n")); err != nil {
			t.Fatal(err)
		}
		l.Flush()
		want = "level=ERROR msg=first err=e1\n" + `level=WARN msg="test program: more output not logged" lines=1` + "\n"
		if got := buf.String(); got != want {
			t.Errorf("ErrAttr %v: logged\n%s\nwant\n%s", errAttr, got, want)
		}
		wantProblem := "last"
		if errAttr {
			wantProblem = "last: e2"
		}
		if p := l.Problem(); p != wantProblem {
			t.Errorf("ErrAttr %v: problem %q, want %q", errAttr, p, wantProblem)
		}
	}
}

// TestLogClean: Clean replaces the default cleaning of a line (no " …"
// of its own for a cut line); a line it makes empty is none.
func TestLogClean(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	clean := func(s string) string {
		return strings.Join(strings.Fields(strings.ReplaceAll(s, "hunter2", "(secret)")), " ")
	}
	l := &Log{Ctx: context.Background(), Logger: textLog(&buf), Label: "test program", MaxLines: 8, MaxLine: 24, Clean: clean}
	in := "panic:   hunter2 here\n   \n" + `{"level":"INFO","msg":"key hunter2"}` + "\n" + strings.Repeat("z", 30) + "\n"
	if _, err := l.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	l.Flush()
	want := `level=WARN msg="test program output" line="panic: (secret) here"` + "\n" +
		`level=WARN msg="test program output" line="{\"level\":\"INFO\",\"msg\":\"k"` + "\n" +
		`level=WARN msg="test program output" line=` + strings.Repeat("z", 24) + "\n"
	if got := buf.String(); got != want {
		t.Errorf("logged\n%s\nwant\n%s", got, want)
	}
	if p := l.Problem(); p != "panic: (secret) here" {
		t.Errorf("problem %q", p)
	}
}

// TestParseRecord: slog JSON records, and what is not one.
func TestParseRecord(t *testing.T) {
	t.Parallel()
	level, msg, attrs, ok := ParseRecord(`{"time":"2026-05-10T12:00:00Z","level":"WARN+1","msg":"m","z":1,"a":"x"}`)
	if !ok || level != slog.LevelWarn+1 || msg != "m" || len(attrs) != 4 || attrs[0] != "a" || attrs[1] != "x" || attrs[2] != "z" || attrs[3].(interface{ String() string }).String() != "1" {
		t.Errorf("record: %v %q %v %v", level, msg, attrs, ok)
	}
	for _, s := range []string{"panic: boom", `{"level":"WARN"}`, `{"level":"LOUD","msg":"m"}`, `{"level":"INFO","msg":3}`, `{"level":"INFO","msg":"m"`, `[1]`} {
		if _, _, _, ok := ParseRecord(s); ok {
			t.Errorf("%s read as a record", s)
		}
	}
}

func TestDecodeRequest(t *testing.T) {
	type req struct{ V int }
	var r req
	if err := DecodeRequest(strings.NewReader(`{"V":1}`), 64, "hint", &r); err != nil || r.V != 1 {
		t.Fatalf("DecodeRequest = %+v, %v", r, err)
	}
	for in, want := range map[string]string{
		"":                      "no request on stdin: this program is run by lifeline-agent (hint)",
		`{"V":1,"X":2}`:         `unknown field "X"`,
		`{"V":1}{"V":2}`:        "more than one JSON document",
		strings.Repeat(" ", 65): "longer than 64 bytes",
		`{"V":`:                 "request on stdin:",
	} {
		if err := DecodeRequest(strings.NewReader(in), 64, "hint", &r); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecodeRequest(%q) = %v, want an error with %q", in, err, want)
		}
	}
}
