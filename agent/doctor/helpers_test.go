package doctor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// fakeBastion is an in-process SSH server on 127.0.0.1:0 that behaves
// like lifeline's bastion towards an agent's doctor (or, with another
// version line, like a stock sshd): it lets one key in and answers
// CheckForwardRequest from a list of permitted names. It records every
// global request, so a test can show no tcpip-forward was ever sent.
type fakeBastion struct {
	addr    string
	hostKey ssh.Signer
	o       bastionOpts

	mu       sync.Mutex
	requests []string
}

type bastionOpts struct {
	version string        // the server's version line; default SSH-2.0-lifeline
	accept  ssh.PublicKey // the only key let in (nil: none)
	permit  []string      // NAME:PORT the key may register
	old     bool          // answer CheckForwardRequest as an older bastion: false, no payload
	stall   bool          // never answer CheckForwardRequest
	mute    bool          // accept TCP and never say a word
}

func startBastion(t *testing.T, o bastionOpts) *fakeBastion {
	t.Helper()
	if o.version == "" {
		o.version = "SSH-2.0-lifeline"
	}
	hk := sshtest.NewKey(t, t.TempDir(), "host_key")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBastion{addr: ln.Addr().String(), hostKey: hk.Signer, o: o}
	cfg := &ssh.ServerConfig{
		Config:                  sshalgo.Config(),
		ServerVersion:           o.version,
		PublicKeyAuthAlgorithms: sshalgo.PublicKeyAuthAlgorithms(),
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if o.accept == nil || !bytes.Equal(k.Marshal(), o.accept.Marshal()) {
				return nil, errors.New("unknown key")
			}
			return &ssh.Permissions{}, nil
		},
	}
	cfg.AddHostKey(hk.Signer)
	sshtest.ServeConns(t, ln, func(c net.Conn) {
		defer c.Close()
		if o.mute {
			io.Copy(io.Discard, c)
			return
		}
		b.serve(c, cfg)
	})
	return b
}

func (b *fakeBastion) serve(c net.Conn, cfg *ssh.ServerConfig) {
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go func() {
		for nc := range chans {
			nc.Reject(ssh.Prohibited, "no channels")
		}
	}()
	for r := range reqs {
		b.mu.Lock()
		b.requests = append(b.requests, r.Type)
		b.mu.Unlock()
		if r.Type != CheckForwardRequest {
			r.Reply(false, nil)
			continue
		}
		var m struct {
			Addr string
			Port uint32
		}
		switch {
		case b.o.stall:
			continue
		case b.o.old:
			r.Reply(false, nil)
		case ssh.Unmarshal(r.Payload, &m) != nil:
			r.Reply(false, ssh.Marshal(&struct{ Reason string }{"malformed"}))
		case slices.Contains(b.o.permit, net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))):
			r.Reply(true, nil)
		default:
			r.Reply(false, ssh.Marshal(&struct{ Reason string }{`not permitted: this key's permitlisten is "` + strings.Join(b.o.permit, ",") + `"`}))
		}
	}
}

func (b *fakeBastion) sent() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.requests)
}

// site is a temporary site: a key, a known_hosts file, a state
// directory, and a Config that checks them as the current user.
type site struct {
	dir    string
	key    string
	signer ssh.Signer
	known  string
	cfg    Config
}

func newSite(t *testing.T, bastion, forwards string) *site {
	t.Helper()
	dir := t.TempDir()
	s := &site{dir: dir, key: filepath.Join(dir, "agent_ed25519_key"), known: filepath.Join(dir, "known_hosts")}
	signer, _, err := keyfile.LoadOrCreate(s.key, "lifeline-agent@test")
	if err != nil {
		t.Fatal(err)
	}
	s.signer = signer
	s.cfg = Config{
		Agent:        config.Config{Bastion: bastion, Key: s.key, KnownHosts: s.known, Forwards: forwards, User: "lifeline-agent"},
		AgentDecoded: true,
		Checks:       linkcheck.Config{CheckEvery: time.Hour, MonthlyBudget: 300 * units.MB, Budget: 50 * units.MB, StateDir: dir},
		User:         ServiceUser{Name: "tester", UID: os.Geteuid(), GID: os.Getegid()},
		Unit:         func(context.Context) (bool, string, error) { return false, "", nil },
		// KeyComment as pair writes it.
		KeyComment:  "lifeline-agent@test",
		StepTimeout: 2 * time.Second,
	}
	return s
}

// pin writes a known_hosts line for addr.
func (s *site) pin(t *testing.T, addr string, key ssh.PublicKey) {
	t.Helper()
	if err := os.WriteFile(s.known, []byte(keyfile.KnownHostsLine([]string{addr}, key)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run runs the doctor and returns its output and failure count.
func (s *site) run(t *testing.T) (string, int) {
	t.Helper()
	var out bytes.Buffer
	n := New(s.cfg).Run(context.Background(), &out)
	return out.String(), n
}

// line returns the output line containing sub, failing when none does.
func line(t *testing.T, out, sub string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	t.Fatalf("no line with %q in:\n%s", sub, out)
	return ""
}

// want checks that the line with sub has the mark and every text.
func want(t *testing.T, out, sub, mark string, texts ...string) {
	t.Helper()
	l := line(t, out, sub)
	if !strings.HasPrefix(l, mark+" ") {
		t.Errorf("line %q: want %s\nfull output:\n%s", l, mark, out)
	}
	for _, x := range texts {
		if !strings.Contains(l, x) {
			t.Errorf("line %q lacks %q", l, x)
		}
	}
}

// targetListener is a TCP server on 127.0.0.1:0 that writes greeting to
// every connection; it returns the port.
func targetListener(t *testing.T, greeting string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sshtest.ServeConns(t, ln, func(c net.Conn) {
		defer c.Close()
		io.WriteString(c, greeting)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// closedPort is a loopback port nothing listens on (a moment ago).
func closedPort(t *testing.T) int {
	t.Helper()
	return sshtest.FreePort(t)
}
