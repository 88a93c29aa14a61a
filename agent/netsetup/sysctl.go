package netsetup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/lifeline-dev/lifeline/shared/atomicfile"
)

// Sysctl reads and writes kernel parameters by their dotted name
// (net.ipv4.ip_forward).
type Sysctl interface {
	Get(name string) (string, error)
	Set(name, value string) error
}

// ProcSys is the Sysctl of the calling process's network namespace, through
// /proc/sys.
type ProcSys struct{}

var _ Sysctl = ProcSys{}

func procPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

// Get implements Sysctl.
func (ProcSys) Get(name string) (string, error) {
	b, err := os.ReadFile(procPath(name))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Set implements Sysctl.
func (ProcSys) Set(name, value string) error {
	if err := os.WriteFile(procPath(name), []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("write sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

const (
	ipForward = "net.ipv4.ip_forward"
	// SysctlFile is the file apply writes in LIFELINE_SYSCTL_DIR.
	SysctlFile = "90-lifeline.conf"
	// StateFile is the file apply writes in LIFELINE_STATE_DIR.
	StateFile      = "netsetup.json"
	sysctlContents = "# Written by lifeline-agent netsetup apply; removed by netsetup remove.\nnet.ipv4.ip_forward = 1\n"
)

// state is what apply remembers for remove and for rolling back a changed
// configuration.
type state struct {
	// PriorIPForward is net.ipv4.ip_forward before the first apply.
	PriorIPForward string `json:"prior_ip_forward"`
	// Rules and Routes are what the last successful apply installed.
	Rules  Rules   `json:"rules"`
	Routes []Route `json:"routes"`
}

// fileSnapshot is a file's content before a step changed it, for undo.
type fileSnapshot struct {
	path    string
	existed bool
	data    []byte
}

func snapshot(path string) (fileSnapshot, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileSnapshot{path: path}, nil
	}
	if err != nil {
		return fileSnapshot{}, fmt.Errorf("read %s: %w", path, err)
	}
	return fileSnapshot{path: path, existed: true, data: b}, nil
}

func (s fileSnapshot) restore() error {
	if !s.existed {
		return removeFile(s.path)
	}
	return writeFileAtomic(s.path, s.data, 0o644)
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// writeFileAtomic writes data to path's folder (created 0700 when missing)
// and renames it into place.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create folder %s: %w", dir, err)
	}
	return atomicfile.Write(path, data, perm)
}

func readState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	return &s, nil
}

func writeState(path string, s state) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return writeFileAtomic(path, append(b, '\n'), 0o600)
}
