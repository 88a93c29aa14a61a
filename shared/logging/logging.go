// Package logging builds the structured logger both binaries use.
//
// On a terminal (or any writer that is not systemd's journal stream) lines
// are slog's text format, time first. When the writer is the stream systemd
// connected to the journal, the journal already stamps every line with its
// own time, so lines carry no time; each starts instead with the
// sd-daemon(3) priority prefix that journald turns into the entry's
// priority: <3> error, <4> warning, <6> info, <7> debug.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// New returns a slog.Logger writing to w at the named level (debug, info,
// warn, error). When w is the process's journal stream ($JOURNAL_STREAM
// names w's device and inode), the lines are journal lines: no time, an
// sd-daemon priority prefix. Otherwise they are slog's text format.
func New(w io.Writer, level string) (*slog.Logger, error) {
	return NewEnv(w, level, os.Getenv)
}

// NewEnv is New reading JOURNAL_STREAM through getenv (tests pass their
// own).
func NewEnv(w io.Writer, level string, getenv func(string) string) (*slog.Logger, error) {
	l, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	if IsJournal(w, getenv("JOURNAL_STREAM")) {
		return slog.New(NewJournalHandler(w, l)), nil
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// ParseLevel reads a LIFELINE_LOG_LEVEL value: debug, info (or empty),
// warn (or warning), error; any case.
func ParseLevel(level string) (slog.Level, error) {
	switch strings.ToLower(level) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("LIFELINE_LOG_LEVEL=%q: use debug, info, warn or error", level)
}

// IsJournal reports whether w is the stream systemd connected to the
// journal: journalStream is $JOURNAL_STREAM ("DEVICE:INODE", both decimal)
// and w is an *os.File with that device and inode, as systemd.exec(5)
// says to check (the variable is inherited by children whose stderr may
// be something else).
func IsJournal(w io.Writer, journalStream string) bool {
	f, ok := w.(*os.File)
	if !ok || f == nil || journalStream == "" {
		return false
	}
	devS, inoS, ok := strings.Cut(journalStream, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devS, 10, 64)
	ino, err2 := strconv.ParseUint(inoS, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// Priority is the syslog priority journald gives a line of level l.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3 // err
	case l >= slog.LevelWarn:
		return 4 // warning
	case l >= slog.LevelInfo:
		return 6 // info
	}
	return 7 // debug
}

// NewJournalHandler returns a handler writing journal lines to w: slog's
// text format without the time, prefixed by "<N>" (Priority of the
// record's level). Each record is one write of one line.
func NewJournalHandler(w io.Writer, level slog.Leveler) slog.Handler {
	pw := &prefixWriter{w: w}
	inner := slog.NewTextHandler(pw, &slog.HandlerOptions{Level: level, ReplaceAttr: dropTime})
	return &journalHandler{inner: inner, pw: pw}
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// journalHandler sets the priority of the line the inner text handler is
// about to write. Handlers derived by WithAttrs and WithGroup share pw,
// whose mutex makes the prefix and the line one unit.
type journalHandler struct {
	inner slog.Handler
	pw    *prefixWriter
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.pw.mu.Lock()
	defer h.pw.mu.Unlock()
	h.pw.prio = Priority(r.Level)
	return h.inner.Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), pw: h.pw}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), pw: h.pw}
}

// prefixWriter writes "<prio>" and the line in one Write. It is only
// written to with mu held (by journalHandler.Handle).
type prefixWriter struct {
	mu   sync.Mutex
	w    io.Writer
	prio int
	buf  []byte
}

func (p *prefixWriter) Write(line []byte) (int, error) {
	p.buf = append(p.buf[:0], '<')
	p.buf = strconv.AppendInt(p.buf, int64(p.prio), 10)
	p.buf = append(p.buf, '>')
	p.buf = append(p.buf, line...)
	if _, err := p.w.Write(p.buf); err != nil {
		return 0, err
	}
	if cap(p.buf) > 64<<10 {
		p.buf = nil // do not keep one huge line's buffer
	}
	return len(line), nil
}
