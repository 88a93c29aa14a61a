package systemd_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// debArch maps GOARCH to the Debian architecture of the packages.
var debArch = map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armhf"}

// entry is one line of `dpkg-deb -c`.
type entry struct{ mode, owner string }

func listDeb(t *testing.T, deb string) map[string]entry {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "-c", deb).Output()
	require.NoError(t, err, "dpkg-deb -c")
	files := map[string]entry{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		require.GreaterOrEqual(t, len(f), 6, "dpkg-deb -c line %q", line)
		if strings.HasPrefix(f[0], "d") {
			continue
		}
		files[strings.TrimPrefix(f[len(f)-1], ".")] = entry{mode: f[0], owner: f[1]}
	}
	return files
}

// TestDebPackages builds both packages for this machine's architecture with
// the same script `make deb` uses and inspects them with dpkg-deb: file list,
// modes and owners, conffiles, control fields, maintainer scripts. The
// packages are never installed.
func TestDebPackages(t *testing.T) {
	need(t, "dpkg-deb")
	need(t, "bash")
	arch, ok := debArch[runtime.GOARCH]
	if !ok {
		t.Skipf("no Debian architecture for GOARCH=%s", runtime.GOARCH)
	}
	bin := binaries(t)
	linkcheckProgram(t, bin)
	const version = "1.2.3+test"
	tests := []struct {
		pkg, role string
		units     []string
		libexec   []string // programs in /usr/lib/lifeline, from next to the binary
	}{
		{"lifeline-bastion", "bastion", []string{"lifeline-bastion.service"}, nil},
		{"lifeline-agent", "agent", []string{"lifeline-agent.service", "lifeline-netsetup.service"}, []string{"lifeline-linkcheck"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			t.Parallel()
			out := t.TempDir()
			msg, err := exec.Command("./packaging/mkdeb.sh", tt.pkg, arch, version, filepath.Join(bin, tt.pkg), out).CombinedOutput()
			require.NoError(t, err, "mkdeb.sh:\n%s", msg)
			deb := filepath.Join(out, tt.pkg+"_"+version+"_"+arch+".deb")
			assert.Equal(t, deb, strings.TrimSpace(string(msg)), "mkdeb.sh prints the package path")

			// Control fields.
			for field, want := range map[string]string{
				"Package": tt.pkg, "Version": version, "Architecture": arch,
				"Depends": "systemd", "Section": "net", "Priority": "optional",
			} {
				got, err := exec.Command("dpkg-deb", "-f", deb, field).Output()
				require.NoError(t, err, "dpkg-deb -f %s", field)
				assert.Equal(t, want, strings.TrimSpace(string(got)), "control field %s", field)
			}
			for _, field := range []string{"Maintainer", "Description", "Installed-Size", "Homepage"} {
				got, err := exec.Command("dpkg-deb", "-f", deb, field).Output()
				require.NoError(t, err)
				assert.NotEmpty(t, strings.TrimSpace(string(got)), "control field %s", field)
			}

			// Contents: exactly these files, with these modes, all root-owned.
			want := map[string]entry{
				"/usr/bin/" + tt.pkg:                      {"-rwxr-xr-x", "root/root"},
				"/usr/lib/sysusers.d/" + tt.pkg + ".conf": {"-rw-r--r--", "root/root"},
				"/etc/lifeline/" + tt.role + ".env":       {"-rw-------", "root/root"},
				"/usr/share/doc/" + tt.pkg + "/README.md": {"-rw-r--r--", "root/root"},
			}
			for _, u := range tt.units {
				want["/usr/lib/systemd/system/"+u] = entry{"-rw-r--r--", "root/root"}
			}
			for _, p := range tt.libexec {
				want["/usr/lib/lifeline/"+p] = entry{"-rwxr-xr-x", "root/root"}
			}
			assert.Equal(t, want, listDeb(t, deb))

			// conffiles: the env template, so local edits survive upgrades.
			conf, err := exec.Command("dpkg-deb", "-I", deb, "conffiles").Output()
			require.NoError(t, err, "dpkg-deb -I conffiles")
			assert.Equal(t, "/etc/lifeline/"+tt.role+".env\n", string(conf))

			// Extracted files are the repository's and the build's, byte for byte.
			root := t.TempDir()
			require.NoError(t, exec.Command("dpkg-deb", "-x", deb, root).Run(), "dpkg-deb -x")
			same := map[string]string{
				"usr/bin/" + tt.pkg:                      filepath.Join(bin, tt.pkg),
				"etc/lifeline/" + tt.role + ".env":       tt.role + ".env",
				"usr/lib/sysusers.d/" + tt.pkg + ".conf": "lifeline.sysusers",
			}
			for _, u := range tt.units {
				same["usr/lib/systemd/system/"+u] = u
			}
			for _, p := range tt.libexec {
				same["usr/lib/lifeline/"+p] = filepath.Join(bin, p)
			}
			for inDeb, src := range same {
				a, err := os.ReadFile(filepath.Join(root, inDeb))
				require.NoError(t, err)
				b, err := os.ReadFile(src)
				require.NoError(t, err)
				assert.True(t, bytes.Equal(a, b), "%s in the package differs from %s", inDeb, src)
			}
			ver, err := exec.Command(filepath.Join(root, "usr/bin", tt.pkg), "--version").CombinedOutput()
			require.NoError(t, err, "%s --version: %s", tt.pkg, ver)
			assert.Contains(t, string(ver), "0.0.0-test", "the packaged binary prints its stamped version")
			for _, p := range tt.libexec {
				ver, err := exec.Command(filepath.Join(root, "usr/lib/lifeline", p), "--version").CombinedOutput()
				require.NoError(t, err, "%s --version: %s", p, ver)
				assert.Equal(t, p+" 0.0.0-test\n", string(ver), "the packaged %s prints its stamped version", p)
			}
			sysusers, err := os.ReadFile(filepath.Join(root, "usr/lib/sysusers.d", tt.pkg+".conf"))
			require.NoError(t, err)
			assert.Regexp(t, `(?m)^u lifeline - `, string(sysusers), "the package declares the lifeline system user")

			// Maintainer scripts: present, executable, and enabling/starting nothing.
			ctl := t.TempDir()
			require.NoError(t, exec.Command("dpkg-deb", "-e", deb, ctl).Run(), "dpkg-deb -e")
			starts := regexp.MustCompile(`(systemctl(\s+--?\S+)*\s+(enable|start|restart|reenable|preset)\b|deb-systemd-(helper|invoke)\s+(enable|start))`)
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				p := filepath.Join(ctl, s)
				fi, err := os.Stat(p)
				require.NoError(t, err, "%s missing", s)
				assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), "%s mode", s)
				text, err := os.ReadFile(p)
				require.NoError(t, err)
				text = regexp.MustCompile(`(?m)^\s*(#|echo ).*$`).ReplaceAll(text, nil) // comments and advice may say what the admin runs
				assert.Empty(t, string(starts.Find(text)), "%s must not enable or start a service", s)
				if sc, err := exec.LookPath("shellcheck"); err == nil {
					out, err := exec.Command(sc, "-s", "sh", p).CombinedOutput()
					assert.NoError(t, err, "shellcheck %s:\n%s", s, out)
				}
			}
			postinst, err := os.ReadFile(filepath.Join(ctl, "postinst"))
			require.NoError(t, err)
			assert.Contains(t, string(postinst), "systemd-sysusers "+tt.pkg+".conf", "postinst creates the system user")
			commands := regexp.MustCompile(`(?m)^\s*(#|echo ).*$`).ReplaceAll(postinst, nil) // what it runs, not what it says
			if tt.pkg == "lifeline-agent" {
				assert.NotRegexp(t, `systemctl(\s+--?\S+)*\s+(try-)?restart`, string(commands),
					"an upgrade must not restart the agent: the operator running it may be connected through it (it restarts itself when idle)")
			} else {
				assert.Contains(t, string(commands), "try-restart", "an upgrade restarts only a running service")
			}
		})
	}
}

// TestMkdebRefusesBadArguments checks that the packaging script stops before
// building anything when given an unknown package, architecture or a version
// dpkg would reject.
func TestMkdebRefusesBadArguments(t *testing.T) {
	need(t, "dpkg-deb")
	need(t, "bash")
	t.Parallel()
	dummy := filepath.Join(t.TempDir(), "binary")
	require.NoError(t, os.WriteFile(dummy, []byte("#!/bin/sh\n"), 0o755))
	tests := []struct {
		name               string
		pkg, arch, version string
		binary             string
	}{
		{"unknown package", "lifeline-other", "amd64", "1.0", dummy},
		{"unknown arch", "lifeline-agent", "x86_64", "1.0", dummy},
		{"version with v", "lifeline-agent", "amd64", "v1.0", dummy},
		{"git hash version", "lifeline-agent", "amd64", "abc1234-dirty", dummy},
		{"missing binary", "lifeline-agent", "amd64", "1.0", dummy + ".missing"},
		{"no lifeline-linkcheck next to the agent", "lifeline-agent", "amd64", "1.0", dummy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := t.TempDir()
			msg, err := exec.Command("./packaging/mkdeb.sh", tt.pkg, tt.arch, tt.version, tt.binary, out).CombinedOutput()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "mkdeb.sh accepted it:\n%s", msg)
			assert.Equal(t, 2, ee.ExitCode())
			left, err := os.ReadDir(out)
			require.NoError(t, err)
			assert.Empty(t, left, "nothing is written on refusal")
		})
	}
}

// TestShellcheckPackaging runs shellcheck on the packaging script and the
// maintainer scripts as they are in the repository.
func TestShellcheckPackaging(t *testing.T) {
	sc := need(t, "shellcheck")
	t.Parallel()
	scripts, err := filepath.Glob("packaging/*/p*")
	require.NoError(t, err)
	require.Len(t, scripts, 6, "postinst, prerm, postrm for two packages")
	scripts = append(scripts, "packaging/mkdeb.sh")
	for _, s := range scripts {
		t.Run(s, func(t *testing.T) {
			t.Parallel()
			out, err := exec.Command(sc, "-S", "style", s).CombinedOutput()
			assert.NoError(t, err, "shellcheck %s:\n%s", s, out)
		})
	}
}

// linkcheckProgram builds lifeline-linkcheck (the agent's link check
// program, packaged with it) into dir beside the binaries, as `make dist`
// does.
func linkcheckProgram(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-s -w -X github.com/lifeline-dev/lifeline/shared/version.Version=0.0.0-test",
		"-o", filepath.Join(dir, "lifeline-linkcheck"), "./agent/cmd/lifeline-linkcheck")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "build lifeline-linkcheck:\n%s", out)
}
