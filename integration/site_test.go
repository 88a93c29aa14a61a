//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"slices"
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
	second     *sshtest.Process // the second bastion, with siteOptions.secondBastion
	dns        *sshtest.Process // dnsmasq: the main link's probe target
	agent      *sshtest.Process
	twilio     *sshtest.Process
	speedtest  *sshtest.Process
	piSSHD     *sshtest.SSHD
	operator   sshtest.Key
	sshConfig  string
	bastionEnv []string
	secondEnv  []string
	agentEnv   []string
	netEnv     []string
}

// siteOptions change the site startSite builds.
type siteOptions struct {
	// secondBastion starts a second jump host (secondBastionIP, named
	// second-bastion, its own state, the same keys and the same fake
	// Twilio) and lists it second in the agent's LIFELINE_BASTION.
	secondBastion bool
}

const (
	// The main link's watch: the agent asks dnsmasq in the cloud through
	// the site's main router every second and calls the main link down
	// after 4 s of failures.
	mainEvery = time.Second
	// secondSMSTo is the number the second bastion texts.
	secondSMSTo   = "+15551234568"
	mainDownAfter = 4 * time.Second
)

const (
	carrierISP = "Carrier Mobile"
	mainISP    = "Main Street Broadband"
)

func startSite(t testing.TB, opts ...siteOptions) *siteWorld {
	t.Helper()
	var o siteOptions
	if len(opts) > 0 {
		o = opts[0]
	}
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
	// A resolver on the internet, as the main link's probe target: a real
	// DNS server (dnsmasq) answering the probe's question itself.
	s.dns = s.start("cloud", nil, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--listen-address="+resolverIP, "--bind-interfaces", "--port=53", "--address=/a.root-servers.net/198.41.0.4",
		"--user=root", "--pid-file=", "--log-facility=-")
	bastions := bastionIP + ":2222"
	if o.secondBastion {
		bastions += "," + secondBastionIP + ":2222"
	}
	s.bastionEnv = []string{
		"LIFELINE_LISTEN=" + bastionIP + ":2222", "LIFELINE_NAME=cloud-bastion",
		"LIFELINE_HOST_KEY=" + filepath.Join(d, "bastion", "host_key"), "LIFELINE_STATE_DIR=" + filepath.Join(d, "bastion"),
		"LIFELINE_AGENTS=" + filepath.Join(d, "agents"), "LIFELINE_OPERATORS=" + filepath.Join(d, "operators"),
		"TWILIO_ACCOUNT_SID=AC00000000000000000000000000000001", "TWILIO_AUTH_TOKEN=sitetoken00000000000000000000000",
		"LIFELINE_SMS_FROM=+15005550006", "LIFELINE_SMS_TO=+15551234567", "LIFELINE_TWILIO_URL=http://" + servicesIP + ":8089",
		"LIFELINE_AGENT_DOWN_AFTER=6s", "LIFELINE_REPORT_EVERY=1s", "LIFELINE_QUIET_FROM=" + pollerIP + "/32", "LIFELINE_AGENT_DEAD_AFTER=3s", "LIFELINE_AGENT_QUIET=1s", "LIFELINE_SMS_PER_MINUTE=60",
	}
	main := []string{"LIFELINE_MAIN_GATEWAY=" + mainLANIP, "LIFELINE_MAIN_TARGETS=dns://" + resolverIP}
	s.agentEnv = []string{
		"LIFELINE_BASTION=" + bastions,
		"LIFELINE_KEY=" + filepath.Join(d, "agent", "key"), "LIFELINE_KNOWN_HOSTS=" + filepath.Join(d, "agent", "known_hosts"),
		"LIFELINE_FORWARDS=pi:22=127.0.0.1:22,nuc:3389=" + nucIP + ":3389", "LIFELINE_STATE_DIR=" + filepath.Join(d, "agent"),
		"LIFELINE_DEAD_AFTER=3s", "LIFELINE_BACKOFF_MAX=5s",
		"LIFELINE_CHECK_EVERY=8s", "LIFELINE_SPEEDTEST_URL=http://" + servicesIP + ":8080", "LIFELINE_EXPECT_ISP=carrier",
		"LIFELINE_MIN_DOWNLOAD=2Mbps", "LIFELINE_MAX_LATENCY=1s", "LIFELINE_CHECK_BUDGET=6MB", "LIFELINE_CHECK_DURATION=1s", "LIFELINE_CHECK_MONTHLY_BUDGET=0",
		"LIFELINE_MAIN_EVERY=" + mainEvery.String(), "LIFELINE_MAIN_DOWN_AFTER=" + mainDownAfter.String(),
	}
	s.agentEnv = append(s.agentEnv, main...)
	s.netEnv = []string{
		"LIFELINE_LAN_INTERFACE=eth0", "LIFELINE_UPLINK_GATEWAY=" + carrierIn, "LIFELINE_BASTION=" + bastions,
		"LIFELINE_SYSCTL_DIR=" + filepath.Join(d, "sysctl"), "LIFELINE_STATE_DIR=" + filepath.Join(d, "netsetup"),
	}
	s.netEnv = append(s.netEnv, main...)
	// Pairing, as the README says.
	pub, err := sshtest.Stdout(t.Context(), 20*time.Second, s.agentEnv, bin("lifeline-agent"), "pubkey")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "agents"), []byte(pub), 0o600)
	os.WriteFile(filepath.Join(d, "operators"), []byte(s.operator.AuthorizedLine("", "alice@laptop")+"\n"), 0o600)
	bastionKnown := knownHostsFor(bastionIP+":2222", bastionHostKey(t, s.bastionEnv))
	agentKnown := bastionKnown + "\n"
	if o.secondBastion {
		os.MkdirAll(filepath.Join(d, "second"), 0o700)
		s.secondEnv = append(slices.Clone(s.bastionEnv), "LIFELINE_LISTEN="+secondBastionIP+":2222", "LIFELINE_NAME=second-bastion",
			"LIFELINE_HOST_KEY="+filepath.Join(d, "second", "host_key"), "LIFELINE_STATE_DIR="+filepath.Join(d, "second"),
			// Another number, only so that the test tells the two bastions' texts apart.
			"LIFELINE_SMS_TO="+secondSMSTo)
		agentKnown += knownHostsFor(secondBastionIP+":2222", bastionHostKey(t, s.secondEnv)) + "\n"
	}
	os.WriteFile(filepath.Join(d, "agent", "known_hosts"), []byte(agentKnown), 0o600)
	s.startBastion(t)
	if o.secondBastion {
		s.startSecond(t)
	}

	// The site: the LAN device, the Pi's sshd, netsetup, the agent.
	s.start("lan", []string{"LIFELINE_TEST_SERVE=" + nucIP + ":3389", "LIFELINE_TEST_BANNER=NUC-RDP"}, os.Args[0])
	s.piSSHD = sshtest.StartSSHD(t, sshtest.SSHDOptions{AuthorizedKeys: s.operator.AuthorizedLine("", "alice"), Listen: "127.0.0.1:22", NetNS: s.ns("pi")})
	if out, err := s.try("pi", append([]string{"env"}, append(s.netEnv, bin("lifeline-agent"), "netsetup", "apply")...)...); err != nil {
		t.Fatalf("netsetup apply: %v\n%s", err, out)
	}
	s.agent = s.start("pi", s.agentEnv, bin("lifeline-agent"))

	// The operator's ssh_config, host keys checked at both hops.
	known := filepath.Join(d, "operator_known_hosts")
	os.WriteFile(known, []byte(agentKnown+s.piSSHD.KnownHostsLine("pi")+"\n"), 0o600)
	s.sshConfig = sshtest.OperatorConfig(t, d, bastionIP, 2222, s.operator.Path, known)
	s.waitTargets(t, "pi:22", "nuc:3389")
	return s
}

// startSecond starts the second bastion (siteOptions.secondBastion).
func (s *siteWorld) startSecond(t testing.TB) {
	s.second = s.start("cloud", s.secondEnv, bin("lifeline-bastion"))
	sshtest.Eventually(t, 15*time.Second, func() bool { return strings.Contains(s.second.Output(), "bastion listening") },
		"second bastion did not start:\n%s", s.second.Output)
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

	t.Run("9 the site's main internet fails, then comes back", func(t *testing.T) {
		downBefore, backBefore := s.countSMS("MAIN INTERNET DOWN"), s.countSMS("main internet back")
		s.cutMain(true)
		cut := time.Now()
		// The agent watches through the main router (host route to the
		// resolver via 192.168.1.1) and tells the owner through the
		// backup tunnel within LIFELINE_MAIN_DOWN_AFTER plus an interval
		// (and the text's delivery).
		sms := s.waitSMS(t, mainDownAfter+mainEvery+15*time.Second, "MAIN INTERNET DOWN since", "backup up", "ssh -J cloud-bastion pi")
		t.Logf("main-down text %s after the cut: %s", time.Since(cut).Round(100*time.Millisecond), sms)
		// The site stays reachable over the backup: the Pi and the LAN device.
		s.jump(t)
		if out, err := s.ssh("-W", "nuc:3389", "bastion"); err != nil || !strings.Contains(out, "NUC-RDP") {
			t.Fatalf("ssh -W nuc:3389 bastion while the main link is down: %v\n%s", err, out)
		}
		sshtest.Eventually(t, 10*time.Second, func() bool {
			st, _ := s.ssh("-b", pollerIP, "bastion", "status", "--json")
			return strings.Contains(st, `"main_link"`) && strings.Contains(st, "main_")
		}, "status --json does not show the main link down:\n%s", s.status)
		s.cutMain(false)
		s.waitSMS(t, 20*time.Second, "main internet back after")
		if d, b := s.countSMS("MAIN INTERNET DOWN")-downBefore, s.countSMS("main internet back")-backBefore; d != 1 || b != 1 {
			t.Errorf("main down texted %d times, back %d times; want once each:\n%s", d, b, s.twilio.Output())
		}
		s.jump(t)
	})
}

// TestTwoBastionsOneText: an agent with tunnels to two jump hosts has each
// site event texted once, by the first bastion of its list it is connected
// to, and by the second when the first is gone. Logins stay texted by the
// bastion that saw them.
func TestTwoBastionsOneText(t *testing.T) {
	s := startSite(t, siteOptions{secondBastion: true})
	secondStatus := func() string {
		out, _ := s.try("operator", "ssh", "-F", s.sshConfig, "-b", pollerIP, "-p", "2222", secondBastionIP, "status", "--json")
		return out
	}
	sshtest.Eventually(t, 40*time.Second, func() bool { return strings.Contains(secondStatus(), `"pi:22"`) },
		"the agent never registered with the second bastion:\n%s\nagent:\n%s", secondStatus, s.agent.Output)

	texts := func(sub string) (first, second int) {
		for _, l := range sshtest.Lines(s.twilio.Output()) {
			if !strings.Contains(l, " SMS ") || !strings.Contains(l, sub) {
				continue
			}
			if strings.Contains(l, "-> "+secondSMSTo+" ") {
				second++
			} else {
				first++
			}
		}
		return first, second
	}

	t.Run("main internet down and back: texted by the first bastion only", func(t *testing.T) {
		s.cutMain(true)
		s.waitSMS(t, mainDownAfter+mainEvery+15*time.Second, "MAIN INTERNET DOWN", "ssh -J cloud-bastion pi")
		// The second bastion got the report too (it shows it) but did not text it.
		sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(secondStatus(), `"main_link"`) },
			"the second bastion does not show the main link:\n%s", secondStatus)
		s.cutMain(false)
		s.waitSMS(t, 20*time.Second, "main internet back", "-> +15551234567 ")
		if f, sec := texts("MAIN INTERNET DOWN"); f != 1 || sec != 0 {
			t.Errorf("main down texted %d times by the first bastion and %d by the second; want 1 and 0:\n%s", f, sec, s.twilio.Output())
		}
	})

	t.Run("site down and back: one SITE DOWN, one site back", func(t *testing.T) {
		s.blackhole(true)
		s.waitSMS(t, 40*time.Second, "SITE DOWN")
		s.blackhole(false)
		s.waitTargets(t, "pi:22", "nuc:3389")
		s.waitSMS(t, 40*time.Second, "site back")
		sshtest.Eventually(t, 40*time.Second, func() bool { return strings.Contains(secondStatus(), `"pi:22"`) },
			"the agent did not come back to the second bastion:\n%s", secondStatus)
		if f, sec := texts("SITE DOWN"); f+sec != 1 {
			t.Errorf("SITE DOWN texted %d times by the first bastion and %d by the second; want once:\n%s", f, sec, s.twilio.Output())
		}
		if f, sec := texts("site back"); f+sec != 1 {
			t.Errorf("site back texted %d + %d times; want once:\n%s", f, sec, s.twilio.Output())
		}
	})

	t.Run("the first bastion gone: the second texts", func(t *testing.T) {
		s.bastion.Stop()
		s.cutMain(true)
		s.waitSMS(t, mainDownAfter+mainEvery+20*time.Second, "MAIN INTERNET DOWN", "ssh -J second-bastion pi")
		s.cutMain(false)
		s.waitSMS(t, 20*time.Second, "main internet back", "-> "+secondSMSTo+" ")
		if _, sec := texts("MAIN INTERNET DOWN"); sec != 1 {
			t.Errorf("the second bastion texted main down %d times; want once:\n%s", sec, s.twilio.Output())
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
