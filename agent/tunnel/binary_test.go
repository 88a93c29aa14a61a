package tunnel

// The real lifeline-agent binary, built once per test process, against
// stock sshd: environment configuration, sd_notify, SIGTERM, exit codes,
// `pubkey`.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

// agentBinary builds ../cmd/lifeline-agent once for the whole test run.
func agentBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "lifeline-agent-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "lifeline-agent")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/lifeline-agent").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range []string{buildDir, releaseDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

// agentProcess is a running lifeline-agent, killed by PID at cleanup.
type agentProcess struct {
	cmd  *exec.Cmd
	out  *sshtest.Buffer
	done chan struct{}
	err  error
}

func startAgentProcess(t testing.TB, env ...string) *agentProcess {
	t.Helper()
	p := &agentProcess{cmd: exec.Command(agentBinary(t)), out: &sshtest.Buffer{}, done: make(chan struct{})}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("lifeline-agent output:\n%s", p.out.String())
		}
	})
	return p
}

// notifySocket listens where the agent sends sd_notify datagrams.
func notifySocket(t testing.TB, dir string) (string, func() []string) {
	t.Helper()
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
	return path, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

func hasState(states []string, prefix string) bool {
	for _, s := range states {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func TestBinaryAgainstStockSSHD(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	sock, states := notifySocket(t, w.dir)
	kh := sshtest.KnownHostsFile(t, w.dir, keyfile.KnownHostsLine([]string{w.srv.Addr}, w.srv.HostKey))
	p := startAgentProcess(t,
		"LIFELINE_BASTION="+w.srv.Addr,
		"LIFELINE_KEY="+filepath.Join(w.dir, "agent_key"),
		"LIFELINE_KNOWN_HOSTS="+kh,
		"LIFELINE_FORWARDS="+w.forwards()[0].String(),
		"LIFELINE_USER=root",
		"LIFELINE_KEEPALIVE=1s",
		"NOTIFY_SOCKET="+sock,
		"WATCHDOG_USEC=400000",
	)
	sshtest.Eventually(t, 20*time.Second, func() bool { return hasState(states(), "READY=1") }, "READY=1")
	sshtest.Eventually(t, 10*time.Second, func() bool { return hasState(states(), "WATCHDOG=1") }, "WATCHDOG=1")
	if err := w.jumpWorks(w.srv, w.fwdPorts[0]); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"msg=connected", "msg=registered", "forward=localhost:" + strconv.Itoa(w.fwdPorts[0])} {
		if !p.out.Contains(want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop on SIGTERM")
	}
	if p.err != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", p.err)
	}
	if !hasState(states(), "STOPPING=1") {
		t.Errorf("no STOPPING=1: %q", states())
	}
}

func TestBinaryCommands(t *testing.T) {
	t.Parallel()
	bin := agentBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "sub", "agent_key")
	run := func(args []string, env ...string) (string, string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
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
	tests := []struct {
		name     string
		args     []string
		env      []string
		code     int
		stdout   []string
		stderr   []string
		validate func(t *testing.T, stdout string)
	}{
		{name: "help", args: []string{"--help"}, stdout: []string{"LIFELINE_BASTION", "LIFELINE_DEAD_AFTER", "30s", "pubkey"}},
		{name: "version", args: []string{"--version"}, stdout: []string{"lifeline-agent "}},
		{name: "unknown", args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown command "frobnicate"`}},
		{name: "no bastion", code: 2, stderr: []string{"LIFELINE_BASTION"}},
		{name: "bad keepalive", env: []string{"LIFELINE_BASTION=b:22", "LIFELINE_KEEPALIVE=soon"}, code: 2, stderr: []string{"LIFELINE_KEEPALIVE"}},
		{name: "bad forwards", env: []string{"LIFELINE_BASTION=b:22", "LIFELINE_FORWARDS=pi"}, code: 2, stderr: []string{"LIFELINE_FORWARDS"}},
		{name: "pubkey", args: []string{"pubkey"}, env: []string{"LIFELINE_KEY=" + key, "LIFELINE_FORWARDS=pi:22=127.0.0.1:22,nuc:3389=192.168.1.100:3389"},
			stdout: []string{`permitlisten="pi:22",permitlisten="nuc:3389" ssh-ed25519 `, "lifeline-agent@"},
			validate: func(t *testing.T, stdout string) {
				fi, err := os.Stat(key)
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Fatalf("key not created 0600: %v %v", fi, err)
				}
				s, _, err := keyfile.LoadOrCreate(key, "")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(stdout, keyfile.AuthorizedLine(s.PublicKey(), "")) {
					t.Errorf("printed key is not the key file's")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := run(tt.args, tt.env...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout %q lacks %q", stdout, w)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
			if tt.validate != nil {
				tt.validate(t, stdout)
			}
		})
	}
}

// TestBinaryReadyWithoutBastion: the real agent, its bastion down (nothing
// listens there), under a systemd-like environment: READY=1 at once with
// the reason in STATUS=, the watchdog fed, no exit; its stderr is the
// journal stream (JOURNAL_STREAM names the pipe), so lines carry a
// priority prefix and no time.
func TestBinaryReadyWithoutBastion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock, states := notifySocket(t, dir)
	dead := "127.0.0.1:" + strconv.Itoa(sshtest.FreePort(t))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := w.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	cmd := exec.Command(agentBinary(t))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"LIFELINE_BASTION=" + dead,
		"LIFELINE_KEY=" + filepath.Join(dir, "agent_key"),
		"LIFELINE_KNOWN_HOSTS=" + filepath.Join(dir, "known_hosts"),
		"LIFELINE_STATE_DIR=" + filepath.Join(dir, "state"),
		"LIFELINE_CHECK_EVERY=0",
		"NOTIFY_SOCKET=" + sock,
		"WATCHDOG_USEC=400000",
		fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino),
	}
	cmd.Stderr = w
	out := &sshtest.Buffer{}
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(out, r) })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		wg.Wait()
		r.Close()
		if t.Failed() {
			t.Logf("lifeline-agent output:\n%s", out.String())
		}
	})
	sshtest.Eventually(t, 10*time.Second, func() bool { return hasState(states(), "READY=1") }, "READY=1")
	sshtest.Eventually(t, 10*time.Second, func() bool {
		for _, s := range states() {
			if strings.Contains(s, "STATUS="+dead+" unreachable: ") && strings.Contains(s, "connection refused; retry in ") {
				return true
			}
		}
		return false
	}, "STATUS= saying why")
	sshtest.Eventually(t, 10*time.Second, func() bool {
		n := 0
		for _, s := range states() {
			if s == "WATCHDOG=1" {
				n++
			}
		}
		return n >= 3
	}, "watchdog pings")
	select {
	case err := <-exited:
		t.Fatalf("agent exited with its bastion down: %v", err)
	default:
	}
	sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "connect failed") }, "log lines")
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasPrefix(line, "<") || strings.Contains(line, "time=") {
			t.Errorf("not a journal line: %q", line)
		}
	}
	if !strings.Contains(out.String(), "<6>level=INFO msg=\"lifeline-agent starting\"") || !strings.Contains(out.String(), "<4>level=WARN msg=\"connect failed\"") {
		t.Errorf("priorities missing:\n%s", out.String())
	}
}
