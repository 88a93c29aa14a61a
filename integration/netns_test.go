//go:build integration

package integration

// The site in a box. Every address lives on veth pairs between network
// namespaces this test creates (named ll<pid>-<role>, deleted in cleanup,
// also on failure); nothing touches the host's own network.
//
//             +---------------------- cloud (ll<pid>-cloud), bridge br0 ----------------------+
//             | 203.0.113.10 lifeline-bastion :2222   203.0.113.20 fake Twilio :8089,         |
//             | (203.0.113.11 a second one)            fake speedtest :8080   198.51.100.1     |
//             | 203.0.113.53 dnsmasq :53, the main link's probe target                          |
//             +-----+----------------------------+------------------------------+-------------+
//                   | 203.0.113.1                | 203.0.113.2                  | 198.51.100.20
//          +--------+---------+        +---------+--------+            +--------+---------+
//          | carrier (CGNAT)  |        | main (site's     |            | operator         |
//          | masquerade random|        |  main router,    |            | stock ssh -J     |
//          | tbf 30 Mbit/s    |        |  another ISP)    |            +------------------+
//          +--------+---------+        +---------+--------+
//                   | 100.64.0.1                 | 192.168.1.1
//                   | 100.64.0.2 wwan0           |
//          +--------+---------+   eth0   +-------+--------------------+
//          | pi               +----------+ lan, bridge brlan          |
//          | lifeline-agent   | .1.204   | 192.168.1.100 "NUC" :3389  |
//          | sshd 127.0.0.1:22|          +----------------------------+
//          | netsetup applied |
//          +------------------+

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

const (
	bastionIP = "203.0.113.10"
	// secondBastionIP is a second jump host (TestTwoBastionsOneText).
	secondBastionIP = "203.0.113.11"
	// resolverIP is a DNS server on the internet: the main link's probe
	// target, reached only through the site's main router.
	resolverIP  = "203.0.113.53"
	servicesIP  = "203.0.113.20"
	carrierOut  = "203.0.113.1"
	mainOut     = "203.0.113.2"
	operatorIP  = "198.51.100.20"
	pollerIP    = "198.51.100.21" // the operator's second address, for status polls
	carrierIn   = "100.64.0.1"
	piHotspotIP = "100.64.0.2"
	piLANIP     = "192.168.1.204"
	nucIP       = "192.168.1.100"
	mainLANIP   = "192.168.1.1"
)

// netSite is the namespace topology above.
type netSite struct {
	t      testing.TB
	prefix string
	names  []string
}

func (s *netSite) ns(role string) string { return s.prefix + "-" + role }

// sh runs a command on the host (only ip/nft/tc/conntrack on namespaces this test owns).
func (s *netSite) sh(args ...string) {
	s.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// in runs a command inside a namespace and fails the test on error.
func (s *netSite) in(role string, args ...string) string {
	s.t.Helper()
	out, err := s.try(role, args...)
	if err != nil {
		s.t.Fatalf("in %s: %s: %v\n%s", role, strings.Join(args, " "), err, out)
	}
	return out
}

func (s *netSite) try(role string, args ...string) (string, error) {
	return sshtest.Run(context.Background(), 60*time.Second, nil, "ip", append([]string{"netns", "exec", s.ns(role)}, args...)...)
}

// start runs a long-lived process inside a namespace.
func (s *netSite) start(role string, env []string, args ...string) *sshtest.Process {
	s.t.Helper()
	return sshtest.Start(s.t, env, "ip", append([]string{"netns", "exec", s.ns(role)}, args...)...)
}

func newNetSite(t testing.TB) *netSite {
	t.Helper()
	sshtest.NeedRoot(t)
	sshtest.Need(t, "ip", "nft", "tc", "conntrack", "sshd", "ssh")
	s := &netSite{t: t, prefix: fmt.Sprintf("ll%d", os.Getpid())}
	t.Cleanup(s.destroy)
	for _, r := range []string{"cloud", "carrier", "main", "operator", "pi", "lan"} {
		s.sh("ip", "netns", "add", s.ns(r))
		s.names = append(s.names, s.ns(r))
		s.in(r, "ip", "link", "set", "lo", "up")
	}
	// Bridges: the "internet" in cloud, the site LAN in lan.
	s.in("cloud", "ip", "link", "add", "br0", "type", "bridge")
	s.in("cloud", "ip", "link", "set", "br0", "up")
	for _, a := range []string{bastionIP + "/24", secondBastionIP + "/24", servicesIP + "/24", resolverIP + "/24", "198.51.100.1/24"} {
		s.in("cloud", "ip", "addr", "add", a, "dev", "br0")
	}
	s.in("lan", "ip", "link", "add", "brlan", "type", "bridge")
	s.in("lan", "ip", "link", "set", "brlan", "up")
	s.in("lan", "ip", "addr", "add", nucIP+"/24", "dev", "brlan")
	s.in("lan", "ip", "route", "add", "default", "via", mainLANIP)

	// veth pairs: (nsA, ifA, addrA) <-> (nsB, ifB, addrB); "" address = bridge port.
	s.veth("carrier", "out0", carrierOut+"/24", "cloud", "c-carrier", "br0")
	s.veth("main", "out0", mainOut+"/24", "cloud", "c-main", "br0")
	s.veth("operator", "eth0", operatorIP+"/24", "cloud", "c-op", "br0")
	s.veth("carrier", "pi0", carrierIn+"/24", "pi", "wwan0", piHotspotIP+"/24")
	s.veth("pi", "eth0", piLANIP+"/24", "lan", "l-pi", "brlan")
	s.veth("main", "lan0", mainLANIP+"/24", "lan", "l-main", "brlan")

	s.in("operator", "ip", "addr", "add", pollerIP+"/24", "dev", "eth0")
	s.in("operator", "ip", "route", "add", "default", "via", "198.51.100.1")
	// The carrier: a CGNAT that hands out new ports when it forgets a mapping.
	s.in("carrier", "sysctl", "-qw", "net.ipv4.ip_forward=1")
	s.in("carrier", "nft", "add table ip cgnat; add chain ip cgnat post { type nat hook postrouting priority 100; }; add rule ip cgnat post oifname out0 masquerade random; add chain ip cgnat hole { type filter hook forward priority 0; }")
	// The hotspot link: about 30 Mbit/s each way.
	s.in("carrier", "tc", "qdisc", "add", "dev", "pi0", "root", "tbf", "rate", "30mbit", "burst", "32kb", "latency", "50ms")
	s.in("pi", "tc", "qdisc", "add", "dev", "wwan0", "root", "tbf", "rate", "30mbit", "burst", "32kb", "latency", "50ms")
	// The site's main router, another ISP.
	s.in("main", "sysctl", "-qw", "net.ipv4.ip_forward=1")
	s.in("main", "nft", "add table ip nat; add chain ip nat post { type nat hook postrouting priority 100; }; add rule ip nat post oifname out0 masquerade")
	// The Pi leaves by the hotspot: the main link is down on the day it matters.
	s.in("pi", "ip", "route", "add", "default", "via", carrierIn)
	return s
}

func (s *netSite) veth(nsA, ifA, addrA, nsB, ifB, addrB string) {
	s.t.Helper()
	tmpA, tmpB := fmt.Sprintf("v%da%d", os.Getpid()%100000, len(s.names)), fmt.Sprintf("v%db%d", os.Getpid()%100000, len(s.names))
	s.names = append(s.names, "") // only to make the temporary names unique
	s.sh("ip", "link", "add", tmpA, "netns", s.ns(nsA), "type", "veth", "peer", "name", tmpB, "netns", s.ns(nsB))
	s.in(nsA, "ip", "link", "set", tmpA, "name", ifA)
	s.in(nsB, "ip", "link", "set", tmpB, "name", ifB)
	for _, side := range []struct{ ns, ifc, addr string }{{nsA, ifA, addrA}, {nsB, ifB, addrB}} {
		if strings.Contains(side.addr, "/") {
			s.in(side.ns, "ip", "addr", "add", side.addr, "dev", side.ifc)
		} else if side.addr != "" {
			s.in(side.ns, "ip", "link", "set", side.ifc, "master", side.addr)
		}
		s.in(side.ns, "ip", "link", "set", side.ifc, "up")
	}
}

func (s *netSite) destroy() {
	for _, n := range s.names {
		if n != "" {
			exec.Command("ip", "netns", "del", n).Run()
		}
	}
}

// cutMain drops everything the site's main router would send to its ISP
// (the main internet fails; the LAN keeps working), or stops dropping.
func (s *netSite) cutMain(on bool) {
	if on {
		s.in("main", "nft", "add table ip cut; add chain ip cut upstream { type filter hook forward priority 0; }; add rule ip cut upstream oifname out0 drop")
		return
	}
	s.in("main", "nft", "delete table ip cut")
}

// blackhole silently drops everything the carrier would forward.
func (s *netSite) blackhole(on bool) {
	if on {
		s.in("carrier", "nft", "add rule ip cgnat hole drop")
		return
	}
	s.in("carrier", "nft", "flush chain ip cgnat hole")
}
