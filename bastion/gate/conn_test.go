package gate

// Real SSH over loopback: an x/crypto server on 127.0.0.1 whose
// connections go through the gate, and clients bound to distinct 127.0.X.Y
// addresses so that each is a source of its own.
//
//   client 127.0.X.Y ──TCP──> 127.0.0.1:port  Accept -> Admit -> ssh.NewServerConn(ticket.Conn())
//                                                     -> Authenticated | Done

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"golang.org/x/crypto/ssh"
)

// result is how one accepted connection ended on the server.
type result struct {
	err     error // nil: authenticated
	elapsed time.Duration
	evicted bool
}

// sshServer is a gated SSH server on 127.0.0.1.
type sshServer struct {
	g       *Gate
	addr    string
	hostPub ssh.PublicKey
	client  ssh.Signer // the key the server accepts

	mu       sync.Mutex
	results  map[netip.AddrPort]result
	refusals map[netip.AddrPort]error
}

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startServer runs a gated SSH server until the test ends.
func startServer(t *testing.T, cfg Config) *sshServer {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	host, client := newSigner(t), newSigner(t)
	s := &sshServer{g: g, hostPub: host.PublicKey(), client: client,
		results: make(map[netip.AddrPort]result), refusals: make(map[netip.AddrPort]error)}
	sc := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), client.PublicKey().Marshal()) {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	sc.AddHostKey(host)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { ln.Close() })
	t.Cleanup(cancel)

	serve := func(tk *Ticket, start time.Time) {
		remote := tk.Conn().RemoteAddr().(*net.TCPAddr).AddrPort()
		stop := context.AfterFunc(ctx, func() { tk.Conn().Close() })
		defer stop()
		conn, chans, reqs, err := ssh.NewServerConn(tk.Conn(), sc)
		r := result{err: err, elapsed: time.Since(start)}
		if err != nil {
			tk.Done()
			r.evicted = tk.Evicted()
			s.record(remote, r)
			return
		}
		tk.Authenticated()
		s.record(remote, r)
		wg.Add(2) // both end when conn is closed
		go func() {
			defer wg.Done()
			ssh.DiscardRequests(reqs)
		}()
		go func() {
			defer wg.Done()
			for ch := range chans {
				ch.Reject(ssh.Prohibited, "no channels here")
			}
		}()
		stopConn := context.AfterFunc(ctx, func() { conn.Close() })
		defer stopConn()
		conn.Wait()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			start := time.Now()
			tk, err := g.Admit(nc)
			if err != nil {
				s.mu.Lock()
				s.refusals[nc.RemoteAddr().(*net.TCPAddr).AddrPort()] = err
				s.mu.Unlock()
				nc.Close()
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(tk, start)
			}()
		}
	}()
	return s
}

func (s *sshServer) record(remote netip.AddrPort, r result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results[remote] = r
}

// wait returns how the server ended the connection whose client end is nc.
func (s *sshServer) wait(t testing.TB, nc net.Conn, d time.Duration) result {
	t.Helper()
	local := nc.LocalAddr().(*net.TCPAddr).AddrPort()
	var r result
	sshtest.Eventually(t, d, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		var ok bool
		r, ok = s.results[local]
		return ok
	}, "no server result for %s", local)
	return r
}

func (s *sshServer) refusalCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.refusals)
}

// dialFrom connects to the server from the loopback address local.
func (s *sshServer) dialFrom(t testing.TB, local string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", s.addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", local, err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// login runs a real Go SSH client over nc.
func (s *sshServer) login(nc net.Conn) (*ssh.Client, error) {
	c, chans, reqs, err := ssh.NewClientConn(nc, s.addr, &ssh.ClientConfig{
		User:            "operator",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s.client)},
		HostKeyCallback: ssh.FixedHostKey(s.hostPub),
	})
	if err != nil {
		return nil, err
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// preambleConn prepends lines to the first write: RFC 4253 lets a server
// send them before its version line; a Go client never does.
type preambleConn struct {
	net.Conn
	pre []byte
}

func (c *preambleConn) Write(p []byte) (int, error) {
	if c.pre != nil {
		pre := c.pre
		c.pre = nil
		if _, err := c.Conn.Write(pre); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(p)
}

// stallConn lets the first n writes through, then blocks writes until
// closed: a client that sends its hello and then goes quiet.
type stallConn struct {
	net.Conn
	mu      sync.Mutex
	n       int
	release chan struct{}
	once    sync.Once
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.n--
	stall := c.n < 0
	c.mu.Unlock()
	if stall {
		<-c.release
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.release) })
	return c.Conn.Close()
}

// trickle writes b one byte every interval until b is done or a write fails.
func trickle(ctx context.Context, nc net.Conn, b []byte, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := range b {
		if _, err := nc.Write(b[i : i+1]); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// junkLines returns whole lines, at least n bytes of them.
func junkLines(n int) []byte {
	const line = "not yet the version line\r\n"
	return bytes.Repeat([]byte(line), (n+len(line)-1)/len(line))
}

// TestHandshakeDeadlines runs real clients against a real x/crypto server:
// the hello deadline closes silent and slow clients at HelloTimeout, not at
// LoginGrace; a client past its hello gets LoginGrace; a real client logs in.
func TestHandshakeDeadlines(t *testing.T) {
	t.Parallel()
	for i, tc := range []struct {
		name         string
		hello, grace time.Duration
		client       func(ctx context.Context, s *sshServer, nc net.Conn) error
		want         error         // the server's error chain holds it; nil = authenticated
		within       time.Duration // server result no sooner than `after`, no later than after+within
		after        time.Duration
		seesClose    bool // the client does not read: check that the socket gets closed
	}{
		{
			name: "go client logs in", hello: time.Second, grace: 5 * time.Second,
			client: func(_ context.Context, s *sshServer, nc net.Conn) error {
				c, err := s.login(nc)
				if err == nil {
					c.Close()
				}
				return err
			},
			within: 4 * time.Second,
		},
		{
			name: "go client after 4 KiB of lines before its version", hello: time.Second, grace: 5 * time.Second,
			client: func(_ context.Context, s *sshServer, nc net.Conn) error {
				c, err := s.login(&preambleConn{Conn: nc, pre: junkLines(4 << 10)})
				if err == nil {
					c.Close()
				}
				return err
			},
			within: 4 * time.Second,
		},
		{
			name: "silent client", hello: 500 * time.Millisecond, grace: 10 * time.Second,
			client: func(context.Context, *sshServer, net.Conn) error { return nil },
			want:   ErrHelloTimeout, after: 500 * time.Millisecond, within: 2 * time.Second, seesClose: true,
		},
		{
			name: "slowloris version line, one byte per second", hello: 2500 * time.Millisecond, grace: 20 * time.Second,
			client: func(ctx context.Context, _ *sshServer, nc net.Conn) error {
				trickle(ctx, nc, []byte("SSH-2.0-OpenSSH_9.9\r\n"), time.Second)
				return nil
			},
			want: ErrHelloTimeout, after: 2500 * time.Millisecond, within: 2 * time.Second, seesClose: true,
		},
		{
			name: "version line at once, first packet one byte per 100ms", hello: time.Second, grace: 20 * time.Second,
			client: func(ctx context.Context, _ *sshServer, nc net.Conn) error {
				if _, err := nc.Write([]byte("SSH-2.0-OpenSSH_9.9\r\n\x00\x00\x04\x00\x0a")); err != nil {
					return err
				}
				trickle(ctx, nc, bytes.Repeat([]byte{0x14}, 1024), 100*time.Millisecond)
				return nil
			},
			want: ErrHelloTimeout, after: time.Second, within: 2 * time.Second, seesClose: true,
		},
		{
			name: "hello then silence gets the login grace", hello: 300 * time.Millisecond, grace: 2 * time.Second,
			client: func(ctx context.Context, s *sshServer, nc net.Conn) error {
				// Version line, KEXINIT, then the key exchange never comes.
				// x/crypto's client reads nothing while its kex write is
				// blocked, so it is released when the test is done.
				sc := &stallConn{Conn: nc, n: 2, release: make(chan struct{})}
				defer context.AfterFunc(ctx, func() { sc.Close() })()
				c, err := s.login(sc)
				if err == nil {
					c.Close()
					return errors.New("logged in through a stalled connection")
				}
				return nil
			},
			want: ErrLoginGrace, after: 2 * time.Second, within: 2 * time.Second,
		},
		{
			name: "more than 8 KiB before the version line", hello: 5 * time.Second, grace: 20 * time.Second,
			client: func(_ context.Context, _ *sshServer, nc net.Conn) error {
				// The server may close before these writes are done.
				if _, err := nc.Write(junkLines(MaxPreamble + 100)); err == nil {
					nc.Write([]byte("SSH-2.0-late\r\n"))
				}
				return nil
			},
			want: ErrPreamble, within: 2 * time.Second, seesClose: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, Config{HelloTimeout: tc.hello, LoginGrace: tc.grace})
			nc := s.dialFrom(t, fmt.Sprintf("127.0.10.%d", i+1))
			ctx, cancel := context.WithCancel(context.Background())
			clientErr := make(chan error, 1)
			go func() { clientErr <- tc.client(ctx, s, nc) }()
			t.Cleanup(func() {
				cancel()
				nc.Close()
				<-clientErr
			})

			r := s.wait(t, nc, tc.after+tc.within+time.Second)
			switch {
			case tc.want == nil && r.err != nil:
				t.Fatalf("server: %v", r.err)
			case tc.want != nil && !errors.Is(r.err, tc.want):
				t.Fatalf("server error = %v, want %v in its chain", r.err, tc.want)
			case r.elapsed < tc.after || r.elapsed > tc.after+tc.within:
				t.Fatalf("server ended the handshake after %v, want %v..%v", r.elapsed, tc.after, tc.after+tc.within)
			}
			t.Logf("server: after %v: %v", r.elapsed.Round(time.Millisecond), r.err)
			if tc.want == ErrHelloTimeout || tc.want == ErrLoginGrace {
				var ne net.Error
				if !errors.Is(r.err, os.ErrDeadlineExceeded) || !errors.As(r.err, &ne) || !ne.Timeout() {
					t.Errorf("error %v is not a net.Error timeout wrapping os.ErrDeadlineExceeded", r.err)
				}
				if errors.Is(r.err, ErrHelloTimeout) == errors.Is(r.err, ErrLoginGrace) {
					t.Errorf("error %v must blame exactly one deadline", r.err)
				}
				name := map[error]string{ErrHelloTimeout: "LIFELINE_HELLO_TIMEOUT", ErrLoginGrace: "LIFELINE_LOGIN_GRACE"}[tc.want]
				if !strings.Contains(r.err.Error(), name) {
					t.Errorf("error %q does not name %s", r.err, name)
				}
			}
			if tc.seesClose {
				nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.Copy(io.Discard, nc); err != nil && !isReset(err) {
					t.Errorf("client read after the server closed: %v, want EOF", err)
				}
			}
			cancel()
			wait := time.NewTimer(10 * time.Second)
			defer wait.Stop()
			select {
			case err := <-clientErr:
				clientErr <- nil // for the cleanup
				if err != nil {
					t.Errorf("client: %v", err)
				}
			case <-wait.C:
				t.Fatal("client still running 10s after the server ended")
			}
			if st := s.g.Stats(); st.Pending != 0 {
				t.Errorf("stats after the handshake = %+v, want nothing pending", st)
			}
		})
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// TestLoggedInOutlivesDeadlines: Authenticated clears the deadlines, so an
// idle session lives past LoginGrace, and the source is trusted.
func TestLoggedInOutlivesDeadlines(t *testing.T) {
	t.Parallel()
	const grace = time.Second
	s := startServer(t, Config{HelloTimeout: 300 * time.Millisecond, LoginGrace: grace})
	nc := s.dialFrom(t, "127.0.11.1")
	c, err := s.login(nc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r := s.wait(t, nc, 5*time.Second); r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if !s.g.Trusted(netip.MustParseAddr("127.0.11.1")) {
		t.Fatal("source not trusted after login")
	}
	// Not a synchronisation: time must pass the (cleared) deadlines.
	idle := time.NewTimer(grace + 500*time.Millisecond)
	<-idle.C
	if _, _, err := c.SendRequest("ping@lifeline", true, nil); err != nil {
		t.Fatalf("session died idle past LoginGrace: %v", err)
	}
}

// TestOneSourceCannotLockOut replays the measured attacks against a real
// server, with hello and login timeouts far longer than the test so that
// only the caps and eviction can help the operator.
func TestOneSourceCannotLockOut(t *testing.T) {
	t.Parallel()
	cfg := Config{HelloTimeout: time.Minute, LoginGrace: time.Minute}
	operatorLogsIn := func(t *testing.T, s *sshServer, from string) {
		t.Helper()
		nc := s.dialFrom(t, from)
		c, err := s.login(nc)
		if err != nil {
			t.Fatalf("operator from %s locked out: %v (stats %+v)", from, err, s.g.Stats())
		}
		defer c.Close()
		if r := s.wait(t, nc, 5*time.Second); r.err != nil {
			t.Fatalf("server side of the operator's login: %v", r.err)
		}
	}

	t.Run("64 idle connections from one address", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, cfg)
		for range 64 {
			s.dialFrom(t, "127.0.20.1")
		}
		sshtest.Eventually(t, 10*time.Second, func() bool { return s.refusalCount() == 60 }, "60 refusals")
		if st := s.g.Stats(); st.Pending != 4 || st.Refused[ReasonPerSource] != 60 {
			t.Fatalf("stats = %+v, want 4 pending and 60 per-source refusals", st)
		}
		operatorLogsIn(t, s, "127.0.20.2")
	})

	t.Run("500 connections from 50 addresses, redialing", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, cfg)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		t.Cleanup(wg.Wait)
		t.Cleanup(cancel)
		for src := range 50 {
			for range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					attacker(ctx, s.addr, fmt.Sprintf("127.0.21.%d", src+1))
				}()
			}
		}
		sshtest.Eventually(t, 20*time.Second, func() bool {
			st := s.g.Stats()
			return st.Pending == 64 && st.Refused[ReasonFull] > 0
		}, "the attack to fill the gate")
		for i := range 5 {
			operatorLogsIn(t, s, fmt.Sprintf("127.0.22.%d", i+1))
		}
		if st := s.g.Stats(); st.Pending > 64 || st.Evictions == 0 {
			t.Fatalf("stats = %+v, want at most 64 pending and some evictions", st)
		}
	})

	t.Run("eviction closes the heavy source's oldest connection", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, Config{MaxPending: 4, MaxPendingPerSource: 4, HelloTimeout: time.Minute, LoginGrace: time.Minute})
		var idle []net.Conn
		for range 4 {
			idle = append(idle, s.dialFrom(t, "127.0.23.1"))
			sshtest.Eventually(t, 5*time.Second, func() bool { return s.g.Stats().Pending == len(idle) }, "admission")
		}
		operatorLogsIn(t, s, "127.0.23.2")
		r := s.wait(t, idle[0], 5*time.Second)
		if !r.evicted || r.err == nil {
			t.Fatalf("oldest idle connection: %+v, want evicted", r)
		}
		idle[0].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, idle[0]); err != nil && !isReset(err) {
			t.Fatalf("evicted client: %v, want the socket closed", err)
		}
		if st := s.g.Stats(); st.Pending != 3 || st.Evictions != 1 {
			t.Fatalf("stats = %+v, want 3 pending after one eviction", st)
		}
	})
}

// attacker holds one idle connection from local, redialing whenever the
// server closes it, until ctx is done.
func attacker(ctx context.Context, addr, local string) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	pace := time.NewTicker(250 * time.Millisecond) // a load generator's pace, not a synchronisation
	defer pace.Stop()
	for {
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			stop := context.AfterFunc(ctx, func() { nc.Close() })
			io.Copy(io.Discard, nc) // until the server closes it
			stop()
			nc.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-pace.C:
		}
	}
}
