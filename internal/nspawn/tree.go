package nspawn

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Suite is the Debian release of every tree: the one the Pis (Raspberry Pi
// OS) and the jump hosts run.
const Suite = "bookworm"

// Packages are installed by debootstrap on top of the minbase variant:
// systemd as PID 1 (systemd-sysv) with D-Bus, so units, sandboxes, restarts
// and watchdogs behave as on a Pi; OpenSSH (the Pi's sshd, the operator's
// ssh); the network tools a test uses inside; and procps (ps, pgrep).
var Packages = []string{
	"systemd", "systemd-sysv", "dbus", "openssh-server", "openssh-client",
	"iproute2", "nftables", "ca-certificates", "procps",
}

// prepVersion names what prepare does to a fresh debootstrap. Bump it when
// prepare changes, so cached trees are rebuilt.
const prepVersion = "1"

// DefaultMirror is used when LIFELINE_NSPAWN_MIRROR is unset and no
// bookworm entry is found in /etc/apt/sources.list{,.d}.
const DefaultMirror = "http://deb.debian.org/debian"

// Environment variables that change where trees come from and go.
const (
	// EnvCache is the directory trees are cached in (default
	// <repo>/.cache/nspawn, which .gitignore covers).
	EnvCache = "LIFELINE_NSPAWN_CACHE"
	// EnvMirror is the Debian mirror debootstrap downloads from (default:
	// the host's own bookworm mirror from /etc/apt, else DefaultMirror).
	EnvMirror = "LIFELINE_NSPAWN_MIRROR"
)

// buildTimeout bounds one debootstrap (about 40 s on a warm mirror).
const buildTimeout = 15 * time.Minute

// recipe is everything a tree's content depends on; its hash names the
// tree's directory, so a changed package list gets a tree of its own.
func recipe() string {
	return fmt.Sprintf("debootstrap --variant=minbase --include=%s %s\nprepare %s\n",
		strings.Join(Packages, ","), Suite, prepVersion)
}

// treeName is the cache directory's entry for the current recipe.
func treeName() string {
	sum := sha256.Sum256([]byte(recipe()))
	return Suite + "-minbase-" + hex.EncodeToString(sum[:6])
}

// Tree returns the path of a Debian bookworm tree made by debootstrap
// (minbase plus Packages), ready to boot with Boot. It is built once (about
// 40 s, then cached in CacheDir across runs and test binaries: two binaries
// asking at once build it once, under a file lock, and a tree appears only
// complete, by rename). The tree is never written to afterwards: every Boot
// runs on a throw-away overlay of it, so any number of containers share it.
//
// Tree skips the test when it is not root or debootstrap/systemd-nspawn are
// missing, naming the Debian package to install; it fails the test when the
// build fails.
func Tree(t testing.TB) string {
	t.Helper()
	Need(t)
	dir, err := CacheDir()
	if err != nil {
		t.Fatalf("nspawn: %v", err)
	}
	start := time.Now()
	path, built, err := ensureTree(dir, t.Logf)
	if err != nil {
		t.Fatalf("nspawn: %v", err)
	}
	if built {
		t.Logf("nspawn: built %s in %s", path, time.Since(start).Round(100*time.Millisecond))
	}
	return path
}

// Need skips the test unless it runs as root with debootstrap,
// systemd-nspawn and nsenter installed.
func Need(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("nspawn: booting a systemd container needs root")
	}
	for _, p := range []struct{ prog, pkg string }{
		{"debootstrap", "debootstrap"}, {"systemd-nspawn", "systemd-container"}, {"nsenter", "util-linux"},
	} {
		if _, err := exec.LookPath(p.prog); err != nil {
			t.Skipf("nspawn: %s not installed (sudo apt-get install -y %s)", p.prog, p.pkg)
		}
	}
}

// CacheDir is where trees are kept: $LIFELINE_NSPAWN_CACHE if set, else
// .cache/nspawn in the repository the test runs in (found from the working
// directory, which `go test` sets to the package's).
func CacheDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return cacheDir(os.Getenv, wd)
}

func cacheDir(getenv func(string) string, wd string) (string, error) {
	if d := getenv(EnvCache); d != "" {
		if !filepath.IsAbs(d) {
			return "", fmt.Errorf("%s=%q: must be an absolute path", EnvCache, d)
		}
		return filepath.Clean(d), nil
	}
	root, err := repoRoot(wd)
	if err != nil {
		return "", fmt.Errorf("%w (set %s to cache trees elsewhere)", err, EnvCache)
	}
	return filepath.Join(root, ".cache", "nspawn"), nil
}

// modulePath is the module whose repository holds the cache.
const modulePath = "github.com/lifeline-dev/lifeline"

// repoRoot walks up from dir to the directory whose go.mod declares
// modulePath.
func repoRoot(dir string) (string, error) {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && declares(string(b), modulePath) {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no go.mod of %s in %s or above", modulePath, dir)
		}
	}
}

func declares(gomod, module string) bool {
	for line := range strings.SplitSeq(gomod, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "module" && strings.Trim(f[1], `"`) == module {
			return true
		}
	}
	return false
}

// inProcess serialises ensureTree within one test binary (flock is per open
// file, so two goroutines would both get it).
var inProcess sync.Mutex

// ensureTree returns dir/treeName(), building it first if it is missing;
// built says whether this call built it.
func ensureTree(dir string, logf func(string, ...any)) (path string, built bool, err error) {
	path = filepath.Join(dir, treeName())
	if ready(path) {
		return path, false, nil
	}
	inProcess.Lock()
	defer inProcess.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	unlock, err := lockFile(filepath.Join(dir, ".lock"))
	if err != nil {
		return "", false, err
	}
	defer unlock()
	if ready(path) { // another process built it while we waited
		return path, false, nil
	}
	// Leftovers of a build that was killed: only the lock holder builds,
	// so nobody is using them.
	if old, _ := filepath.Glob(filepath.Join(dir, ".build-*")); len(old) > 0 {
		for _, o := range old {
			os.RemoveAll(o)
		}
	}
	tmp, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return "", false, err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	root := filepath.Join(tmp, "root")
	mirror := Mirror()
	logf("nspawn: no cached tree %s: debootstrap %s from %s (about a minute)", path, Suite, mirror)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	if err := runDebootstrap(ctx, root, filepath.Join(dir, "debs"), mirror); err != nil {
		return "", false, err
	}
	if err := prepare(root); err != nil {
		return "", false, fmt.Errorf("prepare %s: %w", root, err)
	}
	if err := os.Rename(root, path); err != nil {
		return "", false, err
	}
	return path, true, nil
}

// ready reports whether a finished tree is at path (trees only appear by
// rename, complete).
func ready(path string) bool {
	fi, err := os.Stat(filepath.Join(path, "usr", "lib", "systemd", "systemd"))
	return err == nil && fi.Mode().IsRegular()
}

// lockFile takes an exclusive flock on path, waiting for it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// runDebootstrap is debootstrap; tests of the cache replace it.
var runDebootstrap = debootstrap

func debootstrap(ctx context.Context, root, debCache, mirror string) error {
	if err := os.MkdirAll(debCache, 0o755); err != nil {
		return err
	}
	args := []string{"--variant=minbase", "--include=" + strings.Join(Packages, ","),
		// Downloaded packages are kept, so a changed recipe rebuilds
		// without downloading everything again.
		"--cache-dir=" + debCache,
		Suite, root, mirror}
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	cmd.Env = append(os.Environ(), "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive")
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(root, "debootstrap", "debootstrap.log"))
		return fmt.Errorf("debootstrap %s: %w\n%s\ndebootstrap.log (tail):\n%s", strings.Join(args, " "), err, tail(out, 40), tail(log, 40))
	}
	return nil
}

// prepare makes a fresh debootstrap a template for many containers at once:
// nothing in it may tie two containers together or reach the host's
// network configuration.
func prepare(root string) error {
	p := func(rel string) string { return filepath.Join(root, rel) }
	// The directory is a container's /: other users must traverse it.
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	// An empty machine-id: each boot gets its own (nspawn passes a random
	// container UUID). The hostname is the machine's name (Options.Name).
	if err := os.WriteFile(p("etc/machine-id"), nil, 0o444); err != nil {
		return err
	}
	for _, rel := range []string{"etc/hostname", "var/lib/dbus/machine-id"} {
		if err := os.Remove(p(rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	// debootstrap copied the host's resolver: containers live in namespaces
	// of their own and must not send DNS queries anywhere.
	if err := os.Remove(p("etc/resolv.conf")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(p("etc/resolv.conf"), []byte("# lifeline test container: no DNS (addresses only)\n"), 0o644); err != nil {
		return err
	}
	// Host keys per container (a jump host and a Pi must not share them):
	// made at the first start of ssh.service, before Debian's `sshd -t`.
	keys, _ := filepath.Glob(p("etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(p("etc/systemd/system/ssh.service.d"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p("etc/systemd/system/ssh.service.d/lifeline-nspawn-hostkeys.conf"),
		[]byte("# lifeline test tree: each container makes its own host keys.\n[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n"), 0o644); err != nil {
		return err
	}
	// Periodic jobs would only add noise (apt would try the network).
	for _, u := range []string{"apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer", "e2scrub_all.timer"} {
		if err := os.Symlink("/dev/null", p("etc/systemd/system/"+u)); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	debs, _ := filepath.Glob(p("var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		os.Remove(d)
	}
	return os.WriteFile(p("etc/lifeline-nspawn-recipe"), []byte(recipe()), 0o644)
}

// Mirror is the Debian mirror trees are built from: $LIFELINE_NSPAWN_MIRROR,
// else the host's own bookworm mirror (/etc/apt/sources.list and
// sources.list.d, one-line and deb822 formats), else DefaultMirror.
func Mirror() string {
	if m := os.Getenv(EnvMirror); m != "" {
		return m
	}
	files := []string{"/etc/apt/sources.list"}
	more, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append(files, more...)
	for _, f := range files {
		if !strings.HasSuffix(f, ".list") && !strings.HasSuffix(f, ".sources") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if m := findMirror(string(b), Suite); m != "" {
			return m
		}
	}
	return DefaultMirror
}

// findMirror returns the URI of the first "deb" entry for suite (exactly:
// not suite-updates or suite-security) with the main component, in either
// sources format, or "".
func findMirror(sources, suite string) string {
	// One-line format: deb [options] URI SUITE COMPONENT...
	sc := bufio.NewScanner(strings.NewReader(sources))
	var stanza []string
	flush := func() string {
		defer func() { stanza = stanza[:0] }()
		return deb822Mirror(stanza, suite)
	}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			if m := flush(); m != "" {
				return m
			}
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Fields(line); len(f) > 0 && f[0] == "deb" {
			f = f[1:]
			if len(f) > 0 && strings.HasPrefix(f[0], "[") {
				for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
					f = f[1:]
				}
				if len(f) > 0 {
					f = f[1:]
				}
			}
			if len(f) >= 3 && f[1] == suite && slices.Contains(f[2:], "main") {
				return f[0]
			}
			continue
		}
		stanza = append(stanza, line)
	}
	return flush()
}

// deb822Mirror reads one deb822 stanza (Types:, URIs:, Suites:,
// Components:; Enabled: no turns it off).
func deb822Mirror(lines []string, suite string) string {
	fields := map[string][]string{}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		fields[strings.ToLower(strings.TrimSpace(k))] = strings.Fields(v)
	}
	if !slices.Contains(fields["types"], "deb") || !slices.Contains(fields["suites"], suite) || !slices.Contains(fields["components"], "main") ||
		slices.Contains(fields["enabled"], "no") || len(fields["uris"]) == 0 {
		return ""
	}
	return fields["uris"][0]
}

// tail is the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
