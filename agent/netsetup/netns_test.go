package netsetup

// Namespace tests: the real nftables, rtnetlink and /proc/sys code, run as
// `lifeline-agent netsetup` would be, inside network namespaces this test
// creates (never the machine's own). Root only.
//
//   operator (llPID-Nop)            pi (llPID-Npi)                          lan (llPID-Nlan)
//   op0 198.51.100.20/24 ==veth== tun0 198.51.100.1/24
//   route 192.168.1.0/24            eth0 192.168.1.204/24     ==veth==  eth0 192.168.1.100/24
//     via 198.51.100.1              default via 192.168.1.100             ("the main router";
//                                     (the main router)                    route 198.51.100.0/24
//                                   up0 100.64.0.2/24 ==veth==+             via 192.168.1.204)
//                                                             |
//                                              carrier (llPID-Nca) c0 100.64.0.1/24
//                                              (the backup uplink's gateway)
//
// The bastion is 203.0.113.10 (it needs no namespace: only the route to it
// is looked at, with `ip route get`). Apply runs in the pi namespace by
// re-executing this test binary under `ip netns exec` (TestHelperProcess).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const helperEnv = "LL_NETSETUP_HELPER"

// TestHelperProcess is not a test: it is the body of `lifeline-agent
// netsetup ARGS` when the test binary is re-executed inside a namespace.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for the namespace tests")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(Main(context.Background(), args, os.Stdout, os.Stderr))
}

func requireNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables): run as root to exercise netsetup for real")
	}
	for _, prog := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("needs %s (iproute2 / nftables) on PATH: %v", prog, err)
		}
	}
}

var topoSeq atomic.Int32

type topo struct {
	pi, lan, op, ca string
	sysctlDir       string
	stateDir        string
}

const (
	piLAN      = "192.168.1.204"
	lanDevice  = "192.168.1.100"
	operatorIP = "198.51.100.20"
	piTunnel   = "198.51.100.1"
	uplinkGW   = "100.64.0.1"
	bastionIP  = "203.0.113.10"
)

// newTopo builds the namespaces of the diagram; they are deleted in
// t.Cleanup, also when the test fails.
func newTopo(t testing.TB) *topo {
	t.Helper()
	requireNetns(t)
	n := topoSeq.Add(1)
	base := fmt.Sprintf("ll%d-%d", os.Getpid(), n)
	tp := &topo{pi: base + "pi", lan: base + "lan", op: base + "op", ca: base + "ca",
		sysctlDir: t.TempDir(), stateDir: filepath.Join(t.TempDir(), "state")}
	for _, ns := range []string{tp.pi, tp.lan, tp.op, tp.ca} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("delete namespace %s: %v: %s", ns, err, out)
			}
		})
	}
	cmds := [][]string{
		{"-n", tp.pi, "link", "add", "tun0", "type", "veth", "peer", "name", "op0", "netns", tp.op},
		{"-n", tp.pi, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", tp.lan},
		{"-n", tp.pi, "link", "add", "up0", "type", "veth", "peer", "name", "c0", "netns", tp.ca},
		{"-n", tp.pi, "addr", "add", piTunnel + "/24", "dev", "tun0"},
		{"-n", tp.pi, "addr", "add", piLAN + "/24", "dev", "eth0"},
		{"-n", tp.pi, "addr", "add", "100.64.0.2/24", "dev", "up0"},
		{"-n", tp.op, "addr", "add", operatorIP + "/24", "dev", "op0"},
		{"-n", tp.lan, "addr", "add", lanDevice + "/24", "dev", "eth0"},
		{"-n", tp.ca, "addr", "add", uplinkGW + "/24", "dev", "c0"},
	}
	for _, ns := range []string{tp.pi, tp.lan, tp.op, tp.ca} {
		cmds = append(cmds, []string{"-n", ns, "link", "set", "lo", "up"})
	}
	cmds = append(cmds,
		[]string{"-n", tp.pi, "link", "set", "tun0", "up"},
		[]string{"-n", tp.pi, "link", "set", "eth0", "up"},
		[]string{"-n", tp.pi, "link", "set", "up0", "up"},
		[]string{"-n", tp.op, "link", "set", "op0", "up"},
		[]string{"-n", tp.lan, "link", "set", "eth0", "up"},
		[]string{"-n", tp.ca, "link", "set", "c0", "up"},
		[]string{"-n", tp.pi, "route", "add", "default", "via", lanDevice},
		[]string{"-n", tp.op, "route", "add", "192.168.1.0/24", "via", piTunnel},
		[]string{"-n", tp.lan, "route", "add", "198.51.100.0/24", "via", piLAN},
	)
	for _, c := range cmds {
		sh(t, "ip", c...)
	}
	return tp
}

func sh(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func runIn(t testing.TB, ns string, args ...string) string {
	t.Helper()
	return sh(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// env is a netsetup configuration for the helper process.
type env map[string]string

func (tp *topo) env() env {
	return env{
		"LIFELINE_LAN_INTERFACE":    "eth0",
		"LIFELINE_TUNNEL_INTERFACE": "tun0",
		"LIFELINE_UPLINK_GATEWAY":   uplinkGW,
		"LIFELINE_BASTION":          bastionIP + ":22",
		"LIFELINE_SYSCTL_DIR":       tp.sysctlDir,
		"LIFELINE_STATE_DIR":        tp.stateDir,
	}
}

func (e env) with(kv ...string) env {
	out := env{}
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

type result struct {
	code           int
	stdout, stderr string
}

// netsetup runs `netsetup ARGS` in the pi namespace with configuration e.
func (tp *topo) netsetup(t testing.TB, e env, args ...string) result {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", tp.pi, exe, "-test.run=^TestHelperProcess$", "--"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LIFELINE_") && !strings.HasPrefix(kv, helperEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, helperEnv+"=1")
	for k, v := range e {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("netsetup %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func (tp *topo) mustNetsetup(t testing.TB, e env, args ...string) result {
	t.Helper()
	r := tp.netsetup(t, e, args...)
	if r.code != 0 {
		t.Fatalf("netsetup %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

func (tp *topo) ruleset(t testing.TB) string {
	t.Helper()
	return runIn(t, tp.pi, "nft", "list", "ruleset")
}

func (tp *topo) ipForward(t testing.TB) string {
	t.Helper()
	return strings.TrimSpace(runIn(t, tp.pi, "cat", "/proc/sys/net/ipv4/ip_forward"))
}

// inNetns runs f on an OS thread moved into namespace ns. The thread is
// thrown away afterwards (the goroutine exits still locked), so no other
// goroutine ever runs in ns. Sockets f creates stay in ns for their life.
func inNetns(t testing.TB, ns string, f func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the runtime ends this thread when the
		// goroutine returns.
		fd, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// listener accepts TCP connections in a namespace and records the peer
// address of each.
type listener struct {
	ln    net.Listener
	peers chan string
	wg    sync.WaitGroup
}

func listenIn(t testing.TB, ns, addr string) *listener {
	t.Helper()
	l := &listener{peers: make(chan string, 16)}
	if err := inNetns(t, ns, func() error {
		var err error
		l.ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := l.ln.Accept()
			if err != nil {
				return
			}
			select {
			case l.peers <- c.RemoteAddr().(*net.TCPAddr).IP.String():
			default:
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.ln.Close(); l.wg.Wait() })
	return l
}

func (l *listener) port() int { return l.ln.Addr().(*net.TCPAddr).Port }

// dialFrom connects from namespace ns with a bounded timeout.
func dialFrom(t testing.TB, ns, addr string, timeout time.Duration) error {
	t.Helper()
	return inNetns(t, ns, func() error {
		c, err := net.DialTimeout("tcp4", addr, timeout)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// synSniffer is a raw IPPROTO_TCP socket in a namespace: it sees a copy of
// every TCP segment arriving there, as it came off the wire.
type synSniffer struct{ fd int }

func sniffIn(t testing.TB, ns string) *synSniffer {
	t.Helper()
	s := &synSniffer{fd: -1}
	if err := inNetns(t, ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		s.fd = fd
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

// synMSS returns the MSS option of the first SYN (without ACK) to dstPort
// that arrives before the deadline.
func (s *synSniffer) synMSS(dstPort int, within time.Duration) (int, error) {
	buf := make([]byte, 65536)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		n, err := unix.Read(s.fd, buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, err
		}
		if mss, ok := parseSYN(buf[:n], dstPort); ok {
			return mss, nil
		}
	}
	return 0, fmt.Errorf("no SYN to port %d seen within %s", dstPort, within)
}

// parseSYN reads an IPv4 packet; for a TCP SYN to dstPort it returns the
// MSS option (0 when absent).
func parseSYN(p []byte, dstPort int) (int, bool) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return 0, false
	}
	ihl := int(p[0]&0x0f) * 4
	if len(p) < ihl+20 {
		return 0, false
	}
	tcp := p[ihl:]
	if int(binary.BigEndian.Uint16(tcp[2:4])) != dstPort || tcp[13]&0x12 != 0x02 {
		return 0, false
	}
	off := int(tcp[12]>>4) * 4
	if off < 20 || len(tcp) < off {
		return 0, false
	}
	opts := tcp[20:off]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return 0, true
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return 0, true
		}
		if opts[i] == 2 && opts[i+1] == 4 {
			return int(binary.BigEndian.Uint16(opts[i+2 : i+4])), true
		}
		i += int(opts[i+1])
	}
	return 0, true
}

func (l *listener) nextPeer(t testing.TB) string {
	t.Helper()
	select {
	case p := <-l.peers:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("listener saw no connection within 5s")
		return ""
	}
}

const otherOwner = `table inet other {
	chain forward_other {
		type filter hook forward priority 10; policy accept;
		ip saddr 10.9.9.9 drop
	}
}
`

func TestNetnsApplyForwardsClampsAndRemovesExactly(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	e := tp.env()

	// Another owner's table and route that must survive apply and remove.
	cmd := exec.Command("ip", "netns", "exec", tp.pi, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(otherOwner)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
	sh(t, "ip", "-n", tp.pi, "route", "add", "10.99.0.0/16", "via", lanDevice)
	before := tp.ruleset(t)
	routesBefore := sh(t, "ip", "-n", tp.pi, "route", "show")
	if got := tp.ipForward(t); got != "0" {
		t.Fatalf("fresh namespace ip_forward = %s, want 0", got)
	}

	lan := listenIn(t, tp.lan, lanDevice+":0")
	lanAddr := net.JoinHostPort(lanDevice, fmt.Sprint(lan.port()))
	if err := dialFrom(t, tp.op, lanAddr, time.Second); err == nil {
		t.Fatal("LAN device reachable from the tunnel side before apply")
	}
	if r := tp.netsetup(t, e, "status"); r.code != 1 {
		t.Fatalf("status before apply: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}

	tp.mustNetsetup(t, e, "apply")
	applied := tp.ruleset(t)
	t.Logf("ruleset after apply:\n%s", applied)
	r := tp.netsetup(t, e, "status")
	if r.code != 0 {
		t.Fatalf("status after apply: exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("status after apply:\n%s", r.stdout)
	if got := tp.ipForward(t); got != "1" {
		t.Errorf("ip_forward after apply = %s, want 1", got)
	}
	if b, err := os.ReadFile(filepath.Join(tp.sysctlDir, SysctlFile)); err != nil || !strings.Contains(string(b), "net.ipv4.ip_forward = 1") {
		t.Errorf("persistent sysctl file: %q, %v", b, err)
	}

	// Tunnel -> LAN: reachable, NATed to the Pi's LAN address, MSS clamped.
	sniff := sniffIn(t, tp.lan)
	if err := dialFrom(t, tp.op, lanAddr, 3*time.Second); err != nil {
		t.Fatalf("LAN device not reachable from the tunnel side after apply: %v", err)
	}
	if got := lan.nextPeer(t); got != piLAN {
		t.Errorf("LAN device saw source %s, want the Pi's LAN address %s (masquerade)", got, piLAN)
	}
	mss, err := sniff.synMSS(lan.port(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if mss != 1452 {
		t.Errorf("forwarded SYN carries MSS %d, want 1452", mss)
	}

	// LAN -> tunnel: new connections dropped.
	op := listenIn(t, tp.op, operatorIP+":0")
	// Silently dropped (a timeout, not a refusal or an ICMP error), while
	// the replies of the tunnel->LAN connection above came back this way.
	err = dialFrom(t, tp.lan, net.JoinHostPort(operatorIP, fmt.Sprint(op.port())), time.Second)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("new connection LAN -> tunnel: %v, want a timeout (dropped)", err)
	}

	// The bastion leaves by the backup uplink.
	if got := sh(t, "ip", "-n", tp.pi, "route", "get", bastionIP); !strings.Contains(got, "via "+uplinkGW+" dev up0") {
		t.Errorf("ip route get %s = %q, want via %s dev up0", bastionIP, got, uplinkGW)
	}

	// Apply again: nothing changes.
	tp.mustNetsetup(t, e, "apply")
	if again := tp.ruleset(t); again != applied {
		t.Errorf("second apply changed the ruleset:\nfirst:\n%s\nsecond:\n%s", applied, again)
	}
	if got := sh(t, "ip", "-n", tp.pi, "route", "show", "proto", fmt.Sprint(RouteProtocol)); strings.Count(got, bastionIP) != 1 {
		t.Errorf("lifeline routes after two applies:\n%s", got)
	}

	// Remove: exactly the prior state.
	tp.mustNetsetup(t, e, "remove")
	if after := tp.ruleset(t); after != before {
		t.Errorf("ruleset after remove differs from before apply:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if after := sh(t, "ip", "-n", tp.pi, "route", "show"); after != routesBefore {
		t.Errorf("routes after remove:\n%s\nwant:\n%s", after, routesBefore)
	}
	if got := tp.ipForward(t); got != "0" {
		t.Errorf("ip_forward after remove = %s, want 0 (the value before apply)", got)
	}
	for _, p := range []string{filepath.Join(tp.sysctlDir, SysctlFile), filepath.Join(tp.stateDir, StateFile)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after remove (%v)", p, err)
		}
	}
	if r := tp.netsetup(t, e, "status"); r.code != 1 {
		t.Errorf("status after remove: exit %d, want 1\n%s", r.code, r.stdout)
	}
	tp.mustNetsetup(t, e, "remove") // removing twice is fine
}

func TestNetnsChangedConfigAppliesNewStateExactly(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	a := tp.env()
	b := tp.env().with(
		"LIFELINE_MSS", "pmtu",
		"LIFELINE_TUNNEL_INTERFACE", "tun+",
		"LIFELINE_BASTION", "203.0.113.11:22, 203.0.113.12:443",
	)
	routes := func() string {
		return sh(t, "ip", "-n", tp.pi, "route", "show", "proto", fmt.Sprint(RouteProtocol))
	}

	tp.mustNetsetup(t, a, "apply")
	tp.mustNetsetup(t, b, "apply")
	rulesAB, routesAB := tp.ruleset(t), routes()
	for _, want := range []string{"tcp option maxseg size set rt mtu", `iifname "tun*" oifname "eth0" masquerade`} {
		if !strings.Contains(rulesAB, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rulesAB)
		}
	}
	if r := tp.netsetup(t, a, "status"); r.code != 1 || !strings.Contains(r.stdout, "differs") {
		t.Errorf("status of the old configuration after applying the new one: exit %d, want 1\n%s", r.code, r.stdout)
	}
	if r := tp.netsetup(t, b, "status"); r.code != 0 {
		t.Errorf("status of the new configuration: exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(routesAB, bastionIP+" ") || !strings.Contains(routesAB, "203.0.113.11 via "+uplinkGW) || !strings.Contains(routesAB, "203.0.113.12 via "+uplinkGW) {
		t.Errorf("routes after the changed apply:\n%s", routesAB)
	}
	if got := tp.ipForward(t); got != "1" {
		t.Errorf("ip_forward = %s, want 1", got)
	}

	// The same configuration applied from scratch gives the same state.
	tp.mustNetsetup(t, b, "remove")
	if got := tp.ipForward(t); got != "0" {
		t.Errorf("ip_forward after remove = %s, want 0: the value before the first apply, not the one before the second", got)
	}
	tp.mustNetsetup(t, b, "apply")
	if got := tp.ruleset(t); got != rulesAB {
		t.Errorf("ruleset of A then B differs from B alone:\nA then B:\n%s\nB alone:\n%s", rulesAB, got)
	}
	if got := routes(); got != routesAB {
		t.Errorf("routes of A then B:\n%s\nB alone:\n%s", routesAB, got)
	}

	// pmtu: a forwarded SYN is clamped to the LAN path's MTU (1400 - 40).
	sh(t, "ip", "-n", tp.pi, "link", "set", "eth0", "mtu", "1400")
	sh(t, "ip", "-n", tp.lan, "link", "set", "eth0", "mtu", "1400")
	lan := listenIn(t, tp.lan, lanDevice+":0")
	sniff := sniffIn(t, tp.lan)
	if err := dialFrom(t, tp.op, net.JoinHostPort(lanDevice, fmt.Sprint(lan.port())), 3*time.Second); err != nil {
		t.Fatalf("dial the LAN device through tun+ rules: %v", err)
	}
	mss, err := sniff.synMSS(lan.port(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if mss != 1360 {
		t.Errorf("forwarded SYN carries MSS %d, want 1360 (path MTU 1400)", mss)
	}
}

func TestNetnsApplyRollsBackOnFailure(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	good := tp.env()
	unreachableGW := tp.env().with("LIFELINE_UPLINK_GATEWAY", "10.55.0.1", "LIFELINE_MSS", "1400")
	files := []string{filepath.Join(tp.sysctlDir, SysctlFile), filepath.Join(tp.stateDir, StateFile)}
	before := tp.ruleset(t)

	// First apply fails at the last step: nothing stays behind.
	r := tp.netsetup(t, unreachableGW, "apply")
	t.Logf("failed apply says:\n%s", r.stderr)
	if r.code != 1 || !strings.Contains(r.stderr, "set uplink routes") || !strings.Contains(r.stderr, "10.55.0.1") || !strings.Contains(r.stderr, "rolled back") {
		t.Fatalf("apply with an unreachable gateway: exit %d, want 1 naming the step and the gateway\n%s", r.code, r.stderr)
	}
	if got := tp.ruleset(t); got != before {
		t.Errorf("ruleset after the failed apply:\n%s\nwant:\n%s", got, before)
	}
	if got := tp.ipForward(t); got != "0" {
		t.Errorf("ip_forward after the failed apply = %s, want 0", got)
	}
	for _, p := range files {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind by the failed apply (%v)", p, err)
		}
	}

	// A failing re-apply leaves the previous configuration in place.
	tp.mustNetsetup(t, good, "apply")
	applied := tp.ruleset(t)
	r = tp.netsetup(t, unreachableGW, "apply")
	if r.code != 1 {
		t.Fatalf("re-apply with an unreachable gateway: exit %d, want 1", r.code)
	}
	if got := tp.ruleset(t); got != applied {
		t.Errorf("ruleset after the failed re-apply:\n%s\nwant the previous one:\n%s", got, applied)
	}
	if r := tp.netsetup(t, good, "status"); r.code != 0 {
		t.Errorf("status of the previous configuration after the failed re-apply: exit %d\n%s", r.code, r.stdout)
	}
	tp.mustNetsetup(t, good, "remove")
	if got := tp.ipForward(t); got != "0" {
		t.Errorf("ip_forward after remove = %s, want 0", got)
	}

	// Another owner's route to the bastion: refused, theirs untouched.
	sh(t, "ip", "-n", tp.pi, "route", "add", bastionIP+"/32", "via", lanDevice)
	r = tp.netsetup(t, good, "apply")
	if r.code != 1 || !strings.Contains(r.stderr, "not lifeline's") {
		t.Errorf("apply over another owner's route: exit %d, want 1 saying whose route it is\n%s", r.code, r.stderr)
	}
	if got := sh(t, "ip", "-n", tp.pi, "route", "show", bastionIP); !strings.Contains(got, "via "+lanDevice) {
		t.Errorf("another owner's route changed: %q", got)
	}
	if got := tp.ruleset(t); got != before {
		t.Errorf("ruleset after the refused apply:\n%s", got)
	}
}

func TestNetnsStatusFindsWhatDefeatsIt(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	e := tp.env()

	r := tp.netsetup(t, e.with("LIFELINE_TUNNEL_INTERFACE", "wg0"), "status")
	if r.code != 1 {
		t.Errorf("status before apply: exit %d, want 1", r.code)
	}
	for _, want := range []string{
		"differs  firewall table ip lifeline missing",
		"differs  route 203.0.113.10/32 via 100.64.0.1 missing",
		"warning  traffic to bastion 203.0.113.10 goes via 192.168.1.100 dev eth0, not via the uplink gateway 100.64.0.1",
		"warning  tunnel interface wg0 does not exist",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status before apply lacks %q:\n%s", want, r.stdout)
		}
	}

	tp.mustNetsetup(t, e, "apply")
	// An iptables-nft style FORWARD chain with policy drop elsewhere.
	cmd := exec.Command("ip", "netns", "exec", tp.pi, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader("table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority 0; policy drop;\n\t}\n}\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
	r = tp.netsetup(t, e, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "warning  chain ip filter FORWARD has a forward hook with policy drop") {
		t.Errorf("status with a FORWARD drop policy elsewhere: exit %d, want 0 with a warning\n%s", r.code, r.stdout)
	}

	tampers := []struct {
		name, script, want string
	}{
		{
			name:   "rule changed under the same comment",
			script: "flush chain ip lifeline postrouting\nadd rule ip lifeline postrouting iifname \"tun0\" oifname \"up0\" masquerade comment \"lifeline: masquerade tunnel traffic leaving by the LAN\"\n",
			want:   "differs  firewall table ip lifeline: chain postrouting: rule 1",
		},
		{
			name:   "rule added",
			script: "add rule ip lifeline forward counter\n",
			want:   "differs  firewall table ip lifeline: chain forward: extra rule",
		},
		{
			name:   "chain deleted",
			script: "delete chain ip lifeline postrouting\n",
			want:   "differs  firewall table ip lifeline: chain postrouting missing",
		},
		{
			name:   "policy changed",
			script: "add chain ip lifeline forward { type filter hook forward priority 0; policy drop; }\n",
			want:   "differs  firewall table ip lifeline: chain forward: wrong policy",
		},
	}
	for _, tc := range tampers {
		tp.mustNetsetup(t, e, "apply")
		cmd := exec.Command("ip", "netns", "exec", tp.pi, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(tc.script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: nft -f: %v: %s", tc.name, err, out)
		}
		r := tp.netsetup(t, e, "status")
		if r.code != 1 || !strings.Contains(r.stdout, tc.want) {
			t.Errorf("%s: status exit %d, want 1 with %q\n%s", tc.name, r.code, tc.want, r.stdout)
		}
	}
	tp.mustNetsetup(t, e, "apply")
	if r := tp.netsetup(t, e, "status"); r.code != 0 {
		t.Errorf("status after apply repaired the tampering: exit %d\n%s", r.code, r.stdout)
	}
}

// echoIn serves TCP echo in a namespace until the test ends.
func echoIn(t testing.TB, ns, addr string) net.Addr {
	t.Helper()
	var ln net.Listener
	if err := inNetns(t, ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr()
}

func echoOnce(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// A changed configuration replaces the table in one transaction: a
// connection forwarded (and NATed) through the old rules keeps working.
func TestNetnsReapplyKeepsForwardedConnections(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	e := tp.env()
	tp.mustNetsetup(t, e, "apply")
	addr := echoIn(t, tp.lan, lanDevice+":0")
	var c net.Conn
	if err := inNetns(t, tp.op, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr.String(), 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial the LAN device: %v", err)
	}
	defer c.Close()
	if err := echoOnce(c, "before"); err != nil {
		t.Fatal(err)
	}
	for i, mss := range []string{"1400", "pmtu", "1452"} {
		tp.mustNetsetup(t, e.with("LIFELINE_MSS", mss), "apply")
		if err := echoOnce(c, fmt.Sprintf("after apply %d (MSS %s)", i+1, mss)); err != nil {
			t.Fatalf("forwarded connection broken by re-apply with MSS %s: %v", mss, err)
		}
	}
}

// BenchmarkNetnsApply measures one `netsetup apply` with a changed
// configuration (process start, resolve, sysctl, one nftables batch,
// route sync) and one `netsetup status`, each run as its own process in
// the pi namespace, as the systemd oneshot runs it.
func BenchmarkNetnsApply(b *testing.B) {
	tp := newTopo(b)
	e := tp.env()
	mss := []string{"1452", "1400"}
	var applyTotal, statusTotal time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		tp.mustNetsetup(b, e.with("LIFELINE_MSS", mss[i%2]), "apply")
		applyTotal += time.Since(start)
		start = time.Now()
		if r := tp.netsetup(b, e.with("LIFELINE_MSS", mss[i%2]), "status"); r.code != 0 {
			b.Fatalf("status after apply: exit %d\n%s", r.code, r.stdout)
		}
		statusTotal += time.Since(start)
	}
	b.ReportMetric(float64(applyTotal.Microseconds())/1000/float64(b.N), "ms/apply")
	b.ReportMetric(float64(statusTotal.Microseconds())/1000/float64(b.N), "ms/status")
	tp.mustNetsetup(b, e, "remove")
}

// The main internet watch's targets in the namespaces of the diagram, with
// the Pi's default route moved to the backup uplink (as on a site where the
// Pi's own traffic leaves by the hotspot): 192.168.1.100 is the main
// router, mainTarget an address it holds ("the internet beyond it").
const mainTarget = "198.18.0.80"

func TestNetnsMainRoutes(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	sh(t, "ip", "-n", tp.pi, "route", "replace", "default", "via", uplinkGW)
	sh(t, "ip", "-n", tp.lan, "addr", "add", mainTarget+"/32", "dev", "lo")
	e := tp.env().with("LIFELINE_MAIN_GATEWAY", lanDevice, "LIFELINE_MAIN_TARGETS", "tcp://"+mainTarget+":443, dns://"+mainTarget)
	routes := func() string {
		return sh(t, "ip", "-n", tp.pi, "route", "show", "proto", fmt.Sprint(RouteProtocol))
	}
	get := func() string {
		out, _ := exec.Command("ip", "-n", tp.pi, "route", "get", mainTarget).CombinedOutput()
		return string(out)
	}
	if got := get(); !strings.Contains(got, "via "+uplinkGW+" dev up0") {
		t.Fatalf("before apply the target goes %q: the test's premise (default via the backup uplink) is wrong", got)
	}

	tp.mustNetsetup(t, e, "apply")
	applied := routes()
	t.Logf("routes after apply:\n%s", applied)
	if got := get(); !strings.Contains(got, "via "+lanDevice+" dev eth0") {
		t.Errorf("ip route get %s = %q, want via %s dev eth0", mainTarget, got, lanDevice)
	}
	if strings.Count(applied, mainTarget) != 2 || !strings.Contains(applied, "unreachable "+mainTarget) || !strings.Contains(applied, "metric 65535") {
		t.Errorf("want one route via the main gateway and one unreachable fallback for %s:\n%s", mainTarget, applied)
	}
	// A probe from the Pi reaches the far side of the main router from the
	// Pi's LAN address: it left by the LAN.
	far := listenIn(t, tp.lan, mainTarget+":0")
	if err := dialFrom(t, tp.pi, net.JoinHostPort(mainTarget, fmt.Sprint(far.port())), 3*time.Second); err != nil {
		t.Fatalf("probe to %s: %v", mainTarget, err)
	}
	if got := far.nextPeer(t); got != piLAN {
		t.Errorf("target saw source %s, want the Pi's LAN address %s", got, piLAN)
	}
	if r := tp.netsetup(t, e, "status"); r.code != 0 || !strings.Contains(r.stdout, "ok       route "+mainTarget+"/32 via "+lanDevice+" dev eth0") {
		t.Errorf("status after apply: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Idempotent.
	tp.mustNetsetup(t, e, "apply")
	if got := routes(); got != applied {
		t.Errorf("second apply changed the routes:\n%s\nwant:\n%s", got, applied)
	}

	// The main router gone (its cable pulled): the route still points at
	// it, so the probes fail, and a fresh apply works all the same.
	sh(t, "ip", "-n", tp.lan, "link", "set", "eth0", "down")
	if got := get(); !strings.Contains(got, "via "+lanDevice+" dev eth0") {
		t.Errorf("with the main router gone, ip route get %s = %q, want still via %s dev eth0", mainTarget, got, lanDevice)
	}
	tp.mustNetsetup(t, e, "remove")
	tp.mustNetsetup(t, e, "apply")
	if got := strings.ReplaceAll(routes(), " linkdown", ""); got != applied {
		t.Errorf("apply with the main router gone:\n%s\nwant:\n%s", got, applied)
	}
	sh(t, "ip", "-n", tp.lan, "link", "set", "eth0", "up")

	// The LAN interface taken down: the kernel flushes the route via the
	// main gateway, and the fallback keeps the target off the backup
	// uplink (no route to host, and no SYN leaves by up0).
	sh(t, "ip", "-n", tp.pi, "link", "set", "eth0", "down")
	if got := get(); strings.Contains(got, "up0") || !strings.Contains(strings.ToLower(got), "no route to host") {
		t.Errorf("with the LAN interface down, ip route get %s = %q, want no route to host", mainTarget, got)
	}
	if r := tp.netsetup(t, e, "status"); r.code != 1 || !strings.Contains(r.stdout, "route "+mainTarget+"/32 via "+lanDevice+" dev eth0 missing") {
		t.Errorf("status with the LAN down: exit %d, want 1 naming the missing route\n%s", r.code, r.stdout)
	}
	if r := tp.netsetup(t, e, "apply"); r.code != 1 || !strings.Contains(r.stderr, "LIFELINE_MAIN_GATEWAY") || !strings.Contains(r.stderr, "nothing changed") {
		t.Errorf("apply with the LAN down: exit %d, want 1 naming LIFELINE_MAIN_GATEWAY\n%s", r.code, r.stderr)
	}
	sh(t, "ip", "-n", tp.pi, "link", "set", "eth0", "up")
	tp.mustNetsetup(t, e, "apply")
	if got := routes(); got != applied {
		t.Errorf("apply after the LAN came back:\n%s\nwant:\n%s", got, applied)
	}

	// Changed targets: exactly the new ones; remove: none.
	tp.mustNetsetup(t, e.with("LIFELINE_MAIN_TARGETS", "dns://198.18.0.53"), "apply")
	if got := routes(); strings.Contains(got, mainTarget) || strings.Count(got, "198.18.0.53") != 2 || !strings.Contains(got, bastionIP+" via "+uplinkGW) {
		t.Errorf("routes after changing the targets:\n%s", got)
	}
	tp.mustNetsetup(t, e, "remove")
	if got := routes(); got != "" {
		t.Errorf("routes after remove:\n%s", got)
	}

	// A gateway that is not on the LAN, a target that is the bastion:
	// refused, nothing applied.
	if r := tp.netsetup(t, e.with("LIFELINE_MAIN_GATEWAY", uplinkGW), "apply"); r.code != 1 || !strings.Contains(r.stderr, "not on a subnet of the LAN interface eth0") {
		t.Errorf("apply with the uplink's gateway as main gateway: exit %d\n%s", r.code, r.stderr)
	}
	if r := tp.netsetup(t, e.with("LIFELINE_MAIN_TARGETS", "tcp://"+bastionIP+":443"), "apply"); r.code != 2 || !strings.Contains(r.stderr, "is the bastion") {
		t.Errorf("apply with the bastion as a target: exit %d\n%s", r.code, r.stderr)
	}
	if got := routes(); got != "" {
		t.Errorf("routes after the refused applies:\n%s", got)
	}
}
