package nspawn

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCacheDir(t *testing.T) {
	t.Parallel()
	repo := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(repo, "go.mod"), []byte("// x\nmodule "+modulePath+"\n\ngo 1.26\n"), 0o644))
	deep := filepath.Join(repo, "integration", "sub")
	require.NoError(t, os.MkdirAll(deep, 0o755))
	// A nested module of another name is walked past.
	require.NoError(t, os.WriteFile(filepath.Join(repo, "integration", "go.mod"), []byte("module example.com/other\n"), 0o644))
	noEnv := func(string) string { return "" }

	got, err := cacheDir(noEnv, deep)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(repo, ".cache", "nspawn"), got, "<repo>/.cache/nspawn, found from a package directory")

	env := func(k string) string {
		if k == EnvCache {
			return "/var/cache/lifeline-trees/"
		}
		return ""
	}
	got, err = cacheDir(env, deep)
	require.NoError(t, err)
	assert.Equal(t, "/var/cache/lifeline-trees", got, EnvCache+" wins")

	_, err = cacheDir(func(string) string { return "relative/dir" }, deep)
	assert.ErrorContains(t, err, "absolute")

	_, err = cacheDir(noEnv, t.TempDir())
	require.Error(t, err, "outside the repository")
	assert.Contains(t, err.Error(), EnvCache, "the error says how to cache elsewhere")
}

func TestCacheDirOfThisRepo(t *testing.T) {
	t.Parallel()
	if os.Getenv(EnvCache) != "" {
		t.Skip(EnvCache + " is set")
	}
	got, err := CacheDir()
	require.NoError(t, err)
	wd, _ := os.Getwd()
	assert.Equal(t, filepath.Join(filepath.Dir(filepath.Dir(wd)), ".cache", "nspawn"), got)
}

func TestTreeName(t *testing.T) {
	// Not parallel: it changes Packages for a moment.
	a := treeName()
	assert.Equal(t, a, treeName(), "stable")
	assert.True(t, strings.HasPrefix(a, "bookworm-minbase-"), a)
	saved := Packages
	Packages = append(slices.Clone(saved), "less")
	b := treeName()
	Packages = saved
	assert.NotEqual(t, a, b, "another package list is another tree")
	assert.Contains(t, recipe(), "--include=systemd,systemd-sysv,dbus,openssh-server")
}

func TestFindMirror(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, sources, want string }{
		{"deb822", `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
`, "http://deb.debian.org/debian"},
		{"deb822 security first", `Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main contrib
`, "http://mirror.example/debian"},
		{"deb822 disabled", `Types: deb
URIs: http://off.example/debian
Suites: bookworm
Components: main
Enabled: no
`, ""},
		{"one-line", `# comment
deb-src http://src.example/debian bookworm main
deb http://deb.example/debian bookworm-updates main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian.gpg] http://mirror.example/debian bookworm main contrib
`, "http://mirror.example/debian"},
		{"other suites only", "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n", ""},
		{"no main", "deb http://x.example/debian bookworm contrib\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, findMirror(tt.sources, "bookworm"))
		})
	}
}

func TestNspawnArgs(t *testing.T) {
	t.Parallel()
	args := nspawnArgs(Options{Name: "pi", Tree: "/c/tree", NetNSPath: "/run/netns/ll1-pi",
		Binds: []Bind{{Host: "/h/a:b"}, {Host: "/h/ro", Container: "/mnt/ro", ReadOnly: true}}, Args: []string{"--capability=CAP_NET_ADMIN"}}, "pi-77-1")
	for _, want := range []string{"--register=no", "--keep-unit", "--boot", "--directory=/c/tree", "--volatile=overlay", "--machine=pi-77-1", "--hostname=pi",
		"--network-namespace-path=/run/netns/ll1-pi", `--bind=/h/a\:b:/h/a\:b`, "--bind-ro=/h/ro:/mnt/ro", "--capability=CAP_NET_ADMIN"} {
		assert.Contains(t, args, want)
	}
	assert.NotContains(t, args, "--private-network")
	assert.Contains(t, nspawnArgs(Options{Name: "x", Tree: "/t"}, "x-1-1"), "--private-network", "never the host's network")
}

func TestNames(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"pi", "jump-host-1", "A0", strings.Repeat("a", 64)} {
		assert.NoError(t, validName(ok), ok)
	}
	for _, bad := range []string{"", "-pi", "pi-", "pi_1", "pi.lan", "pi 1", strings.Repeat("a", 65)} {
		assert.Error(t, validName(bad), bad)
	}
	assert.Equal(t, "testagentunitdeadbastion-sub-test-3", defaultName("TestAgentUnitDeadBastion/sub_test", 3))
	assert.Equal(t, "machine-1", defaultName("///", 1))
	assert.Equal(t, "pi-4242-7", uniqueName("pi", 4242, 7))
	u := uniqueName(strings.Repeat("a", 63)+"-b", 4242, 7)
	assert.NoError(t, validName(u), u)
	assert.True(t, strings.HasSuffix(u, "a-4242-7"), u)
	long := defaultName(strings.Repeat("x", 100), 12)
	assert.NoError(t, validName(long))
	assert.LessOrEqual(t, len(long), 64)
}

func TestProcParsing(t *testing.T) {
	t.Parallel()
	assert.Equal(t, 4242, parentPID("17 (systemd (x)) S 4242 17 17 0 -1 4194560"))
	assert.Equal(t, -1, parentPID("garbage"))
	assert.True(t, isNSInit("Name:\tsystemd\nNSpid:\t23361\t1\nNSpgid:\t23361\t1\n"))
	assert.False(t, isNSInit("Name:\tsh\nNSpid:\t23361\n"), "the host's own PID namespace")
	assert.False(t, isNSInit("NSpid:\t23400\t7\n"))

	own := ownCgroups("9:name=systemd:/\n4:memory:/process_api/fe36\n2:cpu,cpuacct:/x\n0::/user.slice/s.scope\n")
	assert.Equal(t, "/", own["name=systemd"])
	assert.Equal(t, "/user.slice/s.scope", own[""])
	assert.Equal(t, "/x", own["cpuacct"])
}

func TestRing(t *testing.T) {
	t.Parallel()
	r := &ring{max: 8}
	r.Write([]byte("hello "))
	r.Write([]byte("world"))
	assert.Equal(t, "lo world", string(r.Bytes()))
	assert.Equal(t, "c\nd", tail([]byte("a\nb\nc\nd\n"), 2))
}

// TestEnsureTreeBuildsOnce runs two processes (this binary again) that ask
// for a missing tree at once, with debootstrap replaced by a fake that
// takes a while: it runs once, and both get the same complete tree.
func TestEnsureTreeBuildsOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var wg sync.WaitGroup
	outs := make([]string, 3)
	errs := make([]error, 3)
	for i := range outs {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperEnsureTree$", "-test.v")
			cmd.Env = append(os.Environ(), "LIFELINE_NSPAWN_HELPER_DIR="+dir, fmt.Sprintf("LIFELINE_NSPAWN_HELPERS=%d", len(outs)))
			out, err := cmd.CombinedOutput()
			outs[i], errs[i] = string(out), err
		})
	}
	wg.Wait()
	for i := range outs {
		require.NoError(t, errs[i], outs[i])
		assert.Contains(t, outs[i], "tree="+filepath.Join(dir, treeName()))
	}
	runs, err := os.ReadFile(filepath.Join(dir, "debootstrap-runs"))
	require.NoError(t, err)
	assert.Equal(t, "x", string(runs), "debootstrap ran once for three processes")
	fi, err := os.Stat(filepath.Join(dir, treeName()))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), "a container's / is traversable")
	id, err := os.ReadFile(filepath.Join(dir, treeName(), "etc/machine-id"))
	require.NoError(t, err)
	assert.Empty(t, id, "each machine gets its own ID")
	left, _ := filepath.Glob(filepath.Join(dir, ".build-*"))
	assert.Empty(t, left, "no temporary tree left")
}

// TestHelperEnsureTree is TestEnsureTreeBuildsOnce's child process.
func TestHelperEnsureTree(t *testing.T) {
	dir := os.Getenv("LIFELINE_NSPAWN_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process of TestEnsureTreeBuildsOnce")
	}
	runDebootstrap = func(_ context.Context, root, _, _ string) error {
		f, err := os.OpenFile(filepath.Join(dir, "debootstrap-runs"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		f.WriteString("x")
		f.Close()
		// Build only once every helper asks for the tree: the others then
		// wait for the lock this build holds.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(20 * time.Second); ; <-tick.C {
			started, _ := os.ReadFile(filepath.Join(dir, "started"))
			if strconv.Itoa(len(started)) == os.Getenv("LIFELINE_NSPAWN_HELPERS") || time.Now().After(deadline) {
				break
			}
		}
		for _, d := range []string{"usr/lib/systemd", "etc/systemd/system", "etc/ssh", "var/lib/dbus"} {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				return err
			}
		}
		os.WriteFile(filepath.Join(root, "etc/machine-id"), []byte("fbbbbbc06c454714b1526a05add57b54\n"), 0o444)
		os.WriteFile(filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"), []byte("secret"), 0o600)
		return os.WriteFile(filepath.Join(root, "usr/lib/systemd/systemd"), []byte("#!/bin/false\n"), 0o755)
	}
	if f, err := os.OpenFile(filepath.Join(dir, "started"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
		f.WriteString("x")
		f.Close()
	}
	path, _, err := ensureTree(dir, t.Logf)
	require.NoError(t, err)
	fmt.Println("tree=" + path)
	_, err = os.Stat(filepath.Join(path, "etc/ssh/ssh_host_ed25519_key"))
	assert.ErrorIs(t, err, os.ErrNotExist, "host keys are made per machine")
}
