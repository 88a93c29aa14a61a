package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The binary is built once, into a directory every user may read, so a
// test run as root can start it as nobody.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lifeline-agent-bin")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755)
		binPath = filepath.Join(dir, "lifeline-agent")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			binPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build lifeline-agent: %v\n%s", buildErr, binPath)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" && buildErr == nil {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

const nobody = 65534

// runAgent runs the binary with exactly env (plus PATH) as uid (-1: as
// the test) and returns stdout, stderr and the exit code.
func runAgent(t *testing.T, uid int, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentBinary(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Dir = os.TempDir()
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// siteDir is a directory every user may enter, holding an env file
// (mode 0600, root's) with two forwards and a key path in a state
// directory that does not exist yet.
func siteDir(t *testing.T) (dir, envFile, key string) {
	t.Helper()
	dir = t.TempDir()
	// t.TempDir's parent is 0700: open both for the service's user.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	key = filepath.Join(dir, "state", "agent_ed25519_key")
	envFile = filepath.Join(dir, "agent.env")
	env := "# as the package's template\nLIFELINE_BASTION=203.0.113.10:2222\nLIFELINE_KEY=" + key +
		"\nLIFELINE_FORWARDS=\"pi:22=127.0.0.1:22,nuc:3389=192.168.1.100:3389\"\n"
	if err := os.WriteFile(envFile, []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, envFile, key
}

func TestPairRefusesAnOrdinaryUser(t *testing.T) {
	t.Parallel()
	uid := -1
	if os.Geteuid() == 0 {
		uid = nobody
	}
	dir, envFile, key := siteDir(t)
	for _, cmd := range [][]string{{"pair"}, {"pair", "--line"}, {"doctor"}} {
		stdout, stderr, code := runAgent(t, uid, []string{"LIFELINE_ENV_FILE=" + envFile, "LIFELINE_SERVICE_USER=lifeline-no-such-user"}, cmd...)
		if code != exitUsage || stdout != "" {
			t.Errorf("%v as uid %d: exit %d, stdout %q; want %d and nothing", cmd, uid, code, stdout, exitUsage)
		}
		if !strings.Contains(stderr, "run it as root: sudo lifeline-agent "+cmd[0]) {
			t.Errorf("%v: stderr %q lacks the sudo hint", cmd, stderr)
		}
	}
	if _, err := os.Stat(filepath.Dir(key)); err == nil {
		t.Errorf("pair as an ordinary user created %s", filepath.Dir(key))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the site directory holds %v, want only the env file", entries)
	}
}

func TestPairAsRootMakesTheServiceUsersKey(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root (to become the service's user)")
	}
	_, envFile, key := siteDir(t)
	env := []string{"LIFELINE_ENV_FILE=" + envFile, "LIFELINE_SERVICE_USER=nobody"}
	stdout, stderr, code := runAgent(t, -1, env, "pair")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, p := range []string{key, filepath.Dir(key)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody {
			t.Errorf("%s is owned by uid %d, want nobody (%d)", p, st.Uid, nobody)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %04o", p, fi.Mode().Perm())
		}
	}
	if !strings.Contains(stderr, "created a new key in "+key+" (owned by nobody") {
		t.Errorf("stderr %q does not say the key was made for nobody", stderr)
	}
	lines := strings.Split(stdout, "\n")
	pairLine := lines[0]
	if !strings.HasPrefix(pairLine, `permitlisten="pi:22",permitlisten="nuc:3389" ssh-ed25519 `) || !strings.Contains(pairLine, " lifeline-agent@") {
		t.Errorf("first line %q is not the agents-file line with every forward", pairLine)
	}
	opts, rest, _ := strings.Cut(pairLine, " ")
	if pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rest)); err != nil || opts == "" {
		t.Errorf("the line does not parse as authorized_keys: %v", err)
	} else if data, err := os.ReadFile(key); err != nil {
		t.Fatal(err)
	} else if s, err := ssh.ParsePrivateKey(data); err != nil || !bytes.Equal(s.PublicKey().Marshal(), pub.Marshal()) {
		t.Errorf("the printed key is not the key file's (%v)", err)
	}
	for _, w := range []string{
		"Next steps:",
		"1. Put that line in the bastion's agents file", "variable agents", `agents = ["permitlisten=\"pi:22\",permitlisten=\"nuc:3389\" ssh-ed25519 `,
		"/etc/lifeline/agents", "sudo systemctl reload lifeline-bastion",
		"2. Pin the bastion's host key", "/etc/lifeline/known_hosts", "terraform output -raw known_hosts_line",
		"lifeline-bastion hostkey --host 203.0.113.10:2222", "starts with [203.0.113.10]:2222",
		"3. Start the agent: sudo systemctl enable --now lifeline-agent",
		"4. Run the Pi's own SSH server", "authorized_keys", "sudo systemctl enable --now ssh",
		"5. Check it all: sudo lifeline-agent doctor",
	} {
		if !strings.Contains(stdout, w) {
			t.Errorf("pair's output lacks %q:\n%s", w, stdout)
		}
	}

	// --line and pubkey print only the line, of the same key (read, not
	// made again), as the service's user.
	for _, cmd := range [][]string{{"pair", "--line"}, {"pubkey"}} {
		out, errs, code := runAgent(t, -1, env, cmd...)
		if code != exitOK || out != pairLine+"\n" || strings.Contains(errs, "created") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want the same line alone", cmd, code, out, errs)
		}
	}

	// The environment wins over the file.
	out, _, _ := runAgent(t, -1, append(env, "LIFELINE_FORWARDS=pi:22=127.0.0.1:22"), "pair", "--line")
	if !strings.HasPrefix(out, `permitlisten="pi:22" ssh-ed25519 `) {
		t.Errorf("LIFELINE_FORWARDS from the environment did not win: %q", out)
	}

	// A key root made (an old `sudo lifeline-agent pubkey`) is named, with
	// the chown that mends it.
	os.Chown(key, 0, 0)
	group := "nobody"
	if g, err := user.LookupGroupId(strconv.Itoa(nobody)); err == nil {
		group = g.Name
	}
	_, errs, code := runAgent(t, -1, env, "pair")
	if code != exitFailed || !strings.Contains(errs, "sudo chown nobody:"+group+" "+filepath.Dir(key)+" "+key) {
		t.Errorf("root's key: exit %d, stderr %q", code, errs)
	}
}

func TestPairWithoutTheServiceUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	_, envFile, key := siteDir(t)
	env := []string{"LIFELINE_ENV_FILE=" + envFile, "LIFELINE_SERVICE_USER=lifeline-no-such-user"}
	_, stderr, code := runAgent(t, -1, env, "pair")
	if code != exitFailed || !strings.Contains(stderr, "the lifeline-agent package is not installed properly") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(key); err == nil {
		t.Error("a key was made")
	}
	// pubkey keeps working as it did (root's key), saying so.
	stdout, stderr, code := runAgent(t, -1, env, "pubkey")
	if code != exitOK || !strings.HasPrefix(stdout, `permitlisten="pi:22",permitlisten="nuc:3389" ssh-ed25519 `) || !strings.Contains(stderr, "the key stays root's") {
		t.Errorf("pubkey: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestPairEnvFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.env")
	bad := filepath.Join(dir, "bad.env")
	os.WriteFile(bad, []byte("LIFELINE_KEY="+filepath.Join(dir, "k")+"\nLIFELINE_FORWARDS pi:22\n"), 0o600)
	self := []string{"LIFELINE_SERVICE_USER=root"}
	if os.Geteuid() != 0 {
		self = []string{"LIFELINE_SERVICE_USER=" + os.Getenv("USER")}
	}
	_, stderr, code := runAgent(t, -1, append(self, "LIFELINE_ENV_FILE="+missing), "pair")
	if code != exitUsage || !strings.Contains(stderr, "LIFELINE_ENV_FILE="+missing) {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = runAgent(t, -1, append(self, "LIFELINE_ENV_FILE="+bad), "pair")
	if code != exitUsage || !strings.Contains(stderr, bad+":2:") {
		t.Errorf("bad line: exit %d, stderr %q; want it to name %s:2", code, stderr, bad)
	}
	stdout, _, code := runAgent(t, -1, append(self, "LIFELINE_ENV_FILE="+bad), "doctor")
	if code != exitFailed || !strings.HasPrefix(stdout, "✗ configuration") || !strings.Contains(stdout, bad+":2:") {
		t.Errorf("doctor with a bad line: exit %d, stdout %q", code, stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "k")); err == nil {
		t.Error("a key was made from a file that does not read")
	}
}

func TestPairUsage(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"pair", "--frob"}, &out, &errb); code != exitUsage {
		t.Errorf("pair --frob: exit %d", code)
	}
	if code := run(context.Background(), []string{"doctor", "extra"}, &out, &errb); code != exitUsage {
		t.Errorf("doctor extra: exit %d", code)
	}
	out.Reset()
	if code := run(context.Background(), []string{"--help"}, &out, &errb); code != exitOK ||
		!strings.Contains(out.String(), "lifeline-agent pair [--line]") || !strings.Contains(out.String(), "lifeline-agent doctor") {
		t.Errorf("--help lacks pair and doctor:\n%s", out.String())
	}
}

// TestDoctorAsRootChecksAsTheServiceUser: started as root, the doctor
// becomes the service's user before its checks (the key made by pair is
// then its own), and reports what is wrong with a ✗ and exit 1.
func TestDoctorAsRootChecksAsTheServiceUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root (to become the service's user)")
	}
	dir, envFile, key := siteDir(t)
	env := []string{"LIFELINE_ENV_FILE=" + envFile, "LIFELINE_SERVICE_USER=nobody",
		// Loopback only: nothing listens on these ports.
		"LIFELINE_BASTION=127.0.0.1:1", "LIFELINE_FORWARDS=pi:22=127.0.0.1:1",
		"LIFELINE_KNOWN_HOSTS=" + filepath.Join(dir, "known_hosts"), "LIFELINE_STATE_DIR=" + filepath.Dir(key)}
	if _, stderr, code := runAgent(t, -1, env, "pair", "--line"); code != exitOK {
		t.Fatalf("pair: %d %s", code, stderr)
	}
	stdout, stderr, code := runAgent(t, -1, env, "doctor")
	if code != exitFailed {
		t.Errorf("exit %d, want %d\n%s%s", code, exitFailed, stdout, stderr)
	}
	for _, w := range []string{
		"✓ checking as nobody (uid 65534), the service's user\n",
		"✓ configuration from " + envFile,
		"✓ key " + key + ": ssh-ed25519 ",
		"owned by nobody\n",
		"✗ known_hosts " + filepath.Join(dir, "known_hosts") + ": missing",
		"✗ bastion 127.0.0.1:1: TCP connection: refused",
		"✗ target of pi:22: 127.0.0.1:1: refused: the Pi's own SSH server is not running",
		"problems found",
	} {
		if !strings.Contains(stdout, w) {
			t.Errorf("doctor's output lacks %q:\n%s", w, stdout)
		}
	}
}
