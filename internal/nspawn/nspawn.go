// Package nspawn boots real systemd machines for tests: Debian bookworm
// containers run by systemd-nspawn, each in a network namespace the test
// made, with systemd as PID 1. It is for what only a booted systemd shows:
// packages installing, units and their sandboxes, Type=notify readiness,
// restarts, watchdogs, boot order. Only _test.go files import it.
//
//	tree := nspawn.Tree(t) // cached debootstrap, built once (about 45 s)
//	pi := nspawn.Boot(t, nspawn.Options{Name: "pi", NetNSPath: "/run/netns/ll123-pi"})
//	pi.Install(debs...)
//	out, err := pi.Run(ctx, "systemctl", "is-active", "lifeline-agent")
//
// Every machine boots a throw-away copy of the one cached tree
// (systemd-nspawn --volatile=overlay: the tree is the read-only lower layer,
// writes go to a tmpfs that vanishes with the machine), so any number run at
// once and none changes the cache. Measured here, from nspawn's start to
// `systemctl is-system-running` saying "running" (274 MB tree, ext4, 2 CPUs):
// --volatile=overlay 0.3-0.65 s; an overlayfs mounted by hand 0.26-0.9 s
// (and a mount to clean up); `cp -a` of the tree 1.1 s warm, 4-10 s cold,
// plus 0.35 s of boot; --ephemeral (nspawn copies the tree on ext4) 1.4-11 s.
// Boot as a whole (finding PID 1, nsenter, the wait) takes 0.6-1.5 s.
//
// Machines never see the host's network: a machine joins Options.NetNSPath
// (a namespace the test created, e.g. with `ip netns add`) or, without one,
// gets --private-network (loopback only). They are registered with no
// machined (--register=no --keep-unit: the host's PID 1 need not be
// systemd); each nspawn runs in a cgroup of its own below the test's, so
// machines booted at once do not share nspawn's payload cgroup, and nspawn
// knows each by a name unique on the host (Name-PID-N; the hostname is
// Name), so test binaries running at once may use the same Names.
//
// Commands run inside by nsenter into every namespace of the machine's
// PID 1 (the child of the nspawn process Boot started that is PID 1 in its
// own PID namespace), as root, with a clean environment; they stay in the
// test's cgroup, outside the machine's units.
//
// Boot registers the machine's end with t.Cleanup: `systemctl poweroff`
// inside, a wait for the nspawn process, SIGKILL to it and to the machine's
// PID 1 (processes this package started, by PID) if it hangs. On a failed
// test the tail of the machine's journal and console go to t.Log first.
// Create the network namespace before Boot, so its cleanup (deleting it)
// runs after the machine is gone.
//
// Tests skip (naming the Debian package) when not root or debootstrap
// (debootstrap) or systemd-nspawn (systemd-container) is missing.
package nspawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Options describe one machine.
type Options struct {
	// Name is the machine's name and hostname: letters, digits and '-', at
	// most 64. Empty: made from the test's name.
	Name string
	// NetNSPath is the network namespace the machine joins, e.g.
	// /run/netns/ll1234-pi (the test made it and owns it). Empty: a private
	// network namespace with only loopback.
	NetNSPath string
	// Binds are host paths mounted into the machine.
	Binds []Bind
	// Tree is the OS tree to boot (read-only, shared). Empty: Tree(t).
	Tree string
	// Args are more systemd-nspawn arguments (e.g. --capability=).
	Args []string
	// BootTimeout bounds the boot, until `systemctl is-system-running`
	// says running or degraded. Zero: 2 minutes.
	BootTimeout time.Duration
}

// Bind mounts Host at Container (the same path when empty) in the machine.
type Bind struct {
	Host, Container string
	ReadOnly        bool
}

// Machine is a booted container. Its methods may be called from any
// goroutine, except the ones that fail the test (CopyIn, WriteFile,
// Install), which belong on the test's goroutine.
type Machine struct {
	t       testing.TB
	name    string
	nspawn  *exec.Cmd
	pid1    int
	done    chan struct{} // closed once nspawn exited
	exitErr error         // nspawn's exit, valid after done
	console *ring
	cgroups []string
	stop    sync.Once
}

// Timeouts of the machine's end.
const (
	poweroffWait = 30 * time.Second
	killWait     = 10 * time.Second
)

var seq atomic.Int64

// Boot starts a machine and waits until its systemd has booted (running
// or degraded; degraded logs the failed units). It fails the test when the
// machine does not boot, and skips it like Tree.
func Boot(t testing.TB, o Options) *Machine {
	t.Helper()
	Need(t)
	if o.Tree == "" {
		o.Tree = Tree(t)
	}
	if o.Name == "" {
		o.Name = defaultName(t.Name(), seq.Add(1))
	}
	if err := validName(o.Name); err != nil {
		t.Fatalf("nspawn: %v", err)
	}
	if o.BootTimeout <= 0 {
		o.BootTimeout = 2 * time.Minute
	}
	if o.NetNSPath != "" {
		if _, err := os.Stat(o.NetNSPath); err != nil {
			t.Fatalf("nspawn: network namespace %s: %v", o.NetNSPath, err)
		}
	}
	m := &Machine{t: t, name: o.Name, done: make(chan struct{}), console: &ring{max: 64 << 10}}
	unique := uniqueName(o.Name, os.Getpid(), seq.Add(1))
	cgroups, err := makeCgroups("lifeline-nspawn-" + unique)
	if err != nil {
		t.Fatalf("nspawn: %v", err)
	}
	m.cgroups = cgroups
	procs := make([]string, len(cgroups))
	for i, c := range cgroups {
		procs[i] = filepath.Join(c, "cgroup.procs")
	}
	// The wrapper moves itself into the machine's cgroups, then becomes
	// systemd-nspawn (same PID).
	args := append([]string{"-c", `for f in $LIFELINE_NSPAWN_CGROUPS; do echo $$ >"$f" || exit 125; done; exec "$@"`,
		"nspawn-wrapper", "systemd-nspawn"}, nspawnArgs(o, unique)...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = append(os.Environ(), "LIFELINE_NSPAWN_CGROUPS="+strings.Join(procs, " "), "SYSTEMD_COLORS=0")
	cmd.Stdout, cmd.Stderr = m.console, m.console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		removeCgroups(cgroups)
		t.Fatalf("nspawn: start systemd-nspawn: %v", err)
	}
	m.nspawn = cmd
	go func() {
		m.exitErr = cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(m.shutdown)

	ctx, cancel := context.WithTimeout(context.Background(), o.BootTimeout)
	defer cancel()
	if err := m.waitBoot(ctx); err != nil {
		t.Fatalf("nspawn: machine %s did not boot: %v\nconsole (tail):\n%s", o.Name, err, tail(m.console.Bytes(), 60))
	}
	t.Logf("nspawn: machine %s booted in %s (PID 1 is host PID %d)", o.Name, time.Since(start).Round(10*time.Millisecond), m.pid1)
	return m
}

// nspawnArgs are systemd-nspawn's arguments for o, the machine known to
// nspawn as unique.
func nspawnArgs(o Options, unique string) []string {
	args := []string{
		"--quiet", "--register=no", "--keep-unit", "--boot",
		"--directory=" + o.Tree, "--volatile=overlay",
		"--machine=" + unique, "--hostname=" + o.Name,
		"--console=read-only", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
	}
	if o.NetNSPath != "" {
		args = append(args, "--network-namespace-path="+o.NetNSPath)
	} else {
		args = append(args, "--private-network")
	}
	for _, b := range o.Binds {
		flag := "--bind="
		if b.ReadOnly {
			flag = "--bind-ro="
		}
		dst := b.Container
		if dst == "" {
			dst = b.Host
		}
		args = append(args, flag+escapeColon(b.Host)+":"+escapeColon(dst))
	}
	return append(args, o.Args...)
}

// uniqueName is the name nspawn knows a machine by: Name made unique on
// the host (nspawn keeps per-name state in /run/systemd/nspawn, and other
// test binaries may boot a machine of the same Name at the same time).
func uniqueName(name string, pid int, n int64) string {
	suffix := fmt.Sprintf("-%d-%d", pid, n)
	if len(name)+len(suffix) > 64 {
		name = strings.TrimRight(name[:64-len(suffix)], "-")
	}
	return name + suffix
}

// escapeColon escapes the separators of --bind= (and its backslash).
func escapeColon(p string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(p)
}

func validName(n string) error {
	if n == "" || len(n) > 64 || n[0] == '-' || n[len(n)-1] == '-' {
		return fmt.Errorf("machine name %q: 1 to 64 letters, digits and '-', not at either end", n)
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("machine name %q: only letters, digits and '-'", n)
		}
	}
	return nil
}

// defaultName makes a machine name from a test's name.
func defaultName(test string, n int64) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(test) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= 40 {
			break
		}
	}
	s := strings.Trim(b.String(), "-")
	if s == "" {
		s = "machine"
	}
	return fmt.Sprintf("%s-%d", s, n)
}

// waitBoot finds the machine's PID 1 and waits for its systemd to finish
// booting.
func (m *Machine) waitBoot(ctx context.Context) error {
	nspawnPID := m.nspawn.Process.Pid
	for m.pid1 == 0 {
		if pid := findPID1(nspawnPID); pid > 0 {
			m.pid1 = pid
			break
		}
		if err := m.pause(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	for {
		// Before systemd runs (or its bus is up) this fails or says
		// "offline"; --wait returns once the boot ended.
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, runErr := m.Run(c, "systemctl", "is-system-running", "--wait")
		cancel()
		state := strings.TrimSpace(out)
		switch state {
		case "running":
			return nil
		case "degraded":
			failed, _ := m.Run(ctx, "systemctl", "--failed", "--no-legend", "--plain")
			m.t.Logf("nspawn: machine %s booted degraded; failed units:\n%s", m.name, failed)
			return nil
		case "maintenance", "stopping":
			return fmt.Errorf("system state %q", state)
		}
		if err := m.pause(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("%w (last state %q, %v)", err, state, runErr)
		}
	}
}

// pause waits d, or fails when ctx ends or nspawn exited.
func (m *Machine) pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-m.done:
		return fmt.Errorf("systemd-nspawn exited: %v", m.exitErr)
	case <-time.After(d):
		return nil
	}
}

// findPID1 is the machine's init among nspawn's children: PID 1 in its own
// PID namespace, and no longer nspawn itself (before exec, nspawn's inner
// child already has PID 1 there).
func findPID1(nspawnPID int) int {
	ents, _ := os.ReadDir("/proc")
	self, _ := os.Readlink("/proc/" + strconv.Itoa(nspawnPID) + "/exe")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + e.Name()
		st, err := os.ReadFile(dir + "/stat")
		if err != nil || parentPID(string(st)) != nspawnPID {
			continue
		}
		status, err := os.ReadFile(dir + "/status")
		if err != nil || !isNSInit(string(status)) {
			continue
		}
		if exe, err := os.Readlink(dir + "/exe"); err != nil || exe == self {
			continue
		}
		return pid
	}
	return 0
}

// parentPID is the PPid field of a /proc/PID/stat line (-1 if unreadable).
func parentPID(stat string) int {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 2 {
		return -1
	}
	p, err := strconv.Atoi(f[1])
	if err != nil {
		return -1
	}
	return p
}

// isNSInit reports whether a /proc/PID/status describes PID 1 of a nested
// PID namespace (NSpid: HOSTPID ... 1).
func isNSInit(status string) bool {
	for line := range strings.SplitSeq(status, "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			return len(f) >= 2 && f[len(f)-1] == "1"
		}
	}
	return false
}

// Name is the machine's name (and hostname).
func (m *Machine) Name() string { return m.name }

// PID is the host PID of the machine's PID 1 (its systemd).
func (m *Machine) PID() int { return m.pid1 }

// containerEnv is the environment of commands run inside.
var containerEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "DEBIAN_FRONTEND=noninteractive",
	"SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
}

// Run runs a command inside the machine as root (nsenter into every
// namespace of its PID 1, with a clean environment) and returns its
// standard output. A failure's error holds the exit status and the
// standard error. When ctx ends the command is killed (SIGKILL to the
// process group Run started).
func (m *Machine) Run(ctx context.Context, args ...string) (string, error) {
	return m.run(ctx, nil, args...)
}

// Sh runs script with /bin/sh -c inside the machine, like Run.
func (m *Machine) Sh(ctx context.Context, script string) (string, error) {
	return m.run(ctx, nil, "/bin/sh", "-c", script)
}

func (m *Machine) run(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("nspawn: Run: no command")
	}
	select {
	case <-m.done:
		return "", fmt.Errorf("nspawn: machine %s is not running (systemd-nspawn exited: %v)", m.name, m.exitErr)
	default:
	}
	nargs := append([]string{"--target=" + strconv.Itoa(m.pid1), "--all", "--root", "--wd", "--"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", nargs...)
	cmd.Env = containerEnv
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// nsenter forks the command into the machine's PID namespace and does
	// not pass signals on: kill the whole process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("in %s: %s: %w\n%s", m.name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// setupTimeout bounds CopyIn, WriteFile and Install.
const setupTimeout = 5 * time.Minute

// CopyIn copies a host file or directory (recursively, owned by root
// inside) to containerPath, making missing parent directories. It fails
// the test on error.
func (m *Machine) CopyIn(hostPath, containerPath string) {
	m.t.Helper()
	if err := m.copyIn(hostPath, containerPath); err != nil {
		m.t.Fatalf("nspawn: copy %s to %s:%s: %v", hostPath, m.name, containerPath, err)
	}
}

func (m *Machine) copyIn(hostPath, containerPath string) error {
	fi, err := os.Stat(hostPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if fi.Mode().IsRegular() {
		f, err := os.Open(hostPath)
		if err != nil {
			return err
		}
		defer f.Close()
		return m.writeFrom(ctx, f, containerPath, fi.Mode().Perm())
	}
	if !fi.IsDir() {
		return errors.New("neither a regular file nor a directory")
	}
	tar := exec.CommandContext(ctx, "tar", "-C", hostPath, "-cf", "-", ".")
	out, err := tar.StdoutPipe()
	if err != nil {
		return err
	}
	var tarErr bytes.Buffer
	tar.Stderr = &tarErr
	if err := tar.Start(); err != nil {
		return err
	}
	_, rerr := m.run(ctx, out, "/bin/sh", "-c", `mkdir -p "$1" && tar -C "$1" --no-same-owner -xf -`, "sh", containerPath)
	if werr := tar.Wait(); werr != nil {
		return fmt.Errorf("tar: %w: %s", werr, tarErr.String())
	}
	return rerr
}

// WriteFile writes data to containerPath with perm (owned by root),
// making missing parent directories. It fails the test on error.
func (m *Machine) WriteFile(containerPath string, data []byte, perm os.FileMode) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := m.writeFrom(ctx, bytes.NewReader(data), containerPath, perm); err != nil {
		m.t.Fatalf("nspawn: write %s:%s: %v", m.name, containerPath, err)
	}
}

func (m *Machine) writeFrom(ctx context.Context, r io.Reader, path string, perm os.FileMode) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%q is not an absolute path", path)
	}
	_, err := m.run(ctx, r, "/bin/sh", "-c", `set -e; mkdir -p "$(dirname "$1")"; t="$1.nspawn-tmp"; cat >"$t"; chmod "$2" "$t"; mv -f "$t" "$1"`,
		"sh", path, strconv.FormatUint(uint64(perm.Perm()), 8))
	return err
}

// Install installs .deb files (host paths) with dpkg -i, all in one
// transaction. It fails the test on error, with dpkg's output.
func (m *Machine) Install(debs ...string) {
	m.t.Helper()
	if len(debs) == 0 {
		return
	}
	const dir = "/var/tmp/lifeline-nspawn-debs"
	var inside []string
	for _, d := range debs {
		p := dir + "/" + filepath.Base(d)
		m.CopyIn(d, p)
		inside = append(inside, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	args := append([]string{"/bin/sh", "-c", `dpkg -i "$@" 2>&1; rc=$?; rm -rf ` + dir + `; exit $rc`, "sh"}, inside...)
	out, err := m.run(ctx, nil, args...)
	if err != nil {
		m.t.Fatalf("nspawn: dpkg -i %s in %s: %v\n%s", strings.Join(debs, " "), m.name, err, out)
	}
}

// Journal is the last n lines of the machine's journal of this boot.
func (m *Machine) Journal(n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := m.Run(ctx, "journalctl", "-b", "--no-pager", "-o", "short-precise", "-n", strconv.Itoa(n))
	if err != nil {
		return out + "\n(journalctl: " + err.Error() + ")"
	}
	return out
}

// shutdown ends the machine: poweroff inside, then SIGKILL by PID if it
// hangs. It is the cleanup Boot registers.
func (m *Machine) shutdown() {
	m.stop.Do(func() {
		running := true
		select {
		case <-m.done:
			running = false
		default:
		}
		if m.t.Failed() && running && m.pid1 > 0 {
			m.t.Logf("nspawn: machine %s journal (tail):\n%s", m.name, m.Journal(300))
		}
		if m.t.Failed() {
			m.t.Logf("nspawn: machine %s console (tail):\n%s", m.name, tail(m.console.Bytes(), 40))
		}
		if running && m.pid1 > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			// Its connection may be cut by the shutdown it starts.
			m.Run(ctx, "systemctl", "poweroff")
			cancel()
		}
		select {
		case <-m.done:
		case <-time.After(poweroffWait):
			m.t.Logf("nspawn: machine %s did not power off within %s: killing it", m.name, poweroffWait)
			if m.pid1 > 0 {
				syscall.Kill(m.pid1, syscall.SIGKILL)
			}
			m.nspawn.Process.Kill()
			select {
			case <-m.done:
			case <-time.After(killWait):
				m.t.Errorf("nspawn: systemd-nspawn (PID %d) of %s still runs after SIGKILL", m.nspawn.Process.Pid, m.name)
				return
			}
		}
		if err := removeCgroups(m.cgroups); err != nil {
			m.t.Logf("nspawn: %v", err)
		}
	})
}

// ring keeps the last max bytes written to it.
type ring struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, p...)
	if over := len(r.buf) - r.max; over > 0 {
		r.buf = append(r.buf[:0], r.buf[over:]...)
	}
	return len(p), nil
}

func (r *ring) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf...)
}
