package doctor

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// sysOps are the system calls of BecomeUser, replaced in tests.
type sysOps struct {
	geteuid   func() int
	lookup    func(name string) (*user.User, error)
	groupIDs  func(u *user.User) ([]string, error)
	setgroups func(gids []int) error
	setgid    func(gid int) error
	setuid    func(uid int) error
}

var realOps = sysOps{
	geteuid:   os.Geteuid,
	lookup:    user.Lookup,
	groupIDs:  (*user.User).GroupIds,
	setgroups: syscall.Setgroups,
	setgid:    syscall.Setgid,
	setuid:    syscall.Setuid,
}

// BecomeUser makes the whole process run as the service user name when it
// runs as root, as systemd's User= does (supplementary groups, group,
// user; Go's syscall.Setuid applies to every thread), so that files are
// checked as the service reads them. Not root, it checks as whoever it
// is. When the switch is impossible it goes on as root and says so. It
// returns the line and the uid that must own the bastion's files (-1 when
// no such user exists).
//
// It must be called before any other goroutine of the caller touches
// files, and after LoadEnv (environment files are root's).
func BecomeUser(name string) (Check, int) { return becomeUser(name, realOps) }

func becomeUser(name string, ops sysOps) (Check, int) {
	euid := ops.geteuid()
	u, lookupErr := ops.lookup(name)
	if euid != 0 {
		if lookupErr == nil && u.Uid == strconv.Itoa(euid) {
			return pass("checking as the service user %s (uid %d)", name, euid), euid
		}
		// Files must still be the service user's, when there is one.
		owner := euid
		if lookupErr == nil {
			if uid, err := strconv.Atoi(u.Uid); err == nil {
				owner = uid
			}
		}
		return pass("checking as %s (uid %d), not root: files are checked as this user reads them, not as the service user %s", userName(euid), euid, name), owner
	}
	if lookupErr != nil {
		why := lookupErr.Error()
		if _, unknown := lookupErr.(user.UnknownUserError); unknown {
			why = "no such user"
		}
		return fail("service user "+name, fmt.Sprintf("%s, so the service (User=%s) cannot start; checking as root instead", why, name),
			"create it: systemd-sysusers lifeline-bastion.conf (installed by the lifeline-bastion package), or useradd --system --home-dir /var/lib/lifeline --shell /usr/sbin/nologin "+name), -1
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return fail("service user "+name, fmt.Sprintf("uid %q, gid %q are not numbers; checking as root instead", u.Uid, u.Gid), ""), -1
	}
	gids := []int{gid}
	if ids, err := ops.groupIDs(u); err == nil {
		gids = gids[:0]
		for _, s := range ids {
			if g, err := strconv.Atoi(s); err == nil {
				gids = append(gids, g)
			}
		}
	}
	for _, step := range []struct {
		name string
		call func() error
	}{
		{"setgroups", func() error { return ops.setgroups(gids) }},
		{"setgid", func() error { return ops.setgid(gid) }},
		{"setuid", func() error { return ops.setuid(uid) }},
	} {
		if err := step.call(); err != nil {
			return fail("checking as the service user "+name, fmt.Sprintf("%s: %v; checking as root instead, so files root may read but %s may not look fine", step.name, err, name),
				"run the doctor as root outside a sandbox that forbids changing user, or as the user: sudo -u "+name+" lifeline-bastion doctor (then give it the environment file's settings)"), uid
		}
	}
	return pass("checking as the service user %s (uid %d, gid %d), as the service runs", name, uid, gid), uid
}
