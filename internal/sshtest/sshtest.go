// Package sshtest holds test helpers shared by lifeline's tests: keys on
// disk, a throwaway OpenSSH sshd (the Pi's own server), a black-hole relay,
// and polling with a deadline. Only _test.go files may import it.
package sshtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Eventually polls cond until it is true or timeout passes, then fails the
// test with the message. It looks again after 1ms, then twice as long each
// time up to every 20ms, so a condition that holds soon (a goroutine
// parking on a fake clock) costs little. Arguments of type func() string
// are called at failure time, so they can show output gathered meanwhile.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, a ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			for i, x := range a {
				if f, ok := x.(func() string); ok {
					a[i] = f()
				}
			}
			t.Fatalf("after %s: "+format, append([]any{timeout}, a...)...)
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// Key is an ed25519 key written to disk in OpenSSH format with mode 0600.
type Key struct {
	Path   string
	Signer ssh.Signer
}

// AuthorizedLine is the public half as an authorized_keys line with comment.
func (k Key) AuthorizedLine(options, comment string) string {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.Signer.PublicKey())))
	if options != "" {
		line = options + " " + line
	}
	if comment != "" {
		line += " " + comment
	}
	return line
}

// NewKey generates an ed25519 key and writes it to dir/name.
func NewKey(t testing.TB, dir, name string) Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Path: path, Signer: signer}
}

// Need skips the test unless every program is installed.
func Need(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + p); err2 == nil {
				continue
			}
			t.Skipf("%s is not installed (apt-get install the Debian package; make test does it as root)", p)
		}
	}
}

// NeedRoot skips the test unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (network namespaces / sshd privilege separation); run make test as root")
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// SSHD is a throwaway OpenSSH server.
type SSHD struct {
	Port    int
	Addr    string
	HostKey ssh.PublicKey
	Dir     string
	cmd     *exec.Cmd
	log     *Buffer
	config  string
	t       testing.TB
	mu      sync.Mutex
}

// SSHDOptions configure StartSSHD.
type SSHDOptions struct {
	// AuthorizedKeys is the content of root's (the test user's) authorized_keys.
	AuthorizedKeys string
	// Extra sshd_config lines.
	Extra []string
	// Listen is host:port; default 127.0.0.1 on a free port.
	Listen string
	// NetNS, when set, runs sshd in that network namespace.
	NetNS string
}

// StartSSHD runs sshd -D -e with its own config and host key in a temp dir,
// and stops it (by PID) when the test ends. Needs root and sshd.
func StartSSHD(t testing.TB, o SSHDOptions) *SSHD {
	t.Helper()
	Need(t, "sshd")
	NeedRoot(t)
	dir := t.TempDir()
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("create /run/sshd: %v", err)
	}
	hk := NewKey(t, dir, "ssh_host_ed25519_key")
	ak := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(ak, []byte(o.AuthorizedKeys+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := o.Listen
	if listen == "" {
		listen = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	}
	_, portStr, _ := net.SplitHostPort(listen)
	port, _ := strconv.Atoi(portStr)
	cfg := filepath.Join(dir, "sshd_config")
	lines := []string{
		"ListenAddress " + listen,
		"HostKey " + hk.Path,
		"PidFile none",
		"AuthorizedKeysFile " + ak,
		"StrictModes no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"LogLevel VERBOSE",
		"MaxStartups 200",
		"MaxSessions 100",
	}
	lines = append(lines, o.Extra...)
	if err := os.WriteFile(cfg, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &SSHD{Port: port, Addr: listen, HostKey: hk.Signer.PublicKey(), Dir: dir, config: cfg, t: t, log: &Buffer{}}
	s.start(o.NetNS)
	t.Cleanup(s.Stop)
	return s
}

func (s *SSHD) start(netns string) {
	s.t.Helper()
	sshd, _ := exec.LookPath("sshd")
	if sshd == "" {
		sshd = "/usr/sbin/sshd"
	}
	args := []string{sshd, "-D", "-e", "-f", s.config}
	if netns != "" {
		args = append([]string{"ip", "netns", "exec", netns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start sshd: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	if netns == "" {
		Eventually(s.t, 10*time.Second, func() bool {
			c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err == nil
		}, "sshd did not listen on %s; log:\n%s", s.Addr, s.log.String())
	} else {
		Eventually(s.t, 10*time.Second, func() bool { return strings.Contains(s.log.String(), "Server listening") },
			"sshd in %s did not start; log:\n%s", netns, s.log.String())
	}
}

// Stop ends sshd (by PID) and waits for it.
func (s *SSHD) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Process.Kill()
	cmd.Wait()
}

// PID is the sshd master's process id (0 when stopped).
func (s *SSHD) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Log is what sshd printed so far.
func (s *SSHD) Log() string { return s.log.String() }

// KnownHostsLine returns a known_hosts line for this server under name
// (use the name the client connects to or its HostKeyAlias).
func (s *SSHD) KnownHostsLine(name string) string {
	return name + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey)))
}

// Buffer is a goroutine-safe output sink (process output, logs).
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Contains reports whether the output so far contains sub.
func (b *Buffer) Contains(sub string) bool { return strings.Contains(b.String(), sub) }

// Process is a command started by a test and ended by PID at cleanup.
type Process struct {
	Cmd *exec.Cmd
	out *Buffer
}

// Start runs name args in the background with output captured.
func Start(t testing.TB, env []string, name string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Cmd: cmd, out: out}
	t.Cleanup(p.Stop)
	return p
}

// Output is what the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Stop ends the process by PID (SIGTERM, then SIGKILL after 5s) and waits.
func (p *Process) Stop() {
	if p.Cmd.Process == nil || p.Cmd.ProcessState != nil {
		return
	}
	p.Cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.Cmd.Wait(); close(done) }()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		p.Cmd.Process.Kill()
		<-done
	}
}

// Run runs a command to completion with a timeout and returns combined output.
func Run(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	var out bytes.Buffer
	err := run(ctx, timeout, env, &out, &out, name, args...)
	return out.String(), err
}

// Stdout runs a command to completion with a timeout and returns its
// standard output; standard error is part of the error.
func Stdout(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	if err := run(ctx, timeout, env, &out, &errb, name, args...); err != nil {
		return out.String(), fmt.Errorf("%s %v: %w: %s", name, args, err, errb.String())
	}
	return out.String(), nil
}

func run(ctx context.Context, timeout time.Duration, env []string, stdout, stderr io.Writer, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = time.Second
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return cmd.Run()
}

// OperatorConfig writes the ssh_config an operator uses with lifeline:
// `bastion` is the jump host, `pi` is reached through it, host keys are
// checked at both hops against knownHosts, and only identity is offered.
// It returns the file's path (dir/ssh_config).
func OperatorConfig(t testing.TB, dir, bastionHost string, bastionPort int, identity, knownHosts string) string {
	t.Helper()
	path := filepath.Join(dir, "ssh_config")
	conf := fmt.Sprintf(`Host bastion
  HostName %s
  Port %d
  User operator
Host pi
  User root
  ProxyJump bastion
Host *
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
  LogLevel ERROR
`, bastionHost, bastionPort, identity, knownHosts)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Lines splits output into non-empty lines.
func Lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Relay is a TCP relay on loopback whose forwarding the test controls: it
// can black-hole the path (stop moving bytes without closing anything, like
// a carrier that silently drops packets) and restore it.
type Relay struct {
	Addr   string
	target string
	ln     net.Listener
	mu     sync.Mutex
	cond   *sync.Cond
	holed  bool
	refuse bool
	conns  map[net.Conn]struct{}
	bytes  int64
	wg     sync.WaitGroup
}

// NewRelay listens on 127.0.0.1:0 and forwards to target.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	r.cond = sync.NewCond(&r.mu)
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.Close)
	return r
}

// BlackHole stops forwarding: bytes are read and dropped, nothing is
// closed, and new connections are accepted but never connected.
func (r *Relay) BlackHole() {
	r.mu.Lock()
	r.holed = true
	r.mu.Unlock()
}

// Restore forwards again (new connections only: like a carrier whose NAT
// state is gone, the connections from the outage stay dead).
func (r *Relay) Restore() {
	r.mu.Lock()
	r.holed = false
	r.cond.Broadcast()
	r.mu.Unlock()
}

// Bytes is the number of bytes forwarded (both directions).
func (r *Relay) Bytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// Close stops the relay and closes every connection.
func (r *Relay) Close() {
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.holed = false
	r.cond.Broadcast()
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns[c] = struct{}{}
		holedAtStart := r.holed
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serve(c, holedAtStart)
		}()
	}
}

func (r *Relay) serve(c net.Conn, holed bool) {
	defer func() {
		c.Close()
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
	}()
	if holed {
		io.Copy(io.Discard, c) // a SYN that goes nowhere: hold until closed
		return
	}
	up, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.conns[up] = struct{}{}
	r.mu.Unlock()
	defer func() {
		up.Close()
		r.mu.Lock()
		delete(r.conns, up)
		r.mu.Unlock()
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	pump := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		dead := false
		for {
			n, err := src.Read(buf)
			if n > 0 {
				r.mu.Lock()
				if r.holed {
					dead = true // once black-holed, this connection never carries bytes again
				}
				if !dead {
					r.bytes += int64(n)
				}
				r.mu.Unlock()
				if !dead {
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
			}
			if err != nil {
				break
			}
		}
		if !dead {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		}
	}
	go pump(up, c)
	go pump(c, up)
	wg.Wait()
}

// ServeConns accepts connections on ln until the test ends and runs handle
// for each in a goroutine of its own; handle must close its connection.
// Cleanup closes ln and waits for every handler to return.
func ServeConns(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
}
