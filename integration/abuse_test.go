//go:build integration

package integration

// The abuse suite: hostile clients against the real lifeline-bastion while a
// legitimate operator keeps jumping to the Pi through it with stock OpenSSH,
// and the legitimate agent is restarted and must register again at once.
// Every address lives on veth pairs between network namespaces this test
// creates (ll<pid>-ab*, deleted in cleanup, also on failure); nothing touches
// the host's own network. The attackers are bounded Go clients in this test
// process whose sockets are made inside the attackers' namespace (setns on a
// locked OS thread), so they come from real, distinct source addresses.
//
//  +------------------------ abcloud (ll<pid>-abcloud), bridge br0 -------------------------+
//  | lifeline-bastion [::]:2222 on 203.0.113.10 and 2001:db8::10                             |
//  |   state dir: audit.jsonl, access.jsonl                                                  |
//  | also 198.18.0.1/15 and 198.51.100.1/24 (on-link for attackers and operator; no routing) |
//  +-------+---------------------------------------+--------------------------+-------------+
//          | c-att                                 | c-op                     | c-pi
//  +-------+----------------------------+  +-------+-----------------+  +-----+------------------------------+
//  | abattack, eth0 (route 203.0.113/24 |  | abop, eth0              |  | abpi, eth0 203.0.113.30            |
//  |   via 198.18.0.1)                  |  | 198.51.100.20           |  | lifeline-agent -> 203.0.113.10:2222|
//  | 198.18.1.1      idle               |  | stock ssh -J bastion pi |  |   pi:22  = 127.0.0.1:22 (sshd, Pi) |
//  | 198.18.2.1-40   slowloris, and     |  | ssh bastion status      |  |   sink:7 = 127.0.0.1:7  (echo, in  |
//  |  2001:db8:2:N::1 N=1..10           |  | (the legitimate probes) |  |            this test process)      |
//  | 198.18.3.1-150  failed logins, and |  +-------------------------+  +------------------------------------+
//  |  2001:db8:3:N::1 N=1..40           |
//  | 198.18.4.1-20   hostile keys:      |
//  |  mallory (operator, permitopen     |
//  |  sink:7), taker (agent, pi:22),    |
//  |  flooder (agent, evil:22), a CA    |
//  |  certificate for principal ops     |
//  +------------------------------------+
//
// Each attack runs for a fixed time (or a fixed sequence) and is bounded in
// count; the results are asserted by TestAbuse and printed as a table by
// BenchmarkAbuse (abuse_bench_test.go).

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// Namespace roles (ll<pid>-ROLE) and addresses of the drawing above.
const (
	abCloud  = "abcloud"
	abAttack = "abattack"
	abOp     = "abop"
	abPi     = "abpi"

	abBastion4   = "203.0.113.10"
	abBastion6   = "2001:db8::10"
	abPort       = 2222
	abPiIP       = "203.0.113.30"
	abOperatorIP = "198.51.100.20"
	abSinkPort   = 7
)

// How long each attack lasts; the legitimate probes run meanwhile. The whole
// suite stays near six minutes when the bastion holds.
const (
	abIdleFor         = 20 * time.Second
	abSlowlorisFor    = 60 * time.Second
	abFailedLoginsFor = 30 * time.Second
	abFloodFor        = 20 * time.Second
	abPushFor         = 15 * time.Second
	abTakeoverBound   = 90 * time.Second // a fixed sequence; this only bounds it
	abRevocationBound = 90 * time.Second
	abTakeoverCycles  = 3
	abTakeoverHold    = 2 * time.Second
	abCertValid       = 8 * time.Second
)

// Attack sizes. Every loop is bounded by these and by its attack's time.
const (
	abIdleReopenPerSec      = 20 // re-opens of closed idle connections (at least 4/s)
	abSlowlorisConns        = 500
	abSlowlorisReopenPerSec = 100
	abFailedLoginsPerMinute = 2000
	abFailedLoginsInFlight  = 256
	abFloodConns            = 12 // hostile operator connections (LIFELINE_MAX_CONNS_PER_KEY is 8)
	abFloodWorkers          = 4  // concurrent channel opens per connection
	abFloodAttempts         = 100_000
	abFloodHold             = 4096 // opened channels kept open; later ones are closed at once
	abNeverReadConns        = 2
	abNeverReadChannels     = 32      // per connection
	abNeverReadAttempts     = 2000    // channel opens in all
	abNeverReadBytes        = 8 << 20 // the most one channel tries to send
	abPushRequests          = 2_000_000
	abReportRequests        = 1_000_000
	abJunkKeys              = 64
	abReconnects            = 100 // logins of one attacking connection slot after the bastion closed it
)

// Product goals the test asserts. Latency is only ever "succeeded".
const (
	abBastionRSSGoal = 256 << 20
	abAgentRSSGoal   = 32 << 20
	abReregisterGoal = 5 * time.Second
	abReregisterWait = 10 * time.Second // how long a restart is watched
	abRevokeGoal     = 5 * time.Second
	abExpiryGoal     = 3 * time.Second
)

// abHostNS is this process's own network namespace, opened before any
// thread moves into another one.
var abHostNS = sync.OnceValues(func() (*os.File, error) { return os.Open("/proc/self/ns/net") })

// inNetNS runs fn on an OS thread moved into the network namespace ns:
// sockets fn creates (dial, listen) belong to ns for their whole life, also
// after the thread has moved back. Go never starts new threads from a locked
// one, so nothing else runs in ns.
func inNetNS(ns *os.File, fn func() error) error {
	host, err := abHostNS()
	if err != nil {
		return fmt.Errorf("open own network namespace: %w", err)
	}
	runtime.LockOSThread()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", ns.Name(), err)
	}
	ferr := fn()
	if err := unix.Setns(int(host.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so nothing else ever runs on it.
		return errors.Join(ferr, fmt.Errorf("back to the host network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// abPool are the attackers' source addresses, one set per attack so that a
// ban earned in one attack does not blunt another.
type abPool struct {
	idle      netip.Addr
	slowloris []netip.Addr // 40 IPv4 (+10 IPv6)
	logins    []netip.Addr // 150 IPv4 (+40 IPv6)
	hostile   []netip.Addr // 20 IPv4: logins with real keys
}

// abuseWorld is the topology above with the real programs running in it.
type abuseWorld struct {
	tb  testing.TB
	net *netSite
	dir string

	attackNS, piNS *os.File
	pool           abPool
	v6             bool

	hostKey  ssh.PublicKey
	operator sshtest.Key // alice@laptop, unrestricted: the legitimate operator
	hostile  sshtest.Key // mallory@contractor, permitopen="sink:7" (revocation)
	// One hostile key per flooding attack: a key that floods is refused for
	// a minute (LIFELINE_REQUESTS_PER_SECOND), which must not blunt the next
	// attack. Each has permitopen="sink:7" like mallory.
	hostileFor map[string]sshtest.Key
	taker      ssh.Signer // taker@second-pi: another agent key permitted pi:22
	flooder    ssh.Signer // flooder@rogue-pi: an agent key permitted evil:22
	junk       []ssh.Signer
	caPath     string
	operatorFP string
	agentFP    string
	takerFP    string

	operatorsFile string
	operatorsText string
	sshConfig     string
	bastionEnv    []string
	agentEnv      []string

	unloaded []time.Duration // sorted jump times before any attack

	mu      sync.Mutex
	bastion *sshtest.Process
	agent   *sshtest.Process
}

func (w *abuseWorld) stateDir() string { return filepath.Join(w.dir, "bastion") }

func startAbuseWorld(tb testing.TB) *abuseWorld {
	tb.Helper()
	sshtest.NeedRoot(tb)
	sshtest.Need(tb, "ip", "sshd", "ssh", "ssh-keygen")
	if _, err := abHostNS(); err != nil {
		tb.Fatal(err)
	}
	w := &abuseWorld{tb: tb, dir: tb.TempDir()}
	w.net = &netSite{t: tb, prefix: fmt.Sprintf("ll%d", os.Getpid())}
	tb.Cleanup(w.net.destroy)
	w.buildNet()
	w.attackNS, w.piNS = w.openNS(abAttack), w.openNS(abPi)

	d := w.dir
	for _, sub := range []string{"bastion", "agent"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o700); err != nil {
			tb.Fatal(err)
		}
	}
	w.operator = sshtest.NewKey(tb, d, "operator")
	w.hostile = sshtest.NewKey(tb, d, "mallory")
	w.hostileFor = map[string]sshtest.Key{}
	for _, a := range []string{"channel-flood", "never-read", "push-flood"} {
		w.hostileFor[a] = sshtest.NewKey(tb, d, "mallory-"+a)
	}
	taker, flooder := sshtest.NewKey(tb, d, "taker"), sshtest.NewKey(tb, d, "flooder")
	w.taker, w.flooder = taker.Signer, flooder.Signer
	w.operatorFP = ssh.FingerprintSHA256(w.operator.Signer.PublicKey())
	w.takerFP = ssh.FingerprintSHA256(w.taker.PublicKey())
	for range abJunkKeys {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		s, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			tb.Fatal(err)
		}
		w.junk = append(w.junk, s)
	}
	w.caPath = filepath.Join(d, "ops_ca")
	if out, err := sshtest.Run(context.Background(), 20*time.Second, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops-ca", "-f", w.caPath); err != nil {
		tb.Fatalf("ssh-keygen CA: %v\n%s", err, out)
	}
	caPub, err := os.ReadFile(w.caPath + ".pub")
	if err != nil {
		tb.Fatal(err)
	}

	w.bastionEnv = []string{
		"LIFELINE_LISTEN=:" + fmt.Sprint(abPort), "LIFELINE_NAME=abuse-bastion",
		"LIFELINE_HOST_KEY=" + filepath.Join(d, "bastion", "host_key"), "LIFELINE_STATE_DIR=" + w.stateDir(),
		"LIFELINE_AGENTS=" + filepath.Join(d, "agents"), "LIFELINE_OPERATORS=" + filepath.Join(d, "operators"),
		"TWILIO_ACCOUNT_SID=", "TWILIO_AUTH_TOKEN=", "LIFELINE_SMS_FROM=", "LIFELINE_SMS_TO=",
	}
	w.agentEnv = []string{
		fmt.Sprintf("LIFELINE_BASTION=%s:%d", abBastion4, abPort),
		"LIFELINE_KEY=" + filepath.Join(d, "agent", "key"), "LIFELINE_KNOWN_HOSTS=" + filepath.Join(d, "agent", "known_hosts"),
		fmt.Sprintf("LIFELINE_FORWARDS=pi:22=127.0.0.1:22,sink:%d=127.0.0.1:%d", abSinkPort, abSinkPort),
		"LIFELINE_STATE_DIR=" + filepath.Join(d, "agent"), "LIFELINE_CHECK_EVERY=0",
	}
	// Pairing, as the README says, plus the two hostile agent keys.
	pub, err := sshtest.Stdout(context.Background(), 20*time.Second, w.agentEnv, bin("lifeline-agent"), "pubkey")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range sshtest.Lines(pub) {
		if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l)); err == nil {
			w.agentFP = ssh.FingerprintSHA256(k)
		}
	}
	if w.agentFP == "" {
		tb.Fatalf("no key in `lifeline-agent pubkey` output:\n%s", pub)
	}
	mustWrite(tb, filepath.Join(d, "agents"), strings.TrimSpace(pub)+"\n"+
		taker.AuthorizedLine(`permitlisten="pi:22"`, "taker@second-pi")+"\n"+
		flooder.AuthorizedLine(`permitlisten="evil:22"`, "flooder@rogue-pi")+"\n")
	w.operatorsFile = filepath.Join(d, "operators")
	w.operatorsText = w.operator.AuthorizedLine("", "alice@laptop") + "\n" +
		w.hostile.AuthorizedLine(fmt.Sprintf(`permitopen="sink:%d"`, abSinkPort), "mallory@contractor") + "\n" +
		w.hostileFor["channel-flood"].AuthorizedLine(fmt.Sprintf(`permitopen="sink:%d"`, abSinkPort), "mallory-flood@contractor") + "\n" +
		w.hostileFor["never-read"].AuthorizedLine(fmt.Sprintf(`permitopen="sink:%d"`, abSinkPort), "mallory-never-read@contractor") + "\n" +
		w.hostileFor["push-flood"].AuthorizedLine(fmt.Sprintf(`permitopen="sink:%d"`, abSinkPort), "mallory-push@contractor") + "\n" +
		`cert-authority,principals="ops" ` + strings.TrimSpace(string(caPub)) + "\n"
	mustWrite(tb, w.operatorsFile, w.operatorsText)

	w.hostKey = bastionHostKey(tb, w.bastionEnv)
	known := knownHostsFor(fmt.Sprintf("%s:%d", abBastion4, abPort), w.hostKey)
	mustWrite(tb, filepath.Join(d, "agent", "known_hosts"), known+"\n")
	pi := sshtest.StartSSHD(tb, sshtest.SSHDOptions{AuthorizedKeys: w.operator.AuthorizedLine("", "alice"), Listen: "127.0.0.1:22", NetNS: w.net.ns(abPi)})
	opKnown := filepath.Join(d, "operator_known_hosts")
	mustWrite(tb, opKnown, known+"\n"+pi.KnownHostsLine("pi")+"\n")
	w.sshConfig = sshtest.OperatorConfig(tb, d, abBastion4, abPort, w.operator.Path, opKnown)
	w.startEcho()

	if err := w.startBastion(); err != nil {
		tb.Fatal(err)
	}
	w.startAgent()
	if !pollUntil(context.Background(), 40*time.Second, 200*time.Millisecond, w.agentRegistered(time.Time{})) {
		tb.Fatalf("the agent never registered pi:22 and sink:%d\nagent:\n%s\nbastion:\n%s", abSinkPort, w.agentOutput(), w.bastionOutput())
	}
	// The legitimate operator's first jumps, before any attack: its source
	// has logged in (LIFELINE_TRUST_FOR), and they are the unloaded baseline.
	for range 5 {
		d, err := w.jump()
		if err != nil {
			tb.Fatalf("unloaded jump: %v\nbastion:\n%s", err, tail(w.bastionOutput(), 3000))
		}
		w.unloaded = append(w.unloaded, d)
	}
	slices.Sort(w.unloaded)
	bRSS, _ := procStatus(w.bastionPID(), "VmRSS")
	aRSS, _ := procStatus(w.agentPID(), "VmRSS")
	tb.Logf("abuse world up: IPv6 attackers %v, unloaded jump p50 %s, bastion RSS %s, agent RSS %s",
		w.v6, ms(median(w.unloaded)), mib(bRSS), mib(aRSS))
	return w
}

// buildNet creates the namespaces, the bridge, the veth pairs and the
// attackers' addresses.
func (w *abuseWorld) buildNet() {
	n := w.net
	for _, r := range []string{abCloud, abAttack, abOp, abPi} {
		n.sh("ip", "netns", "add", n.ns(r))
		n.names = append(n.names, n.ns(r))
		n.in(r, "ip", "link", "set", "lo", "up")
	}
	n.in(abCloud, "ip", "link", "add", "br0", "type", "bridge")
	n.in(abCloud, "ip", "link", "set", "br0", "up")
	for _, a := range []string{abBastion4 + "/24", "198.18.0.1/15", "198.51.100.1/24"} {
		n.in(abCloud, "ip", "addr", "add", a, "dev", "br0")
	}
	n.veth(abAttack, "eth0", "198.18.1.1/15", abCloud, "c-att", "br0")
	n.veth(abOp, "eth0", abOperatorIP+"/24", abCloud, "c-op", "br0")
	n.veth(abPi, "eth0", abPiIP+"/24", abCloud, "c-pi", "br0")
	n.in(abAttack, "ip", "route", "add", "203.0.113.0/24", "via", "198.18.0.1")
	n.in(abOp, "ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.1")

	p := &w.pool
	p.idle = netip.MustParseAddr("198.18.1.1")
	var batch strings.Builder
	add := func(list *[]netip.Addr, count int, format string) {
		for i := 1; i <= count; i++ {
			a := netip.MustParseAddr(fmt.Sprintf(format, i))
			*list = append(*list, a)
			if a.Is4() {
				fmt.Fprintf(&batch, "addr add %s/15 dev eth0\n", a)
			} else {
				fmt.Fprintf(&batch, "addr add %s/32 dev eth0 nodad\n", a)
			}
		}
	}
	add(&p.slowloris, 40, "198.18.2.%d")
	add(&p.logins, 150, "198.18.3.%d")
	add(&p.hostile, 20, "198.18.4.%d")
	// IPv6 when this kernel has it: every attacker in its own /64 (bans
	// count IPv6 sources per /64).
	if _, err := n.try(abCloud, "ip", "-6", "addr", "add", abBastion6+"/32", "dev", "br0", "nodad"); err == nil {
		w.v6 = true
		add(&p.slowloris, 10, "2001:db8:2:%x::1")
		add(&p.logins, 40, "2001:db8:3:%x::1")
	} else {
		w.tb.Logf("no IPv6 in the namespaces (%v): IPv4 attackers only", err)
	}
	file := filepath.Join(w.dir, "attacker-addresses.ip")
	mustWrite(w.tb, file, batch.String())
	n.sh("ip", "-n", n.ns(abAttack), "-batch", file)
}

func (w *abuseWorld) openNS(role string) *os.File {
	f, err := os.Open("/run/netns/" + w.net.ns(role))
	if err != nil {
		w.tb.Fatal(err)
	}
	w.tb.Cleanup(func() { f.Close() })
	return f
}

// startEcho serves sink:7 in the Pi's namespace: it echoes what it reads,
// so a client that never reads fills every window on the way back.
func (w *abuseWorld) startEcho() {
	var ln net.Listener
	err := inNetNS(w.piNS, func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", abSinkPort))
		return err
	})
	if err != nil {
		w.tb.Fatalf("echo server in %s: %v", w.net.ns(abPi), err)
	}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	w.tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.CopyBuffer(c, c, make([]byte, 32<<10))
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
}

// startBastion starts lifeline-bastion in the cloud namespace and waits
// until it listens.
func (w *abuseWorld) startBastion() error {
	p := sshtest.Start(w.tb, w.bastionEnv, "ip", "netns", "exec", w.net.ns(abCloud), bin("lifeline-bastion"))
	w.mu.Lock()
	w.bastion = p
	w.mu.Unlock()
	if !pollUntil(context.Background(), 15*time.Second, 50*time.Millisecond, func() bool { return strings.Contains(p.Output(), "bastion listening") }) {
		return fmt.Errorf("bastion did not start:\n%s", p.Output())
	}
	return nil
}

func (w *abuseWorld) startAgent() time.Time {
	p := sshtest.Start(w.tb, w.agentEnv, "ip", "netns", "exec", w.net.ns(abPi), bin("lifeline-agent"))
	w.mu.Lock()
	w.agent = p
	w.mu.Unlock()
	return time.Now()
}

func (w *abuseWorld) procs() (bastion, agent *sshtest.Process) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bastion, w.agent
}

func (w *abuseWorld) bastionOutput() string { b, _ := w.procs(); return b.Output() }
func (w *abuseWorld) agentOutput() string   { _, a := w.procs(); return a.Output() }

// abPID finds the program exe started as p (directly or below `ip netns
// exec`); 0 when it is not running (a zombie has no exe).
func abPID(p *sshtest.Process, exe string) int {
	if p == nil || p.Cmd.Process == nil || p.Cmd.ProcessState != nil {
		return 0
	}
	for _, pid := range descendants(p.Cmd.Process.Pid) {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && filepath.Base(l) == exe {
			return pid
		}
	}
	return 0
}

func (w *abuseWorld) bastionPID() int { b, _ := w.procs(); return abPID(b, "lifeline-bastion") }
func (w *abuseWorld) agentPID() int   { _, a := w.procs(); return abPID(a, "lifeline-agent") }

// abPeak is a process's peak RSS (VmHWM) in bytes, 0 if unknown.
func abPeak(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	v, _ := procStatus(pid, "VmHWM")
	return v
}

// abResetPeak sets VmHWM back to the current RSS (clear_refs 5), so the
// next reading is the peak of what came after.
func abResetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// jump is the legitimate operator's `ssh -J bastion pi` from its namespace,
// stock OpenSSH at both hops, host keys checked.
func (w *abuseWorld) jump() (time.Duration, error) {
	start := time.Now()
	out, err := sshtest.Run(context.Background(), 45*time.Second, nil, "ip", "netns", "exec", w.net.ns(abOp),
		"ssh", "-F", w.sshConfig, "pi", "echo", "abuse-jump-ok")
	d := time.Since(start)
	if err != nil || !strings.Contains(out, "abuse-jump-ok") {
		return d, fmt.Errorf("ssh -J bastion pi failed after %s: %v: %s", ms(d), err, abLastLines(out, 2))
	}
	return d, nil
}

// abStatus is the part of `status --json` this suite reads.
type abStatus struct {
	Targets []abTarget `json:"targets"`
}

type abTarget struct {
	Target         string    `json:"target"`
	Agent          string    `json:"agent"`
	Fingerprint    string    `json:"fingerprint"`
	Address        string    `json:"address"`
	ConnectedSince time.Time `json:"connected_since"`
}

func (s abStatus) holder(target string) (abTarget, bool) {
	for _, t := range s.Targets {
		if t.Target == target {
			return t, true
		}
	}
	return abTarget{}, false
}

// status is `ssh bastion status --json` run by the legitimate operator.
func (w *abuseWorld) status() (abStatus, error) {
	var st abStatus
	out, err := sshtest.Stdout(context.Background(), 20*time.Second, nil, "ip", "netns", "exec", w.net.ns(abOp),
		"ssh", "-F", w.sshConfig, "bastion", "status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("decode status --json: %w: %s", err, abLastLines(out, 3))
	}
	return st, nil
}

// agentRegistered holds when the legitimate agent, on a connection made
// after since, holds both its names.
func (w *abuseWorld) agentRegistered(since time.Time) func() bool {
	return func() bool {
		st, err := w.status()
		if err != nil {
			return false
		}
		for _, name := range []string{"pi:22", fmt.Sprintf("sink:%d", abSinkPort)} {
			t, ok := st.holder(name)
			if !ok || t.Fingerprint != w.agentFP || !t.ConnectedSince.After(since) {
				return false
			}
		}
		return true
	}
}

// restartAgent stops the agent process and starts it again, and returns
// how long the new one took to register both names (polled with `ssh
// bastion status --json`). The old process's peak RSS goes to res.
func (w *abuseWorld) restartAgent(res *abResult) (time.Duration, error) {
	_, old := w.procs()
	res.agentPeakSeen(abPeak(w.agentPID()))
	old.Stop()
	started := w.startAgent()
	if pollUntil(context.Background(), abReregisterWait, 100*time.Millisecond, w.agentRegistered(started)) {
		return time.Since(started), nil
	}
	st, err := w.status()
	var names []string
	for _, t := range st.Targets {
		names = append(names, t.Target+" by "+t.Agent)
	}
	return 0, fmt.Errorf("the restarted agent did not register within %s (status lists %v, err %v); agent said: %s",
		abReregisterWait, names, err, abLastLines(w.agentOutput(), 2))
}

func (w *abuseWorld) clientConfig(user string, signer ssh.Signer) *ssh.ClientConfig {
	algo := sshalgo.Config()
	algo.Ciphers = sshalgo.BastionCiphers()
	return &ssh.ClientConfig{
		Config:            algo,
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   ssh.FixedHostKey(w.hostKey),
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           10 * time.Second,
	}
}

// dialFrom opens a TCP connection from an attacker's address to the bastion.
func (w *abuseWorld) dialFrom(ctx context.Context, from netip.Addr) (net.Conn, error) {
	to := netip.AddrPortFrom(netip.MustParseAddr(abBastion4), abPort)
	if from.Is6() {
		to = netip.AddrPortFrom(netip.MustParseAddr(abBastion6), abPort)
	}
	var c net.Conn
	err := inNetNS(w.attackNS, func() error {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
		var err error
		c, err = d.DialContext(ctx, "tcp", to.String())
		return err
	})
	return c, err
}

// sshFrom logs in from an attacker's address. The handshake is bounded by
// 20s; the connection is closed when ctx ends.
func (w *abuseWorld) sshFrom(ctx context.Context, from netip.Addr, user string, signer ssh.Signer) (*ssh.Client, error) {
	nc, err := w.dialFrom(ctx, from)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(nc, nc.RemoteAddr().String(), w.clientConfig(user, signer))
	if err != nil {
		stop()
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// writeOperators replaces the operators file and makes the bastion reload.
func (w *abuseWorld) writeOperators(text string) error {
	if err := os.WriteFile(w.operatorsFile, []byte(text), 0o600); err != nil {
		return err
	}
	return w.hup()
}

func (w *abuseWorld) hup() error {
	pid := w.bastionPID()
	if pid == 0 {
		return errors.New("bastion not running")
	}
	return syscall.Kill(pid, syscall.SIGHUP)
}

// abEvent is the part of an audit or access log line this suite reads.
type abEvent struct {
	Time        time.Time `json:"time"`
	Kind        string    `json:"event"`
	Key         string    `json:"key"`
	Fingerprint string    `json:"fingerprint"`
	Target      string    `json:"target"`
	Reason      string    `json:"reason"`
}

// scanLog calls fn for every event at or after since in base and its
// rotated files (base.1, base.2.gz, …) whose line contains one of needles.
// It returns how many files it read.
func (w *abuseWorld) scanLog(base string, since time.Time, needles []string, fn func(abEvent)) int {
	files, _ := filepath.Glob(filepath.Join(w.stateDir(), base+"*"))
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		var r io.Reader = f
		if strings.HasSuffix(name, ".gz") {
			if zr, err := gzip.NewReader(f); err == nil {
				r = zr
			}
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if !slices.ContainsFunc(needles, func(s string) bool { return bytes.Contains(line, []byte(s)) }) {
				continue
			}
			var e abEvent
			if json.Unmarshal(line, &e) != nil || e.Time.Before(since) {
				continue
			}
			fn(e)
		}
		f.Close()
	}
	return len(files)
}

// logBytes is the size of the audit and access logs with rotated files.
func (w *abuseWorld) logBytes() int64 {
	var n int64
	for _, base := range []string{"audit.jsonl", "access.jsonl"} {
		files, _ := filepath.Glob(filepath.Join(w.stateDir(), base+"*"))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}

// legitEvents counts the legitimate operator's logins and jumps to pi:22
// since t in base (audit.jsonl or access.jsonl) and its rotated files.
func (w *abuseWorld) legitEvents(base string, since time.Time) (logins, jumps, files int) {
	files = w.scanLog(base, since, []string{"alice@laptop", w.operatorFP}, func(e abEvent) {
		if e.Key != "alice@laptop" && e.Fingerprint != w.operatorFP {
			return
		}
		switch {
		case e.Kind == "login":
			logins++
		case e.Kind == "jump" && e.Target == "pi:22":
			jumps++
		}
	})
	return logins, jumps, files
}

// abResult is what one attack did to the legitimate users.
type abResult struct {
	name string

	mu          sync.Mutex
	jumps       int
	jumpsOK     int
	latencies   []time.Duration // successful jumps
	jumpErrs    []string
	reregister  time.Duration // 0: not measured
	reregErr    error
	bastionPeak int64
	bastionRSS  int64 // VmRSS when the attack ended
	agentPeak   int64
	recovered   time.Duration
	logGrowth   int64
	attackTook  time.Duration
	took        time.Duration
	counts      sync.Map // string -> *atomic.Int64: what the attackers saw
	dists       map[string]*abDist
	notes       []string
	fails       []string
}

type abDist struct {
	n        int
	sum, max time.Duration
}

func (r *abResult) fail(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fails = append(r.fails, fmt.Sprintf(format, a...))
}

func (r *abResult) note(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, a...))
}

func (r *abResult) agentPeakSeen(v int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.agentPeak = max(r.agentPeak, v)
}

func (r *abResult) addJump(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.jumps++
	if err != nil {
		r.jumpErrs = append(r.jumpErrs, err.Error())
		return
	}
	r.jumpsOK++
	r.latencies = append(r.latencies, d)
}

// figures lists the attackers' counters and timings, sorted by name.
func (r *abResult) figures() string {
	var parts []string
	r.counts.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	r.mu.Lock()
	for k, d := range r.dists {
		parts = append(parts, fmt.Sprintf("%s avg %s max %s (n=%d)", k, abDur(d.sum/time.Duration(d.n)), abDur(d.max), d.n))
	}
	r.mu.Unlock()
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func (r *abResult) summary(unloaded time.Duration) string {
	figs := r.figures()
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%s: legit jumps %d/%d ok", r.name, r.jumpsOK, r.jumps)
	if p := r.p50Locked(); p > 0 {
		fmt.Fprintf(&b, ", p50 %s (unloaded %s, x%.2f)", ms(p), ms(unloaded), float64(p)/float64(unloaded))
	}
	fmt.Fprintf(&b, "; agent re-registered %s; bastion peak %s (VmRSS at end %s), agent peak %s; recovered %s; audit+access logs +%s; attack %s, all %s",
		r.reregLocked(), mib(r.bastionPeak), mib(r.bastionRSS), mib(r.agentPeak), abDurOr(r.recovered, "never"),
		mib(r.logGrowth), abDur(r.attackTook), abDur(r.took))
	fmt.Fprintf(&b, "\n  attackers saw: %s", figs)
	for _, n := range r.notes {
		fmt.Fprintf(&b, "\n  %s", n)
	}
	if len(r.jumpErrs) > 0 {
		fmt.Fprintf(&b, "\n  first failed jump: %s", r.jumpErrs[0])
	}
	return b.String()
}

func (r *abResult) p50Locked() time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	ls := slices.Clone(r.latencies)
	slices.Sort(ls)
	return median(ls)
}

func (r *abResult) reregLocked() string {
	switch {
	case r.reregErr != nil:
		return "never"
	case r.reregister == 0:
		return "not measured"
	}
	return "in " + abDur(r.reregister)
}

// check adds the failures every attack is judged by.
func (r *abResult) check() {
	r.mu.Lock()
	defer r.mu.Unlock()
	var fails []string
	switch {
	case r.jumps == 0:
		fails = append(fails, "no legitimate jump ran during the attack")
	case r.jumpsOK < r.jumps:
		fails = append(fails, fmt.Sprintf("legitimate ssh -J bastion pi: %d of %d failed during the attack; first: %s", r.jumps-r.jumpsOK, r.jumps, r.jumpErrs[0]))
	}
	switch {
	case r.reregErr != nil:
		fails = append(fails, "agent restarted during the attack: "+r.reregErr.Error())
	case r.reregister == 0:
		fails = append(fails, "the agent restart was not measured")
	case r.reregister > abReregisterGoal:
		fails = append(fails, fmt.Sprintf("the restarted agent registered after %s, goal %s", abDur(r.reregister), abReregisterGoal))
	}
	if r.bastionPeak >= abBastionRSSGoal {
		fails = append(fails, fmt.Sprintf("bastion peak RSS %s, goal under %s", mib(r.bastionPeak), mib(abBastionRSSGoal)))
	}
	if r.agentPeak >= abAgentRSSGoal {
		fails = append(fails, fmt.Sprintf("agent peak RSS %s, goal under %s", mib(r.agentPeak), mib(abAgentRSSGoal)))
	}
	r.fails = append(fails, r.fails...)
}

// abRun is one attack in progress: its context (ended at the attack's
// deadline or when it is over) and every goroutine it started.
type abRun struct {
	w   *abuseWorld
	ctx context.Context
	dur time.Duration
	res *abResult
	wg  sync.WaitGroup
}

func (r *abRun) spawn(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// pause waits d; false when the attack ended first.
func (r *abRun) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (r *abRun) add(name string, n int64) {
	v, ok := r.res.counts.Load(name)
	if !ok {
		v, _ = r.res.counts.LoadOrStore(name, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(n)
}

func (r *abRun) observe(name string, d time.Duration) {
	r.res.mu.Lock()
	defer r.res.mu.Unlock()
	if r.res.dists == nil {
		r.res.dists = map[string]*abDist{}
	}
	x := r.res.dists[name]
	if x == nil {
		x = &abDist{}
		r.res.dists[name] = x
	}
	x.n++
	x.sum += d
	x.max = max(x.max, d)
}

// pacer ticks perSec times a second until the attack ends; goroutines
// sharing it share the rate.
func (r *abRun) pacer(perSec int) <-chan time.Time {
	t := time.NewTicker(time.Second / time.Duration(perSec))
	context.AfterFunc(r.ctx, t.Stop)
	return t.C
}

func (r *abRun) jump() bool {
	d, err := r.w.jump()
	r.res.addJump(d, err)
	return err == nil
}

func (r *abRun) reregister() {
	d, err := r.w.restartAgent(r.res)
	r.res.mu.Lock()
	r.res.reregister, r.res.reregErr = d, err
	r.res.mu.Unlock()
}

// probe is the legitimate side during an attack: jumps one after another
// (a second apart) until the attack ends, and once an agent restart, by
// default at 60% of the attack (late, so that the restart, which drops every
// channel through the agent, does not relieve the attack for most jumps).
func (r *abRun) probe(restartAt time.Duration) {
	start := time.Now()
	if restartAt == 0 {
		restartAt = r.dur * 6 / 10
	}
	if !r.pause(min(3*time.Second, r.dur/6)) {
		return
	}
	restarted := false
	for {
		if !restarted && time.Since(start) >= restartAt {
			restarted = true
			r.reregister()
		} else {
			r.jump()
		}
		if !r.pause(time.Second) {
			return
		}
	}
}

// abuseAttack is one attack of the suite.
type abuseAttack struct {
	name  string
	dur   time.Duration // the attack's deadline
	probe bool          // run the legitimate probes meanwhile (else the attack runs its own)
	// restartAt is when the probes restart the agent (0: at 60% of dur).
	restartAt time.Duration
	run       func(r *abRun)
}

func abuseAttacks() []abuseAttack {
	return []abuseAttack{
		{name: "idle64", dur: abIdleFor, probe: true, run: abIdle(64)},
		{name: "idle256", dur: abIdleFor, probe: true, run: abIdle(256)},
		{name: "slowloris", dur: abSlowlorisFor, probe: true, run: abSlowloris},
		{name: "failed-logins", dur: abFailedLoginsFor, probe: true, run: abFailedLogins},
		{name: "channel-flood", dur: abFloodFor, probe: true, run: abChannelFlood},
		{name: "never-read", dur: abFloodFor, probe: true, run: abNeverRead},
		{name: "push-flood", dur: abPushFor, probe: true, run: abPushFlood},
		{name: "report-flood", dur: abPushFor, probe: true, run: abReportFlood},
		{name: "takeover", dur: abTakeoverBound, probe: false, run: abTakeover},
		{name: "revocation", dur: abRevocationBound, probe: true, restartAt: 5 * time.Second, run: abRevocation},
	}
}

// run runs one attack with the legitimate probes, then checks recovery and
// the logs. It never fails the test itself: the result holds what failed.
func (w *abuseWorld) run(a abuseAttack) *abResult {
	res := &abResult{name: a.name}
	start := time.Now()
	bpid, apid := w.bastionPID(), w.agentPID()
	for _, pid := range []int{bpid, apid} {
		if pid == 0 {
			res.fail("a process is not running at the start of the attack (bastion pid %d, agent pid %d)", bpid, apid)
			continue
		}
		if err := abResetPeak(pid); err != nil {
			res.note("cannot reset VmHWM of pid %d (%v): its peak is since it started", pid, err)
		}
	}
	logsBefore := w.logBytes()

	ctx, cancel := context.WithTimeout(context.Background(), a.dur)
	defer cancel()
	r := &abRun{w: w, ctx: ctx, dur: a.dur, res: res}
	over := make(chan struct{})
	go func() {
		defer close(over)
		a.run(r)
		cancel() // the attack is over: so are the probes and its goroutines
		r.wg.Wait()
	}()
	if a.probe {
		r.probe(a.restartAt)
	}
	select {
	case <-over:
	case <-time.After(a.dur + time.Minute):
		res.fail("the attack's goroutines did not stop within a minute of its end")
	}
	res.attackTook = time.Since(start)

	if pid := w.bastionPID(); pid != 0 && pid == bpid {
		res.bastionPeak = abPeak(pid)
		res.bastionRSS, _ = procStatus(pid, "VmRSS")
	} else {
		res.fail("the bastion (pid %d) died during the attack:\n%s", bpid, tail(w.bastionOutput(), 2000))
	}
	res.agentPeakSeen(abPeak(w.agentPID()))
	res.logGrowth = w.logBytes() - logsBefore

	w.recover(res)
	w.checkLogs(res, start)
	res.check()
	res.took = time.Since(start)
	return res
}

// recover waits for the legitimate agent to hold pi:22 and for a jump to
// work; failing that it repairs the world for the next attack.
func (w *abuseWorld) recover(res *abResult) {
	start := time.Now()
	if w.bastionPID() == 0 {
		if err := w.startBastion(); err != nil {
			res.fail("restart the bastion: %v", err)
			return
		}
	}
	var jumpErr error
	registered := pollUntil(context.Background(), 45*time.Second, 250*time.Millisecond, func() bool {
		st, err := w.status()
		if err != nil {
			return false
		}
		t, ok := st.holder("pi:22")
		return ok && t.Fingerprint == w.agentFP
	})
	if registered && pollUntil(context.Background(), 30*time.Second, 2*time.Second, func() bool {
		_, jumpErr = w.jump()
		return jumpErr == nil
	}) {
		res.recovered = time.Since(start)
		return
	}
	res.fail("no recovery after the attack: agent holds pi:22=%v, jump: %v", registered, jumpErr)
	// Repair: a fresh agent.
	if _, err := w.restartAgent(res); err != nil {
		res.fail("repair after the attack: %v", err)
		return
	}
	if _, err := w.jump(); err != nil {
		res.fail("repair after the attack: even with a fresh agent: %v", err)
	}
}

// checkLogs: every successful legitimate jump of the attack has its login
// and jump event, in audit.jsonl or access.jsonl (with rotated files), and
// access.jsonl alone holds them too.
func (w *abuseWorld) checkLogs(res *abResult, since time.Time) {
	res.mu.Lock()
	want := res.jumpsOK
	res.mu.Unlock()
	al, aj, _ := w.legitEvents("audit.jsonl", since)
	cl, cj, cfiles := w.legitEvents("access.jsonl", since)
	res.note("logs since the attack began: audit.jsonl %d logins/%d jumps, access.jsonl %d/%d of alice@laptop; %d legitimate jumps succeeded", al, aj, cl, cj, want)
	if al+cl < want || aj+cj < want {
		res.fail("the logs lost legitimate events: %d logins and %d jumps to pi:22 of alice@laptop since the attack began, want at least %d of each", al+cl, aj+cj, want)
	}
	switch {
	case cfiles == 0:
		res.fail("no access.jsonl next to audit.jsonl (logins, jumps and status calls)")
	case cl < want || cj < want:
		res.fail("access.jsonl holds %d logins and %d jumps of alice@laptop since the attack began, want at least %d of each", cl, cj, want)
	}
}

// abIdle: n TCP connections from one address that never send a byte,
// each re-opened as soon as it is closed, re-opens paced at
// abIdleReopenPerSec.
func abIdle(n int) func(*abRun) {
	return func(r *abRun) {
		slots := make(chan struct{}, n)
		reopen := r.pacer(abIdleReopenPerSec)
		limit := n + abIdleReopenPerSec*int(r.dur/time.Second)
		for i := 0; i < limit; i++ {
			select {
			case slots <- struct{}{}:
			case <-r.ctx.Done():
				return
			}
			if i >= n {
				select {
				case <-reopen:
				case <-r.ctx.Done():
					return
				}
			}
			r.spawn(func() {
				defer func() { <-slots }()
				r.holdIdle(r.w.pool.idle)
			})
		}
		<-r.ctx.Done()
	}
}

// holdIdle keeps one connection open without sending anything until the
// bastion closes it or the attack ends.
func (r *abRun) holdIdle(from netip.Addr) {
	c, err := r.w.dialFrom(r.ctx, from)
	if err != nil {
		if r.ctx.Err() == nil {
			r.add("dial failed", 1)
			r.pause(100 * time.Millisecond)
		}
		return
	}
	r.add("opened", 1)
	born := time.Now()
	stop := context.AfterFunc(r.ctx, func() { c.Close() })
	defer stop()
	io.Copy(io.Discard, c) // the bastion's version line, then wait for its close
	c.Close()
	if r.ctx.Err() == nil {
		r.add("closed by the bastion", 1)
		r.observe("held", time.Since(born))
	}
}

// abSlowloris: abSlowlorisConns connections from the slowloris addresses,
// each sending a client version line and then a key exchange packet one
// byte a second, re-opened when closed.
func abSlowloris(r *abRun) {
	addrs := r.w.pool.slowloris
	reopen := r.pacer(abSlowlorisReopenPerSec)
	var budget atomic.Int64
	budget.Store(int64(abSlowlorisConns + abSlowlorisReopenPerSec*int(r.dur/time.Second)))
	for i := range abSlowlorisConns {
		from := addrs[i%len(addrs)]
		r.spawn(func() {
			for budget.Add(-1) >= 0 {
				select {
				case <-reopen:
				case <-r.ctx.Done():
					return
				}
				r.slowConn(from)
			}
		})
	}
	<-r.ctx.Done()
}

// abSlowBytes is what a slowloris connection dribbles: a plausible version
// line, then the start of a KEXINIT packet claiming 1 KiB.
var abSlowBytes = func() []byte {
	b := []byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n")
	b = append(b, 0, 0, 4, 0, 8, 20) // packet length 1024, padding 8, SSH_MSG_KEXINIT
	for i := range 200 {
		b = append(b, byte(i*37+11))
	}
	return b
}()

func (r *abRun) slowConn(from netip.Addr) {
	c, err := r.w.dialFrom(r.ctx, from)
	if err != nil {
		if r.ctx.Err() == nil {
			r.add("dial failed", 1)
			r.pause(500 * time.Millisecond)
		}
		return
	}
	r.add("opened", 1)
	born := time.Now()
	stop := context.AfterFunc(r.ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	closed := make(chan struct{})
	r.spawn(func() {
		io.Copy(io.Discard, c)
		close(closed)
	})
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; i < len(abSlowBytes); i++ {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(abSlowBytes[i : i+1]); err != nil {
			break
		}
		select {
		case <-tick.C:
			continue
		case <-closed:
		case <-r.ctx.Done():
			return
		}
		break
	}
	if r.ctx.Err() == nil {
		r.add("closed by the bastion", 1)
		r.observe("held", time.Since(born))
	}
}

// abFailedLogins: abFailedLoginsPerMinute public-key logins with keys
// nobody knows, spread over the login addresses and several user names.
func abFailedLogins(r *abRun) {
	addrs := r.w.pool.logins
	users := []string{"root", "admin", "pi", "ubuntu", "operator", "git"}
	tick := r.pacer(abFailedLoginsPerMinute / 60)
	inflight := make(chan struct{}, abFailedLoginsInFlight)
	limit := abFailedLoginsPerMinute * int(r.dur/time.Second) / 60
	for i := 0; i < limit; i++ {
		select {
		case <-tick:
		case <-r.ctx.Done():
			return
		}
		select {
		case inflight <- struct{}{}:
		default:
			r.add("not started: too many in flight", 1)
			continue
		}
		from, user, key := addrs[i%len(addrs)], users[i%len(users)], r.w.junk[i%len(r.w.junk)]
		r.spawn(func() {
			defer func() { <-inflight }()
			start := time.Now()
			c, err := r.w.sshFrom(r.ctx, from, user, key)
			switch {
			case err == nil:
				c.Close()
				r.add("logged in", 1)
				r.res.fail("an unknown key logged in as %s from %s", user, from)
			case r.ctx.Err() != nil:
			case strings.Contains(err.Error(), "unable to authenticate"):
				r.add("refused at authentication", 1)
				r.observe("failed login", time.Since(start))
			default:
				r.add("cut before authentication", 1)
			}
		})
	}
	<-r.ctx.Done()
}

func abDirect(host string, port uint32, from netip.Addr) []byte {
	return ssh.Marshal(struct {
		Host     string
		Port     uint32
		OrigIP   string
		OrigPort uint32
	}{host, port, from.String(), 40000})
}

// abChannelFlood: mallory (permitopen sink:7) opens session channels and
// direct-tcpip channels to sink:7 (permitted) and pi:22 (not permitted) as
// fast as it can over abFloodConns connections, keeping up to abFloodHold
// of what opened.
func abChannelFlood(r *abRun) {
	start := time.Now()
	var attempts atomic.Int64
	held := make(chan ssh.Channel, abFloodHold)
	for _, from := range r.w.pool.hostile[:abFloodConns] {
		r.spawn(func() {
			for conns := 0; conns < abReconnects && r.ctx.Err() == nil && attempts.Load() < abFloodAttempts; conns++ {
				c, err := r.w.sshFrom(r.ctx, from, "mallory", r.w.hostileFor["channel-flood"].Signer)
				if err != nil {
					if r.ctx.Err() == nil {
						r.add("login failed", 1)
						r.pause(time.Second)
					}
					continue
				}
				r.add("connections", 1)
				var wg sync.WaitGroup
				for range abFloodWorkers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r.floodChannels(c, from, start, &attempts, held)
					}()
				}
				wg.Wait()
				c.Close()
				if r.ctx.Err() == nil && attempts.Load() < abFloodAttempts {
					r.add("connections closed by the bastion", 1)
					r.pause(time.Second)
				}
			}
		})
	}
	<-r.ctx.Done()
}

func (r *abRun) floodChannels(c *ssh.Client, from netip.Addr, start time.Time, attempts *atomic.Int64, held chan ssh.Channel) {
	for r.ctx.Err() == nil {
		n := attempts.Add(1)
		if n == abFloodAttempts {
			r.observe("all channel opens done after", time.Since(start))
		}
		if n > abFloodAttempts {
			return
		}
		label, typ, payload := "session", "session", []byte(nil)
		switch n % 3 {
		case 1:
			label, typ, payload = fmt.Sprintf("sink:%d", abSinkPort), "direct-tcpip", abDirect("sink", abSinkPort, from)
		case 2:
			label, typ, payload = "pi:22", "direct-tcpip", abDirect("pi", 22, from)
		}
		ch, reqs, err := c.OpenChannel(typ, payload)
		if err != nil {
			var oce *ssh.OpenChannelError
			if errors.As(err, &oce) {
				r.add(label+" refused: "+oce.Reason.String(), 1)
				continue
			}
			return // the connection is gone
		}
		r.add(label+" opened", 1)
		r.spawn(func() { ssh.DiscardRequests(reqs) })
		select {
		case held <- ch:
		default:
			ch.Close()
		}
	}
}

// abNeverRead: mallory opens direct-tcpip channels to the echo target
// through the real agent and writes into them without ever reading, so the
// echoed bytes fill every window and buffer on the way back.
func abNeverRead(r *abRun) {
	var attempts atomic.Int64
	for _, from := range r.w.pool.hostile[:abNeverReadConns] {
		r.spawn(func() {
			for conns := 0; conns < abReconnects && r.ctx.Err() == nil && attempts.Load() < abNeverReadAttempts; conns++ {
				c, err := r.w.sshFrom(r.ctx, from, "mallory", r.w.hostileFor["never-read"].Signer)
				if err != nil {
					if r.ctx.Err() == nil {
						r.add("login failed", 1)
						r.pause(time.Second)
					}
					continue
				}
				r.add("connections", 1)
				var wg sync.WaitGroup
				for range abNeverReadChannels {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r.neverRead(c, from, &attempts)
					}()
				}
				wg.Wait()
				c.Close()
				r.pause(time.Second)
			}
		})
	}
	<-r.ctx.Done()
}

var abJunkData = bytes.Repeat([]byte("never read: lifeline abuse suite "), 1000)[:32<<10]

func (r *abRun) neverRead(c *ssh.Client, from netip.Addr, attempts *atomic.Int64) {
	for r.ctx.Err() == nil && attempts.Add(1) <= abNeverReadAttempts {
		ch, reqs, err := c.OpenChannel("direct-tcpip", abDirect("sink", abSinkPort, from))
		if err != nil {
			var oce *ssh.OpenChannelError
			if !errors.As(err, &oce) {
				return // the connection is gone
			}
			r.add("refused: "+oce.Reason.String(), 1)
			r.pause(200 * time.Millisecond)
			continue
		}
		r.add("opened", 1)
		r.spawn(func() { ssh.DiscardRequests(reqs) })
		var sent int64
		for sent < abNeverReadBytes {
			n, err := ch.Write(abJunkData) // blocks once the window is used up
			sent += int64(n)
			r.add("bytes written", int64(n))
			if err != nil {
				break
			}
		}
		if sent >= abNeverReadBytes {
			<-r.ctx.Done() // everything went out (it never should): hold the channel
			return
		}
		if r.ctx.Err() == nil {
			r.add("closed by the far end", 1)
		}
		ch.Close()
	}
}

// abPushFlood: global requests from one authenticated operator connection
// as fast as it goes: keepalive@openssh.com and tcpip-forward with
// want-reply, tcpip-forward and an unknown request without. A connection
// the bastion closes is opened again (at most once a second).
func abPushFlood(r *abRun) {
	from := r.w.pool.hostile[15]
	fwd := ssh.Marshal(struct {
		Addr string
		Port uint32
	}{"pi", 22})
	junk := abJunkData[:1024]
	kinds := []struct {
		typ     string
		want    bool
		payload []byte
	}{
		{"keepalive@openssh.com", true, nil},
		{"tcpip-forward", true, fwd},
		{"tcpip-forward", false, fwd},
		{"flood@abuse.example", false, junk},
		{"flood@abuse.example", true, junk},
	}
	var sent atomic.Int64
	for conns := 0; conns < abReconnects && r.ctx.Err() == nil && sent.Load() < abPushRequests; conns++ {
		c, err := r.w.sshFrom(r.ctx, from, "mallory", r.w.hostileFor["push-flood"].Signer)
		if err != nil {
			if r.ctx.Err() == nil {
				r.add("login failed", 1)
				r.pause(time.Second)
			}
			continue
		}
		r.add("connections", 1)
		var wg sync.WaitGroup
		for _, k := range kinds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r.ctx.Err() == nil && sent.Add(1) <= abPushRequests {
					ok, _, err := c.SendRequest(k.typ, k.want, k.payload)
					switch {
					case err != nil:
						return
					case !k.want:
						r.add(k.typ+" sent", 1)
					case ok:
						r.add(k.typ+" accepted", 1)
					default:
						r.add(k.typ+" refused", 1)
					}
				}
			}()
		}
		wg.Wait()
		c.Close()
		if r.ctx.Err() == nil && sent.Load() < abPushRequests {
			r.add("connections closed by the bastion", 1)
			r.pause(time.Second)
		}
	}
	<-r.ctx.Done()
}

// abReportFlood: an agent key (evil:22) registers its name and then sends
// link reports as fast as it goes, alternating ok and failed verdicts (each
// change would be an alert), with and without want-reply.
func abReportFlood(r *abRun) {
	from := r.w.pool.hostile[16]
	var payloads [][]byte
	for _, failed := range []bool{false, true} {
		rep := report.LinkReport{Time: time.Now(), ISP: "Rogue Mobile", IP: from.String(), Server: "speedtest.abuse.example",
			LatencyMS: 20, DownloadBps: 30e6, Bytes: 1 << 20, Verdict: report.VerdictOK, DurationSecs: 1}
		if failed {
			rep.Verdict, rep.Reasons = report.VerdictFailed, []string{"flooded on purpose"}
		}
		p, err := report.Encode(rep)
		if err != nil {
			r.res.fail("encode a link report: %v", err)
			return
		}
		payloads = append(payloads, p)
	}
	fwd := ssh.Marshal(struct {
		Addr string
		Port uint32
	}{"evil", 22})
	var sent atomic.Int64
	for conns := 0; conns < abReconnects && r.ctx.Err() == nil && sent.Load() < abReportRequests; conns++ {
		c, err := r.w.sshFrom(r.ctx, from, "lifeline-agent", r.w.flooder)
		if err != nil {
			if r.ctx.Err() == nil {
				r.add("login failed", 1)
				r.pause(time.Second)
			}
			continue
		}
		r.add("connections", 1)
		if ok, _, err := c.SendRequest("tcpip-forward", true, fwd); err != nil || !ok {
			r.add("evil:22 not registered", 1)
		}
		var wg sync.WaitGroup
		for _, want := range []bool{true, false, false} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; r.ctx.Err() == nil && sent.Add(1) <= abReportRequests; i++ {
					ok, _, err := c.SendRequest(report.RequestType, want, payloads[i%2])
					switch {
					case err != nil:
						return
					case !want:
						r.add("reports sent", 1)
					case ok:
						r.add("reports accepted", 1)
					default:
						r.add("reports refused", 1)
					}
				}
			}()
		}
		wg.Wait()
		c.Close()
		if r.ctx.Err() == nil && sent.Load() < abReportRequests {
			r.add("connections closed by the bastion", 1)
			r.pause(time.Second)
		}
	}
	<-r.ctx.Done()
}

// abRequest is SendRequest with a deadline: the client is closed when the
// reply does not come in time.
func abRequest(c *ssh.Client, typ string, want bool, payload []byte, limit time.Duration) (bool, error) {
	type reply struct {
		ok  bool
		err error
	}
	done := make(chan reply, 1)
	go func() {
		ok, _, err := c.SendRequest(typ, want, payload)
		done <- reply{ok, err}
	}()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case rep := <-done:
		return rep.ok, rep.err
	case <-t.C:
		c.Close()
		<-done
		return false, fmt.Errorf("%s: no reply within %s", typ, limit)
	}
}

// abTakeover: a second agent key also permitted pi:22 registers it, holds
// it a moment and disconnects, abTakeoverCycles times. Each time the name
// must go back to the original agent within abReregisterGoal and a jump
// must work; a takeover event must be in the logs.
func abTakeover(r *abRun) {
	w := r.w
	start := time.Now()
	fwd := ssh.Marshal(struct {
		Addr string
		Port uint32
	}{"pi", 22})
	r.jump()
	for cycle := 1; cycle <= abTakeoverCycles && r.ctx.Err() == nil; cycle++ {
		c, err := w.sshFrom(r.ctx, w.pool.hostile[17], "lifeline-agent", w.taker)
		if err != nil {
			r.res.fail("cycle %d: the second agent key could not log in: %v", cycle, err)
			return
		}
		ok, err := abRequest(c, "tcpip-forward", true, fwd, 10*time.Second)
		switch {
		case err != nil:
			r.res.fail("cycle %d: tcpip-forward pi:22 from the second key: %v", cycle, err)
		case ok:
			r.add("takeover accepted", 1)
			if st, err := w.status(); err == nil {
				if t, held := st.holder("pi:22"); held && t.Fingerprint == w.takerFP {
					r.add("pi:22 held by the second key", 1)
				}
			}
		default:
			r.add("takeover refused", 1)
		}
		r.pause(abTakeoverHold)
		c.Close()
		left := time.Now()
		back := pollUntil(r.ctx, 10*time.Second, 100*time.Millisecond, func() bool {
			st, err := w.status()
			if err != nil {
				return false
			}
			t, held := st.holder("pi:22")
			return held && t.Fingerprint == w.agentFP
		})
		if !back {
			r.res.fail("cycle %d: pi:22 did not go back to the original agent within 10s of the second key leaving", cycle)
			break
		}
		d := time.Since(left)
		r.observe("pi:22 back to the original agent", d)
		if d > abReregisterGoal {
			r.res.fail("cycle %d: pi:22 went back to the original agent only after %s, goal %s", cycle, abDur(d), abReregisterGoal)
		}
		r.jump()
		r.jump()
	}
	n := 0
	for _, base := range []string{"audit.jsonl", "access.jsonl"} {
		w.scanLog(base, start, []string{`"takeover"`}, func(e abEvent) {
			if e.Kind == "takeover" && e.Target == "pi:22" {
				n++
			}
		})
	}
	r.add("takeover events in the logs", int64(n))
	if n == 0 {
		r.res.fail("no takeover event for pi:22 in the audit log")
	}
	r.reregister()
}

// abEchoCheck opens a channel to sink:7 and reads back what it wrote.
func abEchoCheck(c *ssh.Client) error {
	conn, err := c.Dial("tcp", fmt.Sprintf("sink:%d", abSinkPort))
	if err != nil {
		return err
	}
	defer conn.Close()
	t := time.AfterFunc(10*time.Second, func() { conn.Close() }) // channels have no deadlines
	defer t.Stop()
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		return err
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(conn, b); err != nil {
		return fmt.Errorf("read the echo: %w", err)
	}
	if string(b) != "ping\n" {
		return fmt.Errorf("echo returned %q", b)
	}
	return nil
}

// waitClosed waits up to limit for c's connection to end and returns when
// it did (zero time: still open).
func waitClosed(c *ssh.Client, limit time.Duration) time.Time {
	done := make(chan time.Time, 1)
	go func() {
		c.Wait()
		done <- time.Now()
	}()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case at := <-done:
		return at
	case <-t.C:
		return time.Time{}
	}
}

// abRevocation: mallory, connected with a channel open, is removed from the
// operators file and the bastion is sent SIGHUP: the connection must close
// within abRevokeGoal and open nothing more. Then an operator certificate
// valid for abCertValid must be disconnected at its expiry.
func abRevocation(r *abRun) {
	w := r.w
	defer func() {
		// Mallory comes back for the attacks that follow.
		if err := w.writeOperators(w.operatorsText); err != nil {
			r.res.fail("restore the operators file: %v", err)
		}
	}()
	from := w.pool.hostile[18]
	c, err := w.sshFrom(r.ctx, from, "mallory", w.hostile.Signer)
	if err != nil {
		r.res.fail("mallory could not log in before the revocation: %v", err)
		return
	}
	defer c.Close()
	if err := abEchoCheck(c); err != nil {
		r.res.fail("mallory's channel to sink:%d did not work before the revocation: %v", abSinkPort, err)
	}
	kept, err := c.Dial("tcp", fmt.Sprintf("sink:%d", abSinkPort)) // open across the revocation
	if err == nil {
		defer kept.Close()
	}
	var without []string
	for _, l := range strings.Split(w.operatorsText, "\n") {
		if !strings.Contains(l, "mallory@contractor") {
			without = append(without, l)
		}
	}
	revoked := time.Now()
	if err := w.writeOperators(strings.Join(without, "\n")); err != nil {
		r.res.fail("revoke: %v", err)
		return
	}
	if at := waitClosed(c, 15*time.Second); at.IsZero() {
		r.res.fail("mallory's connection was still open 15s after its key was removed and the bastion reloaded")
	} else {
		d := at.Sub(revoked)
		r.observe("revoked connection closed", d)
		if d > abRevokeGoal {
			r.res.fail("mallory's connection was closed %s after the reload, goal %s", abDur(d), abRevokeGoal)
		}
	}
	if ch, err := c.Dial("tcp", fmt.Sprintf("sink:%d", abSinkPort)); err == nil {
		ch.Close()
		r.res.fail("the revoked key opened a new channel on its old connection")
	}
	if c2, err := w.sshFrom(r.ctx, from, "mallory", w.hostile.Signer); err == nil {
		c2.Close()
		r.res.fail("the revoked key logged in again")
	}

	// A certificate that expires a few seconds from now.
	signer, validBefore, err := w.signCert(abCertValid)
	if err != nil {
		r.res.fail("certificate: %v", err)
		return
	}
	cc, err := w.sshFrom(r.ctx, w.pool.hostile[19], "ops", signer)
	if err != nil {
		r.res.fail("certificate login (valid until %s): %v", validBefore.Format(time.TimeOnly), err)
		return
	}
	defer cc.Close()
	if err := abEchoCheck(cc); err != nil {
		r.res.fail("the certificate's channel to sink:%d did not work before expiry: %v", abSinkPort, err)
	}
	at := waitClosed(cc, time.Until(validBefore)+15*time.Second)
	switch {
	case at.IsZero():
		r.res.fail("the certificate's connection was still open 15s after its valid-before %s", validBefore.Format(time.TimeOnly))
	case at.Before(validBefore):
		r.res.fail("the certificate's connection was closed %s before its valid-before", abDur(validBefore.Sub(at)))
	default:
		r.observe("certificate connection closed after valid-before", at.Sub(validBefore))
		if at.Sub(validBefore) > abExpiryGoal {
			r.res.fail("the certificate's connection was closed %s after its valid-before, goal %s", abDur(at.Sub(validBefore)), abExpiryGoal)
		}
	}
	if c3, err := w.sshFrom(r.ctx, w.pool.hostile[19], "ops", signer); err == nil {
		c3.Close()
		r.res.fail("the expired certificate logged in again")
	}
}

// signCert makes a new key and an operator certificate for principal ops,
// signed by the CA of the operators file with ssh-keygen, valid from a
// minute ago until valid from now.
func (w *abuseWorld) signCert(valid time.Duration) (ssh.Signer, time.Time, error) {
	dir, err := os.MkdirTemp(w.dir, "cert")
	if err != nil {
		return nil, time.Time{}, err
	}
	key := sshtest.NewKey(w.tb, dir, "ops_key")
	if err := os.WriteFile(key.Path+".pub", ssh.MarshalAuthorizedKey(key.Signer.PublicKey()), 0o600); err != nil {
		return nil, time.Time{}, err
	}
	out, err := sshtest.Run(context.Background(), 20*time.Second, nil, "ssh-keygen", "-q", "-s", w.caPath, "-I", "ops-cert",
		"-n", "ops", "-V", fmt.Sprintf("-1m:+%ds", int(valid.Seconds())), key.Path+".pub")
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("ssh-keygen -s: %v: %s", err, out)
	}
	b, err := os.ReadFile(key.Path + "-cert.pub")
	if err != nil {
		return nil, time.Time{}, err
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("parse certificate: %w", err)
	}
	cert, ok := pk.(*ssh.Certificate)
	if !ok {
		return nil, time.Time{}, fmt.Errorf("%s is not a certificate", key.Path+"-cert.pub")
	}
	s, err := ssh.NewCertSigner(cert, key.Signer)
	if err != nil {
		return nil, time.Time{}, err
	}
	return s, time.Unix(int64(cert.ValidBefore), 0), nil
}

// abTable is the markdown table of BenchmarkAbuse (and of TestAbuse's log).
func abTable(unloaded time.Duration, rows []*abResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| attack | legit jumps ok/total | p50 jump under attack vs unloaded %s (ratio) | agent re-register | bastion peak RSS | agent peak RSS | checks |\n", ms(unloaded))
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		r.mu.Lock()
		lat := "-"
		if p := r.p50Locked(); p > 0 {
			lat = fmt.Sprintf("%s (%.2f)", ms(p), float64(p)/float64(unloaded))
		}
		checks := "ok"
		if len(r.fails) > 0 {
			checks = fmt.Sprintf("%d failed: %s", len(r.fails), abShort(r.fails[0], 90))
		}
		fmt.Fprintf(&b, "| %s | %d/%d | %s | %s | %s | %s | %s |\n", r.name, r.jumpsOK, r.jumps, lat, r.reregLocked(),
			mib(r.bastionPeak), mib(r.agentPeak), strings.ReplaceAll(checks, "|", "/"))
		r.mu.Unlock()
	}
	return b.String()
}

// TestAbuse runs every attack against the real bastion and agent and asserts
// that the legitimate operator and agent are not hurt: every jump during
// the attack works, a restarted agent registers within 5s, the logs keep the
// legitimate events, the system recovers, and peak RSS stays within the
// product goals (bastion 256 MB, agent 32 MB).
func TestAbuse(t *testing.T) {
	w := startAbuseWorld(t)
	var rows []*abResult
	for _, a := range abuseAttacks() {
		t.Run(a.name, func(t *testing.T) {
			res := w.run(a)
			rows = append(rows, res)
			t.Log(res.summary(median(w.unloaded)))
			for _, f := range res.fails {
				t.Error(f)
			}
		})
	}
	if len(rows) > 0 {
		t.Logf("abuse results:\n%s", abTable(median(w.unloaded), rows))
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func abDur(d time.Duration) string {
	if d < time.Second {
		return ms(d)
	}
	return d.Round(100 * time.Millisecond).String()
}

func abDurOr(d time.Duration, zero string) string {
	if d == 0 {
		return zero
	}
	return "in " + abDur(d)
}

func abShort(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func abLastLines(s string, n int) string {
	ls := sshtest.Lines(s)
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return abShort(strings.Join(ls, " / "), 300)
}
