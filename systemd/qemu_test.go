package systemd_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestArmPackagesRunOnPis builds the release packages with `make deb` (the
// Makefile's own platform list and GOARM, into a temp dir), unpacks the
// armhf and arm64 .debs and runs each binary's --version under qemu-user on
// the oldest CPU each package must serve: the armhf one on an ARM1176 (Pi
// Zero W, Pi 1; an ARMv7-only instruction is SIGILL there, exit 132) and a
// Cortex-A7 (Pi 2), the arm64 one on a Cortex-A53 (Pi 3, Zero 2) and a
// Cortex-A72 (Pi 4). Nothing is installed.
func TestArmPackagesRunOnPis(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every release binary: not in -short")
	}
	for _, q := range []string{"qemu-arm-static", "qemu-aarch64-static"} {
		if _, err := exec.LookPath(q); err != nil {
			t.Skipf("%s not installed (sudo apt-get install -y qemu-user-static): %v", q, err)
		}
	}
	need(t, "make")
	need(t, "go")
	need(t, "dpkg-deb")
	need(t, "help2man")
	t.Parallel()

	const version = "0.0.0-test" // Debian version 0.0.0+test
	dist := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mk := exec.CommandContext(ctx, "make", "-s", "deb", "DIST="+dist, "VERSION="+version)
	mk.Dir = repoRoot(t)
	out, err := mk.CombinedOutput()
	require.NoError(t, err, "make deb:\n%s", out)

	tarballs, err := filepath.Glob(filepath.Join(dist, "*.tar.gz"))
	require.NoError(t, err)
	for i := range tarballs {
		tarballs[i] = filepath.Base(tarballs[i])
	}
	sort.Strings(tarballs)
	assert.Equal(t, []string{
		"lifeline_" + version + "_linux_amd64.tar.gz",
		"lifeline_" + version + "_linux_arm64.tar.gz",
		"lifeline_" + version + "_linux_armv6.tar.gz",
	}, tarballs, "one tarball per platform; 32-bit ARM is armv6, for every Pi")

	tests := []struct {
		arch, qemu string
		cpus       []string
	}{
		{"armhf", "qemu-arm-static", []string{"arm1176", "cortex-a7"}},
		{"arm64", "qemu-aarch64-static", []string{"cortex-a53", "cortex-a72"}},
	}
	for _, tt := range tests {
		for _, pkg := range []string{"lifeline-agent", "lifeline-bastion"} {
			t.Run(tt.arch+"/"+pkg, func(t *testing.T) {
				t.Parallel()
				deb := filepath.Join(dist, pkg+"_0.0.0+test_"+tt.arch+".deb")
				got, err := exec.Command("dpkg-deb", "-f", deb, "Architecture").Output()
				require.NoError(t, err, "dpkg-deb -f %s Architecture", deb)
				assert.Equal(t, tt.arch, strings.TrimSpace(string(got)))
				root := t.TempDir()
				require.NoError(t, exec.Command("dpkg-deb", "-x", deb, root).Run(), "dpkg-deb -x %s", deb)
				bins := map[string]string{pkg: filepath.Join(root, "usr/bin", pkg)}
				if pkg == "lifeline-agent" { // and the link check and jump start programs it runs
					bins["lifeline-linkcheck"] = filepath.Join(root, "usr/lib/lifeline/lifeline-linkcheck")
					bins["lifeline-jumpstart"] = filepath.Join(root, "usr/lib/lifeline/lifeline-jumpstart")
				}
				for name, bin := range bins {
					for _, cpu := range tt.cpus {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						out, err := exec.CommandContext(ctx, tt.qemu, "-cpu", cpu, bin, "--version").CombinedOutput()
						cancel()
						// "signal: illegal instruction" (rc 132 in a shell): built
						// for a newer CPU than this Pi's.
						require.NoError(t, err, "%s -cpu %s %s --version:\n%s", tt.qemu, cpu, name, out)
						assert.Contains(t, string(out), name+" "+version, "-cpu %s: the stamped version of %s", cpu, name)
					}
				}
			})
		}
	}
}
