//go:build integration

package integration

// lifeline-agent pair and doctor against the real lifeline-bastion, all on
// loopback, the way a site is set up: pair as root makes the key as the
// service's user (here nobody), its line goes in the bastion's agents
// file, the agent runs, and the doctor (started as root, checking as
// nobody) says ✓, or ✗ with the fix once something is broken.
//
//	lifeline-agent doctor (uid nobody) ──SSH──┐
//	lifeline-agent (the running agent) ──SSH──┴─> lifeline-bastion 127.0.0.1:B
//	      │                                        agents file: the pair line
//	      └──TCP──> the Pi's sshd 127.0.0.1:S   (target of pi:22)

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// runDoctor runs `lifeline-agent doctor` with env and returns its output
// and exit code.
func runDoctor(t *testing.T, env []string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("lifeline-agent"), "doctor")
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("doctor: %v\n%s", err, errb.String())
	}
	t.Logf("lifeline-agent doctor: exit %d\n%s%s", code, out.String(), errb.String())
	return out.String(), code
}

// doctorLine returns the line of out containing sub.
func doctorLine(t *testing.T, out, sub string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	t.Fatalf("no line with %q in the doctor's output:\n%s", sub, out)
	return ""
}

// expect checks the line with sub starts with mark and holds every text.
func expect(t *testing.T, out, sub, mark string, texts ...string) {
	t.Helper()
	l := doctorLine(t, out, sub)
	if !strings.HasPrefix(l, mark+" ") {
		t.Errorf("%q: want %s\n%s", l, mark, out)
	}
	for _, x := range texts {
		if !strings.Contains(l, x) {
			t.Errorf("%q lacks %q", l, x)
		}
	}
}

func failures(out string) []string {
	var f []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "✗ ") {
			f = append(f, l)
		}
	}
	return f
}

func TestAgentPairAndDoctor(t *testing.T) {
	sshtest.Need(t, "sshd", "ssh-keygen")
	sshtest.NeedRoot(t)
	dir := t.TempDir()
	// The service's user (nobody) must reach its files.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	operator := sshtest.NewKey(t, dir, "operator")
	pi := sshtest.StartSSHD(t, sshtest.SSHDOptions{AuthorizedKeys: operator.AuthorizedLine("", "alice")})
	bastionPort := sshtest.FreePort(t)
	bastionAddr := fmt.Sprintf("127.0.0.1:%d", bastionPort)
	agents := filepath.Join(dir, "agents")
	bastionEnv := []string{
		"LIFELINE_LISTEN=" + bastionAddr,
		"LIFELINE_HOST_KEY=" + filepath.Join(dir, "bastion", "host_key"),
		"LIFELINE_STATE_DIR=" + filepath.Join(dir, "bastion"),
		"LIFELINE_AGENTS=" + agents,
		"LIFELINE_OPERATORS=" + filepath.Join(dir, "operators"),
		"LIFELINE_NAME=bastion",
		"TWILIO_ACCOUNT_SID=", "TWILIO_AUTH_TOKEN=", "LIFELINE_SMS_FROM=", "LIFELINE_SMS_TO=",
	}

	// The Pi's configuration, as the package's agent.env holds it.
	key := filepath.Join(dir, "agent", "agent_ed25519_key")
	known := filepath.Join(dir, "known_hosts")
	vars := []string{
		"LIFELINE_BASTION=" + bastionAddr,
		"LIFELINE_KEY=" + key,
		"LIFELINE_KNOWN_HOSTS=" + known,
		fmt.Sprintf("LIFELINE_FORWARDS=pi:22=127.0.0.1:%d", pi.Port),
		"LIFELINE_STATE_DIR=" + filepath.Join(dir, "agent"),
		"LIFELINE_CHECK_EVERY=0",
	}
	envFile := filepath.Join(dir, "agent.env")
	if err := os.WriteFile(envFile, []byte(strings.Join(vars, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	site := []string{"LIFELINE_ENV_FILE=" + envFile, "LIFELINE_SERVICE_USER=nobody"}

	// Pair: the key is made as nobody, the line is the agents file's.
	pairLine, err := sshtest.Stdout(context.Background(), 20*time.Second, site, bin("lifeline-agent"), "pair", "--line")
	if err != nil {
		t.Fatal(err)
	}
	pairLine = strings.TrimSpace(pairLine)
	if fi, err := os.Stat(key); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("pair did not make the key as nobody: %v %v", fi, err)
	}
	writeAgents := func(line string) {
		t.Helper()
		if err := os.WriteFile(agents, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeAgents(pairLine)
	os.WriteFile(filepath.Join(dir, "operators"), []byte(operator.AuthorizedLine("", "alice@laptop")+"\n"), 0o600)
	hostKey := bastionHostKey(t, bastionEnv)
	pinned := knownHostsFor(bastionAddr, hostKey) + "\n"
	os.WriteFile(known, []byte(pinned), 0o644)
	bastion := sshtest.Start(t, bastionEnv, bin("lifeline-bastion"))
	sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(bastion.Output(), "bastion listening") },
		"bastion did not start:\n%s", bastion.Output)
	// The agent runs beside the doctor, as on a live site.
	agent := sshtest.Start(t, vars, bin("lifeline-agent"))
	sshtest.Eventually(t, 20*time.Second, func() bool { return strings.Contains(agent.Output(), "registered") },
		"the agent never registered:\n%s\nbastion:\n%s", agent.Output, bastion.Output)

	t.Run("paired", func(t *testing.T) {
		before := strings.Count(bastion.Output(), "registered")
		out, code := runDoctor(t, site)
		if code != 0 || len(failures(out)) > 0 {
			t.Fatalf("exit %d, failures %q:\n%s", code, failures(out), out)
		}
		expect(t, out, "checking as", "✓", "nobody (uid 65534)")
		expect(t, out, "configuration from "+envFile, "✓")
		expect(t, out, "key "+key, "✓", "owned by nobody")
		expect(t, out, "known_hosts "+known, "✓", "pins "+bastionAddr)
		expect(t, out, ": TCP connection", "✓")
		expect(t, out, ": host key", "✓", keyfile.Fingerprint(hostKey), "SSH-2.0-lifeline")
		expect(t, out, ": login with the agent key", "✓", "accepted")
		expect(t, out, "target of pi:22", "✓", "answers: SSH-2.0-OpenSSH")
		// Until the bastion knows lifeline-check-forward@lifeline, the
		// registration is skipped, never a ✗, never a real tcpip-forward.
		if l := doctorLine(t, out, "may register pi:22"); !strings.HasPrefix(l, "✓ ") && !strings.Contains(l, "does not know") {
			t.Errorf("registration line %q", l)
		}
		// The running agent kept its name: the doctor took nothing.
		if strings.Contains(bastion.Output(), "replacing stale connection") || strings.Count(bastion.Output(), "registered") != before {
			t.Errorf("the doctor disturbed the agent's registration:\n%s", bastion.Output())
		}
	})

	t.Run("forward not permitted", func(t *testing.T) {
		out, code := runDoctor(t, append(site, fmt.Sprintf("LIFELINE_FORWARDS=pi:22=127.0.0.1:%d,nuc:3389=127.0.0.1:%d", pi.Port, pi.Port)))
		l := doctorLine(t, out, "may register nuc:3389")
		if strings.Contains(l, "does not know") {
			t.Skipf("this bastion does not answer lifeline-check-forward@lifeline yet: %s", l)
		}
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		expect(t, out, "may register nuc:3389", "✗", "the bastion says:", "not permitted", `permitlisten="nuc:3389"`,
			`permitlisten="pi:22",permitlisten="nuc:3389" ssh-ed25519 `)
		expect(t, out, "may register pi:22", "✓")
	})

	t.Run("host key wrong", func(t *testing.T) {
		impostor := sshtest.NewKey(t, t.TempDir(), "impostor")
		os.WriteFile(known, []byte(knownHostsFor(bastionAddr, impostor.Signer.PublicKey())+"\n"), 0o644)
		defer os.WriteFile(known, []byte(pinned), 0o644)
		out, code := runDoctor(t, site)
		if code != 1 || len(failures(out)) != 1 {
			t.Errorf("exit %d, failures %q; want 1 and the host key only:\n%s", code, failures(out), out)
		}
		expect(t, out, ": host key", "✗", "MISMATCH", keyfile.Fingerprint(hostKey), "someone may be in the middle",
			"fix: compare with terraform output host_key_fingerprint", "replace its line in "+known)
		expect(t, out, ": login with the agent key", "-", "not tried")
	})

	// From here on the bastion refuses the agent: stop it, so it does not
	// retry meanwhile.
	agent.Stop()

	t.Run("key not in the agents file", func(t *testing.T) {
		other := sshtest.NewKey(t, t.TempDir(), "other-site")
		reloads := strings.Count(bastion.Output(), "key files reloaded")
		writeAgents(other.AuthorizedLine(`permitlisten="pi:22"`, "other"))
		bastion.Cmd.Process.Signal(syscall.SIGHUP)
		sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Count(bastion.Output(), "key files reloaded") > reloads },
			"the bastion did not reload:\n%s", bastion.Output)
		out, code := runDoctor(t, site)
		if code != 1 || len(failures(out)) != 1 {
			t.Errorf("exit %d, failures %q; want 1 and the login only:\n%s", code, failures(out), out)
		}
		expect(t, out, ": login with the agent key", "✗", "the bastion refused it", "not in its agents file",
			"the Terraform variable agents", pairLine)
		expect(t, out, "may register pi:22", "-", "not tried: the login failed")
		expect(t, out, "target of pi:22", "✓")

		writeAgents(pairLine)
		bastion.Cmd.Process.Signal(syscall.SIGHUP)
		sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Count(bastion.Output(), "key files reloaded") > reloads+1 },
			"the bastion did not reload:\n%s", bastion.Output)
	})

	t.Run("the Pi's sshd is down", func(t *testing.T) {
		pi.Stop()
		out, code := runDoctor(t, site)
		if code != 1 || len(failures(out)) != 1 {
			t.Errorf("exit %d, failures %q; want 1 and the target only:\n%s", code, failures(out), out)
		}
		expect(t, out, "target of pi:22", "✗", "the Pi's own SSH server is not running", "fix: sudo systemctl enable --now ssh")
		expect(t, out, ": login with the agent key", "✓")
	})
}
