// Package sshtest holds test helpers shared by lifeline's tests: keys on
// disk, a throwaway OpenSSH sshd (the Pi's own server, or a stock jump
// host), a relay that can black-hole or pause a link, a test logger, and
// polling with a deadline. Only _test.go files may import it.
package sshtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	log     *Buffer
	config  string
	netns   string
	t       testing.TB
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
}

// SSHDOptions configure StartSSHD.
type SSHDOptions struct {
	// AuthorizedKeys is the content of root's (the test user's) authorized_keys.
	AuthorizedKeys string
	// Extra sshd_config lines. They are written before StartSSHD's own
	// lines: sshd keeps the first value of a keyword, so they override them.
	Extra []string
	// Listen is host:port; default 127.0.0.1 on a free port.
	Listen string
	// NetNS, when set, runs sshd in that network namespace.
	NetNS string
}

// StartSSHD runs sshd -D -e with its own config and host key in a temp dir,
// and stops it (by PID, with its sessions) when the test ends. Needs root
// and sshd. When the test fails, sshd's log goes to t.Log.
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
	lines := append(slices.Clone(o.Extra),
		"ListenAddress "+listen,
		"HostKey "+hk.Path,
		"PidFile none",
		"AuthorizedKeysFile "+ak,
		"StrictModes no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"LogLevel VERBOSE",
		"MaxStartups 200",
		"MaxSessions 100",
	)
	if err := os.WriteFile(cfg, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &SSHD{Port: port, Addr: listen, HostKey: hk.Signer.PublicKey(), Dir: dir, config: cfg, netns: o.NetNS, t: t, log: &Buffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sshd %s log:\n%s", s.Addr, s.log.String())
		}
	})
	t.Cleanup(s.Stop)
	s.start()
	return s
}

// start runs sshd and waits until it listens; it fails the test if sshd
// exits first.
func (s *SSHD) start() {
	s.t.Helper()
	sshd, _ := exec.LookPath("sshd")
	if sshd == "" {
		sshd = "/usr/sbin/sshd"
	}
	args := []string{sshd, "-D", "-e", "-f", s.config}
	if s.netns != "" {
		args = append([]string{"ip", "netns", "exec", s.netns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start sshd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }() // ends when sshd does; Stop kills it
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	listening := func() bool {
		if s.netns != "" {
			return strings.Contains(s.log.String(), "Server listening")
		}
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	Eventually(s.t, 10*time.Second, func() bool {
		select {
		case <-done:
			s.t.Fatalf("sshd exited before listening on %s (netns %q): %v; log:\n%s", s.Addr, s.netns, cmd.ProcessState, s.log.String())
		default:
		}
		return listening()
	}, "sshd did not listen on %s (netns %q); log:\n%s", s.Addr, s.netns, s.log.String)
}

// Stop ends sshd and every process it forked (the sessions: their
// connections die with them, as when the machine goes away), by PID, and
// waits for sshd. Stopping a stopped server does nothing.
func (s *SSHD) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	killTree(cmd.Process.Pid)
	<-done
}

// Restart starts sshd again on the same address with the same host key,
// config and authorized_keys, stopping it first (see Stop) if it runs: no
// session survives a restart. It fails the test if sshd does not listen.
func (s *SSHD) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// killTree stops pid and its descendants (top down, so that none forks a
// child unseen), then kills them all with SIGKILL.
func killTree(pid int) {
	var all []int
	var walk func(int)
	walk = func(p int) {
		syscall.Kill(p, syscall.SIGSTOP)
		all = append(all, p)
		for _, c := range ChildPIDs(p) {
			walk(c)
		}
	}
	walk(pid)
	for _, p := range all {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// ChildPIDs lists the direct children of pid's main thread (from /proc;
// nil when pid is gone). Children that exited but were not yet reaped are
// listed too.
func ChildPIDs(pid int) []int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out
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

// Logger is a debug-level text logger into a Buffer the test can search.
// The buffer goes to t.Log when the test fails, or always when the
// environment variable LIFELINE_TEST_LOGS is set.
func Logger(t testing.TB) (*slog.Logger, *Buffer) {
	buf := &Buffer{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("LIFELINE_TEST_LOGS") != "" {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// KnownHostsFile writes lines (known_hosts lines) to a new file in dir and
// returns its path.
func KnownHostsFile(t testing.TB, dir string, lines ...string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "known_hosts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

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

// Relay is a TCP relay on loopback whose forwarding the test controls. It
// models two kinds of outage:
//
//   - BlackHole/Restore: a carrier that silently drops packets and loses
//     its NAT state. Bytes are read and dropped, nothing is closed, and a
//     connection that tried to carry bytes during the outage never carries
//     any again.
//   - Pause/Resume: a path that holds packets in flight. Bytes are read and
//     held, and delivered in order on Resume; Resume(true) instead forgets
//     the connections that existed when the pause began, like a NAT that
//     dropped its mappings (see Resume).
//
// Both kinds keep reading every connection, so a client's close is seen
// (ClientClosedAfter) while nothing is forwarded. A black hole wins over a
// pause. Close (called at cleanup) ends every connection.
type Relay struct {
	Addr   string
	target string
	ln     net.Listener
	mu     sync.Mutex
	cond   *sync.Cond // signalled on any change of the fields below
	holed  bool
	paused bool
	closed bool
	conns  map[net.Conn]struct{}
	flows  map[*flow]struct{}
	closes []clientClose
	bytes  int64
	reads  int64
	wg     sync.WaitGroup
}

// flow is one client connection and its upstream connection.
type flow struct {
	created time.Time
	frozen  bool // existed when the current pause began
	stale   bool // forgotten by Resume(true)
}

// clientClose is when a client closed (or was reset on) a flow.
type clientClose struct {
	created, at time.Time
}

// direction is the bytes of one flow read from one side and not yet
// written to the other; guarded by Relay.mu.
type direction struct {
	held    [][]byte
	eof     bool // the source ended; nothing more is queued
	dead    bool // read during a black hole: never carries bytes again
	writing bool // a chunk is being written
	broken  bool // a write failed
}

// maxHeld bounds the chunks a direction holds during a pause (the reader
// then stops reading, as a full window would stop the sender).
const maxHeld = 64

// NewRelay listens on 127.0.0.1:0 and forwards to target.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}, flows: map[*flow]struct{}{}}
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

// Pause stops forwarding without dropping anything: bytes are read and
// held; connections opened during the pause are accepted and reach the
// target only on Resume (like SYNs retransmitted until the path returns).
// It returns when the pause began.
func (r *Relay) Pause() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paused = true
	for f := range r.flows {
		f.frozen = true
	}
	return time.Now()
}

// Resume ends a pause and returns when. Without forget the held bytes are
// delivered. With forget the connections that existed when the pause began
// are dead: their held bytes are dropped, so are the target's further
// bytes, and the client's next byte gets a TCP reset (the target side is
// left open until the target gives up). Connections opened during the
// pause are connected either way.
func (r *Relay) Resume(forget bool) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for f := range r.flows {
		if f.frozen && forget {
			f.stale = true
		}
		f.frozen = false
	}
	r.paused = false
	r.cond.Broadcast()
	return time.Now()
}

// ClientClosedAfter reports the first time, at or after since, that a
// client closed a connection it had opened before since (or was reset on
// one), and whether there was one.
func (r *Relay) ClientClosedAfter(since time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.closes {
		if c.created.Before(since) && !c.at.Before(since) {
			return c.at, true
		}
	}
	return time.Time{}, false
}

// Bytes is the number of bytes forwarded (both directions).
func (r *Relay) Bytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// Reads is the number of reads whose bytes were forwarded (both
// directions; about one per TCP segment).
func (r *Relay) Reads() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reads
}

// Close stops the relay and closes every connection.
func (r *Relay) Close() {
	r.ln.Close()
	r.mu.Lock()
	r.closed = true
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
		f := &flow{created: time.Now()}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.conns[c] = struct{}{}
		r.flows[f] = struct{}{}
		holedAtStart := r.holed
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serve(c, f, holedAtStart)
		}()
	}
}

// noteClose records that the client of f closed its connection, unless the
// read error is the relay's own close.
func (r *Relay) noteClose(f *flow, err error) {
	if errors.Is(err, net.ErrClosed) {
		return
	}
	r.mu.Lock()
	r.closes = append(r.closes, clientClose{created: f.created, at: time.Now()})
	r.mu.Unlock()
}

// track adds c to the connections Close ends; false if the relay is closed.
func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *Relay) untrack(c net.Conn) {
	c.Close()
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

func (r *Relay) serve(c net.Conn, f *flow, holed bool) {
	defer func() {
		r.untrack(c)
		r.mu.Lock()
		delete(r.flows, f)
		r.mu.Unlock()
	}()
	if holed {
		_, err := io.Copy(io.Discard, c) // a SYN that goes nowhere: hold until closed
		if err == nil {
			err = io.EOF
		}
		r.noteClose(f, err)
		return
	}
	var up, down direction
	var readers sync.WaitGroup
	readers.Go(func() { r.read(c, &up, f, true) })
	defer readers.Wait()

	// Reach the target only once the path is open.
	r.mu.Lock()
	for r.paused && !r.closed {
		r.cond.Wait()
	}
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return
	}
	s, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		r.untrack(c) // ends the reader
		return
	}
	if !r.track(s) {
		s.Close()
		return
	}
	defer r.untrack(s) // ends the target's reader if still reading
	readers.Go(func() { r.read(s, &down, f, false) })
	var writers sync.WaitGroup
	writers.Go(func() { r.write(s, &up, f) })
	writers.Go(func() { r.write(c, &down, f) })
	writers.Wait()
	r.untrack(c)
}

// read reads src into d until src ends. While the path is open it reads
// only when everything read before was written (the relay holds no more
// than a plain copy loop would); while paused it reads ahead up to maxHeld
// chunks.
func (r *Relay) read(src net.Conn, d *direction, f *flow, fromClient bool) {
	defer func() {
		r.mu.Lock()
		d.eof = true
		r.cond.Broadcast()
		r.mu.Unlock()
	}()
	for {
		r.mu.Lock()
		for !r.closed && !d.broken && !r.mayRead(d) {
			r.cond.Wait()
		}
		stop := r.closed || d.broken
		r.mu.Unlock()
		if stop {
			return
		}
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			if r.holed {
				d.dead = true // once black-holed, this direction never carries bytes again
			}
			stale := f.stale
			if !d.dead && !stale {
				d.held = append(d.held, buf[:n])
				r.cond.Broadcast()
			}
			r.mu.Unlock()
			if fromClient && stale {
				// A NAT without the mapping: the client's byte gets a reset.
				if tc, ok := src.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				src.Close()
				r.noteClose(f, io.EOF)
				return
			}
		}
		if err != nil {
			if fromClient {
				r.noteClose(f, err)
			}
			return
		}
	}
}

// mayRead: whether read may read more into d; r.mu is held.
func (r *Relay) mayRead(d *direction) bool {
	if r.paused {
		return len(d.held) < maxHeld
	}
	return len(d.held) == 0 && !d.writing
}

// mayWrite: whether write has something to do; r.mu is held.
func (r *Relay) mayWrite(d *direction, f *flow) bool {
	if f.stale {
		return len(d.held) > 0 || d.eof
	}
	return !r.paused && (len(d.held) > 0 || d.eof)
}

// write writes what d holds to dst while the path is open, and half-closes
// dst once the source ended (unless the direction is dead or forgotten).
func (r *Relay) write(dst net.Conn, d *direction, f *flow) {
	for {
		r.mu.Lock()
		for !r.closed && !r.mayWrite(d, f) {
			r.cond.Wait()
		}
		switch {
		case r.closed:
			r.mu.Unlock()
			return
		case f.stale:
			d.held = nil // held bytes of a forgotten connection are lost
			eof := d.eof
			r.cond.Broadcast()
			r.mu.Unlock()
			if eof {
				return
			}
			continue
		case len(d.held) == 0: // the source ended and all was written
			dead := d.dead
			r.mu.Unlock()
			if !dead {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			return
		}
		chunk := d.held[0]
		d.held = d.held[1:]
		d.writing = true
		r.bytes += int64(len(chunk))
		r.reads++
		r.mu.Unlock()
		_, err := dst.Write(chunk)
		r.mu.Lock()
		d.writing = false
		if err != nil {
			d.broken = true
		}
		r.cond.Broadcast()
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
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
