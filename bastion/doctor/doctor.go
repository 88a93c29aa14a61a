// Package doctor checks an installed bastion the way `sshd -t` checks sshd,
// and a little further: the configuration, the host key, the key files, the
// state directory and its free space, the listen address, and the alert
// channels: the Twilio account that texts the alerts, the e-mail and
// webhook settings. Each check is one line, ✓ or ✗ with what
// to do about it; `lifeline-bastion doctor` prints them.
//
// It changes nothing: no file is created or written, no name registered,
// no text, mail or post sent unless asked (SendTest). Every network step has a deadline.
package doctor

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/config"
)

// Check is one line of the checklist.
type Check struct {
	OK bool
	// What was checked; for a failure, what is wrong with it.
	What string
	// Why and Fix are for a failure: what was found, and what to do.
	Why, Fix string
}

// String is the line: "✓ what" or "✗ what: why — fix: what to do".
func (c Check) String() string {
	if c.OK {
		return "✓ " + c.What
	}
	s := "✗ " + c.What
	if c.Why != "" {
		s += ": " + c.Why
	}
	if c.Fix != "" {
		s += " — fix: " + c.Fix
	}
	return s
}

func pass(format string, a ...any) Check { return Check{OK: true, What: fmt.Sprintf(format, a...)} }

func fail(what, why, fix string) Check { return Check{What: what, Why: why, Fix: fix} }

// Defaults.
const (
	// ServiceUser is the user the systemd unit runs the bastion as
	// (User= in lifeline-bastion.service, created by lifeline.sysusers).
	ServiceUser = "lifeline"
	// Unit is the bastion's systemd unit.
	Unit = "lifeline-bastion"
	// DefaultTimeout bounds each network step.
	DefaultTimeout = 5 * time.Second
	// DefaultMinFree is the free space the state directory's filesystem
	// needs: the alert spool, and the audit log between rotations.
	DefaultMinFree = 100_000_000
)

// Doctor holds what the checks after the configuration need. The zero
// value of each optional field means its default.
type Doctor struct {
	// Config is the decoded configuration; Validate has been called (it
	// fills in LIFELINE_NAME and the parsed lists), whatever it said.
	Config config.Config
	// EnvFile is where the settings live, for the fix texts; "" means the
	// environment.
	EnvFile string
	// Owner is the uid that must own the state directory and the host key
	// (the service user's); -1 when unknown: ownership is not checked.
	Owner int
	// User names the service user in fix texts; "" means Owner's name.
	User string
	// SendTest sends one test message through every configured channel:
	// a text to every LIFELINE_SMS_TO number, a mail to LIFELINE_SMTP_TO,
	// a post to LIFELINE_WEBHOOK_URL; each result is its own line.
	SendTest bool

	// Timeout bounds each network step; zero means DefaultTimeout.
	Timeout time.Duration
	// MinFree is the least free space for the state directory, in bytes;
	// zero means DefaultMinFree.
	MinFree uint64
	// Systemd answers about the service; nil means the machine's.
	Systemd Systemd
	// Transport carries the Twilio and webhook requests; nil means a fresh
	// clone of http.DefaultTransport (Twilio) and the webhook sender's own.
	Transport http.RoundTripper
	// Listen binds the listen address for its check; nil means net.Listen.
	Listen func(network, address string) (net.Listener, error)
	// FreeSpace says how many bytes an unprivileged user may still write
	// on the filesystem of path; nil means statfs(2).
	FreeSpace func(path string) (uint64, error)
}

// Run runs the checks after the configuration, in order, handing each
// line to emit as soon as it is known. It returns when all are done; ctx
// ends it early (the checks left then fail).
func (d *Doctor) Run(ctx context.Context, emit func(Check)) {
	emit(d.HostKey())
	for _, c := range d.KeyFiles() {
		emit(c)
	}
	for _, c := range d.StateDir() {
		emit(c)
	}
	emit(d.ListenAddress(ctx))
	for _, check := range []func(context.Context) []Check{d.Twilio, d.Email, d.Webhook} {
		for _, c := range check(ctx) {
			emit(c)
		}
	}
}

func (d *Doctor) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return DefaultTimeout
}

// where names the place settings are changed, for fix texts.
func (d *Doctor) where() string {
	if d.EnvFile == "" {
		return "the bastion's environment"
	}
	return d.EnvFile
}

func (d *Doctor) ownerName() string {
	if d.User != "" {
		return d.User
	}
	if d.Owner < 0 {
		return ServiceUser
	}
	return userName(d.Owner)
}

// permissionFix is the fix for a file the checks may not read: as
// another user than its owner, run as root; else, give it to the owner.
func (d *Doctor) permissionFix(path string) string {
	if d.Owner >= 0 && os.Geteuid() != d.Owner {
		return fmt.Sprintf("run the doctor as root (sudo lifeline-bastion doctor): it checks as %s, who should own %s", d.ownerName(), path)
	}
	return fmt.Sprintf("chown %s: %s (and let %s search its directory)", d.ownerName(), path, d.ownerName())
}

// userName is the login name of uid, or "uid N".
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// Report prints checks as they come and counts the failures.
type Report struct {
	w      io.Writer
	failed int
}

// NewReport prints to w.
func NewReport(w io.Writer) *Report { return &Report{w: w} }

// Add prints each check on its own line.
func (r *Report) Add(cs ...Check) {
	for _, c := range cs {
		fmt.Fprintln(r.w, c)
		if !c.OK {
			r.failed++
		}
	}
}

// Failed is how many checks failed so far.
func (r *Report) Failed() int { return r.failed }
