package tunnel

// BenchmarkBlackhole compares lifeline-agent (the real binary, default
// timings) with autossh as its tutorials configure it, through the same
// black-holing relay against the same stock sshd:
//
//   agent or autossh --> relay (Pause/Resume) --> sshd "bastion" --> listens localhost:F
//   probe: TCP connect to localhost:F on the bastion, read the Pi sshd's banner
//
// Figures (b.ReportMetric):
//   detect_s      black hole start -> the client closes its dead connection
//   restore_s     end of a 60 s black hole (carrier NAT forgot the flow) -> a
//                 connection to NAME:PORT reaches the Pi's sshd again
//   idle_rss_kB   resident memory of the idle client (autossh: autossh + ssh)
//   keepalive_B/day  payload bytes both ways on the relay over 60 s idle, x 1440
//                 (the bastion sshd's own ClientAlive probes included, if it sent any)
//   wire_B/day_est   the same plus an estimate of TCP/IP headers and ACKs
//                 (104 bytes per relay read, about one segment each)
//
// Run: go test -run '^$' -bench Blackhole -benchtime 1x -timeout 30m ./agent/tunnel
// It takes about ten minutes (autossh needs ~90 s to notice a dead link).

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

const (
	benchOutage  = 60 * time.Second
	benchIdle    = 60 * time.Second
	benchMaxWait = 240 * time.Second
)

// bannerThrough reports whether a connection to 127.0.0.1:port (the
// bastion's forward listener) reaches the Pi's sshd within timeout.
func bannerThrough(port int, timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-OpenSSH")
}

// waitFor polls cond every 100ms for at most limit; it returns when cond
// became true, or false on timeout.
func waitFor(limit time.Duration, cond func() bool) (time.Time, bool) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return time.Now(), true
		}
		tm := time.NewTimer(100 * time.Millisecond)
		<-tm.C
	}
	return time.Time{}, false
}

// rssKB sums VmRSS of the given PIDs.
func rssKB(pids ...int) float64 {
	var total float64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				v, _ := strconv.ParseFloat(f[1], 64)
				total += v
			}
		}
	}
	return total
}

type benchClient struct {
	name  string
	start func(b *testing.B, w *world, rl *relay) (pids func() []int)
}

func BenchmarkBlackhole(b *testing.B) {
	needRoot(b, "/usr/sbin/sshd", "ssh", "autossh")
	clients := []benchClient{
		{"lifeline-agent", startLifelineForBench},
		{"autossh", startAutosshForBench},
	}
	for _, c := range clients {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				benchOne(b, c)
			}
		})
	}
}

func benchOne(b *testing.B, c benchClient) {
	w := newBenchWorld(b)
	rl := startRelay(b, w.srv.Addr())
	pids := c.start(b, w, rl)
	port := w.fwdPorts[0]
	if _, ok := waitFor(benchMaxWait, func() bool { return bannerThrough(port, 2*time.Second) }); !ok {
		b.Fatalf("%s: tunnel never came up", c.name)
	}
	if err := w.jumpWorks(w.srv, port); err != nil {
		b.Fatalf("%s: %v", c.name, err)
	}

	// Idle cost.
	idleStart, bytes0, reads0 := time.Now(), rl.Bytes(), rl.Reads()
	waitFor(benchIdle, func() bool { return false })
	day := float64(24*time.Hour) / float64(time.Since(idleStart))
	perDay := float64(rl.Bytes()-bytes0) * day
	// Each read is about one segment: 52 bytes of IPv4+TCP headers (with
	// timestamps) plus one 52-byte ACK.
	wirePerDay := perDay + float64(rl.Reads()-reads0)*104*day
	rss := rssKB(pids()...)

	// Detection: black hole until the client gives up on the connection.
	paused := rl.Pause()
	closed, ok := waitFor(benchMaxWait, func() bool { _, ok := rl.ClientClosedAfter(paused); return ok })
	detect := closed.Sub(paused)
	if !ok {
		detect = benchMaxWait
		b.Logf("%s: dead link not detected within %s", c.name, benchMaxWait)
	}
	// Stay dark for a full outage: the bastion sshd must drop the stale
	// session (ClientAlive) before the forward is free again, and probing
	// its listener meanwhile would keep that session alive (OpenSSH 9.2
	// counts listener activity as activity).
	waitFor(time.Until(paused.Add(benchOutage)), func() bool { return false })
	rl.Resume(true)
	if _, ok := waitFor(benchMaxWait, func() bool { return bannerThrough(port, 2*time.Second) }); !ok {
		b.Fatalf("%s: no recovery after the detection outage", c.name)
	}

	// Restore: a 60 s black hole after which the carrier NAT has forgotten
	// the old flow; time from the link's return to a working forward.
	rl.Pause()
	waitFor(benchOutage, func() bool { return false })
	resumed := rl.Resume(true)
	ok2, restoredOK := waitFor(benchMaxWait, func() bool { return bannerThrough(port, 2*time.Second) })
	restore := ok2.Sub(resumed)
	if !restoredOK {
		restore = benchMaxWait
		b.Logf("%s: not restored within %s", c.name, benchMaxWait)
	}
	if err := w.jumpWorks(w.srv, port); err != nil {
		b.Errorf("%s: ssh -J after restore: %v", c.name, err)
	}
	b.ReportMetric(detect.Seconds(), "detect_s")
	b.ReportMetric(restore.Seconds(), "restore_s")
	b.ReportMetric(rss, "idle_rss_kB")
	b.ReportMetric(perDay, "keepalive_B/day")
	b.ReportMetric(wirePerDay, "wire_B/day_est")
	b.Logf("%s: detect %.1fs, restore after %s outage %.1fs, idle RSS %.0f kB, %.0f B/day (payload, measured over %s)",
		c.name, detect.Seconds(), benchOutage, restore.Seconds(), rss, perDay, benchIdle)
}

// newBenchWorld is newWorld with a bastion sshd that drops a silent client
// well within the outage, freeing its forward for the reconnecting client.
// (OpenSSH 9.2 measured here drops a silent client after about
// 2 x ClientAliveInterval x (ClientAliveCountMax+1), and never while
// something keeps connecting to the forward's listener.)
func newBenchWorld(b *testing.B) *world {
	b.Helper()
	w := &world{t: b, dir: b.TempDir()}
	w.op = newOperator(b)
	w.pi = startTarget(b, w.op, "PI-REACHED")
	_, w.agentKey = newKey(b, w.dir, "agent_key")
	w.fwdPorts = []int{freePort(b)}
	w.srv = w.startBastion("ClientAliveInterval 10", "ClientAliveCountMax 1")
	w.op.Trust("localhost:"+strconv.Itoa(w.fwdPorts[0]), w.pi.HostKey)
	return w
}

func startLifelineForBench(b *testing.B, w *world, rl *relay) func() []int {
	kh := knownHostsFile(b, w.dir, keyfile.KnownHostsLine([]string{rl.Addr()}, w.srv.HostKey))
	p := startAgentProcess(b,
		"LIFELINE_BASTION="+rl.Addr(),
		"LIFELINE_KEY="+filepath.Join(w.dir, "agent_key"),
		"LIFELINE_KNOWN_HOSTS="+kh,
		"LIFELINE_FORWARDS="+w.forwards()[0].String(),
		"LIFELINE_USER=root",
	)
	return func() []int { return []int{p.cmd.Process.Pid} }
}

func startAutosshForBench(b *testing.B, w *world, rl *relay) func() []int {
	kh := knownHostsFile(b, w.dir, keyfile.KnownHostsLine([]string{rl.Addr()}, w.srv.HostKey))
	cfg := filepath.Join(w.dir, "autossh_config")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("Host *\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
		filepath.Join(w.dir, "agent_key"), kh)), 0o600); err != nil {
		b.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(rl.Addr())
	f := w.forwards()[0]
	return runAutossh(b, "-M", "0", "-N", "-F", cfg,
		"-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=3", "-o", "ExitOnForwardFailure=yes",
		"-R", f.Listen()+":"+f.Target(), "-p", port, "root@"+host)
}

// runAutossh starts autossh with args until the benchmark ends and returns
// the PIDs to measure (autossh and its ssh child). AUTOSSH_GATETIME=0: keep
// retrying even if the first ssh fails fast (what tutorials set for
// boot-time starts).
func runAutossh(b *testing.B, args ...string) func() []int {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "autossh", args...)
	cmd.Env = append(os.Environ(), "AUTOSSH_GATETIME=0")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.Cleanup(func() {
		// autossh's ssh child first (by PID), then autossh.
		for _, pid := range childPIDs(cmd.Process.Pid) {
			syscall.Kill(pid, syscall.SIGTERM)
		}
		cancel()
		<-done
		if b.Failed() {
			b.Logf("autossh output:\n%s", out.String())
		}
	})
	return func() []int { return append([]int{cmd.Process.Pid}, childPIDs(cmd.Process.Pid)...) }
}
