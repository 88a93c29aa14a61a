//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// siteWorld runs lifeline in the namespaces of netns_test.go.
type siteWorld struct {
	*netSite
	dir        string
	bastion    *sshtest.Process
	agent      *sshtest.Process
	twilio     *sshtest.Process
	speedtest  *sshtest.Process
	piSSHD     *sshtest.SSHD
	operator   sshtest.Key
	sshConfig  string
	bastionEnv []string
	agentEnv   []string
	netEnv     []string
}

const (
	carrierISP = "Carrier Mobile"
	mainISP    = "Main Street Broadband"
)

func startSite(t testing.TB) *siteWorld {
	t.Helper()
	s := &siteWorld{netSite: newNetSite(t), dir: t.TempDir()}
	d := s.dir
	for _, sub := range []string{"bastion", "agent", "netsetup", "sysctl"} {
		os.MkdirAll(filepath.Join(d, sub), 0o700)
	}
	s.operator = sshtest.NewKey(t, d, "operator")

	// The cloud: fakes of Twilio and speedtest, then the bastion.
	s.twilio = s.start("cloud", []string{"TWILIO_ACCOUNT_SID=AC00000000000000000000000000000001", "TWILIO_AUTH_TOKEN=sitetoken00000000000000000000000"},
		bin("fake-twilio"), "-addr", servicesIP+":8089")
	s.speedtest = s.start("cloud", nil, bin("fake-speedtest"), "-addr", servicesIP+":8080", "-isp", carrierISP,
		"-isp-by-source", mainOut+"="+mainISP, "-rate", "100Mbps")
	s.bastionEnv = []string{
		"LIFELINE_LISTEN=" + bastionIP + ":2222", "LIFELINE_NAME=cloud-bastion",
		"LIFELINE_HOST_KEY=" + filepath.Join(d, "bastion", "host_key"), "LIFELINE_STATE_DIR=" + filepath.Join(d, "bastion"),
		"LIFELINE_AGENTS=" + filepath.Join(d, "agents"), "LIFELINE_OPERATORS=" + filepath.Join(d, "operators"),
		"TWILIO_ACCOUNT_SID=AC00000000000000000000000000000001", "TWILIO_AUTH_TOKEN=sitetoken00000000000000000000000",
		"LIFELINE_SMS_FROM=+15005550006", "LIFELINE_SMS_TO=+15551234567", "LIFELINE_TWILIO_URL=http://" + servicesIP + ":8089",
		"LIFELINE_AGENT_DOWN_AFTER=6s", "LIFELINE_REPORT_EVERY=1s", "LIFELINE_QUIET_FROM=" + pollerIP + "/32", "LIFELINE_AGENT_DEAD_AFTER=3s", "LIFELINE_AGENT_QUIET=1s", "LIFELINE_SMS_PER_MINUTE=60",
	}
	s.agentEnv = []string{
		"LIFELINE_BASTION=" + bastionIP + ":2222",
		"LIFELINE_KEY=" + filepath.Join(d, "agent", "key"), "LIFELINE_KNOWN_HOSTS=" + filepath.Join(d, "agent", "known_hosts"),
		"LIFELINE_FORWARDS=pi:22=127.0.0.1:22,nuc:3389=" + nucIP + ":3389", "LIFELINE_STATE_DIR=" + filepath.Join(d, "agent"),
		"LIFELINE_DEAD_AFTER=3s", "LIFELINE_BACKOFF_MAX=5s",
		"LIFELINE_CHECK_EVERY=8s", "LIFELINE_SPEEDTEST_URL=http://" + servicesIP + ":8080", "LIFELINE_EXPECT_ISP=carrier",
		"LIFELINE_MIN_DOWNLOAD=2Mbps", "LIFELINE_MAX_LATENCY=1s", "LIFELINE_CHECK_BUDGET=6MB", "LIFELINE_CHECK_DURATION=1s", "LIFELINE_CHECK_MONTHLY_BUDGET=0",
	}
	s.netEnv = []string{
		"LIFELINE_LAN_INTERFACE=eth0", "LIFELINE_UPLINK_GATEWAY=" + carrierIn, "LIFELINE_BASTION=" + bastionIP + ":2222",
		"LIFELINE_SYSCTL_DIR=" + filepath.Join(d, "sysctl"), "LIFELINE_STATE_DIR=" + filepath.Join(d, "netsetup"),
	}
	// Pairing, as the README says.
	pub, err := sshtest.Stdout(t.Context(), 20*time.Second, s.agentEnv, bin("lifeline-agent"), "pubkey")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "agents"), []byte(pub), 0o600)
	os.WriteFile(filepath.Join(d, "operators"), []byte(s.operator.AuthorizedLine("", "alice@laptop")+"\n"), 0o600)
	bastionKnown := knownHostsFor(bastionIP+":2222", bastionHostKey(t, s.bastionEnv))
	os.WriteFile(filepath.Join(d, "agent", "known_hosts"), []byte(bastionKnown+"\n"), 0o600)
	s.startBastion(t)

	// The site: the LAN device, the Pi's sshd, netsetup, the agent.
	s.start("lan", []string{"LIFELINE_TEST_SERVE=" + nucIP + ":3389", "LIFELINE_TEST_BANNER=NUC-RDP"}, os.Args[0])
	s.piSSHD = sshtest.StartSSHD(t, sshtest.SSHDOptions{AuthorizedKeys: s.operator.AuthorizedLine("", "alice"), Listen: "127.0.0.1:22", NetNS: s.ns("pi")})
	if out, err := s.try("pi", append([]string{"env"}, append(s.netEnv, bin("lifeline-agent"), "netsetup", "apply")...)...); err != nil {
		t.Fatalf("netsetup apply: %v\n%s", err, out)
	}
	s.agent = s.start("pi", s.agentEnv, bin("lifeline-agent"))

	// The operator's ssh_config, host keys checked at both hops.
	known := filepath.Join(d, "operator_known_hosts")
	os.WriteFile(known, []byte(bastionKnown+"\n"+s.piSSHD.KnownHostsLine("pi")+"\n"), 0o600)
	s.sshConfig = sshtest.OperatorConfig(t, d, bastionIP, 2222, s.operator.Path, known)
	s.waitTargets(t, "pi:22", "nuc:3389")
	return s
}

func (s *siteWorld) startBastion(t testing.TB) {
	s.bastion = s.start("cloud", s.bastionEnv, bin("lifeline-bastion"))
	sshtest.Eventually(t, 15*time.Second, func() bool { return strings.Contains(s.bastion.Output(), "bastion listening") },
		"bastion did not start:\n%s", s.bastion.Output)
}

// ssh runs stock OpenSSH in the operator namespace.
func (s *siteWorld) ssh(args ...string) (string, error) {
	return s.try("operator", append([]string{"ssh", "-F", s.sshConfig}, args...)...)
}

// status asks the bastion from the operator's second address, which is in
// LIFELINE_QUIET_FROM: polls are audited but not texted, so they neither
// flood the owner's phone nor use up the SMS rate limit.
func (s *siteWorld) status() string {
	out, _ := s.ssh("-b", pollerIP, "bastion", "status")
	return out
}

func (s *siteWorld) waitTargets(t testing.TB, targets ...string) {
	t.Helper()
	sshtest.Eventually(t, 40*time.Second, func() bool {
		st := s.status()
		for _, t := range targets {
			if online(st, t) == nil {
				return false
			}
		}
		return true
	}, "targets %v never registered\nstatus:\n%s\nagent:\n%s\nbastion:\n%s", targets, s.status, s.agent.Output, s.bastion.Output)
}

// waitSMS waits for a text containing every substring and returns it.
func (s *siteWorld) waitSMS(t testing.TB, timeout time.Duration, subs ...string) string {
	t.Helper()
	var found string
	sshtest.Eventually(t, timeout, func() bool {
		for _, l := range sshtest.Lines(s.twilio.Output()) {
			if !strings.Contains(l, " SMS ") {
				continue
			}
			ok := true
			for _, sub := range subs {
				ok = ok && strings.Contains(l, sub)
			}
			if ok {
				found = l
				return true
			}
		}
		return false
	}, "no SMS with %q; texts so far:\n%s\nbastion:\n%s", subs, s.twilio.Output, s.bastion.Output)
	return found
}

func (s *siteWorld) countSMS(sub string) int {
	n := 0
	for _, l := range sshtest.Lines(s.twilio.Output()) {
		if strings.Contains(l, " SMS ") && strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

func (s *siteWorld) jump(t *testing.T) {
	t.Helper()
	out, err := s.ssh("pi", "echo", "jump-ok")
	if err != nil || !strings.Contains(out, "jump-ok") {
		t.Fatalf("ssh -J bastion pi: %v\n%s\nagent:\n%s", err, out, s.agent.Output())
	}
}

// TestSiteInABox runs the scenarios of the worst day, in order, on one site.
func TestSiteInABox(t *testing.T) {
	s := startSite(t)

	t.Run("1 jump through the CGNAT with host keys checked", func(t *testing.T) {
		out, err := s.ssh("pi", "ip -4 -o addr show wwan0; echo from-the-pi")
		if err != nil || !strings.Contains(out, "from-the-pi") || !strings.Contains(out, piHotspotIP) {
			t.Fatalf("ssh -J bastion pi: %v\n%s", err, out)
		}
		// The bastion saw the agent from the carrier's public address, not the Pi's.
		if st := s.status(); !strings.Contains(st, carrierOut+":") {
			t.Fatalf("agent not seen behind the CGNAT:\n%s", st)
		}
	})

	t.Run("2 the LAN device two ways", func(t *testing.T) {
		// Through the Pi's own sshd: ssh -J bastion -L.
		fwd := s.start("operator", nil, "ssh", "-F", s.sshConfig, "-N", "-o", "ExitOnForwardFailure=yes",
			"-L", "127.0.0.1:13389:"+nucIP+":3389", "pi")
		var out string
		sshtest.Eventually(t, 20*time.Second, func() bool {
			out, _ = s.try("operator", "env", "LIFELINE_TEST_DIAL=127.0.0.1:13389", os.Args[0])
			return strings.Contains(out, "NUC-RDP")
		}, "no answer through ssh -L; ssh said:\n%s", fwd.Output)
		// The NUC sees the Pi's LAN address (the Pi's sshd dialled it).
		if !strings.Contains(out, piLANIP) {
			t.Errorf("via -L the NUC saw %q, want the Pi's LAN address", out)
		}
		fwd.Stop()
		// Through the bastion alone: the agent's named forward.
		out, err := s.ssh("-W", "nuc:3389", "bastion")
		if err != nil || !strings.Contains(out, "NUC-RDP") {
			t.Fatalf("ssh -W nuc:3389 bastion: %v\n%s", err, out)
		}
	})

	t.Run("3 login SMS and the link report in status", func(t *testing.T) {
		sms := s.waitSMS(t, 20*time.Second, "login", "alice@laptop", operatorIP, "cloud-bastion")
		t.Logf("login text: %s", sms)
		sshtest.Eventually(t, 60*time.Second, func() bool {
			st, _ := s.ssh("-b", pollerIP, "bastion", "status", "--json")
			return strings.Contains(st, carrierISP) && strings.Contains(st, `"verdict": "ok"`)
		}, "no ok link report with ISP %q in status --json:\n%s\nagent:\n%s", carrierISP, s.status, s.agent.Output)
	})

	t.Run("4 hotspot black-holed past AGENT_DOWN_AFTER, then back", func(t *testing.T) {
		downBefore := s.countSMS("SITE DOWN")
		s.blackhole(true)
		sshtest.Eventually(t, 40*time.Second, func() bool { return s.countSMS("SITE DOWN") > downBefore },
			"no new SITE DOWN text; texts:\n%s", s.twilio.Output)
		backBefore := s.countSMS("site back")
		s.blackhole(false)
		s.waitTargets(t, "pi:22", "nuc:3389")
		sshtest.Eventually(t, 40*time.Second, func() bool { return s.countSMS("site back") > backBefore },
			"no new site-back text; texts:\n%s", s.twilio.Output)
		s.jump(t)
	})

	t.Run("5 the carrier forgets its NAT mappings", func(t *testing.T) {
		before := s.status()
		s.in("carrier", "conntrack", "-F")
		// The tunnel is found dead and replaced: the agent's address changes
		// (new port), exactly one registration per name, and the jump works.
		sshtest.Eventually(t, 40*time.Second, func() bool {
			st := s.status()
			return st != before && strings.Count(st, "pi:22 ") == 1 && addrOf(st, "pi:22") != "" && addrOf(st, "pi:22") != addrOf(before, "pi:22")
		}, "tunnel not replaced after conntrack -F\nbefore:\n%s\nnow:\n%s\nagent:\n%s", before, s.status, s.agent.Output)
		s.jump(t)
	})

	t.Run("6 bastion restarted", func(t *testing.T) {
		down, back := s.countSMS("SITE DOWN"), s.countSMS("site back")
		s.bastion.Stop()
		restarted := time.Now()
		s.startBastion(t)
		s.waitTargets(t, "pi:22", "nuc:3389")
		t.Logf("agent back %s after the bastion restarted", time.Since(restarted).Round(time.Millisecond))
		if st := s.status(); strings.Count(st, "pi:22 ") != 1 || strings.Count(st, "nuc:3389 ") != 1 {
			t.Fatalf("stale or duplicate names after restart:\n%s", st)
		}
		s.jump(t)
		// A planned restart (an upgrade, the maintenance window's reboot) is
		// invisible: past LIFELINE_AGENT_DOWN_AFTER (6s here), no text.
		time.Sleep(time.Until(restarted.Add(8 * time.Second)))
		if d, b := s.countSMS("SITE DOWN"), s.countSMS("site back"); d != down || b != back {
			t.Fatalf("a bastion restart was texted (site down %d -> %d, site back %d -> %d):\n%s", down, d, back, b, s.twilio.Output())
		}
	})

	t.Run("7 traffic pushed out the wrong uplink", func(t *testing.T) {
		// The Pi's default route now points at the main router (another ISP).
		// netsetup's host route keeps the tunnel on the hotspot; the link
		// check follows the default route and reports the wrong ISP.
		s.in("pi", "ip", "route", "replace", "default", "via", mainLANIP)
		s.waitSMS(t, 60*time.Second, "LINK FAILED", mainISP)
		s.jump(t)
		s.in("pi", "ip", "route", "replace", "default", "via", carrierIn)
		s.waitSMS(t, 60*time.Second, "link ok again", carrierISP)
	})

	t.Run("8 hostile attempts refused while a legitimate session works", func(t *testing.T) {
		// A legitimate session stays open throughout.
		legit := s.start("operator", nil, "ssh", "-F", s.sshConfig, "pi", "for i in $(seq 1 60); do echo tick-$i; sleep 0.5; done")
		sshtest.Eventually(t, 20*time.Second, func() bool { return strings.Contains(legit.Output(), "tick-1") }, "legit session did not start:\n%s", legit.Output)
		hostile := [][]string{
			{"-W", nucIP + ":3389", "bastion"},      // open proxy to a LAN address
			{"-W", "169.254.169.254:80", "bastion"}, // cloud metadata
			{"-W", bastionIP + ":2222", "bastion"},  // itself by address
			{"-W", "localhost:22", "bastion"},       // itself by name
			{"-W", "nas:445", "bastion"},            // a name nobody registered
			{"bastion"},                             // a shell
			{"bastion", "cat", "/etc/shadow"},       // a command
			{"-N", "-o", "ExitOnForwardFailure=yes", "-R", "pi:22:127.0.0.1:22", "bastion"}, // an operator registering a name
		}
		for _, args := range hostile {
			if out, err := s.ssh(args...); err == nil {
				t.Errorf("ssh %v was allowed:\n%s", args, out)
			}
		}
		// The agent's key used as an operator: refused too.
		agentKey := filepath.Join(s.dir, "agent", "key")
		if out, err := s.try("operator", "ssh", "-F", "/dev/null", "-i", agentKey, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "UserKnownHostsFile="+filepath.Join(s.dir, "operator_known_hosts"), "-o", "StrictHostKeyChecking=yes",
			"-p", "2222", "-W", "pi:22", bastionIP); err == nil || !strings.Contains(out, "forwarding failed") {
			t.Errorf("the agent key opened a jump:\n%s", out)
		}
		// Still registered once, and the legitimate session kept ticking.
		if st := s.status(); strings.Count(st, "pi:22 ") != 1 {
			t.Errorf("registrations disturbed:\n%s", st)
		}
		if err := legit.Cmd.Wait(); err != nil || !strings.Contains(legit.Output(), "tick-60") {
			t.Errorf("legitimate session broke: %v\n%s", err, legit.Output())
		}
		audit, _ := os.ReadFile(filepath.Join(s.dir, "bastion", "audit.jsonl"))
		for _, want := range []string{nucIP + ":3389", "169.254.169.254:80", "nas:445", "localhost:22"} {
			if !strings.Contains(string(audit), want) {
				t.Errorf("refusal of %s not in the audit log", want)
			}
		}
	})
}

// addrOf is the address target is online from in the text status ("" when
// it is not online).
func addrOf(status, target string) string {
	if f := online(status, target); f != nil {
		return f[5]
	}
	return ""
}
