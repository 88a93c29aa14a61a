//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// classicSite adds the setup lifeline replaces to a site: stock sshd as the
// jump host in the cloud namespace (port 22), and autossh on the Pi with the
// settings its tutorials recommend, reverse-forwarding the Pi's sshd to
// 127.0.0.1:2201 on the jump host.
type classicSite struct {
	jump    *sshtest.SSHD
	autossh *sshtest.Process
	config  string
}

func startClassicSite(t testing.TB, s *siteWorld) *classicSite {
	t.Helper()
	sshtest.Need(t, "autossh")
	d := t.TempDir()
	agentKey := sshtest.NewKey(t, d, "autossh_key")
	c := &classicSite{}
	c.jump = sshtest.StartSSHD(t, sshtest.SSHDOptions{
		AuthorizedKeys: agentKey.AuthorizedLine("", "autossh") + "\n" + s.operator.AuthorizedLine("", "alice"),
		Listen:         bastionIP + ":22", NetNS: s.ns("cloud"),
		Extra: []string{"AllowTcpForwarding yes", "GatewayPorts no", "ClientAliveInterval 30"},
	})
	known := filepath.Join(d, "known_hosts")
	os.WriteFile(known, []byte(c.jump.KnownHostsLine(bastionIP)+"\n"+
		s.piSSHD.KnownHostsLine("[127.0.0.1]:2201")+"\n"), 0o600)
	c.config = filepath.Join(d, "ssh_config")
	os.WriteFile(c.config, []byte(fmt.Sprintf(`Host jump
  HostName %s
  User root
Host pi
  HostName 127.0.0.1
  Port 2201
  User root
  ProxyJump jump
Host *
  IdentityFile %s
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
`, bastionIP, s.operator.Path, agentKey.Path, known)), 0o600)
	c.autossh = s.start("pi", []string{"AUTOSSH_GATETIME=0", "AUTOSSH_POLL=600"}, "autossh", "-M", "0", "-N",
		"-F", c.config, "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=3", "-o", "ExitOnForwardFailure=yes",
		"-R", "127.0.0.1:2201:127.0.0.1:22", "jump")
	sshtest.Eventually(t, 30*time.Second, func() bool {
		_, err := s.try("operator", "ssh", "-F", c.config, "pi", "true")
		return err == nil
	}, "classic tunnel never worked; autossh said:\n%s", c.autossh.Output)
	return c
}

// watch polls cond every 100ms until it holds or limit passes and returns
// when it first held (zero time if never).
func watch(limit time.Duration, cond func() bool) time.Time {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return time.Now()
		}
		tick := time.NewTimer(100 * time.Millisecond)
		<-tick.C
	}
	return time.Time{}
}

func since(start, end time.Time) string {
	if end.IsZero() {
		return "not within the run"
	}
	return end.Sub(start).Round(100 * time.Millisecond).String()
}

// BenchmarkSiteOutage black-holes the hotspot for 60 s (packets silently
// dropped in the carrier, the classic cellular failure) with lifeline-agent
// (defaults: a link silent 15 s is dead) and autossh (ServerAliveInterval=30,
// ServerAliveCountMax=3) running side by side on the same Pi, then restores
// it: time to detect the dead link, and time from restore to a working jump.
func BenchmarkSiteOutage(b *testing.B) {
	for range b.N {
		s := startSite(b)
		// The agent as shipped: default keepalive and backoff.
		s.agent.Stop()
		env := append(withoutPrefixes(s.agentEnv, "LIFELINE_KEEPALIVE", "LIFELINE_DEAD_AFTER", "LIFELINE_BACKOFF_MAX"), "LIFELINE_CHECK_EVERY=0")
		s.agent = s.start("pi", env, bin("lifeline-agent"))
		s.waitTargets(b, "pi:22")
		c := startClassicSite(b, s)

		lostBefore := strings.Count(s.agent.Output(), `msg=lost`)
		autosshBefore := strings.Count(c.autossh.Output(), "not responding")
		start := time.Now()
		s.blackhole(true)
		var lifeDetect, sshDetect time.Time
		done := make(chan struct{})
		go func() {
			defer close(done)
			sshDetect = watch(150*time.Second, func() bool { return strings.Count(c.autossh.Output(), "not responding") > autosshBefore })
		}()
		lifeDetect = watch(150*time.Second, func() bool { return strings.Count(s.agent.Output(), `msg=lost`) > lostBefore })
		// Keep the outage at 60 s in all, then restore.
		if rest := 60*time.Second - time.Since(start); rest > 0 {
			tm := time.NewTimer(rest)
			<-tm.C
		}
		s.blackhole(false)
		restored := time.Now()
		var sshBack time.Time
		back := make(chan struct{})
		go func() {
			defer close(back)
			sshBack = watch(180*time.Second, func() bool {
				_, err := s.try("operator", "ssh", "-F", c.config, "-o", "ConnectTimeout=3", "pi", "true")
				return err == nil
			})
		}()
		lifeBack := watch(180*time.Second, func() bool {
			_, err := s.ssh("-o", "ConnectTimeout=3", "pi", "true")
			return err == nil
		})
		<-done
		<-back
		b.Logf("\n| 60 s hotspot black hole, netns | lifeline-agent (defaults, dead after 15 s) | autossh (30s x 3) |\n|---|---|---|\n"+
			"| dead link detected after | %s | %s |\n| working jump after link restore | %s | %s |",
			since(start, lifeDetect), since(start, sshDetect), since(restored, lifeBack), since(restored, sshBack))
		if !lifeDetect.IsZero() {
			b.ReportMetric(lifeDetect.Sub(start).Seconds(), "lifeline-detect-s")
		}
		if !sshDetect.IsZero() {
			b.ReportMetric(sshDetect.Sub(start).Seconds(), "autossh-detect-s")
		}
		if !lifeBack.IsZero() {
			b.ReportMetric(lifeBack.Sub(restored).Seconds(), "lifeline-restore-s")
		}
		if !sshBack.IsZero() {
			b.ReportMetric(sshBack.Sub(restored).Seconds(), "autossh-restore-s")
		}
	}
}

// BenchmarkSiteThroughput pulls 24 MiB from a service on the Pi through
// the jump, over the hotspot link shaped to 30 Mbit/s, with lifeline and
// with the classic sshd + autossh tunnel.
func BenchmarkSiteThroughput(b *testing.B) {
	const size = 24 << 20
	for range b.N {
		s := startSite(b)
		c := startClassicSite(b, s)
		s.start("pi", []string{"LIFELINE_TEST_SERVE=127.0.0.1:9000", fmt.Sprintf("LIFELINE_TEST_BULK=%d", size)}, os.Args[0])
		// lifeline: the agent's forward pi:22 reaches the Pi's sshd; pull
		// through it with the Pi's sshd forwarding to the bulk service.
		pullNS := func(args ...string) float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", s.ns("operator"), "ssh"}, args...)...)
			out, _ := cmd.StdoutPipe()
			start := time.Now()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, out)
			cmd.Wait()
			if n != size {
				b.Fatalf("ssh %v: %d of %d bytes", args, n, size)
			}
			return float64(n) * 8 / time.Since(start).Seconds() / 1e6
		}
		var life, classic float64
		for range 2 {
			life = max(life, pullNS("-F", s.sshConfig, "-W", "127.0.0.1:9000", "pi"))
			classic = max(classic, pullNS("-F", c.config, "-W", "127.0.0.1:9000", "pi"))
		}
		b.ReportMetric(life, "lifeline-Mbit/s")
		b.ReportMetric(classic, "classic-Mbit/s")
		b.Logf("\n| 24 MiB through the jump over the 30 Mbit/s hotspot (tbf), best of 2 | lifeline | sshd + autossh | ratio |\n|---|---|---|---|\n| throughput | %.1f Mbit/s | %.1f Mbit/s | %.2f |",
			life, classic, life/classic)
	}
}
