package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeline-dev/lifeline/bastion/config"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// fixture is an installed bastion in a temporary directory, owned by the
// user running the test, that passes every local check.
type fixture struct {
	dir string
	d   *Doctor
	op  sshtest.Key
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	agent := sshtest.NewKey(t, dir, "agent_key")
	op := sshtest.NewKey(t, dir, "operator_key")
	write(t, filepath.Join(dir, "agents"), agent.AuthorizedLine(`permitlisten="pi:22"`, "radio-pi")+"\n", 0o600)
	write(t, filepath.Join(dir, "operators"), "# people\n"+op.AuthorizedLine("", "alice")+"\n", 0o600)
	if _, _, err := keyfile.LoadOrCreate(filepath.Join(state, "host_key"), "test"); err != nil {
		t.Fatal(err)
	}
	cfg := config.Config{Name: "test-bastion", Env: config.Env{
		Listen: "127.0.0.1:0", HostKey: filepath.Join(state, "host_key"), StateDir: state,
		Agents: filepath.Join(dir, "agents"), Operators: filepath.Join(dir, "operators"), TwilioURL: "http://127.0.0.1:1",
	}}
	d := &Doctor{Config: cfg, EnvFile: "/etc/lifeline/bastion.env", Owner: os.Geteuid(), Systemd: fakeSystemd{},
		FreeSpace: func(string) (uint64, error) { return 20e9, nil }}
	return &fixture{dir: dir, d: d, op: op}
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// fakeSystemd is a machine with or without systemd and the unit in a state.
type fakeSystemd struct {
	booted bool
	state  string
	hang   bool
}

func (f fakeSystemd) Booted() bool { return f.booted }

func (f fakeSystemd) IsActive(ctx context.Context, unit string) (string, error) {
	if f.hang {
		<-ctx.Done()
		return "", ctx.Err()
	}
	return f.state, nil
}

// want checks one line: passed or failed as expected, with every part in
// its text (for a failure: the fix too).
func want(t *testing.T, name string, c Check, ok bool, parts ...string) {
	t.Helper()
	if c.OK != ok {
		t.Errorf("%s: %s; want ok=%v", name, c, ok)
		return
	}
	if !ok && c.Fix == "" {
		t.Errorf("%s: %s: a failure without a fix", name, c)
	}
	line := c.String()
	for _, p := range parts {
		if !strings.Contains(line, p) {
			t.Errorf("%s: %q lacks %q", name, line, p)
		}
	}
	if ok && !strings.HasPrefix(line, "✓ ") || !ok && (!strings.HasPrefix(line, "✗ ") || !strings.Contains(line, " — fix: ")) {
		t.Errorf("%s: %q is not a checklist line", name, line)
	}
}

// only returns the single check of cs.
func only(t *testing.T, cs []Check) Check {
	t.Helper()
	if len(cs) != 1 {
		var lines []string
		for _, c := range cs {
			lines = append(lines, c.String())
		}
		t.Fatalf("want one line, got %d:\n%s", len(cs), strings.Join(lines, "\n"))
	}
	return cs[0]
}
