// Package logging builds the structured logger both binaries use.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// New returns a text slog.Logger writing to w at the named level
// (debug, info, warn, error).
func New(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		l = slog.LevelInfo
	case "debug":
		l = slog.LevelDebug
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, fmt.Errorf("LIFELINE_LOG_LEVEL=%q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// Discard is a logger that drops everything (for tests that do not look).
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
