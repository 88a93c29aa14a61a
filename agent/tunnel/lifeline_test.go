package tunnel

// Tests against an in-process SSH server that behaves like lifeline's
// bastion: names are registered in memory (no socket is bound) and
// connections to NAME:PORT arrive as forwarded-tcpip channels whose
// connected address is the NAME and whose originator is the operator's real
// address. Real SSH over 127.0.0.1:0.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/agent/hostkeys"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
	"github.com/lifeline-dev/lifeline/shared/wire"
)

// fakeBastion registers names and opens forwarded-tcpip channels to the
// agent that registered them; it records link reports.
type fakeBastion struct {
	t       *testing.T
	ln      net.Listener
	hostKey ssh.Signer
	refuse  map[string]bool // NAME:PORT refused

	mu       sync.Mutex
	names    map[string]*ssh.ServerConn
	reports  []report.LinkReport
	silent   bool // stop answering keepalives
	hangUp   bool // close every connection right after authentication
	sessions int  // authenticated connections
	requests []string
	// siteRoles makes it answer wire.SiteRoleRequest (and record each in
	// roles); otherwise it refuses it, as an older bastion does.
	siteRoles bool
	roles     []bool
	// v1Only makes it refuse main-link reports (version 2), as a bastion
	// that predates them does.
	v1Only bool
	wg     sync.WaitGroup
}

func startFakeBastion(t *testing.T, agentKey ssh.PublicKey, refuse ...string) *fakeBastion {
	t.Helper()
	hk := sshtest.NewKey(t, t.TempDir(), "bastion_host_key").Signer
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBastion{t: t, ln: ln, hostKey: hk, refuse: map[string]bool{}, names: map[string]*ssh.ServerConn{}}
	for _, r := range refuse {
		b.refuse[r] = true
	}
	cfg := &ssh.ServerConfig{
		Config: sshalgo.Config(),
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if string(k.Marshal()) != string(agentKey.Marshal()) {
				return nil, errors.New("unknown key")
			}
			return &ssh.Permissions{Extensions: map[string]string{"role": "agent"}}, nil
		},
		PublicKeyAuthAlgorithms: sshalgo.PublicKeyAuthAlgorithms(),
	}
	cfg.AddHostKey(hk)
	var conns []net.Conn
	var cmu sync.Mutex
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
			b.wg.Go(func() { b.serve(c, cfg) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *fakeBastion) Addr() string { return b.ln.Addr().String() }

func (b *fakeBastion) serve(c net.Conn, cfg *ssh.ServerConfig) {
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	b.mu.Lock()
	b.sessions++
	hangUp := b.hangUp
	b.mu.Unlock()
	if hangUp {
		sc.Close()
		ssh.DiscardRequests(reqs)
		for nc := range chans {
			nc.Reject(ssh.Prohibited, "closed")
		}
		return
	}
	b.wg.Go(func() {
		for nc := range chans {
			nc.Reject(ssh.Prohibited, "agents open no channels")
		}
	})
	for r := range reqs {
		b.mu.Lock()
		b.requests = append(b.requests, r.Type)
		silent := b.silent
		b.mu.Unlock()
		switch r.Type {
		case "tcpip-forward":
			m, err := wire.ParseForward(r.Payload)
			if err != nil {
				r.Reply(false, nil)
				continue
			}
			name := net.JoinHostPort(m.BindAddr, strconv.Itoa(int(m.BindPort)))
			if b.refuse[name] {
				r.Reply(false, nil)
				continue
			}
			b.mu.Lock()
			b.names[name] = sc // newest wins
			b.mu.Unlock()
			r.Reply(true, nil)
		case wire.SiteRoleRequest:
			role, err := wire.ParseSiteRole(r.Payload)
			b.mu.Lock()
			ok := b.siteRoles && err == nil
			if ok {
				b.roles = append(b.roles, role.Reporter)
			}
			b.mu.Unlock()
			r.Reply(ok, nil)
		case report.RequestType:
			rep, err := report.Decode(r.Payload)
			b.mu.Lock()
			if b.v1Only && rep.Version != report.Version {
				err = errors.New("version 2 is not supported")
			}
			b.mu.Unlock()
			if err == nil {
				b.mu.Lock()
				b.reports = append(b.reports, rep)
				b.mu.Unlock()
			}
			r.Reply(err == nil, nil)
		default:
			if !silent && r.WantReply {
				r.Reply(false, nil)
			}
		}
	}
}

// Open opens a forwarded-tcpip channel for name:port as lifeline's bastion
// would for an operator at origin.
func (b *fakeBastion) Open(name string, port int, origin string, originPort int) (ssh.Channel, error) {
	b.mu.Lock()
	sc := b.names[net.JoinHostPort(name, strconv.Itoa(port))]
	b.mu.Unlock()
	if sc == nil {
		return nil, errors.New("not registered")
	}
	ch, reqs, err := sc.OpenChannel("forwarded-tcpip", wire.ForwardedTCPIP{Addr: name, Port: uint32(port), OriginAddr: origin, OriginPort: uint32(originPort)}.Marshal())
	if err != nil {
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	return ch, nil
}

func (b *fakeBastion) Registered(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.names[name] != nil
}

// echoServer answers each line with "echo: line" until EOF, then writes
// "bye" and closes: it proves both directions and the half-close.
func echoServer(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					io.WriteString(c, "echo: "+sc.Text()+"\n")
				}
				io.WriteString(c, "bye\n")
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}

func fakeAgentConfig(t *testing.T, agent ssh.Signer, bastions ...*fakeBastion) Config {
	t.Helper()
	var lines, addrs []string
	for _, b := range bastions {
		lines = append(lines, keyfile.KnownHostsLine([]string{b.Addr()}, b.hostKey.PublicKey()))
		addrs = append(addrs, b.Addr())
	}
	log, _ := sshtest.Logger(t)
	return Config{
		Bastions:       addrs,
		Signer:         agent,
		HostKeys:       hostkeys.New(sshtest.KnownHostsFile(t, t.TempDir(), lines...), false, log),
		Keepalive:      300 * time.Millisecond,
		DeadAfter:      1200 * time.Millisecond,
		BackoffMax:     2 * time.Second,
		ConnectTimeout: 3 * time.Second,
		ProbeEvery:     100 * time.Millisecond,
	}
}

func TestLifelineStyleNamesAndHalfClose(t *testing.T) {
	t.Parallel()
	agent := sshtest.NewKey(t, t.TempDir(), "agent").Signer
	b := startFakeBastion(t, agent.PublicKey(), "nuc:3389")
	echo := echoServer(t)
	cfg := fakeAgentConfig(t, agent, b)
	cfg.Forwards = []forward.Forward{
		{Name: "pi", Port: 22, TargetHost: "127.0.0.1", TargetPort: uint16(echo)},
		{Name: "nuc", Port: 3389, TargetHost: "127.0.0.1", TargetPort: uint16(echo)},
	}
	tun, log := startAgent(t, cfg)
	sshtest.Eventually(t, 10*time.Second, func() bool { return b.Registered("pi:22") }, "pi registered")
	sshtest.Eventually(t, 10*time.Second, func() bool { return log.Contains("forward=nuc:3389") }, "nuc refused and named")

	ch, err := b.Open("pi", 22, "198.51.100.20", 40000)
	if err != nil {
		t.Fatalf("open forwarded-tcpip pi:22: %v", err)
	}
	if _, err := io.WriteString(ch, "hello\n"); err != nil {
		t.Fatal(err)
	}
	if err := ch.CloseWrite(); err != nil { // half-close: the target sees EOF
		t.Fatal(err)
	}
	got, err := io.ReadAll(ch)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "echo: hello\nbye\n" {
		t.Fatalf("through the tunnel: %q", got)
	}
	ch.Close()
	if !log.Contains("from=198.51.100.20:40000") {
		t.Errorf("the operator's address is not logged")
	}

	// A name that was never registered is rejected, the tunnel stays.
	if _, err := b.Open("pi", 2222, "198.51.100.20", 1); err == nil {
		t.Errorf("opened an unregistered name")
	}
	b.mu.Lock()
	b.names["ghost:1"] = b.names["pi:22"]
	b.mu.Unlock()
	if _, err := b.Open("ghost", 1, "198.51.100.20", 1); err == nil || !strings.Contains(err.Error(), "no forward for ghost:1") {
		t.Errorf("unknown forward: %v", err)
	}
	if st := tun.Status()[0]; !st.Connected || st.Connects != 1 || st.Served != 1 || st.Rejected != 1 {
		t.Errorf("status %+v", st)
	}
}

type recordingSystemd struct {
	mu     sync.Mutex
	states []string
}

func (r *recordingSystemd) Notify(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, s)
	return nil
}

func (r *recordingSystemd) count(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.states {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

func TestPublishRTTAndSystemd(t *testing.T) {
	t.Parallel()
	agent := sshtest.NewKey(t, t.TempDir(), "agent").Signer
	up := startFakeBastion(t, agent.PublicKey())
	echo := echoServer(t)
	// The second bastion is not listening: Publish must skip it.
	down := sshtest.FreePort(t)
	cfg := fakeAgentConfig(t, agent, up)
	cfg.Bastions = append(cfg.Bastions, "127.0.0.1:"+strconv.Itoa(down))
	cfg.Forwards = []forward.Forward{{Name: "pi", Port: 22, TargetHost: "127.0.0.1", TargetPort: uint16(echo)}}
	n := &recordingSystemd{}
	cfg.Systemd, cfg.WatchdogEvery = n, 100*time.Millisecond

	log, logs := sshtest.Logger(t)
	cfg.Log = log
	tun, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tun.Run(ctx) }()
	defer func() { cancel(); <-done }()

	sshtest.Eventually(t, 10*time.Second, func() bool { return n.count("READY=1") == 1 }, "READY")
	sshtest.Eventually(t, 10*time.Second, func() bool { return n.count("WATCHDOG=1") >= 3 }, "watchdog pings")
	sshtest.Eventually(t, 10*time.Second, func() bool {
		r := tun.RTT()
		return r != nil && r.Samples > 0 && r.Median > 0
	}, "keepalive samples")

	rep := report.LinkReport{Time: time.Now(), ISP: "Test Carrier", DownloadBps: 5e6, Verdict: report.VerdictOK, KeepaliveMS: tun.RTT()}
	tun.Publish(context.Background(), rep)
	up.mu.Lock()
	got := append([]report.LinkReport(nil), up.reports...)
	up.mu.Unlock()
	if len(got) != 1 || got[0].ISP != "Test Carrier" {
		t.Fatalf("bastion received %+v", got)
	}
	if !logs.Contains("link report not sent: bastion not connected") {
		t.Errorf("the unconnected bastion was not reported as skipped")
	}

	// A new connection (a restarted bastion) gets the latest report at once,
	// not an hour later with the next check.
	up.mu.Lock()
	old := up.names["pi:22"]
	up.mu.Unlock()
	old.Close()
	sshtest.Eventually(t, 20*time.Second, func() bool {
		up.mu.Lock()
		defer up.mu.Unlock()
		return len(up.reports) == 2 && up.reports[1].ISP == "Test Carrier" && up.names["pi:22"] != old
	}, "latest report resent on the new connection")

	// A bastion that stops answering keepalives is declared dead and the
	// misses show up in RTT.
	tun.RTT()
	up.mu.Lock()
	up.silent = true
	up.mu.Unlock()
	sshtest.Eventually(t, 10*time.Second, func() bool { return logs.Contains("dead link") }, "silent bastion declared dead")
	if r := tun.RTT(); r == nil || r.Missed == 0 {
		t.Errorf("RTT after silence = %+v, want misses", r)
	}
	cancel()
	<-done
	if n.count("STOPPING=1") != 1 {
		t.Errorf("STOPPING=1 not sent: %v", n.states)
	}
}

func TestMatchForward(t *testing.T) {
	t.Parallel()
	fs := []forward.Forward{{Name: "pi", Port: 22}, {Name: "localhost", Port: 2201}, {Name: "a", Port: 80}, {Name: "b", Port: 80}}
	tests := []struct {
		addr   string
		port   uint32
		want   string
		wantOK bool
	}{
		{"pi", 22, "pi:22", true},
		{"PI", 22, "pi:22", true},
		{"127.0.0.1", 2201, "localhost:2201", true}, // sshd may spell the bind address differently
		{"a", 80, "a:80", true},
		{"c", 80, "", false}, // ambiguous port
		{"pi", 23, "", false},
	}
	for _, tt := range tests {
		f, ok := matchForward(fs, tt.addr, tt.port)
		if ok != tt.wantOK || (ok && f.Listen() != tt.want) {
			t.Errorf("matchForward(%s, %d) = %v %v, want %s %v", tt.addr, tt.port, f.Listen(), ok, tt.want, tt.wantOK)
		}
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	t.Parallel()
	_, err := New(Config{})
	for _, w := range []string{"no bastion", "no private key", "no host key checker", "no forward"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("New(Config{}) = %v, want it to mention %q", err, w)
		}
	}
}

// A bastion that accepts the agent and hangs up at once (policy, a newer
// session of the same key) must not be hammered: such a loss is not a
// network failure, so the agent waits out its backoff instead of probing.
func TestBastionHangingUpIsNotHammered(t *testing.T) {
	t.Parallel()
	agent := sshtest.NewKey(t, t.TempDir(), "agent").Signer
	b := startFakeBastion(t, agent.PublicKey())
	b.mu.Lock()
	b.hangUp = true
	b.mu.Unlock()
	cfg := fakeAgentConfig(t, agent, b)
	cfg.Forwards = []forward.Forward{{Name: "pi", Port: 22, TargetHost: "127.0.0.1", TargetPort: 22}}
	cfg.BackoffMax = 4 * time.Second
	_, log := startAgent(t, cfg)
	start := time.Now()
	sshtest.Eventually(t, 20*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.sessions >= 3
	}, "three hang-ups")
	elapsed := time.Since(start)
	// Backoff from 1 s doubling (with jitter) spaces three connections by
	// at least about a second each; probing would have made them 100 ms apart.
	if elapsed < time.Second {
		t.Errorf("three connections within %s: the agent is hammering a bastion that hangs up", elapsed)
	}
	if log.Contains("bastion reachable again") {
		t.Errorf("a hang-up was treated as a network failure")
	}
	if !log.Contains("closed by the bastion") {
		t.Errorf("the reason is not logged")
	}
}
