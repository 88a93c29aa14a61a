package systemd_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const releaseVersion = "0.1.0"

// releaseArtifacts are the files `make release` publishes besides SHA256SUMS
// and its signature.
var releaseArtifacts = []string{
	"lifeline-agent_0.1.0_amd64.deb", "lifeline-agent_0.1.0_arm64.deb", "lifeline-agent_0.1.0_armhf.deb",
	"lifeline-bastion_0.1.0_amd64.deb", "lifeline-bastion_0.1.0_arm64.deb", "lifeline-bastion_0.1.0_armhf.deb",
	"lifeline_0.1.0_linux_amd64.tar.gz", "lifeline_0.1.0_linux_arm64.tar.gz", "lifeline_0.1.0_linux_armv6.tar.gz",
}

// makeEnv is the environment of a make run: this one without the variables
// that would change what the Makefile does, plus extra.
func makeEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LIFELINE_RELEASE_KEY", "SIGN", "VERSION", "RELEASE_DIR", "RELEASE_PLATFORMS", "ALLOWED_SIGNERS",
			"ALLOW_DIRTY", "DIST", "DIST_PLATFORMS", "SOURCE_DATE_EPOCH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// runMake runs make in dir and returns its stdout, stderr and error.
func runMake(t *testing.T, dir string, env []string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", append([]string{"-s"}, args...)...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// snapshot copies the repository's files (tracked and untracked, not
// ignored; as they are in the working tree) into a new folder, so that a
// build sees one state of the tree however long it takes, from a path of
// its own.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	require.NoError(t, err, "git ls-files")
	dst := t.TempDir()
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, rel)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the working tree, or not a file
		}
		target := filepath.Join(dst, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(target), 0o755))
		in, err := os.Open(src)
		require.NoError(t, err)
		w, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
		require.NoError(t, err)
		_, err = io.Copy(w, in)
		in.Close()
		require.NoError(t, err)
		require.NoError(t, w.Close())
	}
	return dst
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// TestReleaseRefuses: `make release` stops before building anything without
// a signing key, a version or a clean checkout, and for a version that is
// not X.Y.Z.
func TestReleaseRefuses(t *testing.T) {
	need(t, "make")
	need(t, "git")
	t.Parallel()
	root := repoRoot(t)
	key := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(key, []byte("not used: refused before signing\n"), 0o600))
	tests := []struct {
		name string
		env  []string
		args []string
		says string
	}{
		{"no key", nil, []string{"release", "VERSION=0.1.0"}, "LIFELINE_RELEASE_KEY is not set"},
		{"key not a file", []string{"LIFELINE_RELEASE_KEY=/nonexistent/key"}, []string{"release", "VERSION=0.1.0"}, "is not a readable file"},
		{"no version, no tag", []string{"GIT_DIR=/nonexistent"}, []string{"release-unsigned"}, "no VERSION given and no tag at HEAD"},
		{"not X.Y.Z", nil, []string{"release-unsigned", "VERSION=0.1"}, "VERSION '0.1' is not X.Y.Z"},
		{"pre-release", nil, []string{"release-unsigned", "VERSION=0.1.0-rc1"}, "VERSION '0.1.0-rc1' is not X.Y.Z"},
		{"four numbers", nil, []string{"release-unsigned", "VERSION=0.1.0.1"}, "VERSION '0.1.0.1' is not X.Y.Z"},
		{"not a git checkout", []string{"GIT_DIR=/nonexistent", "LIFELINE_RELEASE_KEY=" + key}, []string{"release", "VERSION=0.1.0"}, "not a clean git checkout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "release")
			out, stderr, err := runMake(t, root, makeEnv(tt.env...), append(tt.args, "RELEASE_DIR="+dir)...)
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "make %v accepted it:\n%s%s", tt.args, out, stderr)
			assert.Equal(t, 2, ee.ExitCode())
			assert.Contains(t, stderr, tt.says)
			assert.NoDirExists(t, dir, "nothing is built")
		})
	}
}

// TestReleaseReproducibleAndSigned builds the release of version 0.1.0
// twice, from two copies of the tree in two folders: once unsigned, once
// signed with a throwaway key. Both hold the nine artifacts and the same
// SHA256SUMS byte for byte; the signature verifies with the command of
// README.md ("Releases"), which fails for a changed SHA256SUMS or artifact;
// signing with another key than allowed_signers lists is refused.
func TestReleaseReproducibleAndSigned(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release twice (3 platforms x 3 programs): not in -short")
	}
	for _, p := range []string{"make", "go", "git", "help2man", "ssh-keygen", "sha256sum", "sh"} {
		need(t, p)
	}
	t.Parallel()
	root := repoRoot(t)
	epoch, err := exec.Command("git", "-C", root, "log", "-1", "--format=%ct").Output()
	require.NoError(t, err)
	// The copies are no git checkouts: the commit time comes from here.
	sde := "SOURCE_DATE_EPOCH=" + strings.TrimSpace(string(epoch))

	keys := t.TempDir()
	for _, k := range []string{"release", "other"} {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release@lifeline",
			"-f", filepath.Join(keys, k)).CombinedOutput()
		require.NoError(t, err, "ssh-keygen: %s", out)
	}
	pub, err := os.ReadFile(filepath.Join(keys, "release.pub"))
	require.NoError(t, err)
	allowed := filepath.Join(keys, "allowed_signers")
	require.NoError(t, os.WriteFile(allowed,
		[]byte(`release@lifeline namespaces="lifeline-release" `+strings.TrimSpace(string(pub))+"\n"), 0o644))

	a, b := snapshot(t, root), snapshot(t, root)
	start := time.Now()
	out, stderr, err := runMake(t, a, makeEnv(sde), "release-unsigned", "VERSION="+releaseVersion)
	require.NoError(t, err, "make release-unsigned:\n%s%s", out, stderr)
	t.Logf("make release-unsigned: %s", time.Since(start).Round(time.Second))
	start = time.Now()
	out, stderr, err = runMake(t, b, makeEnv(sde, "LIFELINE_RELEASE_KEY="+filepath.Join(keys, "release")),
		"release", "VERSION="+releaseVersion, "ALLOW_DIRTY=1", "ALLOWED_SIGNERS="+allowed)
	require.NoError(t, err, "make release:\n%s%s", out, stderr)
	t.Logf("make release (signed): %s", time.Since(start).Round(time.Second))
	assert.NotContains(t, stderr, "warning", "ALLOWED_SIGNERS lists the key")

	relA, relB := filepath.Join(a, "dist/release"), filepath.Join(b, "dist/release")
	want := append([]string{"SHA256SUMS"}, releaseArtifacts...)
	sort.Strings(want)
	assert.Equal(t, want, listDir(t, relA), "dist/release of make release-unsigned")
	signed := append([]string{"SHA256SUMS.sig"}, want...)
	sort.Strings(signed)
	assert.Equal(t, signed, listDir(t, relB), "dist/release of make release")

	sumsA, err := os.ReadFile(filepath.Join(relA, "SHA256SUMS"))
	require.NoError(t, err)
	sumsB, err := os.ReadFile(filepath.Join(relB, "SHA256SUMS"))
	require.NoError(t, err)
	assert.Equal(t, string(sumsA), string(sumsB), "two builds of one tree, two SHA256SUMS")
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(string(sumsA)), "\n") {
		f := strings.Fields(line)
		require.Len(t, f, 2, "SHA256SUMS line %q", line)
		assert.Regexp(t, `^[0-9a-f]{64}$`, f[0])
		listed = append(listed, f[1])
	}
	sort.Strings(listed)
	assert.Equal(t, releaseArtifacts, listed, "SHA256SUMS covers every artifact and nothing else")

	// The owners' verification, as README.md writes it.
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	verify := regexp.MustCompile(`(?m)^ssh-keygen -Y verify .*$`).FindString(string(readme))
	require.NotEmpty(t, verify, "README.md has no ssh-keygen -Y verify command")
	assert.Equal(t, `ssh-keygen -Y verify -f allowed_signers -I release@lifeline -n lifeline-release -s SHA256SUMS.sig < SHA256SUMS && sha256sum --ignore-missing -c SHA256SUMS`, verify)
	data, err := os.ReadFile(allowed)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(relB, "allowed_signers"), data, 0o644))
	check := func() (string, error) {
		cmd := exec.Command("sh", "-c", verify)
		cmd.Dir = relB
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	msg, err := check()
	require.NoError(t, err, "verification of the signed release:\n%s", msg)
	assert.Contains(t, msg, `Good "lifeline-release" signature for release@lifeline`)
	assert.Equal(t, len(releaseArtifacts), strings.Count(msg, ": OK\n"), "every artifact checked:\n%s", msg)

	// A changed SHA256SUMS fails the signature, a changed artifact its sum.
	sums := filepath.Join(relB, "SHA256SUMS")
	require.NoError(t, os.WriteFile(sums, append(append([]byte{}, sumsB...), "0000000000000000000000000000000000000000000000000000000000000000  evil.deb\n"...), 0o644))
	msg, err = check()
	assert.Error(t, err, "a changed SHA256SUMS verified:\n%s", msg)
	require.NoError(t, os.WriteFile(sums, sumsB, 0o644))
	deb := filepath.Join(relB, "lifeline-agent_0.1.0_armhf.deb")
	orig, err := os.ReadFile(deb)
	require.NoError(t, err)
	changed := append([]byte{}, orig...)
	changed[len(changed)/2] ^= 1
	require.NoError(t, os.WriteFile(deb, changed, 0o644))
	msg, err = check()
	assert.Error(t, err, "a changed package verified:\n%s", msg)
	assert.Contains(t, msg, "lifeline-agent_0.1.0_armhf.deb: FAILED")
	require.NoError(t, os.WriteFile(deb, orig, 0o644))

	// Signing with a key allowed_signers does not list is refused.
	out, stderr, err = runMake(t, root, makeEnv("LIFELINE_RELEASE_KEY="+filepath.Join(keys, "other")),
		"release-sign", "RELEASE_DIR="+relB, "ALLOWED_SIGNERS="+allowed)
	require.Error(t, err, "make release-sign with another key:\n%s%s", out, stderr)
	assert.Contains(t, stderr, "is not by the key")
	assert.NoFileExists(t, filepath.Join(relB, "SHA256SUMS.sig"), "the wrong signature is removed")
}

// TestAllowedSignersFile: packaging/allowed_signers is the placeholder (no
// key yet) or lists the release key in the form the verification needs.
func TestAllowedSignersFile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("packaging/allowed_signers")
	require.NoError(t, err)
	line := regexp.MustCompile(`^release@lifeline namespaces="lifeline-release" (ssh-ed25519|sk-ssh-ed25519@openssh\.com) AAAA[A-Za-z0-9+/]+=*( \S.*)?$`)
	keys := 0
	for _, l := range strings.Split(string(data), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		keys++
		assert.Regexp(t, line, l, "allowed_signers line")
	}
	if keys == 0 {
		assert.Contains(t, string(data), "PLACEHOLDER", "an allowed_signers without a key says it is a placeholder")
		t.Log("packaging/allowed_signers is the placeholder: no release key yet")
	}
	assert.LessOrEqual(t, keys, 1, "one release key")
	assert.NotContains(t, string(data), "PRIVATE KEY", "never a private key")
}
