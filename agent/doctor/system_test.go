package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	"github.com/lifeline-dev/lifeline/agent/netsetup"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/shared/report"
)

func TestTargets(t *testing.T) {
	t.Parallel()
	sshd := targetListener(t, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
	web := targetListener(t, "")
	down := closedPort(t)
	s := newSite(t, "127.0.0.1:1", fmt.Sprintf("web:80=127.0.0.1:%d,pi:22=127.0.0.1:%d,app:8080=127.0.0.1:%d", web, sshd, down))
	out, _ := s.run(t)
	want(t, out, "target of pi:22", "✓", "answers: SSH-2.0-OpenSSH_9.2p1 Debian-2")
	want(t, out, "target of web:80", "✓", "answers")
	want(t, out, "target of app:8080", "✗", fmt.Sprintf("refused: nothing listens on port %d of this Pi", down), "fix: start the service")
	// The Pi's sshd is checked first.
	if i, j := strings.Index(out, "target of pi:22"), strings.Index(out, "target of web:80"); i > j {
		t.Errorf("pi:22's target is not first:\n%s", out)
	}

	// The Pi's sshd down: say how to start it.
	s = newSite(t, "127.0.0.1:1", fmt.Sprintf("pi:22=127.0.0.1:%d", down))
	out, _ = s.run(t)
	want(t, out, "target of pi:22", "✗", "the Pi's own SSH server is not running", "fix: sudo systemctl enable --now ssh", "authorized_keys")
}

// stallDialer never connects (a LAN device switched off); dnsDialer
// fails to resolve.
type stallDialer struct{}

func (stallDialer) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

type dnsDialer struct{}

func (dnsDialer) DialContext(_ context.Context, _, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
}

type errDialer struct{ err error }

func (d errDialer) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: d.err}
}

func TestTargetsOnTheLAN(t *testing.T) {
	t.Parallel()
	f, _ := forward.ParseOne("nuc:3389=192.168.1.100:3389")
	d := New(Config{TargetDialer: stallDialer{}, StepTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r := d.checkTarget(ctx, f)
	if r.Outcome != Fail || !strings.Contains(r.Why, "no answer within 100ms") || !strings.Contains(r.Fix, "is 192.168.1.100 switched on") {
		t.Errorf("stalled: %+v", r)
	}
	d.cfg.TargetDialer = errDialer{syscall.ECONNREFUSED}
	if r := d.checkTarget(context.Background(), f); r.Outcome != Fail || !strings.Contains(r.Why, "192.168.1.100 answers, but nothing listens on port 3389") {
		t.Errorf("refused: %+v", r)
	}
	d.cfg.TargetDialer = errDialer{syscall.EHOSTUNREACH}
	if r := d.checkTarget(context.Background(), f); r.Outcome != Fail || !strings.Contains(r.Why, "no route to 192.168.1.100") {
		t.Errorf("unreachable: %+v", r)
	}
	f, _ = forward.ParseOne("nuc:3389=nuc.lan:3389")
	d.cfg.TargetDialer = dnsDialer{}
	if r := d.checkTarget(context.Background(), f); r.Outcome != Fail || !strings.Contains(r.Why, "nuc.lan does not resolve") {
		t.Errorf("unresolved: %+v", r)
	}
}

func TestNetsetup(t *testing.T) {
	t.Parallel()
	s := newSite(t, "127.0.0.1:1", "pi:22=127.0.0.1:22")
	out, _ := s.run(t)
	want(t, out, "netsetup", "-", "LIFELINE_LAN_INTERFACE is not set")

	s.cfg.Net = &netsetup.Config{LANInterface: "eth0"}
	s.cfg.NetStatus = func(context.Context) (netsetup.Report, error) {
		return netsetup.Report{Applied: []string{"net.ipv4.ip_forward = 1"}, Warnings: []string{"LAN interface eth0 does not exist"}}, nil
	}
	out, _ = s.run(t)
	want(t, out, "netsetup", "✓", "on eth0: applied as configured", "ip_forward = 1")
	want(t, out, "    warning: LAN interface eth0 does not exist", "")

	s.cfg.NetStatus = func(context.Context) (netsetup.Report, error) {
		return netsetup.Report{Differences: []string{"firewall table ip lifeline missing", "route 203.0.113.10/32 via 100.64.0.1 missing"}}, nil
	}
	out, _ = s.run(t)
	want(t, out, "netsetup", "✗", "not applied as configured: 2 differences", "fix: sudo systemctl enable --now lifeline-netsetup")
	want(t, out, "    differs: firewall table ip lifeline missing", "")

	s.cfg.NetStatus = func(context.Context) (netsetup.Report, error) {
		return netsetup.Report{}, fmt.Errorf("status: list tables: %w", syscall.EPERM)
	}
	out, _ = s.run(t)
	want(t, out, "netsetup", "-", "needs root")

	s.cfg.NetErr = errors.New("LIFELINE_MSS=\"9\": too small")
	out, _ = s.run(t)
	want(t, out, "netsetup", "-", "not valid (above)")
	want(t, out, "configuration", "✗")
}

// journal writes link check results as the agent does.
func journal(t *testing.T, dir string, rs ...report.LinkReport) {
	t.Helper()
	var b []byte
	for _, r := range rs {
		r.Version = report.Version
		j, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b = append(append(b, j...), '\n')
	}
	b = append(b, []byte("{\"torn\n")...)
	if err := os.WriteFile(filepath.Join(dir, linkcheck.JournalName), b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestLinkChecks(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC)
	s := newSite(t, "127.0.0.1:1", "pi:22=127.0.0.1:22")
	s.cfg.Clock = clocktest.New(now)
	out, _ := s.run(t)
	want(t, out, "last link check", "-", "none recorded yet", "exec lifeline-agent check")
	want(t, out, "link check data in 2026-05 (UTC)", "✓", "0 MB of 300 MB used")

	old := report.LinkReport{Time: time.Date(2026, 4, 30, 23, 0, 0, 0, time.UTC), Verdict: "ok", Bytes: 40e6, MonthBytes: 280e6}
	ok := report.LinkReport{Time: now.Add(-20 * time.Minute), ISP: "Hotspot Mobile", Verdict: "ok", DownloadBps: 31.5e6, LatencyMS: 48, Bytes: 12e6, MonthBytes: 42e6, MonthBudget: 300e6}
	journal(t, s.dir, old, ok)
	out, _ = s.run(t)
	want(t, out, "last link check", "✓", `isp "Hotspot Mobile"`, "31.5 Mbit/s", "20 minutes ago")
	want(t, out, "link check data in 2026-05 (UTC)", "✓", "42 MB of 300 MB used")

	bad := ok
	bad.Verdict, bad.Reasons = "failed", []string{"download 2.1 Mbit/s below LIFELINE_MIN_DOWNLOAD 10 Mbit/s"}
	journal(t, s.dir, old, ok, bad)
	out, _ = s.run(t)
	want(t, out, "last link check", "✗", "failed at", "below LIFELINE_MIN_DOWNLOAD", "fix: the reasons say what was off")

	stale := ok
	stale.Time = now.Add(-5 * time.Hour)
	journal(t, s.dir, stale)
	out, _ = s.run(t)
	want(t, out, "last link check", "✗", "5 hours ago", "LIFELINE_CHECK_EVERY is 1h0m0s: the agent has not checked since", "systemctl status lifeline-agent")

	// 298 of 300 MB used: light checks still run (about 50 kB each), so
	// a stale check is still a fault.
	nearly := stale
	nearly.MonthBytes = 298e6
	journal(t, s.dir, nearly)
	out, _ = s.run(t)
	want(t, out, "last link check", "✗", "has not checked since")
	want(t, out, "link check data in 2026-05 (UTC)", "✓", "298 MB of 300 MB used")

	// Over the monthly budget (less than two light checks left), a stale
	// check is what the agent does.
	full := stale
	full.MonthBytes = 299.95e6
	journal(t, s.dir, full)
	out, _ = s.run(t)
	want(t, out, "last link check", "✓")
	want(t, out, "link check data in 2026-05 (UTC)", "✗", "299.9 MB of LIFELINE_CHECK_MONTHLY_BUDGET=300 MB used", "skips its checks until 2026-06-01", "raise LIFELINE_CHECK_MONTHLY_BUDGET")

	s.cfg.Checks.MonthlyBudget = 0
	out, _ = s.run(t)
	want(t, out, "link check data in 2026-05 (UTC)", "✓", "no cap")

	s.cfg.Checks.CheckEvery = 0
	out, _ = s.run(t)
	want(t, out, "last link check", "-", "disabled (LIFELINE_CHECK_EVERY=0)")
}

func TestUnit(t *testing.T) {
	t.Parallel()
	s := newSite(t, "127.0.0.1:1", "pi:22=127.0.0.1:22")
	out, _ := s.run(t)
	want(t, out, "unit lifeline-agent", "-", "not booted with systemd")
	for state, texts := range map[string][]string{
		"active":     {"✓", "active"},
		"inactive":   {"✗", "the agent is not running", "fix: sudo systemctl enable --now lifeline-agent"},
		"failed":     {"✗", "stopped with an error", "journalctl -u lifeline-agent"},
		"activating": {"✗", "waiting to restart after a crash"},
	} {
		s.cfg.Unit = func(context.Context) (bool, string, error) { return true, state, nil }
		out, _ = s.run(t)
		want(t, out, "unit lifeline-agent", texts[0], texts[1:]...)
	}
}
