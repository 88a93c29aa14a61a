package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// StateDir checks LIFELINE_STATE_DIR, where the audit log and the alert
// spool live: it exists, belongs to the service user, nobody else may
// write it, nothing in it belongs to another user, and its filesystem has
// room.
func (d *Doctor) StateDir() []Check {
	dir := d.Config.StateDir
	what := "state directory " + dir
	return []Check{d.stateDirOwner(dir, what), d.freeSpace(dir)}
}

func (d *Doctor) stateDirOwner(dir, what string) Check {
	owner := d.ownerName()
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail(what, "does not exist",
			fmt.Sprintf("systemctl start lifeline-bastion creates it (StateDirectory=), or: install -d -m 0700 -o %s -g %s %s", owner, owner, dir))
	case err != nil:
		return fail(what, err.Error(), "make its parent searchable by "+owner)
	case !fi.IsDir():
		return fail(what, "is not a directory", "point LIFELINE_STATE_DIR at a directory (default /var/lib/lifeline) in "+d.where())
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st != nil && d.Owner >= 0 && int(st.Uid) != d.Owner {
		return fail(what, fmt.Sprintf("is owned by %s, not the service user %s: the audit log and alert spool cannot be written", userName(int(st.Uid)), owner),
			fmt.Sprintf("chown -R %s:%s %s", owner, owner, dir))
	}
	if p := fi.Mode().Perm(); p&0o022 != 0 {
		return fail(what, fmt.Sprintf("has mode %04o: others may write it (the audit log and the alerts waiting to be texted)", p), "chmod 0700 "+dir)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		fix := fmt.Sprintf("chown -R %s:%s %s; chmod 0700 %s", owner, owner, dir, dir)
		if d.Owner >= 0 && os.Geteuid() != d.Owner {
			fix = d.permissionFix(dir)
		}
		return fail(what, fmt.Sprintf("%s cannot write it: %v", userName(os.Geteuid()), err), fix)
	}
	if foreign := d.foreignFiles(dir); len(foreign) > 0 {
		return fail(what, fmt.Sprintf("%s belong to another user: the service cannot write them (was the bastion once run by hand as root?)", strings.Join(foreign, ", ")),
			fmt.Sprintf("chown -R %s:%s %s", owner, owner, dir))
	}
	by := owner
	if st != nil {
		by = userName(int(st.Uid))
	}
	return pass("state directory %s: owned by %s, mode %04o", dir, by, fi.Mode().Perm())
}

// foreignFiles lists (at most 3 of) the entries of dir and of its spool
// that the service user does not own.
func (d *Doctor) foreignFiles(dir string) []string {
	if d.Owner < 0 {
		return nil
	}
	var out []string
	more := 0
	_ = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable: the checks above say so
		}
		if rel, _ := filepath.Rel(dir, path); strings.Count(rel, string(filepath.Separator)) > 1 {
			return fs.SkipDir // the spool is one level down; nothing deeper
		}
		fi, err := e.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != d.Owner {
			if len(out) < 3 {
				out = append(out, fmt.Sprintf("%s (%s)", path, userName(int(st.Uid))))
			} else {
				more++
			}
		}
		return nil
	})
	if more > 0 {
		out = append(out, fmt.Sprintf("%d more", more))
	}
	return out
}

func (d *Doctor) freeSpace(dir string) Check {
	min := d.MinFree
	if min == 0 {
		min = DefaultMinFree
	}
	// A state directory not made yet will be on its parent's filesystem.
	at := dir
	for {
		if _, err := os.Stat(at); err == nil || filepath.Dir(at) == at {
			break
		}
		at = filepath.Dir(at)
	}
	free := d.FreeSpace
	if free == nil {
		free = statfsFree
	}
	n, err := free(at)
	what := "disk space for " + dir
	if err != nil {
		return fail(what, err.Error(), "")
	}
	if n < min {
		return fail(what, fmt.Sprintf("%s free, less than the %s the alert spool and the audit log need", bytesSI(n), bytesSI(min)),
			"free space on that filesystem (journalctl --vacuum-size=200M, old audit.jsonl.N files) or grow the volume")
	}
	return pass("disk space for %s: %s free (minimum %s)", dir, bytesSI(n), bytesSI(min))
}

// statfsFree is the space an unprivileged user may still use on the
// filesystem of path.
func statfsFree(path string) (uint64, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return s.Bavail * uint64(s.Bsize), nil
}

// bytesSI prints n with a decimal unit and three significant digits:
// "100 MB", "12.3 GB".
func bytesSI(n uint64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	v, i := float64(n), 0
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	switch {
	case i == 0 || v >= 100:
		return fmt.Sprintf("%.0f %s", v, units[i])
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, units[i])
	}
	return fmt.Sprintf("%.2f %s", v, units[i])
}
