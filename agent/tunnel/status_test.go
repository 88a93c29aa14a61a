package tunnel

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

func (r *recordingSystemd) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.states...)
}

// lastStatus is the text of the latest STATUS= sent ("" if none).
func (r *recordingSystemd) lastStatus() string {
	states := r.all()
	for i := len(states) - 1; i >= 0; i-- {
		for _, line := range strings.Split(states[i], "\n") {
			if s, ok := strings.CutPrefix(line, "STATUS="); ok {
				return s
			}
		}
	}
	return ""
}

// TestStartedMeansRunning: READY=1 goes out as soon as the loops run,
// whatever the bastion does; the tunnel's state is in STATUS=; the
// watchdog is fed while the loops are alive, connected or not. None of
// these waits for a registration (READY=1 used to, so systemd failed the
// start of an agent whose bastion was down and restarted it forever).
func TestStartedMeansRunning(t *testing.T) {
	t.Parallel()
	agent := sshtest.NewKey(t, t.TempDir(), "agent").Signer
	up := startFakeBastion(t, agent.PublicKey())
	refusing := startFakeBastion(t, agent.PublicKey(), "pi:22")
	dead := "127.0.0.1:" + strconv.Itoa(sshtest.FreePort(t))
	tests := []struct {
		name string
		// addr and host keys of the bastion
		cfg  func(t *testing.T) Config
		want []string // substrings of a STATUS= sent after READY=1
	}{
		{
			name: "bastion unreachable",
			cfg: func(t *testing.T) Config {
				c := fakeAgentConfig(t, agent)
				c.Bastions = []string{dead}
				return c
			},
			want: []string{dead + " unreachable: dial tcp " + dead, "connection refused", "; retry in "},
		},
		{
			name: "host key not pinned",
			cfg: func(t *testing.T) Config {
				c := fakeAgentConfig(t, agent)
				c.Bastions, c.HostKeys = []string{up.Addr()}, pinNothing{}
				return c
			},
			want: []string{up.Addr() + ": BASTION HOST KEY REFUSED", "; retry in "},
		},
		{
			name: "connected and registered",
			cfg:  func(t *testing.T) Config { return fakeAgentConfig(t, agent, up) },
			want: []string{"connected to " + up.Addr() + ", pi:22 registered"},
		},
		{
			name: "forward refused",
			cfg:  func(t *testing.T) Config { return fakeAgentConfig(t, agent, refusing) },
			want: []string{"connected to " + refusing.Addr() + ", registering pi:22"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg(t)
			cfg.Forwards = []forward.Forward{{Name: "pi", Port: 22, TargetHost: "127.0.0.1", TargetPort: 22}}
			n := &recordingSystemd{}
			cfg.Systemd, cfg.WatchdogEvery = n, 50*time.Millisecond
			tun, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			tun.SetNote("link checks: next 12:00 UTC")
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); tun.Run(ctx) }()
			defer func() { cancel(); <-done }()

			sshtest.Eventually(t, 10*time.Second, func() bool { return n.count("READY=1") == 1 }, "READY=1")
			if first := n.all()[0]; !strings.HasPrefix(first, "READY=1\nSTATUS=") {
				t.Errorf("first state %q: want READY=1 with a STATUS=", first)
			}
			sshtest.Eventually(t, 10*time.Second, func() bool {
				s := n.lastStatus()
				for _, w := range tt.want {
					if !strings.Contains(s, w) {
						return false
					}
				}
				return true
			}, "STATUS with %s", strings.Join(tt.want, ", "))
			if s := n.lastStatus(); !strings.HasSuffix(s, " | link checks: next 12:00 UTC") || strings.Contains(s, "\n") {
				t.Errorf("STATUS=%q: want one line ending with the note", s)
			}
			before := n.count("WATCHDOG=1")
			sshtest.Eventually(t, 10*time.Second, func() bool { return n.count("WATCHDOG=1") >= before+3 }, "watchdog pings")
			for _, s := range n.all() {
				if strings.HasPrefix(s, "READY=1") && s != n.all()[0] {
					t.Errorf("READY=1 sent again: %q", s)
				}
			}
			// The same state is not sent twice in a row.
			states := n.all()
			var prev string
			for _, s := range states {
				if st, ok := strings.CutPrefix(s, "STATUS="); ok {
					if st == prev {
						t.Errorf("STATUS=%q sent twice in a row", st)
					}
					prev = st
				}
			}
		})
	}
}

// TestStatusFollowsTheLink: a connection that is lost shows as lost with
// the retry, and as connected again once it is back; SetNote changes are
// sent at once.
func TestStatusFollowsTheLink(t *testing.T) {
	t.Parallel()
	agent := sshtest.NewKey(t, t.TempDir(), "agent").Signer
	b := startFakeBastion(t, agent.PublicKey())
	cfg := fakeAgentConfig(t, agent, b)
	cfg.Forwards = []forward.Forward{{Name: "pi", Port: 22, TargetHost: "127.0.0.1", TargetPort: 22}}
	n := &recordingSystemd{}
	cfg.Systemd = n
	tun, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tun.Run(ctx) }()
	defer func() { cancel(); <-done }()
	registered := "connected to " + b.Addr() + ", pi:22 registered"
	sshtest.Eventually(t, 10*time.Second, func() bool { return n.lastStatus() == registered }, "registered")

	b.mu.Lock()
	b.hangUp = true
	old := b.names["pi:22"]
	b.mu.Unlock()
	old.Close()
	sshtest.Eventually(t, 10*time.Second, func() bool {
		s := n.lastStatus()
		return strings.HasPrefix(s, b.Addr()+": ") && strings.Contains(s, "; retry in ")
	}, "lost")
	b.mu.Lock()
	b.hangUp = false
	b.mu.Unlock()
	sshtest.Eventually(t, 20*time.Second, func() bool { return n.lastStatus() == registered }, "registered again")

	tun.SetNote("link checks paused: monthly budget used up")
	if s := n.lastStatus(); s != registered+" | link checks paused: monthly budget used up" {
		t.Errorf("STATUS=%q after SetNote", s)
	}
	// The main link's state goes between the tunnels and the note.
	tun.SetMainNote("MAIN INTERNET DOWN since 09:55 UTC")
	if s := n.lastStatus(); s != registered+" | MAIN INTERNET DOWN since 09:55 UTC | link checks paused: monthly budget used up" {
		t.Errorf("STATUS=%q after SetMainNote", s)
	}
	tun.SetMainNote("")
	if s := n.lastStatus(); s != registered+" | link checks paused: monthly budget used up" {
		t.Errorf("STATUS=%q after SetMainNote(\"\")", s)
	}
}

func TestOneLine(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\tc", 10, "a b c"},
		{"abcdef", 4, "a…"},
		{"ééé", 5, "é…"},
		{"ok", 2, "ok"},
	} {
		if got := oneLine(tt.in, tt.n); got != tt.want || len(got) > max(tt.n, len(tt.want)) {
			t.Errorf("oneLine(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
