package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestRun covers the dispatch that needs no environment; the agent itself
// is exercised as a real binary in agent/tunnel (TestBinary*).
func TestRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{args: []string{"--version"}, code: exitOK, stdout: "lifeline-agent "},
		{args: []string{"version"}, code: exitOK, stdout: "lifeline-agent "},
		{args: []string{"--help"}, code: exitOK, stdout: "LIFELINE_FORWARDS"},
		{args: []string{"-h"}, code: exitOK, stdout: "lifeline-agent pubkey"},
		{args: []string{"--frobnicate"}, code: exitUsage, stderr: `unknown command "--frobnicate"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			if code := run(context.Background(), tt.args, &out, &errb); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, errb.String())
			}
			if !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stdout %q / stderr %q, want %q / %q", out.String(), errb.String(), tt.stdout, tt.stderr)
			}
		})
	}
}
