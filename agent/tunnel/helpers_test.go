package tunnel

// Test helpers meant to be copied (integration suite, bastion tests): a stock
// OpenSSH sshd launcher, an operator running stock `ssh -J`, and a TCP relay
// that can black-hole a link. Every process is started by the test and ended
// by PID in t.Cleanup; every address is on 127.0.0.1.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// needRoot skips unless root and the named programs are installed.
func needRoot(t testing.TB, progs ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: stock sshd runs as root and logs in as root")
	}
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("needs %s (Debian package openssh-server/openssh-client/autossh): %v", p, err)
		}
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer = sshtest.Buffer

// testLogger logs to a buffer the test can search, and to t.Log on failure.
func testLogger(t testing.TB) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("LIFELINE_TEST_LOGS") != "" {
			t.Logf("agent log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// newKey creates an ed25519 key file (0600) and returns its path and signer.
func newKey(t testing.TB, dir, name string) (string, ssh.Signer) {
	t.Helper()
	path := filepath.Join(dir, name)
	s, _, err := keyfile.LoadOrCreate(path, name)
	if err != nil {
		t.Fatal(err)
	}
	return path, s
}

// sshd is a stock OpenSSH server with its own config, host key and
// authorized_keys in a temporary directory, listening on 127.0.0.1.
type sshd struct {
	t       testing.TB
	dir     string
	Port    int
	HostKey ssh.PublicKey
	cfgPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	log     *syncBuffer
}

// sshdOptions configure startSSHD.
type sshdOptions struct {
	// AuthorizedKeys are whole authorized_keys lines.
	AuthorizedKeys []string
	// Extra sshd_config lines.
	Extra []string
}

// startSSHD starts sshd -D -e -f cfg on a free port and waits until it
// accepts connections. It is stopped (by PID) in t.Cleanup.
func startSSHD(t testing.TB, o sshdOptions) *sshd {
	t.Helper()
	needRoot(t, "/usr/sbin/sshd")
	// sshd refuses to start without its privilege separation directory
	// (normally made by the package's tmpfiles rule).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hostKeyPath, hk := newKey(t, dir, "ssh_host_ed25519_key")
	ak := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(ak, []byte(strings.Join(o.AuthorizedKeys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &sshd{t: t, dir: dir, Port: sshtest.FreePort(t), HostKey: hk.PublicKey(), cfgPath: filepath.Join(dir, "sshd_config"), log: &syncBuffer{}}
	// sshd keeps the first value of a keyword: Extra goes first.
	cfg := append(append([]string(nil), o.Extra...),
		"Port "+strconv.Itoa(s.Port),
		"ListenAddress 127.0.0.1",
		"HostKey "+hostKeyPath,
		"PidFile none",
		"AuthorizedKeysFile "+ak,
		"StrictModes no",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"GatewayPorts no",
		"MaxStartups 100",
		"LogLevel VERBOSE",
	)
	if err := os.WriteFile(s.cfgPath, []byte(strings.Join(cfg, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	s.Start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sshd :%d log:\n%s", s.Port, s.log.String())
		}
	})
	return s
}

// Addr is 127.0.0.1:port.
func (s *sshd) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// Start (re)starts the server on its port with its host key.
func (s *sshd) Start() {
	s.t.Helper()
	s.mu.Lock()
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", s.cfgPath)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		s.t.Fatalf("start sshd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	sshtest.Eventually(s.t, 10*time.Second, func() bool {
		select {
		case <-done:
			s.t.Fatalf("sshd exited: %s", s.log.String())
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, "sshd to listen on %s", s.Addr())
}

// Stop kills the listening sshd and every session process it forked (they
// are in its process group only when started so; we kill the children by
// parent PID instead) and waits for it.
func (s *sshd) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	// Session processes are children of the listener: end them first, by PID.
	for _, pid := range childPIDs(cmd.Process.Pid) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	cmd.Process.Kill()
	<-done
}

// childPIDs lists the direct children of pid (from /proc).
func childPIDs(pid int) []int {
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

// knownHostsFile writes a known_hosts file pinning key for addrs.
func knownHostsFile(t testing.TB, dir string, lines ...string) string {
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

// operator runs stock `ssh` with its own key and a known_hosts file; host
// keys are checked strictly at every hop.
type operator struct {
	t       testing.TB
	dir     string
	Signer  ssh.Signer
	cfgPath string
	khPath  string
}

func newOperator(t testing.TB) *operator {
	t.Helper()
	needRoot(t, "ssh")
	dir := t.TempDir()
	keyPath, signer := newKey(t, dir, "operator_key")
	o := &operator{t: t, dir: dir, Signer: signer, cfgPath: filepath.Join(dir, "ssh_config"), khPath: filepath.Join(dir, "known_hosts")}
	cfg := fmt.Sprintf(`Host *
  User root
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  UpdateHostKeys no
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
`, keyPath, o.khPath)
	if err := os.WriteFile(o.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.khPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return o
}

// Trust adds a known_hosts line for host:port.
func (o *operator) Trust(addr string, key ssh.PublicKey) {
	o.t.Helper()
	f, err := os.OpenFile(o.khPath, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		o.t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintln(f, keyfile.KnownHostsLine([]string{addr}, key))
}

// AuthorizedLine is the operator's public key line with options prepended.
func (o *operator) AuthorizedLine(options string) string {
	l := keyfile.AuthorizedLine(o.Signer.PublicKey(), "operator")
	if options != "" {
		l = options + " " + l
	}
	return l
}

// Jump runs `ssh -J root@jump -p port host` and returns its combined output.
func (o *operator) Jump(ctx context.Context, jump, host string, port int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", o.cfgPath, "-J", "root@"+jump, "-p", strconv.Itoa(port), host, "true")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// target is a throwaway sshd standing in for the Pi's own sshd: every login
// runs `echo <Mark>`, which proves the operator reached this server.
type target struct {
	*sshd
	Mark string
}

func startTarget(t testing.TB, op *operator, mark string) *target {
	t.Helper()
	s := startSSHD(t, sshdOptions{
		AuthorizedKeys: []string{op.AuthorizedLine("")},
		Extra:          []string{"AllowTcpForwarding no", "ForceCommand echo " + mark},
	})
	return &target{sshd: s, Mark: mark}
}

// relay is a TCP relay between a client and an upstream server that the test
// can black-hole: Pause stops forwarding in both directions without closing
// anything (bytes are read and held, as a silent network would hold them in
// flight); connections opened during a pause are accepted but reach the
// upstream only on Resume (like SYNs retransmitted until the path returns).
// Resume(forget=true) models a carrier NAT that forgot its mappings: flows
// that existed before the pause are dead; their held bytes are dropped and
// the client's next byte on them gets a TCP reset.
type linkRelay struct {
	t        testing.TB
	ln       net.Listener
	upstream string
	bytes    atomic.Int64 // payload bytes read from either side
	reads    atomic.Int64 // read calls (about one per TCP segment)

	mu     sync.Mutex
	open   chan struct{} // closed while forwarding
	flows  []*flow
	closes []time.Time // when clients closed or reset their side
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

type flow struct {
	client, server net.Conn
	created        time.Time
	frozen         bool // existed when the current pause began
	stale          atomic.Bool
}

func startRelay(t testing.TB, upstream string) *linkRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &linkRelay{t: t, ln: ln, upstream: upstream, open: make(chan struct{}), ctx: ctx, cancel: cancel}
	close(r.open)
	r.wg.Go(r.accept)
	t.Cleanup(r.Close)
	return r
}

func (r *linkRelay) Addr() string { return r.ln.Addr().String() }

// Close ends the relay and every flow, and waits for its goroutines.
func (r *linkRelay) Close() {
	r.cancel()
	r.ln.Close()
	r.mu.Lock()
	for _, f := range r.flows {
		f.client.Close()
		if f.server != nil {
			f.server.Close()
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// Pause black-holes the link.
func (r *linkRelay) Pause() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.open:
		r.open = make(chan struct{})
	default:
	}
	for _, f := range r.flows {
		f.frozen = true
	}
	return time.Now()
}

// Resume forwards again; with forget, flows from before the pause are dead.
func (r *linkRelay) Resume(forget bool) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.flows {
		if f.frozen && forget {
			f.stale.Store(true)
		}
		f.frozen = false
	}
	select {
	case <-r.open:
	default:
		close(r.open)
	}
	return time.Now()
}

func (r *linkRelay) gate() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open
}

// ClientClosedAfter reports whether a client closed a flow created before
// since, at or after since, and when.
func (r *linkRelay) ClientClosedAfter(since time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.closes {
		if !c.Before(since) {
			return c, true
		}
	}
	return time.Time{}, false
}

// Bytes and Reads count what crossed the relay in both directions.
func (r *linkRelay) Bytes() int64 { return r.bytes.Load() }
func (r *linkRelay) Reads() int64 { return r.reads.Load() }

func (r *linkRelay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		f := &flow{client: c, created: time.Now()}
		r.mu.Lock()
		r.flows = append(r.flows, f)
		r.mu.Unlock()
		r.wg.Go(func() { r.serve(f) })
	}
}

// chunk is data read from one side; nil data with eof set marks the end.
type chunk struct {
	data []byte
	eof  bool
}

// pump reads src continuously (so closes are seen even while paused) into
// a bounded queue.
func (r *linkRelay) pump(src net.Conn, q chan<- chunk, isClient bool, f *flow) {
	defer close(q)
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			r.bytes.Add(int64(n))
			r.reads.Add(1)
			if isClient && f.stale.Load() {
				// A NAT without the mapping: the server answers with a reset.
				if tc, ok := src.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				src.Close()
				r.noteClose(f)
				return
			}
			select {
			case q <- chunk{data: buf[:n]}:
			case <-r.ctx.Done():
				return
			}
		}
		if err != nil {
			if isClient {
				r.noteClose(f)
			}
			select {
			case q <- chunk{eof: true}:
			case <-r.ctx.Done():
			}
			return
		}
	}
}

func (r *linkRelay) noteClose(f *flow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closes = append(r.closes, time.Now())
}

// drain writes queued chunks to dst while the relay is open.
func (r *linkRelay) drain(q <-chan chunk, dst net.Conn, f *flow) {
	for c := range q {
		select {
		case <-r.gate():
		case <-r.ctx.Done():
			return
		}
		if f.stale.Load() {
			continue // held bytes of a forgotten flow are lost
		}
		if c.eof {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			} else {
				dst.Close()
			}
			continue
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}

func (r *linkRelay) serve(f *flow) {
	defer f.client.Close()
	up := make(chan chunk, 64)
	r.wg.Go(func() { r.pump(f.client, up, true, f) })
	// Reach the server only once the path is open.
	select {
	case <-r.gate():
	case <-r.ctx.Done():
		return
	}
	s, err := net.DialTimeout("tcp", r.upstream, 5*time.Second)
	if err != nil {
		if tc, ok := f.client.(*net.TCPConn); ok {
			tc.SetLinger(0) // like a refused SYN
		}
		return
	}
	r.mu.Lock()
	f.server = s
	r.mu.Unlock()
	defer s.Close()
	down := make(chan chunk, 64)
	r.wg.Go(func() { r.pump(s, down, false, f) })
	done := make(chan struct{})
	r.wg.Go(func() { defer close(done); r.drain(down, f.client, f) })
	r.drain(up, s, f)
	select {
	case <-done:
	case <-r.ctx.Done():
	}
}
