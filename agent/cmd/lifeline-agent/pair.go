package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/doctor"
	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// account is the service's user, looked up.
type account struct {
	doctor.ServiceUser
	groups []int
}

// serviceAccount looks up the service's user (config.ServiceUser).
func serviceAccount() account {
	name := config.ServiceUser()
	a := account{ServiceUser: doctor.ServiceUser{Name: name, UID: -1, GID: -1}}
	u, err := user.Lookup(name)
	if err != nil {
		a.Err = err
		return a
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		a.Err = fmt.Errorf("user %s: not a numeric uid/gid: %w", name, err)
		return a
	}
	a.UID, a.GID = uid, gid
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		a.Group = g.Name
	}
	a.groups = []int{gid}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.Atoi(s); err == nil && g != gid {
				a.groups = append(a.groups, g)
			}
		}
	}
	return a
}

// is reports whether the process runs as this account already.
func (a account) is() bool { return a.Err == nil && os.Geteuid() == a.UID }

// become makes the whole process the account, for good: supplementary
// groups, group, then user (on Linux Go's syscall.Setuid and friends act
// on every thread of the process).
func (a account) become() error {
	if a.Err != nil {
		return a.Err
	}
	if err := syscall.Setgroups(a.groups); err != nil {
		return fmt.Errorf("setgroups %v: %w", a.groups, err)
	}
	if err := syscall.Setgid(a.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", a.GID, err)
	}
	if err := syscall.Setuid(a.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", a.UID, err)
	}
	if os.Geteuid() != a.UID || os.Getuid() != a.UID || os.Getegid() != a.GID {
		return fmt.Errorf("still uid %d gid %d after setuid %d", os.Geteuid(), os.Getegid(), a.UID)
	}
	return nil
}

// notInstalled is the error for a missing service user.
func (a account) notInstalled() string {
	return fmt.Sprintf("the service's user %s does not exist (%v): the lifeline-agent package is not installed properly; reinstall it (sudo apt install --reinstall lifeline-agent creates the user)", a.Name, a.Err)
}

const pairUsage = `usage: lifeline-agent pair [--line]

Pairs this site: run as root, it creates the agent's key (or reads it) as the
service's user, so the service can use it, and prints the line for the
bastion's agents file, with a permitlisten option for every forward of
LIFELINE_FORWARDS, then the next steps. --line prints only the line (for
scripts; lifeline-agent pubkey does the same). The configuration is read from
/etc/lifeline/agent.env (LIFELINE_ENV_FILE) and the environment, which wins.
`

func pairMain(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("pair", flag.ContinueOnError)
	fl.SetOutput(stderr)
	lineOnly := fl.Bool("line", false, "print only the agents-file line")
	fl.Usage = func() {} // printed below: --help to stdout, a mistake to stderr
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, pairUsage)
			return exitOK
		}
		fmt.Fprint(stderr, pairUsage)
		return exitUsage
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "lifeline-agent pair: unexpected argument %q\n%s", fl.Arg(0), pairUsage)
		return exitUsage
	}
	return pair(stdout, stderr, pairOptions{lineOnly: *lineOnly})
}

type pairOptions struct {
	// lineOnly prints only the agents-file line.
	lineOnly bool
	// compat is `lifeline-agent pubkey` as it always was for anyone who
	// is not root with a service user to become: it runs as whoever runs
	// it (a test, a hand-made setup with its own LIFELINE_KEY).
	compat bool
}

func pair(stdout, stderr io.Writer, o pairOptions) int {
	name := "lifeline-agent pair"
	if o.compat {
		name = "lifeline-agent pubkey"
	}
	svc := serviceAccount()
	root := os.Geteuid() == 0
	switch {
	case o.compat:
	case root && svc.Err != nil:
		fmt.Fprintf(stderr, "%s: %s\n", name, svc.notInstalled())
		return exitFailed
	case !root && !svc.is():
		fmt.Fprintf(stderr, "%s: run it as root: sudo lifeline-agent pair\n"+
			"(it makes or reads the agent's key as the service's user %s, so the service can use it; nothing was changed)\n", name, svc.Name)
		return exitUsage
	}
	envPath, _, explicit, err := config.LoadEnvFile()
	if err != nil {
		if !(o.compat && !root && errors.Is(err, fs.ErrPermission) && !explicit) {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return exitUsage
		}
		fmt.Fprintf(stderr, "%s: warning: %v; going on with the environment only\n", name, err)
	}
	var cfg config.Pubkey
	if err := envconf.Process(&cfg); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	owner := fmt.Sprintf("uid %d", os.Geteuid())
	switch {
	case root && svc.Err == nil:
		if err := keyDirFor(cfg.Key, svc); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return exitFailed
		}
		if err := svc.become(); err != nil {
			fmt.Fprintf(stderr, "%s: cannot become the service's user %s: %v\n", name, svc.Name, err)
			return exitFailed
		}
		owner = svc.Name
	case root:
		// pubkey as root without the package: as before, the key is root's.
		fmt.Fprintf(stderr, "%s: warning: %s; the key stays root's\n", name, svc.notInstalled())
		owner = "root"
	case svc.is():
		owner = svc.Name
	}
	signer, created, err := keyfile.LoadOrCreate(cfg.Key, keyComment())
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		if errors.Is(err, fs.ErrPermission) {
			fmt.Fprintf(stderr, "%s: %s\n", name, keyAccessHint(cfg.Key, svc, root))
		}
		return exitFailed
	}
	if created {
		fmt.Fprintf(stderr, "%s: created a new key in %s (owned by %s, mode 0600)\n", name, cfg.Key, owner)
	}
	fs, _ := forward.Parse(cfg.Forwards) // checked by Validate
	line := doctor.AgentsLine(fs, signer.PublicKey(), keyComment())
	fmt.Fprintln(stdout, line)
	if !o.lineOnly {
		nextSteps(stdout, line, cfg, envPath)
	}
	return exitOK
}

// keyDirFor makes sure the key's directory exists for the service's user
// before root becomes it: a missing last directory (/var/lib/lifeline
// before the service first ran) is created for it, mode 0700, as systemd's
// StateDirectory= would. Anything deeper missing is an error.
func keyDirFor(key string, svc account) error {
	dir := filepath.Dir(key)
	if _, err := os.Stat(dir); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil // exists, or the key's own error will say
	}
	if _, err := os.Stat(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("the key's directory %s does not exist, nor its parent: create it for the service's user: sudo install -d -o %s -g %s -m 700 %s", dir, svc.Name, strings.TrimPrefix(svc.Owner(), svc.Name+":"), dir)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create the key's directory %s: %w", dir, err)
	}
	if err := os.Chown(dir, svc.UID, svc.GID); err != nil {
		return fmt.Errorf("give the key's directory %s to %s: %w", dir, svc.Name, err)
	}
	return nil
}

// keyAccessHint says what to do when the key or its directory cannot be
// used.
func keyAccessHint(key string, svc account, root bool) string {
	if !root && !svc.is() {
		return "run it as root: sudo lifeline-agent pair (it uses the key as the service's user " + svc.Name + ")"
	}
	dir := filepath.Dir(key)
	return fmt.Sprintf("the service's user %s cannot use %s: if root made it (an old `sudo lifeline-agent pubkey`), give it back: sudo chown %s %s %s",
		svc.Name, key, svc.Owner(), dir, key)
}

// nextSteps prints what to do with the line, numbered.
func nextSteps(w io.Writer, line string, cfg config.Pubkey, envPath string) {
	if envPath == "" {
		envPath = config.DefaultEnvFile
	}
	bastions, err := config.ParseBastions(cfg.Bastion)
	hosts, names := "ADDRESS:PORT", []string(nil)
	if err == nil {
		hosts = strings.Join(bastions, ",")
		for _, b := range bastions {
			names = append(names, knownhosts.Normalize(b))
		}
	}
	fmt.Fprintf(w, `
Next steps:
1. Put that line in the bastion's agents file. With Terraform: one element of the
   variable agents (terraform.tfvars), then terraform apply (in force within a minute):
     agents = [%s]
   By hand on the jump host: add it to /etc/lifeline/agents, then sudo systemctl reload lifeline-bastion.
2. Pin the bastion's host key: its line goes in %s. Get it with
   terraform output -raw known_hosts_line (or on the jump host: lifeline-bastion hostkey --host %s),
   then here: echo '<that line>' | sudo tee -a %s
`, strconv.Quote(line), cfg.KnownHosts, hosts, cfg.KnownHosts)
	if err == nil {
		fmt.Fprintf(w, "   The line starts with %s, as LIFELINE_BASTION says.\n", strings.Join(names, " / "))
	} else {
		fmt.Fprintf(w, "   Set LIFELINE_BASTION in %s too (terraform output -raw bastion_address).\n", envPath)
	}
	fmt.Fprint(w, `3. Start the agent: sudo systemctl enable --now lifeline-agent
4. Run the Pi's own SSH server, with the operators' public keys in ~/.ssh/authorized_keys
   of the account they log in to: sudo systemctl enable --now ssh
5. Check it all: sudo lifeline-agent doctor
`)
}
