//go:build integration

package integration

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkKeepaliveTraffic measures what an idle tunnel costs on the
// hotspot link, both directions, headers included: lifeline (bastion and
// agent with their default keepalives) and the classic autossh tunnel
// (ServerAliveInterval=30, ServerAliveCountMax=3, the jump sshd's
// ClientAliveInterval 30) run side by side on the same Pi for the same
// idle window (LIFELINE_BENCH_IDLE, default 10m). nftables counters in
// the carrier namespace split the hotspot's traffic by the jump host's
// port (2222 lifeline, 22 sshd); a frame on the veth is the IP packet
// plus its 14-byte Ethernet header. The veth's own counters give the
// whole link (ARP included) as a cross-check.
//
// The floor for lifeline's design, idle (an estimate from the packet
// sizes, which the run measures): the agent's TCP keepalive probe and its
// ACK (66 bytes each) every 11 s, 1.04 MB a day; the bastion's every 60 s,
// 0.19 MB; the agent's SSH keepalive request, reply and ACK every 5 min,
// about 0.08 MB: 1.31 MB a day.
func BenchmarkKeepaliveTraffic(b *testing.B) {
	idle := 10 * time.Minute
	if v := os.Getenv("LIFELINE_BENCH_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("LIFELINE_BENCH_IDLE=%q: %v", v, err)
		}
		idle = d
	}
	for range b.N {
		s := startSite(b)
		// Both lifeline sides as shipped: no keepalive settings of the
		// site world's, no link checks in the window.
		s.bastion.Stop()
		s.bastionEnv = withoutPrefixes(s.bastionEnv, "LIFELINE_AGENT_DEAD_AFTER", "LIFELINE_AGENT_QUIET")
		s.startBastion(b)
		s.agent.Stop()
		s.agent = s.start("pi", append(withoutPrefixes(s.agentEnv, "LIFELINE_KEEPALIVE", "LIFELINE_DEAD_AFTER", "LIFELINE_CHECK_EVERY"),
			"LIFELINE_CHECK_EVERY=0"), bin("lifeline-agent"))
		s.waitTargets(b, "pi:22", "nuc:3389")
		startClassicSite(b, s)

		s.in("carrier", "nft", `add table ip tally; add chain ip tally hotspot { type filter hook forward priority -5; }; `+
			`add rule ip tally hotspot iifname "pi0" tcp dport 2222 counter; add rule ip tally hotspot oifname "pi0" tcp sport 2222 counter; `+
			`add rule ip tally hotspot iifname "pi0" tcp dport 22 counter; add rule ip tally hotspot oifname "pi0" tcp sport 22 counter`)
		// Let the logins' own traffic (first keepalive, first reports)
		// pass, then count from zero.
		settle := time.NewTimer(30 * time.Second)
		<-settle.C
		before := s.in("carrier", "nft", "list table ip tally")
		veth0 := s.vethBytes("carrier", "pi0")
		start := time.Now()
		wait := time.NewTimer(idle)
		<-wait.C
		took := time.Since(start)
		veth := s.vethBytes("carrier", "pi0") - veth0
		rules := s.in("carrier", "nft", "list table ip tally")
		day := float64(24*time.Hour) / float64(took)

		life, lifePkts := frames(b, before, rules, "2222")
		classic, classicPkts := frames(b, before, rules, "22")
		if lifePkts == 0 || classicPkts == 0 {
			b.Fatalf("no idle traffic counted (lifeline %d packets, autossh %d): the counters did not see the tunnels\n%s", lifePkts, classicPkts, rules)
		}
		mb := func(bytes int64) string { return fmt.Sprintf("%.2f MB", float64(bytes)*day/1e6) }
		b.Logf("\n| idle tunnel on the hotspot, %s window, netns veth, both ways, headers included | lifeline (defaults: dead link found within 15 s) | autossh (30s x 3, found within ~90 s) |\n|---|---|---|\n"+
			"| bytes a day | %s | %s |\n| frames a day | %.0f | %.0f |\n| bytes per frame | %.0f | %.0f |\n"+
			"| whole hotspot link (veth counters, ARP included) | %s for both | |",
			took.Round(time.Second), mb(life), mb(classic), float64(lifePkts)*day, float64(classicPkts)*day,
			float64(life)/float64(lifePkts), float64(classic)/float64(classicPkts), mb(veth))
		b.ReportMetric(float64(life)*day/1e6, "lifeline-MB/day")
		b.ReportMetric(float64(classic)*day/1e6, "autossh-MB/day")
	}
}

// withoutPrefixes drops the variables whose name starts with any prefix.
func withoutPrefixes(env []string, prefixes ...string) []string {
	var out []string
next:
	for _, e := range env {
		for _, p := range prefixes {
			if strings.HasPrefix(e, p) {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

// vethBytes is rx + tx bytes of an interface in a namespace.
func (s *netSite) vethBytes(role, ifc string) int64 {
	s.t.Helper()
	var n int64
	for _, dir := range []string{"rx_bytes", "tx_bytes"} {
		out := s.in(role, "cat", "/sys/class/net/"+ifc+"/statistics/"+dir)
		v, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if err != nil {
			s.t.Fatalf("%s %s: %q: %v", ifc, dir, out, err)
		}
		n += v
	}
	return n
}

// frames is what the tally rules for port counted between two listings.
func frames(b *testing.B, before, after, port string) (bytes, packets int64) {
	b0, p0 := tallyFrames(b, before, port)
	b1, p1 := tallyFrames(b, after, port)
	return b1 - b0, p1 - p0
}

// tallyFrames sums the counters of the meter rules for a port (both
// directions) as frames on the veth: IP bytes plus a 14-byte Ethernet
// header each.
func tallyFrames(b *testing.B, rules, port string) (bytes, packets int64) {
	re := regexp.MustCompile(`tcp [sd]port ` + port + ` counter packets (\d+) bytes (\d+)`)
	m := re.FindAllStringSubmatch(rules, -1)
	if len(m) != 2 {
		b.Fatalf("port %s: want 2 counters in\n%s", port, rules)
	}
	for _, g := range m {
		p, _ := strconv.ParseInt(g[1], 10, 64)
		n, _ := strconv.ParseInt(g[2], 10, 64)
		packets += p
		bytes += n + 14*p
	}
	return bytes, packets
}
