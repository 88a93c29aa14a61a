package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/bastion/ban"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// recorder keeps audit events and alert events for assertions.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
	alerts []string
}

func (r *recorder) Record(e audit.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) find(kind string, match func(audit.Event) bool) (audit.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind && (match == nil || match(e)) {
			return e, true
		}
	}
	return audit.Event{}, false
}

func (r *recorder) has(kind, substr string) bool {
	_, ok := r.find(kind, func(e audit.Event) bool {
		b, _ := json.Marshal(e)
		return strings.Contains(string(b), substr)
	})
	return ok
}

func (r *recorder) dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		j, _ := json.Marshal(e)
		b.Write(j)
		b.WriteByte('\n')
	}
	for _, a := range r.alerts {
		b.WriteString("alert: " + a + "\n")
	}
	return b.String()
}

func (r *recorder) alert(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.alerts = append(r.alerts, fmt.Sprintf(format, a...))
}

func (r *recorder) alertsWith(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.alerts {
		if strings.Contains(a, substr) {
			n++
		}
	}
	return n
}

func (r *recorder) OperatorLogin(id *authz.Identity, user string, src netip.AddrPort) {
	r.alert("login %s %s from %s", id.Name, id.Fingerprint, src)
}
func (r *recorder) AuthFailed(src netip.Addr, user string) { r.alert("authfailed %s %s", src, user) }
func (r *recorder) AgentUp(id *authz.Identity, names []string) {
	r.alert("up %s %v", id.Name, names)
}
func (r *recorder) AgentDown(id *authz.Identity, names []string) {
	r.alert("down %s %v", id.Name, names)
}
func (r *recorder) LinkReport(id *authz.Identity, names []string, prev, rep report.LinkReport) {
	r.alert("report %s %s prev=%s", id.Name, rep.Verdict, prev.Verdict)
}
func (r *recorder) MainLink(id *authz.Identity, names []string, rep report.LinkReport) {
	r.alert("main %s %s %v", id.Name, rep.Verdict, names)
}
func (r *recorder) SiteRole(id *authz.Identity, reporter bool) {
	r.alert("role %s reporter=%v", id.Name, reporter)
}
func (r *recorder) NameMoved(target string, to, from *authz.Identity, takeover bool) {
	r.alert("moved %s to %s from %s takeover=%v", target, to.Name, from.Name, takeover)
}

// world is a running bastion with one agent key and two operator keys.
type world struct {
	t        *testing.T
	dir      string
	srv      *Server
	addr     string
	port     int
	rec      *recorder
	hostKey  sshtest.Key
	agent    sshtest.Key
	agent2   sshtest.Key
	spare    sshtest.Key // another agent key also permitted pi:22
	operator sshtest.Key
	limited  sshtest.Key // operator restricted to nuc:3389
	stranger sshtest.Key
	cancel   context.CancelFunc
	done     chan error
}

type worldOpts struct {
	keepalive time.Duration
	bans      *ban.List
	grace     time.Duration
	pending   int
	limits    Limits
	alerts    AlertQueue
	clock     clock.Clock // nil: the wall clock
	events    Events      // nil: the world's recorder
	outage    Outage      // nil: none
}

func newWorld(t *testing.T, o worldOpts) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{t: t, dir: dir, rec: &recorder{}}
	w.hostKey = sshtest.NewKey(t, dir, "host")
	w.agent = sshtest.NewKey(t, dir, "agent")
	w.agent2 = sshtest.NewKey(t, dir, "agent2")
	w.spare = sshtest.NewKey(t, dir, "spare")
	w.operator = sshtest.NewKey(t, dir, "operator")
	w.limited = sshtest.NewKey(t, dir, "limited")
	w.stranger = sshtest.NewKey(t, dir, "stranger")
	agents := strings.Join([]string{
		w.agent.AuthorizedLine(`permitlisten="pi:22",permitlisten="nuc:3389"`, "site-agent"),
		w.agent2.AuthorizedLine(`permitlisten="cam:80"`, "other-agent"),
		w.spare.AuthorizedLine(`permitlisten="pi:22"`, "spare-agent"),
	}, "\n")
	operators := strings.Join([]string{
		w.operator.AuthorizedLine("", "alice@laptop"),
		w.limited.AuthorizedLine(`permitopen="nuc:3389"`, "bob@phone"),
	}, "\n")
	ap := filepath.Join(dir, "agents")
	op := filepath.Join(dir, "operators")
	os.WriteFile(ap, []byte(agents+"\n"), 0o600)
	os.WriteFile(op, []byte(operators+"\n"), 0o600)
	policy, err := authz.LoadFiles(authz.Files{Agents: ap, Operators: op})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = ln.Addr().String()
	w.port = ln.Addr().(*net.TCPAddr).Port
	var events Events = w.rec
	if o.events != nil {
		events = o.events
	}
	srv, err := New(Config{
		HostKey: w.hostKey.Signer, Policy: policy, Log: slog.New(slog.DiscardHandler), Audit: w.rec, Events: events,
		Name: "test-bastion", AgentQuiet: o.keepalive, AgentDeadAfter: 3 * o.keepalive, Bans: o.bans,
		LoginGrace: o.grace, MaxPending: o.pending, OpenTimeout: 5 * time.Second,
		Limits: o.limits, Alerts: o.alerts, Clock: o.clock, Outage: o.outage,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.done = make(chan error, 1)
	go func() { w.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(w.stop)
	return w
}

// reload rewrites both key files and applies them as a SIGHUP would.
func (w *world) reload(agents, operators []string) int {
	w.t.Helper()
	ap := filepath.Join(w.dir, "agents")
	op := filepath.Join(w.dir, "operators")
	os.WriteFile(ap, []byte(strings.Join(agents, "\n")+"\n"), 0o600)
	os.WriteFile(op, []byte(strings.Join(operators, "\n")+"\n"), 0o600)
	p, err := authz.LoadFiles(authz.Files{Agents: ap, Operators: op})
	if err != nil {
		w.t.Fatal(err)
	}
	return w.srv.SetPolicy(p)
}

func (w *world) stop() {
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		w.t.Errorf("server did not stop within 10s")
	}
}

// dial connects with the Go client as key.
func (w *world) dial(key sshtest.Key) (*ssh.Client, error) {
	cfg := &ssh.ClientConfig{
		Config:            sshalgo.Config(),
		User:              "tester",
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(key.Signer)},
		HostKeyCallback:   ssh.FixedHostKey(w.hostKey.Signer.PublicKey()),
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           5 * time.Second,
	}
	return ssh.Dial("tcp", w.addr, cfg)
}

func (w *world) mustDial(key sshtest.Key) *ssh.Client {
	w.t.Helper()
	c, err := w.dial(key)
	if err != nil {
		w.t.Fatalf("dial as %s: %v", key.Path, err)
	}
	w.t.Cleanup(func() { c.Close() })
	return c
}

// register sends tcpip-forward for name:port the way ssh -R does.
func register(c *ssh.Client, name string, port uint32) (bool, error) {
	ok, _, err := c.SendRequest("tcpip-forward", true, ssh.Marshal(struct {
		A string
		P uint32
	}{name, port}))
	return ok, err
}

// serveForwards answers forwarded-tcpip channels on c by echoing, and
// records the payloads seen.
func serveForwards(t *testing.T, c *ssh.Client) *[]string {
	var mu sync.Mutex
	seen := &[]string{}
	chans := c.HandleChannelOpen("forwarded-tcpip")
	go func() {
		for nc := range chans {
			var p struct {
				Addr       string
				Port       uint32
				OriginAddr string
				OriginPort uint32
			}
			ssh.Unmarshal(nc.ExtraData(), &p)
			mu.Lock()
			*seen = append(*seen, fmt.Sprintf("%s:%d from %s", p.Addr, p.Port, p.OriginAddr))
			mu.Unlock()
			ch, reqs, err := nc.Accept()
			if err != nil {
				continue
			}
			go ssh.DiscardRequests(reqs)
			go func() {
				defer ch.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := ch.Read(buf)
					if n > 0 {
						ch.Write(buf[:n])
					}
					if err != nil {
						ch.CloseWrite()
						return
					}
				}
			}()
		}
	}()
	return seen
}

func (w *world) waitRegistered(target string) {
	w.t.Helper()
	sshtest.Eventually(w.t, 10*time.Second, func() bool {
		for _, ts := range w.srv.Snapshot(nil).Targets {
			if ts.Target == target {
				return true
			}
		}
		return false
	}, "%s never registered; audit:\n%s", target, w.rec.dump())
}

func (w *world) knownHosts() string {
	path := filepath.Join(w.dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%d %s", w.port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(w.hostKey.Signer.PublicKey()))))
	os.WriteFile(path, []byte(line+"\n"), 0o600)
	return path
}

// liveConns is the number of authenticated connections the server tracks.
func (s *Server) liveConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
