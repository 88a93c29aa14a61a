package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lifeline-bastion-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "lifeline-bastion")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type files struct {
	dir, agents, operators string
	agent, operator, other sshtest.Key
}

func newFiles(t *testing.T) files {
	dir := t.TempDir()
	f := files{dir: dir, agents: filepath.Join(dir, "agents"), operators: filepath.Join(dir, "operators")}
	f.agent = sshtest.NewKey(t, dir, "agent")
	f.operator = sshtest.NewKey(t, dir, "operator")
	f.other = sshtest.NewKey(t, dir, "other")
	os.WriteFile(f.agents, []byte(f.agent.AuthorizedLine(`permitlisten="pi:22"`, "agent")+"\n"), 0o600)
	os.WriteFile(f.operators, []byte(f.operator.AuthorizedLine("", "alice")+"\n"), 0o600)
	return f
}

func (f files) env(extra ...string) []string {
	return append([]string{
		"LIFELINE_AGENTS=" + f.agents, "LIFELINE_OPERATORS=" + f.operators,
		"LIFELINE_STATE_DIR=" + filepath.Join(f.dir, "state"), "LIFELINE_HOST_KEY=" + filepath.Join(f.dir, "state", "host_key"),
		"LIFELINE_LISTEN=127.0.0.1:0", "LIFELINE_NAME=test",
		"TWILIO_ACCOUNT_SID=", "TWILIO_AUTH_TOKEN=", "LIFELINE_SMS_FROM=", "LIFELINE_SMS_TO=",
		"LIFELINE_ENV_FILE=/dev/null", // never this machine's /etc/lifeline/bastion.env
	}, extra...)
}

func runBinary(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	out, err := sshtest.Run(context.Background(), 20*time.Second, env, binary, args...)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run: %v", err)
	}
	return out, code
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	f := newFiles(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	both := filepath.Join(f.dir, "both")
	os.WriteFile(both, []byte(f.agent.AuthorizedLine("", "agent-as-operator")+"\n"), 0o600)
	nopermit := filepath.Join(f.dir, "nopermit")
	os.WriteFile(nopermit, []byte("# comment\n\n"+f.agent.AuthorizedLine("", "agent")+"\n"), 0o600)
	garbage := filepath.Join(f.dir, "garbage")
	os.WriteFile(garbage, []byte(f.operator.AuthorizedLine("", "ok")+"\nssh-ed25519 not-base64 x\n"), 0o600)
	tests := []struct {
		name string
		env  []string
		code int
		want []string
	}{
		{"bad duration", []string{"LIFELINE_AGENT_QUIET=soon"}, 2, []string{"LIFELINE_AGENT_QUIET", "soon"}},
		{"bad number", []string{"LIFELINE_MAX_PENDING=lots"}, 2, []string{"LIFELINE_MAX_PENDING"}},
		{"every problem at once", []string{"LIFELINE_MAX_PENDING=0", "LIFELINE_LISTEN=nowhere", "LIFELINE_AGENT_DEAD_AFTER=0s"}, 2,
			[]string{"LIFELINE_MAX_PENDING", "LIFELINE_LISTEN", "LIFELINE_AGENT_DEAD_AFTER"}},
		{"relative path", []string{"LIFELINE_AGENTS=agents"}, 2, []string{"LIFELINE_AGENTS", "absolute"}},
		{"half-configured SMS", []string{"LIFELINE_SMS_TO=+15551234567"}, 2, []string{"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "LIFELINE_SMS_FROM"}},
		{"bad phone number", []string{"TWILIO_ACCOUNT_SID=AC1", "TWILIO_AUTH_TOKEN=x", "LIFELINE_SMS_FROM=+15551234567", "LIFELINE_SMS_TO=555-1234"}, 2, []string{"LIFELINE_SMS_TO", "555-1234"}},
		{"bad quiet CIDR", []string{"LIFELINE_QUIET_FROM=10.0.0.0/33"}, 2, []string{"LIFELINE_QUIET_FROM", "10.0.0.0/33"}},
		{"bad log level", []string{"LIFELINE_LOG_LEVEL=loud"}, 2, []string{"LIFELINE_LOG_LEVEL"}},
		{"unreadable agents file", []string{"LIFELINE_AGENTS=" + filepath.Join(f.dir, "missing")}, 1, []string{filepath.Join(f.dir, "missing")}},
		{"key in both files", []string{"LIFELINE_OPERATORS=" + both}, 1, []string{both + ":1", "both"}},
		{"agent key without permitlisten", []string{"LIFELINE_AGENTS=" + nopermit}, 1, []string{nopermit + ":3", "permitlisten"}},
		{"malformed line", []string{"LIFELINE_OPERATORS=" + garbage}, 1, []string{garbage + ":2"}},
		{"port in use", []string{"LIFELINE_LISTEN=" + busy.Addr().String()}, 1, []string{"LIFELINE_LISTEN"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, code := runBinary(t, f.env(tc.env...))
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("error does not name %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "bastion listening") {
				t.Errorf("listened despite the error:\n%s", out)
			}
		})
	}
}

func TestHelpVersionHostkey(t *testing.T) {
	t.Parallel()
	f := newFiles(t)
	out, code := runBinary(t, nil, "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, v := range []string{"LIFELINE_LISTEN", "LIFELINE_HOST_KEY", "LIFELINE_AGENTS", "LIFELINE_OPERATORS", "LIFELINE_STATE_DIR",
		"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "LIFELINE_SMS_FROM", "LIFELINE_SMS_TO", "LIFELINE_TWILIO_URL", "LIFELINE_QUIET_FROM", "LIFELINE_AGENT_DOWN_AFTER", ":2222", "/var/lib/lifeline/ssh_host_ed25519_key"} {
		if !strings.Contains(out, v) {
			t.Errorf("--help lacks %s", v)
		}
	}
	for _, w := range []string{"hostkey --host NAME[:PORT]", "doctor [--send-test]", "LIFELINE_ENV_FILE"} {
		if !strings.Contains(out, w) {
			t.Errorf("--help lacks %q", w)
		}
	}
	for _, args := range [][]string{{"doctor", "extra"}, {"doctor", "--nope"}, {"hostkey", "--nope"}, {"check-keys", "extra"}} {
		if out, code := runBinary(t, f.env(), args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage):\n%s", args, code, out)
		}
	}
	if out, code := runBinary(t, nil, "doctor", "-h"); code != 0 || !strings.Contains(out, "-send-test") {
		t.Errorf("doctor -h: exit %d\n%s", code, out)
	}
	if out, code := runBinary(t, f.env("LIFELINE_ENV_FILE="+filepath.Join(f.dir, "missing.env")), "doctor"); code != 1 ||
		!strings.HasPrefix(out, "✗ environment file "+filepath.Join(f.dir, "missing.env")) || !strings.Contains(out, "checks failed") {
		t.Errorf("doctor with a missing LIFELINE_ENV_FILE: exit %d\n%s", code, out)
	}
	if out, code := runBinary(t, nil, "--version"); code != 0 || !strings.HasPrefix(out, "lifeline-bastion ") {
		t.Errorf("--version: %d %q", code, out)
	}
	if out, code := runBinary(t, nil, "frobnicate"); code != 2 || !strings.Contains(out, "frobnicate") {
		t.Errorf("unknown command: %d %q", code, out)
	}
	out1, code := runBinary(t, f.env(), "hostkey")
	if code != 0 || !strings.Contains(out1, "ssh-ed25519 ") || !strings.Contains(out1, "SHA256:") {
		t.Fatalf("hostkey: %d\n%s", code, out1)
	}
	fi, err := os.Stat(filepath.Join(f.dir, "state", "host_key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host key file: %v %v", fi, err)
	}
	out2, _ := runBinary(t, f.env(), "hostkey")
	keyOf := func(out string) string {
		for _, l := range sshtest.Lines(out) {
			if f := strings.Fields(l); len(f) == 3 && f[1] == "ssh-ed25519" {
				return f[2]
			}
		}
		return "none in " + out
	}
	if keyOf(out1) != keyOf(out2) {
		t.Fatalf("host key changed between runs:\n%s\n%s", out1, out2)
	}
}

// The running binary: SIGHUP reloads keys without dropping sessions, a bad
// file on reload keeps the old one, SIGTERM stops within seconds.
func TestReloadAndShutdown(t *testing.T) {
	t.Parallel()
	f := newFiles(t)
	port := sshtest.FreePort(t)
	p := sshtest.Start(t, f.env(fmt.Sprintf("LIFELINE_LISTEN=127.0.0.1:%d", port)), binary)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(p.Output(), "bastion listening") }, "not listening:\n%s", p.Output)
	dial := func(k sshtest.Key) (*ssh.Client, error) {
		return ssh.Dial("tcp", addr, &ssh.ClientConfig{Config: sshalgo.Config(), User: "x", Auth: []ssh.AuthMethod{ssh.PublicKeys(k.Signer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
	}
	live, err := dial(f.operator)
	if err != nil {
		t.Fatalf("operator login: %v\n%s", err, p.Output())
	}
	defer live.Close()
	if c, err := dial(f.other); err == nil {
		c.Close()
		t.Fatal("unlisted key logged in")
	}
	// Add the other key and reload.
	os.WriteFile(f.operators, []byte(f.operator.AuthorizedLine("", "alice")+"\n"+f.other.AuthorizedLine("", "bob")+"\n"), 0o600)
	p.Cmd.Process.Signal(syscall.SIGHUP)
	sshtest.Eventually(t, 10*time.Second, func() bool {
		c, err := dial(f.other)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "new key not accepted after SIGHUP:\n%s", p.Output())
	// A broken file on reload keeps the previous policy.
	os.WriteFile(f.operators, []byte("this is not a key\n"), 0o600)
	p.Cmd.Process.Signal(syscall.SIGHUP)
	sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(p.Output(), "reload failed") }, "bad reload not logged:\n%s", p.Output)
	if c, err := dial(f.other); err != nil {
		t.Fatalf("previous policy lost after a bad reload: %v", err)
	} else {
		c.Close()
	}
	// The session from before both reloads is still alive.
	if _, _, err := live.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Fatalf("live session dropped by reload: %v", err)
	}
	start := time.Now()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	if err := p.Cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.Output())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s", d)
	}
	audit, _ := os.ReadFile(filepath.Join(f.dir, "state", "audit.jsonl"))
	for _, kind := range []string{`"event":"start"`, `"event":"login"`, `"event":"auth_failed"`, `"event":"reload"`, `"event":"stop"`} {
		if !strings.Contains(string(audit), kind) {
			t.Errorf("audit log lacks %s:\n%s", kind, audit)
		}
	}
}

// An agent that never connects after a (re)start is reported down once
// LIFELINE_AGENT_DOWN_AFTER has passed: a bastion restarted during an outage
// still tells the owner.
func TestExpectedAgentReportedDownAfterStart(t *testing.T) {
	t.Parallel()
	f := newFiles(t)
	p := sshtest.Start(t, f.env("LIFELINE_AGENT_DOWN_AFTER=1s"), binary)
	sshtest.Eventually(t, 20*time.Second, func() bool { return strings.Contains(p.Output(), "SITE DOWN") && strings.Contains(p.Output(), "pi:22") },
		"no site-down alert for the agent that never came:\n%s", p.Output)
}
