package main

import (
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/mainwatch"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// STATUS= says the main internet is down while it is, and nothing once
// it is back; no gateway, no watch.
func TestMainNote(t *testing.T) {
	t.Parallel()
	since := time.Date(2026, 11, 22, 9, 55, 0, 0, time.UTC)
	if got, want := mainNote(mainwatch.Down{Since: since, At: since.Add(5 * time.Minute), Code: report.CodeMainUnreachable}),
		"MAIN INTERNET DOWN since 2026-11-22 09:55 UTC (main_unreachable)"; got != want {
		t.Errorf("down: %q, want %q", got, want)
	}
	if got := mainNote(mainwatch.Up{Since: since, Back: since.Add(time.Hour)}); got != "" {
		t.Errorf("up: %q", got)
	}
	if w, err := newMainWatch(nil, nil, nil); w != nil || err != nil {
		t.Errorf("no gateway: %v, %v", w, err)
	}
}
