// Package child is how the agent runs its child programs (lifeline-linkcheck,
// lifeline-jumpstart): finding them, their environment, their bounded
// stdout and their stderr, slog JSON lines logged again in the agent's log.
package child

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Dir is where the lifeline-agent package installs the child programs:
// they are no commands for people, so not on PATH.
const Dir = "/usr/lib/lifeline"

// Dirs are the directories to look for a child program in, in order: the
// one of this process's executable (bin/ of a build, an unpacked release
// tarball, /usr/bin), then Dir (the package).
func Dirs() []string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	return append(dirs, Dir)
}

// Find returns the path of the program name in the first of dirs that has
// it as an executable file. The error, which starts with what (the
// program's description, "link check program"), names every path it
// tried and why each would not do.
func Find(what, name string, dirs []string) (string, error) {
	var tried []string
	seen := map[string]bool{}
	for _, dir := range dirs {
		p := filepath.Join(dir, name)
		if seen[p] {
			continue
		}
		seen[p] = true
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			tried = append(tried, fmt.Sprintf("%s (%v)", p, UnwrapPath(err)))
		case !fi.Mode().IsRegular():
			tried = append(tried, p+" (not a file)")
		case fi.Mode().Perm()&0o111 == 0:
			tried = append(tried, p+" (not executable)")
		default:
			return p, nil
		}
	}
	return "", fmt.Errorf("%s %s not found: tried %s; it comes with the lifeline-agent package (%s), or goes next to lifeline-agent",
		what, name, strings.Join(tried, ", "), filepath.Join(Dir, name))
}

// UnwrapPath drops the path a *fs.PathError repeats.
func UnwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// LowestLevel is the lowest level log logs.
func LowestLevel(ctx context.Context, log *slog.Logger) slog.Level {
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if log.Enabled(ctx, l) {
			return l
		}
	}
	return slog.LevelError
}

// Env is env with only the variables whose name keep accepts, in their
// order. It is never nil (a nil exec.Cmd.Env would be the whole
// environment).
func Env(env []string, keep func(name string) bool) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); keep(k) {
			out = append(out, kv)
		}
	}
	return out
}

// CappedBuffer keeps the first Max bytes written to it and drains the
// rest, so a program that writes too much never blocks.
type CappedBuffer struct {
	Max int

	mu   sync.Mutex
	buf  bytes.Buffer
	over bool
}

func (b *CappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.Max - b.buf.Len(); len(p) > room {
		b.buf.Write(p[:max(room, 0)])
		b.over = true
		return len(p), nil
	}
	b.buf.Write(p)
	return len(p), nil
}

// Bytes are the bytes kept.
func (b *CappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Bytes()
}

// Over says whether more than Max bytes were written.
func (b *CappedBuffer) Over() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.over
}

// Log is a program's stderr: each line a record of its slog JSON handler,
// logged again on Logger at its level with its attributes, or text (a
// panic, a runtime or usage error) logged as a warning. At most MaxLines
// lines of at most MaxLine bytes each are logged per run; Flush says how
// many more there were.
type Log struct {
	Ctx    context.Context
	Logger *slog.Logger
	// Label names the program in the log's own messages ("link check
	// program": "link check program output").
	Label             string
	MaxLines, MaxLine int
	// Clean, when set, makes a line (at most MaxLine bytes of it) fit to
	// log, instead of the default: valid UTF-8, trimmed, " …" appended
	// when the line was cut. An empty result is no line.
	Clean func(line string) string
	// ErrAttr: the "err" attribute of an error record is part of Problem.
	ErrAttr bool

	mu       sync.Mutex
	partial  []byte
	cut      bool // the partial line passed MaxLine
	lines    int
	dropped  int
	text     string // the first text line
	errorMsg string // the last record at level error
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := l.MaxLine - len(l.partial); len(chunk) > room {
			chunk, l.cut = chunk[:max(room, 0)], true
		}
		l.partial = append(l.partial, chunk...)
		if i < 0 {
			break
		}
		l.line()
		p = p[i+1:]
	}
	return n, nil
}

// Flush logs a last line without a newline, and what was not logged.
func (l *Log) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line()
	}
	if l.dropped > 0 {
		l.Logger.Warn(l.Label+": more output not logged", "lines", l.dropped)
		l.dropped = 0
	}
}

// line handles l.partial; l.mu is held.
func (l *Log) line() {
	var s string
	if l.Clean != nil {
		s = l.Clean(string(l.partial))
	} else {
		s = strings.TrimSpace(strings.ToValidUTF8(string(l.partial), "?"))
		if l.cut {
			s += " …"
		}
	}
	l.partial, l.cut = l.partial[:0], false
	if s == "" {
		return
	}
	level, msg, attrs, ok := ParseRecord(s)
	switch {
	case !ok && l.text == "":
		l.text = s
	case ok && level >= slog.LevelError:
		l.errorMsg = msg
		for i := 0; l.ErrAttr && i+1 < len(attrs); i += 2 {
			if attrs[i] == "err" {
				l.errorMsg += ": " + fmt.Sprint(attrs[i+1])
			}
		}
	}
	if l.lines >= l.MaxLines {
		l.dropped++
		return
	}
	l.lines++
	if !ok {
		l.Logger.Warn(l.Label+" output", "line", s)
		return
	}
	l.Logger.Log(l.Ctx, level, msg, attrs...)
}

// Problem is what the program said went wrong: its first text line (a
// panic, a usage error), else its last error record.
func (l *Log) Problem() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.text != "" {
		return l.text
	}
	return l.errorMsg
}

// ParseRecord reads one slog JSON record: its level, message and the
// other attributes (sorted by key; the program's time is dropped, the
// agent's log has its own).
func ParseRecord(s string) (level slog.Level, msg string, attrs []any, ok bool) {
	if !strings.HasPrefix(s, "{") {
		return 0, "", nil, false
	}
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var rec map[string]any
	if err := d.Decode(&rec); err != nil {
		return 0, "", nil, false
	}
	lv, _ := rec[slog.LevelKey].(string)
	m, isString := rec[slog.MessageKey].(string)
	if !isString || level.UnmarshalText([]byte(lv)) != nil {
		return 0, "", nil, false
	}
	keys := make([]string, 0, len(rec))
	for k := range rec {
		if k != slog.TimeKey && k != slog.LevelKey && k != slog.MessageKey {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		attrs = append(attrs, k, rec[k])
	}
	return level, m, attrs, true
}

// DecodeRequest reads the one JSON request a child program gets on stdin
// into v, strictly: at most max bytes, no unknown field, one document.
// Its errors wrap json's (a caller whose request holds a secret rewords a
// *json.SyntaxError, which quotes what it read). hint says what to do when
// stdin is empty (the program was run by hand).
func DecodeRequest(r io.Reader, max int, hint string, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return fmt.Errorf("read the request on stdin: %w", err)
	}
	if len(b) > max {
		return fmt.Errorf("request on stdin longer than %d bytes", max)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return errors.New("no request on stdin: this program is run by lifeline-agent (" + hint + ")")
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("request on stdin: %w", err)
	}
	if d.More() {
		return errors.New("request on stdin: more than one JSON document")
	}
	return nil
}
