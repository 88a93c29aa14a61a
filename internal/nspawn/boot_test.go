package nspawn

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBootTwoMachines boots machines from the one cached tree at once: one
// in a network namespace this test made, two with a private network (one
// of the same name as the first).
// They are separate systems (hostname, machine ID, SSH host keys, cgroups,
// files), the tree is left as it was, and Run, Sh, CopyIn, WriteFile and
// Install work inside.
func TestBootTwoMachines(t *testing.T) {
	if testing.Short() {
		t.Skip("boots two containers: not in -short")
	}
	tree := Tree(t)
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed (sudo apt-get install -y dpkg)")
	}
	netns := fmt.Sprintf("ll%d-nspawn", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", netns, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", netns).Run() })
	if out, err := exec.Command("ip", "-n", netns, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1").CombinedOutput(); err != nil {
		t.Fatalf("veth in %s: %v\n%s", netns, err, out)
	}

	a := Boot(t, Options{Name: "alpha", NetNSPath: "/run/netns/" + netns, Tree: tree})
	b := Boot(t, Options{Name: "beta"})
	// Another test binary may boot a machine of the same name meanwhile.
	a2 := Boot(t, Options{Name: "alpha"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(m *Machine, args ...string) string {
		t.Helper()
		out, err := m.Run(ctx, args...)
		require.NoError(t, err)
		return strings.TrimSpace(out)
	}

	assert.Equal(t, "alpha", run(a, "hostname"))
	assert.Equal(t, "beta", run(b, "hostname"))
	assert.Equal(t, "alpha", run(a2, "hostname"))
	assert.NotEqual(t, run(a, "cat", "/etc/machine-id"), run(b, "cat", "/etc/machine-id"))
	assert.NotEqual(t, run(a, "cat", "/etc/machine-id"), run(a2, "cat", "/etc/machine-id"))
	assert.Equal(t, "running", run(a, "systemctl", "is-system-running"), "booted, nothing failed")
	assert.Equal(t, "active", run(a, "systemctl", "is-active", "ssh"), "sshd runs, with host keys of its own")
	keyA := run(a, "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub")
	keyB := run(b, "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub")
	assert.NotEqual(t, keyA, keyB)
	assert.Contains(t, run(a, "ip", "-o", "link"), "probe0", "alpha is in the test's namespace")
	assert.NotContains(t, run(b, "ip", "-o", "link"), "probe0")
	cgA, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", a.PID()))
	cgB, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", b.PID()))
	assert.NotEqual(t, string(cgA), string(cgB), "each machine has a cgroup of its own")

	// Files: written in one machine only, never in the tree.
	a.WriteFile("/etc/lifeline/test.env", []byte("A=1\n"), 0o600)
	assert.Equal(t, "A=1", run(a, "cat", "/etc/lifeline/test.env"))
	assert.Equal(t, "600", run(a, "stat", "-c", "%a", "/etc/lifeline/test.env"))
	_, err := b.Run(ctx, "cat", "/etc/lifeline/test.env")
	assert.ErrorContains(t, err, "No such file", "the error carries stderr")
	_, err = os.Stat(filepath.Join(tree, "etc/lifeline"))
	assert.ErrorIs(t, err, os.ErrNotExist, "the cached tree is not written")
	src := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(src, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "sub", "f"), []byte("deep"), 0o640))
	b.CopyIn(src, "/srv/copied")
	assert.Equal(t, "deep 640 root", run(b, "sh", "-c", "echo $(cat /srv/copied/sub/f) $(stat -c '%a %U' /srv/copied/sub/f)"))
	out, err := b.Sh(ctx, "echo $((6*7)); exit 3")
	assert.Equal(t, "42\n", out)
	assert.ErrorContains(t, err, "exit status 3")

	// A cancelled command is killed inside, not only nsenter.
	short, stop := context.WithTimeout(ctx, 500*time.Millisecond)
	start := time.Now()
	_, err = a.Run(short, "sleep", "300")
	stop()
	assert.Error(t, err)
	assert.Less(t, time.Since(start), 10*time.Second)
	require.Eventually(t, func() bool {
		_, err := a.Run(ctx, "pgrep", "-x", "sleep")
		return err != nil // pgrep: nothing found
	}, 5*time.Second, 100*time.Millisecond, "sleep still runs inside")

	// A package, installed by dpkg inside.
	pkg := filepath.Join(t.TempDir(), "pkg")
	require.NoError(t, os.MkdirAll(filepath.Join(pkg, "DEBIAN"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(pkg, "usr/share/nspawn-probe"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(pkg, "usr/share/nspawn-probe/hello"), []byte("hi\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(pkg, "DEBIAN/control"), []byte("Package: nspawn-probe\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.com>\nDescription: probe\n"), 0o644))
	deb := filepath.Join(t.TempDir(), "nspawn-probe_1.0_all.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkg, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, out)
	}
	a.Install(deb)
	assert.Equal(t, "install ok installed", run(a, "dpkg-query", "-W", "-f=${Status}", "nspawn-probe"))
	assert.Equal(t, "hi", run(a, "cat", "/usr/share/nspawn-probe/hello"))
	assert.Contains(t, a.Journal(50), "Startup finished", "the journal of this boot")
}
