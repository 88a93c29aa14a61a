package nspawn

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// With --keep-unit, systemd-nspawn splits the cgroup it runs in into
// "payload" (the machine) and "supervisor" (itself). Two machines started
// from one cgroup would share them, so each nspawn is first moved into a
// cgroup of its own, below the test's, in every hierarchy nspawn uses: the
// unified one and, on a hybrid host (like these machines, whose PID 1 is no
// systemd), also the name=systemd one.

// hierarchy is a mounted cgroup hierarchy nspawn uses; key is its
// /proc/self/cgroup controller field ("" for cgroup2).
type hierarchy struct{ mount, key string }

func hierarchies() []hierarchy {
	if isCgroup2("/sys/fs/cgroup") {
		return []hierarchy{{"/sys/fs/cgroup", ""}}
	}
	var hs []hierarchy
	if isCgroup2("/sys/fs/cgroup/unified") {
		hs = append(hs, hierarchy{"/sys/fs/cgroup/unified", ""})
	}
	if _, err := os.Stat("/sys/fs/cgroup/systemd/cgroup.procs"); err == nil {
		hs = append(hs, hierarchy{"/sys/fs/cgroup/systemd", "name=systemd"})
	}
	return hs
}

func isCgroup2(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// ownCgroups maps each hierarchy's key in /proc/self/cgroup ("" for the
// unified one, "name=systemd", "memory", ...) to this process's path there.
func ownCgroups(procSelfCgroup string) map[string]string {
	out := map[string]string{}
	for line := range strings.SplitSeq(procSelfCgroup, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, k := range strings.Split(parts[1], ",") {
			out[k] = parts[2]
		}
	}
	return out
}

// makeCgroups creates a cgroup called name below this process's own in
// every hierarchy nspawn uses, and returns their directories.
func makeCgroups(name string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	own := ownCgroups(string(b))
	var dirs []string
	for _, h := range hierarchies() {
		p, ok := own[h.key]
		if !ok {
			continue
		}
		d := filepath.Join(h.mount, p, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			removeCgroups(dirs)
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		dirs = append(dirs, d)
	}
	if len(dirs) == 0 {
		return nil, errors.New("no cgroup hierarchy for systemd-nspawn (neither cgroup2 nor name=systemd is mounted under /sys/fs/cgroup)")
	}
	return dirs, nil
}

// removeCgroups removes the cgroups makeCgroups made, with every cgroup
// the machine left below them (innermost first: cgroups go by rmdir). A
// machine killed a moment ago may still have dying processes in them: it
// tries for a few seconds.
func removeCgroups(dirs []string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(5 * time.Second); ; <-tick.C {
		err := removeCgroupsOnce(dirs)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
	}
}

func removeCgroupsOnce(dirs []string) error {
	var errs []error
	for _, d := range dirs {
		var sub []string
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				sub = append(sub, p)
			}
			return nil
		})
		slices.Reverse(sub)
		for _, s := range sub {
			if err := unix.Rmdir(s); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", s, err))
			}
		}
	}
	return errors.Join(errs...)
}
