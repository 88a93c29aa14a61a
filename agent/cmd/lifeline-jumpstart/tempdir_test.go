package main

import (
	"os"
	"testing"
)

var tempDir string

// TestMain gives the package one build directory, removed at the end.
func TestMain(m *testing.M) {
	code := m.Run()
	if tempDir != "" {
		os.RemoveAll(tempDir)
	}
	os.Exit(code)
}

func mkdirTemp() (string, error) {
	d, err := os.MkdirTemp("", "jumpstart-test-")
	tempDir = d
	return d, err
}
