package systemd_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the module root, one level above this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatalf("repo root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repo root %s has no go.mod: %v", root, err)
	}
	return root
}

// need returns the path of program or skips the test when it is missing.
func need(t testing.TB, program string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		t.Skipf("%s not installed: %v", program, err)
	}
	return p
}

// built holds the binaries compiled once per test run.
var built struct {
	once sync.Once
	dir  string
	err  error
	out  string
}

// binaries builds lifeline-bastion and lifeline-agent for this machine into a
// temporary directory shared by the tests of this run and returns it. A build
// failure fails the test: a unit cannot be verified against a program that
// does not build.
func binaries(t testing.TB) string {
	t.Helper()
	need(t, "go")
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "lifeline-systemd-test-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		for _, name := range []string{"bastion", "agent"} {
			cmd := exec.Command("go", "build", "-trimpath",
				// Same flags as the Makefile: stripped, version stamped.
				"-ldflags", "-s -w -X github.com/lifeline-dev/lifeline/shared/version.Version=0.0.0-test",
				"-o", filepath.Join(dir, "lifeline-"+name), "./"+name+"/cmd/lifeline-"+name)
			cmd.Dir = repoRoot(t)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
			out, err := cmd.CombinedOutput()
			if err != nil {
				built.err, built.out = err, string(out)
				return
			}
		}
	})
	if built.err != nil {
		t.Fatalf("build lifeline binaries: %v\n%s", built.err, built.out)
	}
	return built.dir
}

// TestMain removes the shared build directories after every test has run.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	if debBuilt.dir != "" {
		os.RemoveAll(filepath.Dir(debBuilt.dir))
	}
	os.Exit(code)
}

// unitFile is a parsed systemd unit: section -> key -> values in order.
type unitFile map[string]map[string][]string

// parseUnit reads a unit file the way systemd does for the subset we use:
// sections, key=value, comments, no line continuations.
func parseUnit(t testing.TB, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open unit: %v", err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: line continuations are not supported by this test's parser", path, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value inside a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read unit %s: %v", path, err)
	}
	return u
}

// get returns the last value of key (systemd's rule for single-valued keys)
// and whether it is set.
func (u unitFile) get(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}
