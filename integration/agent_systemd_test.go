//go:build integration

package integration

// The agent's package on a booted Debian, its bastion dead. The Pi is a
// systemd-nspawn container (internal/nspawn) running the lifeline-agent .deb
// and its unit exactly as shipped, sandbox included, in a namespace of this
// test; the "internet" is a second namespace where the jump host's address
// is a black hole and the fake speedtest answers.
//
//	+------------------------- ll<pid>-ucloud ---------------------------+
//	| 203.0.113.10 "bastion": nft drops every packet to it (no RST/ICMP) |
//	| 203.0.113.20:8080 fake speedtest (this test process)  100.64.0.1   |
//	+---------------------------------+----------------------------------+
//	                                  | pi0
//	                                  | veth
//	                                  | wwan0 100.64.0.2, default route
//	+---------------------------------+----------------------------------+
//	| ll<pid>-upi: container "pi", systemd as PID 1, lifeline-agent.deb  |
//	+--------------------------------------------------------------------+

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/internal/nspawn"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
)

const (
	// unitFirstCheck is when a fresh agent runs its first link check
	// (firstCheckDelay in agent/linkcheck/run.go), plus the check itself
	// (LIFELINE_CHECK_DURATION's default 10 s of download and the control
	// requests: 12 s measured) and a margin. The fake sees a check's first
	// request as soon as it starts.
	unitFirstCheck = 30*time.Second + 15*time.Second + 15*time.Second
	// unitStayActive is how long the agent must run without a restart
	// while its bastion is unreachable: five watchdog periods
	// (WatchdogSec=60s), and many backoff rounds (LIFELINE_BACKOFF_MAX=30s).
	unitStayActive = 5 * time.Minute
	unitISP        = "Unit Test Mobile"
	unitBastion    = bastionIP + ":2222"
)

// unitState is what systemd says about lifeline-agent at one moment.
type unitState struct {
	at                              time.Duration // since the start
	active, sub, mainPID, nrestarts string
	status, result, execMainStarted string
}

func (s unitState) String() string {
	return fmt.Sprintf("+%s %s/%s MainPID=%s NRestarts=%s Result=%s StatusText=%q",
		s.at.Round(time.Second), s.active, s.sub, s.mainPID, s.nrestarts, s.result, s.status)
}

// TestAgentUnitDeadBastion installs the agent's .deb in a booted Debian,
// points it at a bastion whose address is a black hole and runs the unit as
// shipped. A dead bastion is the agent's own business, never systemd's: the
// unit is active within 30 s (Type=notify: READY=1 comes without a tunnel),
// its status says the bastion is unreachable, and it stays up for 5 minutes
// (watchdog and backoff included) with no restart and the same PID, running
// exactly one link check against the fake speedtest. A restart then costs
// no extra check: the schedule comes from the check history.
//
// The 5 minutes overlap the rest of the suite: the machine is set up and
// the agent started before t.Parallel(), which waits for the package's
// sequential tests; a sampler watches the unit meanwhile, and the test
// waits only for what is left of the 5 minutes.
func TestAgentUnitDeadBastion(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a container and watches it for 6 minutes: not in -short")
	}
	sshtest.NeedRoot(t)
	sshtest.Need(t, "ip", "nft", "make", "dpkg-deb")
	nspawn.Need(t)
	debs := unitBuildDebs(t)
	tree := nspawn.Tree(t)

	// The namespaces: made before the machine, so they go after it.
	pi, cloud := fmt.Sprintf("ll%d-upi", os.Getpid()), fmt.Sprintf("ll%d-ucloud", os.Getpid())
	for _, ns := range []string{pi, cloud} {
		unitHost(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		unitHost(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	unitHost(t, "ip", "-n", pi, "link", "add", "wwan0", "type", "veth", "peer", "name", "pi0", "netns", cloud)
	unitHost(t, "ip", "-n", pi, "addr", "add", piHotspotIP+"/24", "dev", "wwan0")
	unitHost(t, "ip", "-n", pi, "link", "set", "wwan0", "up")
	unitHost(t, "ip", "-n", pi, "route", "add", "default", "via", carrierIn)
	for _, a := range []string{carrierIn + "/24", bastionIP + "/24", servicesIP + "/24"} {
		unitHost(t, "ip", "-n", cloud, "addr", "add", a, "dev", "pi0")
	}
	unitHost(t, "ip", "-n", cloud, "link", "set", "pi0", "up")
	// The jump host's address answers ARP but swallows every packet: the
	// agent's SYNs go unanswered, as behind a dead CGNAT.
	unitHost(t, "ip", "netns", "exec", cloud, "nft",
		"add table inet hole; add chain inet hole in { type filter hook input priority 0; }; add rule inet hole in ip daddr "+bastionIP+" drop")

	fake := unitSpeedtest(t, cloud, servicesIP+":8080")

	m := nspawn.Boot(t, nspawn.Options{Name: "pi", NetNSPath: "/run/netns/" + pi, Tree: tree})
	m.Install(debs["lifeline-agent"])
	// Settings at their defaults except the bastion, the forward and the
	// fake speedtest (its server list names itself).
	m.WriteFile("/etc/lifeline/agent.env", []byte(strings.Join([]string{
		"LIFELINE_BASTION=" + unitBastion,
		"LIFELINE_FORWARDS=pi:22=127.0.0.1:22",
		"LIFELINE_SPEEDTEST_URL=http://" + servicesIP + ":8080",
	}, "\n")+"\n"), 0o600)

	ctx := t.Context()
	show := func() unitState {
		t.Helper()
		s, err := unitShow(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if typ := unitProp(t, m, "Type"); typ != "notify" {
		t.Fatalf("lifeline-agent.service is Type=%s, want notify (the test's premise)", typ)
	}
	if d := unitProp(t, m, "DropInPaths"); d != "" {
		t.Fatalf("the unit runs with drop-ins %q: this test is about the unit as shipped", d)
	}

	// Start it as the unit's header says, not waiting for the job: the
	// test times it.
	start := time.Now()
	if out, err := m.Run(ctx, "systemctl", "enable", "--now", "--no-block", "lifeline-agent"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var first unitState
	sshtest.Eventually(t, 30*time.Second, func() bool {
		first = show()
		if first.active == "failed" {
			t.Fatalf("lifeline-agent failed to start: %s", first)
		}
		return first.active == "active"
	}, "lifeline-agent not active within 30 s of its start (READY=1 must not wait for a tunnel): %s", func() string { return first.String() })
	t.Logf("active after %s: %s", time.Since(start).Round(10*time.Millisecond), first)
	mainPID := first.mainPID
	if mainPID == "" || mainPID == "0" {
		t.Fatalf("active without a main PID: %s", first)
	}
	sshtest.Eventually(t, 30*time.Second, func() bool {
		first = show()
		return strings.Contains(first.status, unitBastion+" unreachable")
	}, "StatusText does not say the bastion is unreachable: %s", func() string { return first.String() })
	t.Logf("status: %s", first.status)

	// Watch the unit while the rest of the suite runs.
	var (
		mu      sync.Mutex
		samples []unitState
		sampErr error
	)
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			s, err := unitShow(ctx, m)
			s.at = time.Since(start)
			mu.Lock()
			if err != nil && sampErr == nil {
				sampErr = err
			}
			samples = append(samples, s)
			mu.Unlock()
			select {
			case <-stopSampling:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Parallel()
	if left := unitStayActive - time.Since(start); left > 0 {
		t.Logf("waiting %s more for the agent's 5 minutes", left.Round(time.Second))
		select {
		case <-time.After(left):
		case <-ctx.Done():
		}
	}
	close(stopSampling)
	<-sampled
	final := show()
	final.at = time.Since(start)

	mu.Lock()
	samples = append(samples, final)
	if sampErr != nil {
		t.Errorf("sampling the unit: %v", sampErr)
	}
	var bad []string
	for _, s := range samples {
		if s.active != "active" || s.sub != "running" || s.mainPID != mainPID || s.nrestarts != "0" ||
			s.execMainStarted != first.execMainStarted || strings.Contains(s.status, "connected to") {
			bad = append(bad, s.String())
		}
	}
	n := len(samples)
	mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("lifeline-agent did not run steadily as PID %s for %s with its bastion dead (%d of %d samples off):\n%s",
			mainPID, unitStayActive, len(bad), n, strings.Join(bad, "\n"))
	}
	t.Logf("%d samples over %s, last: %s", n, final.at.Round(time.Second), final)
	if got := unitJournalCount(t, m, "lifeline-agent starting"); got != 1 {
		t.Errorf("the agent started %d times in %s, want once", got, unitStayActive)
	}

	// Exactly one link check: one record, one check's requests at the fake.
	recs := unitChecks(t, m)
	st := fake.Stats()
	if len(recs) != 1 {
		t.Fatalf("%d link check records after %s, want 1:\n%v", len(recs), unitStayActive, recs)
	}
	r := recs[0]
	t.Logf("the check: %s isp %q ip %s server %q download %.1f Mbit/s latency %.1f ms, %d bytes, reasons %v; fake: %+v",
		r.Verdict, r.ISP, r.IP, r.Server, r.DownloadBps/1e6, r.LatencyMS, r.Bytes, r.Reasons, st)
	if r.ISP != unitISP || r.IP != piHotspotIP || r.Bytes <= 0 || r.Manual {
		t.Errorf("the record is not a scheduled check against the fake from the Pi: %+v", r)
	}
	if st.ConfigRequests != 1 || st.ServerListLookup != 1 || st.LatencyRequests == 0 || st.DownloadRequests == 0 {
		t.Errorf("the fake saw %+v, want the requests of one check (1 client info, 1 server list, latency and downloads)", st)
	}

	// A restart (an upgrade, an admin) costs no extra check.
	restart := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	out, err := m.Run(rctx, "systemctl", "restart", "lifeline-agent")
	cancel()
	if err != nil {
		t.Fatalf("systemctl restart lifeline-agent: %v\n%s", err, out)
	}
	after := show()
	t.Logf("restarted in %s: %s", time.Since(restart).Round(10*time.Millisecond), after)
	if after.active != "active" || after.mainPID == mainPID || after.mainPID == "0" {
		t.Fatalf("after systemctl restart: %s (was PID %s)", after, mainPID)
	}
	deadline := restart.Add(unitFirstCheck)
	for time.Now().Before(deadline) {
		if got := fake.Stats().ConfigRequests; got != 1 {
			t.Fatalf("%s after the restart the fake got client info request #%d: the restart ran a link check", time.Since(restart).Round(time.Second), got)
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if recs := unitChecks(t, m); len(recs) != 1 {
		t.Errorf("%d link check records %s after the restart, want still 1:\n%v", len(recs), unitFirstCheck, recs)
	}
	if st2 := fake.Stats(); st2 != st {
		t.Errorf("the fake was asked more after the restart: %+v, was %+v", st2, st)
	}
	end := show()
	if end.active != "active" || end.mainPID != after.mainPID || end.nrestarts != "0" {
		t.Errorf("after the restart the agent did not keep running: %s (restarted as PID %s)", end, after.mainPID)
	}
	if !strings.Contains(end.status, unitBastion+" unreachable") {
		t.Errorf("StatusText after the restart: %q", end.status)
	}
	t.Logf("after the restart: %s", end)
}

// unitHost runs a command on the host, on namespaces this test owns.
func unitHost(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// unitBuildDebs builds the release packages for amd64 only (the Makefile's
// DIST_PLATFORMS) into a temp dir, as systemd/qemu_test.go does.
func unitBuildDebs(t *testing.T) map[string]string {
	t.Helper()
	dist := filepath.Join(t.TempDir(), "dist")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	mk := exec.CommandContext(ctx, "make", "-s", "deb", "DIST="+dist, "VERSION=0.0.0+test", "DIST_PLATFORMS=amd64:amd64")
	mk.Dir = ".." // the repository (go test runs in integration/)
	out, err := mk.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs := map[string]string{}
	for _, p := range []string{"lifeline-agent", "lifeline-bastion"} {
		d := filepath.Join(dist, p+"_0.0.0+test_amd64.deb")
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("make deb made no %s: %v\n%s", filepath.Base(d), err, out)
		}
		debs[p] = d
	}
	return debs
}

// unitSpeedtest serves a fake speedtest from this process on addr in the
// network namespace ns (its listening socket lives there).
func unitSpeedtest(t *testing.T, ns, addr string) *speedtestfake.Server {
	t.Helper()
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ln net.Listener
	if err := inNetNS(f, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	fake := speedtestfake.New(speedtestfake.Config{ISP: unitISP})
	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("fake speedtest: %v", err)
		}
	})
	return fake
}

// unitShow reads lifeline-agent's state from systemd inside m.
func unitShow(ctx context.Context, m *nspawn.Machine) (unitState, error) {
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := m.Run(c, "systemctl", "show", "lifeline-agent",
		"-p", "ActiveState,SubState,MainPID,NRestarts,StatusText,Result,ExecMainStartTimestampMonotonic")
	if err != nil {
		return unitState{}, err
	}
	var s unitState
	for line := range strings.SplitSeq(out, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "ActiveState":
			s.active = v
		case "SubState":
			s.sub = v
		case "MainPID":
			s.mainPID = v
		case "NRestarts":
			s.nrestarts = v
		case "StatusText":
			s.status = v
		case "Result":
			s.result = v
		case "ExecMainStartTimestampMonotonic":
			s.execMainStarted = v
		}
	}
	return s, nil
}

func unitProp(t *testing.T, m *nspawn.Machine, prop string) string {
	t.Helper()
	out, err := m.Run(t.Context(), "systemctl", "show", "lifeline-agent", "-p", prop, "--value")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// unitChecks is the agent's link check history (checks.jsonl).
func unitChecks(t *testing.T, m *nspawn.Machine) []report.LinkReport {
	t.Helper()
	out, err := m.Sh(t.Context(), "cat /var/lib/lifeline/checks.jsonl 2>/dev/null || true")
	if err != nil {
		t.Fatal(err)
	}
	var recs []report.LinkReport
	for _, line := range sshtest.Lines(out) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var r report.LinkReport
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("checks.jsonl: %v: %q", err, line)
		}
		recs = append(recs, r)
	}
	return recs
}

// unitJournalCount counts the agent's journal lines of this boot with sub.
func unitJournalCount(t *testing.T, m *nspawn.Machine, sub string) int {
	t.Helper()
	out, err := m.Run(t.Context(), "journalctl", "-b", "-u", "lifeline-agent", "--no-pager", "-o", "cat")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(out, sub)
}
