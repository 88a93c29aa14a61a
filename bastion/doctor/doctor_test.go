package doctor

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

func TestCheckString(t *testing.T) {
	t.Parallel()
	if got := pass("host key %s", "/k").String(); got != "✓ host key /k" {
		t.Errorf("pass: %q", got)
	}
	if got := fail("host key /k", "does not exist", "create it").String(); got != "✗ host key /k: does not exist — fix: create it" {
		t.Errorf("fail: %q", got)
	}
	var b strings.Builder
	r := NewReport(&b)
	r.Add(pass("a"), fail("b", "c", "d"), pass("e"))
	if r.Failed() != 1 || b.String() != "✓ a\n✗ b: c — fix: d\n✓ e\n" {
		t.Errorf("report: %d %q", r.Failed(), b.String())
	}
}

// TestLoadEnv sets variables of the process: not parallel.
func TestLoadEnv(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "bastion.env")
	write(t, good, "# lifeline\nLIFELINE_DOCTOR_TEST_A=from-file\nLIFELINE_DOCTOR_TEST_B=\"quoted\"\nLIFELINE_DOCTOR_TEST_C=file\n", 0o600)
	t.Setenv("LIFELINE_DOCTOR_TEST_C", "command line")
	unset(t, "LIFELINE_DOCTOR_TEST_A", "LIFELINE_DOCTOR_TEST_B")
	checks, where := LoadEnv(good, nil)
	want(t, "explicit file", only(t, checks), true, "environment file "+good+": 3 settings read", "1 of them already set in this environment, which wins")
	if where != good || os.Getenv("LIFELINE_DOCTOR_TEST_A") != "from-file" || os.Getenv("LIFELINE_DOCTOR_TEST_B") != "quoted" || os.Getenv("LIFELINE_DOCTOR_TEST_C") != "command line" {
		t.Errorf("where %q, A %q B %q C %q", where, os.Getenv("LIFELINE_DOCTOR_TEST_A"), os.Getenv("LIFELINE_DOCTOR_TEST_B"), os.Getenv("LIFELINE_DOCTOR_TEST_C"))
	}

	missing := filepath.Join(dir, "nope.env")
	checks, where = LoadEnv(missing, []string{"/etc/lifeline/bastion.env"})
	want(t, "explicit file missing", only(t, checks), false, missing, "LIFELINE_ENV_FILE", "does not exist", "unset LIFELINE_ENV_FILE to read /etc/lifeline/bastion.env")
	if where != "" {
		t.Errorf("where = %q for a missing file", where)
	}

	checks, _ = LoadEnv("", []string{missing, filepath.Join(dir, "also-missing")})
	want(t, "no default file", only(t, checks), true, "environment: no "+missing, "checking the variables of this environment")

	second := filepath.Join(dir, "secrets.env")
	write(t, second, "LIFELINE_DOCTOR_TEST_D=secret\n", 0o600)
	unset(t, "LIFELINE_DOCTOR_TEST_D")
	checks, where = LoadEnv("", []string{good, missing, second})
	if len(checks) != 2 || !checks[0].OK || !checks[1].OK || where != good || os.Getenv("LIFELINE_DOCTOR_TEST_D") != "secret" {
		t.Errorf("two default files: %v, where %q, D %q", checks, where, os.Getenv("LIFELINE_DOCTOR_TEST_D"))
	}

	broken := filepath.Join(dir, "broken.env")
	write(t, broken, "OK=1\nthis is not an assignment\n", 0o600)
	checks, _ = LoadEnv(broken, nil)
	want(t, "bad line", only(t, checks), false, broken+":2", "NAME=VALUE", "correct that line")

	open := filepath.Join(dir, "open.env")
	write(t, open, "TWILIO_AUTH_TOKEN=abc123\n", 0o644)
	t.Setenv("TWILIO_AUTH_TOKEN", "x")
	checks, _ = LoadEnv(open, nil)
	want(t, "token readable by all", only(t, checks), false, "TWILIO_AUTH_TOKEN", "mode 0644", "chmod 600 "+open)

	// ApplyEnvFiles, for hostkey: the same reading, errors only.
	if read, err := ApplyEnvFiles("", []string{missing, good}); err != nil || len(read) != 1 || read[0] != good {
		t.Errorf("ApplyEnvFiles: %v %v", read, err)
	}
	if _, err := ApplyEnvFiles(broken, nil); err == nil || !strings.Contains(err.Error(), broken+":2") {
		t.Errorf("ApplyEnvFiles of a broken file: %v", err)
	}
}

func TestBecomeUser(t *testing.T) {
	t.Parallel()
	svc := &user.User{Username: "lifeline", Uid: "998", Gid: "997"}
	type call struct {
		what string
		ids  []int
	}
	ops := func(euid int, lookupErr, stepErr error, calls *[]call) sysOps {
		return sysOps{
			geteuid: func() int { return euid },
			lookup: func(name string) (*user.User, error) {
				if lookupErr != nil {
					return nil, lookupErr
				}
				return svc, nil
			},
			groupIDs:  func(*user.User) ([]string, error) { return []string{"997", "4"}, nil },
			setgroups: func(g []int) error { *calls = append(*calls, call{"setgroups", g}); return nil },
			setgid:    func(g int) error { *calls = append(*calls, call{"setgid", []int{g}}); return nil },
			setuid: func(u int) error {
				*calls = append(*calls, call{"setuid", []int{u}})
				return stepErr
			},
		}
	}
	var calls []call
	c, owner := becomeUser("lifeline", ops(0, nil, nil, &calls))
	want(t, "root", c, true, "checking as the service user lifeline (uid 998, gid 997)")
	if owner != 998 || fmt.Sprint(calls) != "[{setgroups [997 4]} {setgid [997]} {setuid [998]}]" {
		t.Errorf("owner %d, calls %v", owner, calls)
	}

	calls = nil
	c, owner = becomeUser("lifeline", ops(0, user.UnknownUserError("lifeline"), nil, &calls))
	want(t, "root, no such user", c, false, "service user lifeline: no such user", "checking as root instead", "systemd-sysusers", "useradd --system")
	if owner != -1 || len(calls) != 0 {
		t.Errorf("owner %d, calls %v", owner, calls)
	}

	calls = nil
	c, owner = becomeUser("lifeline", ops(0, nil, syscall.EPERM, &calls))
	want(t, "root, setuid refused", c, false, "setuid: operation not permitted", "checking as root instead", "sudo -u lifeline")
	if owner != 998 {
		t.Errorf("owner %d, want the service user's uid", owner)
	}

	calls = nil
	c, owner = becomeUser("lifeline", ops(998, nil, nil, &calls))
	want(t, "already the service user", c, true, "checking as the service user lifeline (uid 998)")
	if owner != 998 || len(calls) != 0 {
		t.Errorf("owner %d, calls %v", owner, calls)
	}

	c, owner = becomeUser("lifeline", ops(1000, nil, nil, &calls))
	want(t, "another user", c, true, "(uid 1000), not root", "not as the service user lifeline")
	if owner != 998 || len(calls) != 0 {
		t.Errorf("owner %d, calls %v; want the files checked for the service user", owner, calls)
	}
	c, owner = becomeUser("lifeline", ops(1000, user.UnknownUserError("lifeline"), nil, &calls))
	want(t, "another user, no service user", c, true, "(uid 1000), not root")
	if owner != 1000 || len(calls) != 0 {
		t.Errorf("owner %d, calls %v; want the files checked for this user", owner, calls)
	}
}

// TestConfiguration reads the process environment: not parallel.
func TestConfiguration(t *testing.T) {
	unset(t, "LIFELINE_MAX_PENDING", "LIFELINE_AGENT_DEAD_AFTER", "LIFELINE_AGENTS", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN",
		"LIFELINE_SMS_FROM", "LIFELINE_SMS_TO")
	t.Setenv("LIFELINE_LISTEN", "127.0.0.1:2222")
	t.Setenv("LIFELINE_NAME", "jump")
	cfg, ok, checks := Configuration("/etc/lifeline/bastion.env")
	want(t, "valid", only(t, checks), true, "configuration: valid (LIFELINE_LISTEN 127.0.0.1:2222, LIFELINE_NAME jump)")
	if !ok || cfg.Listen != "127.0.0.1:2222" {
		t.Errorf("ok %v, cfg.Listen %q", ok, cfg.Listen)
	}

	t.Setenv("LIFELINE_MAX_PENDING", "0")
	t.Setenv("LIFELINE_AGENTS", "agents")
	t.Setenv("LIFELINE_AGENT_DEAD_AFTER", "0s")
	cfg, ok, checks = Configuration("/etc/lifeline/bastion.env")
	if !ok || len(checks) != 4 || cfg.Listen != "127.0.0.1:2222" {
		t.Fatalf("invalid values: ok %v, %d lines %v, listen %q; want 4 lines and the rest of the configuration", ok, len(checks), checks, cfg.Listen)
	}
	joined := fmt.Sprint(checks)
	for _, v := range []string{"LIFELINE_MAX_PENDING:", "LIFELINE_MAX_PENDING_PER_SOURCE:", "LIFELINE_AGENTS:", "LIFELINE_AGENT_DEAD_AFTER:"} {
		if !strings.Contains(joined, v) {
			t.Errorf("no line names %s:\n%s", v, joined)
		}
	}
	for _, c := range checks {
		want(t, "invalid value", c, false, "✗ configuration: LIFELINE_", "correct it in /etc/lifeline/bastion.env", "lifeline-bastion --help")
	}

	t.Setenv("LIFELINE_MAX_PENDING", "lots")
	_, ok, checks = Configuration("")
	want(t, "does not decode", only(t, checks), false, `LIFELINE_MAX_PENDING="lots"`, "correct it in the bastion's environment", "the other checks need a configuration that decodes")
	if ok {
		t.Error("a configuration that does not decode was given to the other checks")
	}
}

func TestHostKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	key := f.d.Config.HostKey
	want(t, "good", f.d.HostKey(), true, "host key "+key+": ssh-ed25519 SHA256:", "mode 0600")

	other := *f.d
	other.Owner = os.Geteuid() + 1
	other.User = "lifeline"
	want(t, "owned by another user", other.HostKey(), false, "not lifeline", "chown lifeline: "+key)

	os.Chmod(key, 0o640)
	want(t, "readable by the group", f.d.HostKey(), false, "mode 0640", "chmod 600 "+key)

	write(t, key, "not a key\n", 0o600)
	want(t, "garbage", f.d.HostKey(), false, "parse key "+key, "restore the key", "ssh-keygen -y -f "+key)

	os.Remove(key)
	want(t, "missing", f.d.HostKey(), false, "does not exist", "lifeline-bastion hostkey --host NAME", "restore that file")
	if _, err := os.Stat(key); err == nil {
		t.Error("the check created a host key")
	}

	os.Mkdir(key, 0o700)
	want(t, "a directory", f.d.HostKey(), false, "not a regular file", "LIFELINE_HOST_KEY")
}

func TestKeyFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := f.d.Config
	checks := f.d.KeyFiles()
	if len(checks) != 2 {
		t.Fatalf("good files: %v", checks)
	}
	want(t, "agents", checks[0], true, "agents file "+cfg.Agents+": 1 agent line")
	want(t, "operators", checks[1], true, "operators file "+cfg.Operators+": 1 operator line")

	write(t, cfg.Operators, "# people\n"+f.op.AuthorizedLine("", "alice")+"\n"+`command="echo hi" `+f.op.AuthorizedLine("", "bob")+"\nssh-ed25519 not-base64\n", 0o600)
	checks = f.d.KeyFiles()
	if len(checks) != 3 {
		t.Fatalf("two bad operator lines: %v", checks)
	}
	want(t, "the agents file still loads", checks[0], true, "agents file "+cfg.Agents+": loads")
	want(t, "bad option", checks[1], false, "operators file "+cfg.Operators+":3: option command", "correct or remove line 3 of "+cfg.Operators, "lifeline-bastion check-keys")
	want(t, "bad key", checks[2], false, "operators file "+cfg.Operators+":4: ", "line 4 of "+cfg.Operators)

	missing := *f.d
	missing.Config.Agents = filepath.Join(f.dir, "no-agents")
	missing.Config.Operators = filepath.Join(f.dir, "no-operators")
	checks = missing.KeyFiles()
	if len(checks) != 2 {
		t.Fatalf("missing files: %v", checks)
	}
	want(t, "missing agents file", checks[0], false, "agents file "+missing.Config.Agents+": open ", "no such file", "create it", "LIFELINE_AGENTS in /etc/lifeline/bastion.env")
	want(t, "missing operators file", checks[1], false, "operators file "+missing.Config.Operators, "LIFELINE_OPERATORS")
}

func TestKeyFilesRevocationList(t *testing.T) {
	t.Parallel()
	sshtest.Need(t, "ssh-keygen")
	f := newFixture(t)
	krl := filepath.Join(f.dir, "revoked_keys")
	write(t, filepath.Join(f.dir, "spec"), "serial: 9\n", 0o600)
	ca := sshtest.NewKey(t, f.dir, "ca")
	write(t, ca.Path+".pub", ca.AuthorizedLine("", "ca")+"\n", 0o600)
	if out, err := exec.Command("ssh-keygen", "-k", "-f", krl, "-s", ca.Path+".pub", "-z", "7", filepath.Join(f.dir, "spec")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -k: %v\n%s", err, out)
	}
	f.d.Config.Revoked = krl
	checks := f.d.KeyFiles()
	if len(checks) != 3 {
		t.Fatalf("with a KRL: %v", checks)
	}
	want(t, "good KRL", checks[2], true, "revoked keys "+krl+": KRL version 7")

	write(t, krl, "not a KRL", 0o600)
	checks = f.d.KeyFiles()
	if len(checks) != 3 {
		t.Fatalf("with a bad KRL: %v", checks)
	}
	want(t, "agents still load", checks[0], true, "agents file", "loads")
	want(t, "bad KRL", checks[2], false, "revoked keys "+krl, "not an OpenSSH KRL", "ssh-keygen -k -f "+krl)
}

func TestStateDir(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dir := f.d.Config.StateDir
	checks := f.d.StateDir()
	if len(checks) != 2 {
		t.Fatalf("state dir: %v", checks)
	}
	want(t, "good", checks[0], true, "state directory "+dir+": owned by "+userName(os.Geteuid())+", mode 0700")
	want(t, "room", checks[1], true, "disk space for "+dir+": 20.0 GB free (minimum 100 MB)")

	other := *f.d
	other.Owner, other.User = os.Geteuid()+1, "lifeline"
	want(t, "owned by another", other.StateDir()[0], false, "not the service user lifeline", "chown -R lifeline:lifeline "+dir)

	os.Chmod(dir, 0o777)
	want(t, "world writable", f.d.StateDir()[0], false, "mode 0777", "chmod 0700 "+dir)
	os.Chmod(dir, 0o700)

	low := *f.d
	low.FreeSpace = func(string) (uint64, error) { return 42_000_000, nil }
	want(t, "little room", low.StateDir()[1], false, "42.0 MB free, less than the 100 MB", "free space on that filesystem")

	real := *f.d
	real.FreeSpace = nil
	want(t, "statfs", real.StateDir()[1], true, " free (minimum 100 MB)")

	gone := *f.d
	gone.Config.StateDir = filepath.Join(f.dir, "not-yet")
	checks = gone.StateDir()
	want(t, "missing", checks[0], false, "does not exist", "systemctl start lifeline-bastion creates it", "install -d -m 0700")
	want(t, "missing: the parent's room", checks[1], true, "free")
	if _, err := os.Stat(gone.Config.StateDir); err == nil {
		t.Error("the check created the state directory")
	}

	file := *f.d
	file.Config.StateDir = f.d.Config.Agents
	want(t, "a file", file.StateDir()[0], false, "not a directory", "LIFELINE_STATE_DIR")

	if os.Geteuid() == 0 {
		audit := filepath.Join(dir, "audit.jsonl")
		write(t, audit, "{}\n", 0o600)
		if err := os.Chown(audit, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		want(t, "a file of another user", f.d.StateDir()[0], false, audit+" ("+userName(65534)+")", "belong to another user", "chown -R")
	}
}

func TestListenAddress(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	free := sshtest.FreePort(t)
	freeAddr, busyAddr := "127.0.0.1:"+strconv.Itoa(free), busy.Addr().String()
	_, busyPort, _ := net.SplitHostPort(busyAddr)
	refuse := func(err error) func(string, string) (net.Listener, error) {
		return func(string, string) (net.Listener, error) {
			return nil, &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", err)}
		}
	}
	tests := []struct {
		name   string
		addr   string
		sd     fakeSystemd
		listen func(string, string) (net.Listener, error)
		ok     bool
		parts  []string
	}{
		{"free, no systemd", freeAddr, fakeSystemd{}, nil, true, []string{"listen address " + freeAddr + ": free"}},
		{"free, service inactive", freeAddr, fakeSystemd{booted: true, state: "inactive"}, nil, true, []string{"free; lifeline-bastion is inactive", "systemctl enable --now"}},
		{"free, service active", freeAddr, fakeSystemd{booted: true, state: "active"}, nil, false, []string{"is free, yet lifeline-bastion is active", "systemctl restart lifeline-bastion"}},
		{"free, service failed", freeAddr, fakeSystemd{booted: true, state: "failed"}, nil, false, []string{"has failed", "journalctl -u lifeline-bastion"}},
		{"held by the service", busyAddr, fakeSystemd{booted: true, state: "active"}, nil, true, []string{"held by the running lifeline-bastion"}},
		{"held by another program", busyAddr, fakeSystemd{booted: true, state: "inactive"}, nil, false, []string{"in use by another program", "ss -ltnp 'sport = :" + busyPort + "'", "LIFELINE_LISTEN"}},
		{"in use, no systemd", busyAddr, fakeSystemd{}, nil, true, []string{"in use, not under systemd"}},
		{"privileged port", "127.0.0.1:22", fakeSystemd{}, refuse(syscall.EACCES), false, []string{"port 22 needs privileges", "above 1024"}},
		{"not this machine's", "192.0.2.7:2222", fakeSystemd{}, refuse(syscall.EADDRNOTAVAIL), false, []string{"not an address of this machine", "write :2222"}},
	}
	for _, tc := range tests {
		f := newFixture(t)
		f.d.Config.Listen, f.d.Systemd, f.d.Listen = tc.addr, tc.sd, tc.listen
		want(t, tc.name, f.d.ListenAddress(t.Context()), tc.ok, tc.parts...)
	}

	// A systemctl that never answers costs the deadline, no more.
	f := newFixture(t)
	f.d.Config.Listen, f.d.Systemd, f.d.Timeout = freeAddr, fakeSystemd{booted: true, hang: true}, 200*time.Millisecond
	start := time.Now()
	want(t, "systemctl hangs", f.d.ListenAddress(context.Background()), true, "free", "deadline exceeded")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the check took %s with a 200ms deadline", d)
	}
}

func TestMachineSystemd(t *testing.T) {
	t.Parallel()
	sd := machineSystemd{}
	if !sd.Booted() {
		t.Skip("systemd does not run this machine")
	}
	state, err := sd.IsActive(t.Context(), "lifeline-doctor-test-no-such.service")
	if err != nil || state != "inactive" {
		t.Errorf("is-active of a unit that does not exist: %q %v", state, err)
	}
}

// unset removes variables from the environment until the test ends.
func unset(t *testing.T, names ...string) {
	for _, n := range names {
		t.Setenv(n, "") // restores the old value at the end
		os.Unsetenv(n)
	}
}

func TestPermissionFix(t *testing.T) {
	t.Parallel()
	d := &Doctor{Owner: os.Geteuid() + 1, User: "lifeline"}
	if fix := d.permissionFix("/var/lib/lifeline/k"); !strings.Contains(fix, "sudo lifeline-bastion doctor") || !strings.Contains(fix, "checks as lifeline") {
		t.Errorf("as another user than the owner: %q", fix)
	}
	d.Owner = os.Geteuid()
	if fix := d.permissionFix("/var/lib/lifeline/k"); !strings.HasPrefix(fix, "chown lifeline: /var/lib/lifeline/k") {
		t.Errorf("as the owner: %q", fix)
	}
}
