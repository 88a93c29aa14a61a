package tunnel

// BenchmarkIdleRSS measures the memory of an idle site, as released:
//
//   lifeline-agent (release build)  --SSH, loopback-->  lifeline-bastion (release build)
//   autossh -M 0 + ssh -N -R pi:22  --SSH, loopback-->  the same bastion, afterwards
//
// Each client holds the registration pi:22 while idle (link checks off:
// the time between two checks), then /proc/PID/status is read (autossh:
// autossh plus its ssh). The agent is measured three times (rssPhases):
// fresh, aged by fast keepalives, and fresh after one link check (run by
// the link check program, lifeline-linkcheck, against a local fake
// speedtest server: the agent itself must not grow by it). It is also
// asked for its Go runtime figures (SIGUSR1 logs runtime/metrics).
//
// Figures (b.ReportMetric, PHASE fresh, aged or checked, and markdown rows
// for README's table):
//   PHASE_rss_kB, PHASE_anon_kB, PHASE_file_kB  VmRSS, RssAnon, RssFile
//   PHASE_heap_live_KiB  Go heap live at the last GC (0: none yet; an idle
//                        agent may go hours without one)
//   PHASE_heap_objects_KiB  Go heap now, garbage included
//   PHASE_go_total_KiB   all memory the Go runtime has mapped
//   autossh_rss_kB       autossh + ssh
//
// RssFile is pages of the agent's own binary: clean, shared with the page
// cache, given back by the kernel under pressure. The kernel maps them in
// blocks around each first touch (fault-around), so within seconds of the
// start about 85% of the binary is mapped (measured on Linux 6.18, also
// from tmpfs): it follows the binary's size more than what runs.
//
// Run: go test -run '^$' -bench IdleRSS -benchtime 1x ./agent/tunnel
// (about thirteen minutes; autossh from Debian's autossh package, skipped if
// missing).

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/memstat"
	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// benchRSSIdle is how long a fresh client idles before it is measured.
const benchRSSIdle = 130 * time.Second

var (
	releaseOnce sync.Once
	releaseDir  string
	releaseErr  error
)

// releaseBinaries builds the binaries as `make build` does (static,
// stripped; the link check program next to the agent), once per test
// process; TestMain removes them.
func releaseBinaries(b *testing.B) (agent, bastion string) {
	b.Helper()
	releaseOnce.Do(func() {
		releaseDir, releaseErr = os.MkdirTemp("", "lifeline-release-")
		if releaseErr != nil {
			return
		}
		for _, p := range []string{"agent/lifeline-agent", "bastion/lifeline-bastion", "agent/lifeline-linkcheck"} {
			dir, bin, _ := strings.Cut(p, "/")
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(releaseDir, bin), "../../"+dir+"/cmd/"+bin)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				releaseErr = fmt.Errorf("go build %s: %v: %s", bin, err, out)
				return
			}
		}
	})
	if releaseErr != nil {
		b.Fatal(releaseErr)
	}
	return filepath.Join(releaseDir, "lifeline-agent"), filepath.Join(releaseDir, "lifeline-bastion")
}

func procStatusKB(b *testing.B, pids []int, field string) float64 {
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			b.Fatalf("read status of %d: %v", pid, err)
		}
		total += memstat.ProcStatus(data, field)
	}
	return float64(total) / 1024
}

// rssBastion is a running lifeline-bastion that the agent key may register
// pi:22 on.
type rssBastion struct {
	addr, knownHosts, agentKey string
	out                        *sshtest.Buffer
}

func startRSSBastion(b *testing.B, bin, dir string) *rssBastion {
	b.Helper()
	agentKey := filepath.Join(dir, "agent_key")
	agent, _, err := keyfile.LoadOrCreate(agentKey, "bench-agent")
	if err != nil {
		b.Fatal(err)
	}
	op, _, err := keyfile.LoadOrCreate(filepath.Join(dir, "operator_key"), "bench-operator")
	if err != nil {
		b.Fatal(err)
	}
	host, _, err := keyfile.LoadOrCreate(filepath.Join(dir, "host_key"), "")
	if err != nil {
		b.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			b.Fatal(err)
		}
		return p
	}
	addr := "127.0.0.1:" + strconv.Itoa(sshtest.FreePort(b))
	bs := &rssBastion{addr: addr, agentKey: agentKey, out: &sshtest.Buffer{},
		knownHosts: write("known_hosts", keyfile.KnownHostsLine([]string{addr}, host.PublicKey())+"\n")}
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"),
		"LIFELINE_LISTEN=" + addr,
		"LIFELINE_HOST_KEY=" + filepath.Join(dir, "host_key"),
		"LIFELINE_AGENTS=" + write("agents", `permitlisten="pi:22" `+keyfile.AuthorizedLine(agent.PublicKey(), "bench-agent")+"\n"),
		"LIFELINE_OPERATORS=" + write("operators", keyfile.AuthorizedLine(op.PublicKey(), "bench-operator")+"\n"),
		"LIFELINE_STATE_DIR=" + filepath.Join(dir, "bastion-state"),
		"LIFELINE_NAME=bench",
	}
	cmd.Stdout, cmd.Stderr = bs.out, bs.out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if b.Failed() {
			b.Logf("lifeline-bastion output:\n%s", bs.out.String())
		}
	})
	sshtest.Eventually(b, 20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "lifeline-bastion never listened on %s", addr)
	return bs
}

// registrations counts the bastion's "registered" log lines.
func (bs *rssBastion) registrations() int { return strings.Count(bs.out.String(), "msg=registered") }

// rssPhases are the agent's measurements: as the issue measured it
// (defaults, two minutes after start), aged (keepalives every 100 ms for
// five minutes: the allocations of hours of default idle, so the heap has
// been collected and its pages reused, as in the field), and checked (as
// fresh, with the first link check of the hour 30 s after the start).
var rssPhases = []struct {
	name  string
	env   []string
	idle  time.Duration
	check bool // link checks on, against a local fake; one must be ok
}{
	{"fresh", nil, benchRSSIdle, false},
	{"aged", []string{"LIFELINE_KEEPALIVE=100ms"}, 300 * time.Second, false},
	{"checked", []string{"LIFELINE_CHECK_EVERY=1h", "LIFELINE_CHECK_DURATION=2s", "LIFELINE_CHECK_BUDGET=10MB", "LIFELINE_CHECK_MONTHLY_BUDGET=0",
		"LIFELINE_MIN_DOWNLOAD=0", "LIFELINE_MAX_LATENCY=0"}, benchRSSIdle, true},
}

// rssFigures is one reading of the agent.
type rssFigures struct {
	rss, anon, file float64            // kB
	goFig           map[string]float64 // heap_live, go_total (KiB), gc_cycles
}

var memAttr = regexp.MustCompile(`\b(heap_live|heap_objects|go_total)=(\d+)KiB|\b(gc_cycles)=(\d+)`)

// measureAgent runs the agent against bs for idle and reads its memory.
// wantLog, when not empty, must be in the agent's output by then.
func measureAgent(b *testing.B, agentBin string, bs *rssBastion, dir string, env []string, idle time.Duration, wantLog string) rssFigures {
	sock, states := notifySocket(b, dir)
	p := &agentProcess{cmd: exec.Command(agentBin), out: &sshtest.Buffer{}, done: make(chan struct{})}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"),
		"LIFELINE_BASTION=" + bs.addr,
		"LIFELINE_KEY=" + bs.agentKey,
		"LIFELINE_KNOWN_HOSTS=" + bs.knownHosts,
		"LIFELINE_FORWARDS=pi:22=127.0.0.1:" + strconv.Itoa(sshtest.FreePort(b)),
		"LIFELINE_STATE_DIR=" + filepath.Join(dir, "agent-state"),
		"LIFELINE_CHECK_EVERY=0",
		"NOTIFY_SOCKET=" + sock,
	}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	defer func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
		if b.Failed() {
			b.Logf("lifeline-agent output:\n%s", p.out.String())
		}
	}()
	sshtest.Eventually(b, 30*time.Second, func() bool { return strings.Contains(strings.Join(states(), "\n"), "pi:22 registered") },
		"the agent never registered: %s", func() string { return fmt.Sprintf("%q", states()) })
	pause(idle)
	if wantLog != "" && !strings.Contains(p.out.String(), wantLog) {
		b.Fatalf("no %q in the agent's output", wantLog)
	}
	pid := []int{p.cmd.Process.Pid}
	f := rssFigures{rss: procStatusKB(b, pid, "VmRSS"), anon: procStatusKB(b, pid, "RssAnon"), file: procStatusKB(b, pid, "RssFile"), goFig: map[string]float64{}}
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		b.Fatal(err)
	}
	sshtest.Eventually(b, 10*time.Second, func() bool { return strings.Contains(p.out.String(), "msg=memory") }, "no memory line after SIGUSR1")
	line := p.out.String()[strings.Index(p.out.String(), "msg=memory"):]
	line, _, _ = strings.Cut(line, "\n")
	for _, m := range memAttr.FindAllStringSubmatch(line, -1) {
		k, v := m[1]+m[3], m[2]+m[4]
		f.goFig[k], _ = strconv.ParseFloat(v, 64)
	}
	return f
}

// pause lets d pass (the measurement needs idle time; nothing is
// synchronised by it).
func pause(d time.Duration) {
	tm := time.NewTimer(d)
	<-tm.C
}

func BenchmarkIdleRSS(b *testing.B) {
	agentBin, bastionBin := releaseBinaries(b)
	for range b.N {
		dir := b.TempDir()
		bs := startRSSBastion(b, bastionBin, dir)
		figs := make([]rssFigures, len(rssPhases))
		for i, ph := range rssPhases {
			pd := filepath.Join(dir, ph.name)
			if err := os.MkdirAll(pd, 0o700); err != nil {
				b.Fatal(err)
			}
			env, wantLog := ph.env, ""
			if ph.check {
				fake, err := speedtestfake.Start("127.0.0.1:0", speedtestfake.Config{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { fake.Close() })
				env, wantLog = append(append([]string(nil), env...), "LIFELINE_SPEEDTEST_URL="+fake.URL()), `msg="link check ok"`
			}
			f := measureAgent(b, agentBin, bs, pd, env, ph.idle, wantLog)
			figs[i] = f
			b.ReportMetric(f.rss, ph.name+"_rss_kB")
			b.ReportMetric(f.anon, ph.name+"_anon_kB")
			b.ReportMetric(f.file, ph.name+"_file_kB")
			b.ReportMetric(f.goFig["heap_live"], ph.name+"_heap_live_KiB")
			b.ReportMetric(f.goFig["heap_objects"], ph.name+"_heap_objects_KiB")
			b.ReportMetric(f.goFig["go_total"], ph.name+"_go_total_KiB")
		}
		autossh, a := "(autossh not installed)", 0.0
		if _, err := exec.LookPath("autossh"); err == nil {
			before := bs.registrations()
			pids := startAutosshRSS(b, bs)
			sshtest.Eventually(b, 30*time.Second, func() bool { return bs.registrations() > before }, "autossh never registered")
			pause(benchRSSIdle)
			a = procStatusKB(b, pids(), "VmRSS")
			b.ReportMetric(a, "autossh_rss_kB")
			autossh = fmt.Sprintf("%.1f MB (autossh + ssh, %s idle)", a/1000, benchRSSIdle)
		}
		table := "\n| row | lifeline | OpenSSH + autossh | ratio | how |\n| --- | --- | --- | --- | --- |\n"
		for i, ph := range rssPhases {
			f := figs[i]
			how := fmt.Sprintf("defaults, %s idle", ph.idle)
			switch {
			case ph.check:
				how = fmt.Sprintf("one link check 30 s after the start, run by lifeline-linkcheck against a local fake speedtest server (2 s capture), %s idle, %.0f GCs", ph.idle, f.goFig["gc_cycles"])
			case ph.env != nil:
				how = fmt.Sprintf("%s for %s (the allocations of hours of default idle), %.0f GCs", strings.Join(ph.env, " "), ph.idle, f.goFig["gc_cycles"])
			}
			ratio := "—"
			if a > 0 {
				ratio = fmt.Sprintf("%.2f", f.rss/a)
			}
			heap := fmt.Sprintf("Go heap %.0f KiB (no GC yet)", f.goFig["heap_objects"])
			if f.goFig["gc_cycles"] > 0 {
				heap = fmt.Sprintf("Go heap live %.0f KiB", f.goFig["heap_live"])
			}
			table += fmt.Sprintf("| agent idle RSS, %s | %.1f MB (%.1f anon + %.1f file-backed); %s, Go runtime total %.1f MiB | %s | %s | real binaries on loopback, %s, `BenchmarkIdleRSS` |\n",
				ph.name, f.rss/1000, f.anon/1000, f.file/1000, heap, f.goFig["go_total"]/1024, autossh, ratio, how)
		}
		b.Log(table)
	}
}

// startAutosshRSS runs autossh as tutorials do (ServerAlive 30 s x 3)
// holding pi:22 on bs with the agent's key; it returns the PIDs to measure.
func startAutosshRSS(b *testing.B, bs *rssBastion) func() []int {
	host, port, _ := net.SplitHostPort(bs.addr)
	return runAutossh(b, "-M", "0", "-N", "-F", "/dev/null",
		"-i", bs.agentKey, "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile="+bs.knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
		"-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=3", "-o", "ExitOnForwardFailure=yes",
		"-R", "pi:22:127.0.0.1:"+strconv.Itoa(sshtest.FreePort(b)), "-p", port, "lifeline-agent@"+host)
}
