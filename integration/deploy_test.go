//go:build integration

package integration

// The README's deploy steps, run as written. Two booted Debian 12
// containers (internal/nspawn), each in a namespace of this test: the jump
// host in "cloud" with the fake Twilio and speedtest (this test process),
// the Pi behind a carrier NAT, and an operator with stock ssh. The commands
// are README.md's own "## Deploy" blocks (readme_deploy_test.go extracts
// and checks them), placeholders substituted, run in order where each
// block says; what a reader copies from one machine to another (the jump
// host's known_hosts line, the agent's line, the Pi's known_hosts line)
// the test copies from that command's output.
//
//	+------------------------------ ll<pid>-dcloud, bridge br0 ----------------------------+
//	| container "jump": lifeline-bastion.deb   203.0.113.10:2222                             |
//	| fake Twilio 203.0.113.20:8089, fake speedtest 203.0.113.20:8080   198.51.100.1 (gw)   |
//	+------------------+-------------------------------------------------+-----------------+
//	                   | 203.0.113.1 out0                                | 198.51.100.20 eth0
//	+------------------+-----------------+                 +-------------+-----------------+
//	| ll<pid>-dcarrier: CGNAT            |                 | ll<pid>-dop: operator         |
//	| masquerade out0                    |                 | stock ssh, $HOME a temp dir   |
//	+------------------+-----------------+                 +-------------------------------+
//	                   | 100.64.0.1 pi0
//	                   | 100.64.0.2 wwan0, default route
//	+------------------+-----------------+
//	| ll<pid>-dpi: container "pi"        |
//	| lifeline-agent.deb, sshd :22       |
//	+------------------------------------+

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
	"github.com/lifeline-dev/lifeline/internal/nspawn"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

const (
	deployVersion = "0.0.0+test"
	deployTwilio  = servicesIP + ":8089"
	deploySpeed   = servicesIP + ":8080"
	deployFrom    = "+15551230000"
	deployTo      = "+15551230001"
	// deployCmdTimeout bounds one README command (apt install, a doctor).
	deployCmdTimeout = 90 * time.Second
)

// deployPreamble runs before every command in a container: the tree has
// no sudo and commands run as root already; a reader starts in their home.
const deployPreamble = `sudo() { "$@"; }
cd ~ || exit 1
`

// TestDeployAsDocumented deploys lifeline by README.md's "## Deploy"
// steps on two booted Debian 12 machines and an operator, then checks what
// the README promises: `ssh -J bastion pi` works with host keys checked at
// both hops, the login is texted, both doctors pass, and both services
// run as their packages ship them.
func TestDeployAsDocumented(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the packages and boots two containers: not in -short")
	}
	sshtest.NeedRoot(t)
	sshtest.Need(t, "ip", "nft", "make", "dpkg-deb", "ssh", "unshare", "mount")
	nspawn.Need(t)
	t.Parallel()
	began := time.Now()
	step := func(what string) { t.Logf("+%s %s", time.Since(began).Round(100*time.Millisecond), what) }

	blocks := readmeDeploy(t)
	debs := unitBuildDebs(t)
	tree := nspawn.Tree(t)
	step("packages built, tree ready")

	site := newDeploySite(t)
	twilio := deployTwilioFake(t, site.ns("cloud"), deployTwilio)
	unitSpeedtest(t, site.ns("cloud"), deploySpeed)

	// The operator's computer: a home with a key, as the README assumes.
	home := t.TempDir()
	if err := os.Mkdir(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	opKey := sshtest.NewKey(t, filepath.Join(home, ".ssh"), "id_ed25519")
	opLine := opKey.AuthorizedLine("", "alice@laptop")
	if err := os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519.pub"), []byte(opLine+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	jump := nspawn.Boot(t, nspawn.Options{Name: "jump", NetNSPath: "/run/netns/" + site.ns("cloud"), Tree: tree})
	pi := nspawn.Boot(t, nspawn.Options{Name: "pi", NetNSPath: "/run/netns/" + site.ns("pi"), Tree: tree})
	step("both machines booted")
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, j := range []struct {
			m     *nspawn.Machine
			units []string
		}{{jump, []string{"lifeline-bastion"}}, {pi, []string{"lifeline-agent", "ssh"}}} {
			args := []string{"journalctl", "-b", "--no-pager", "-o", "short-precise", "-n", "400"}
			for _, u := range j.units {
				args = append(args, "-u", u)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			out, err := j.m.Run(ctx, args...)
			cancel()
			t.Logf("journal of %s on %s (err %v):\n%s", strings.Join(j.units, ", "), j.m.Name(), err, out)
		}
	})
	// The packages are where a reader who downloaded them has them: home.
	for _, c := range []struct {
		m   *nspawn.Machine
		pkg string
	}{{jump, "lifeline-bastion"}, {pi, "lifeline-agent"}} {
		c.m.CopyIn(debs[c.pkg], "/root/"+filepath.Base(debs[c.pkg]))
	}

	values := map[string]string{
		// The test's jump host has the README's example address.
		"203.0.113.10":                       bastionIP,
		"lifeline-bastion_VERSION_amd64.deb": filepath.Base(debs["lifeline-bastion"]),
		"lifeline-agent_VERSION_armhf.deb":   filepath.Base(debs["lifeline-agent"]),
		"<Account SID>":                      twilio.AccountSID(),
		"<Auth Token>":                       twilio.AuthToken(),
		"+15005550006":                       deployFrom,
		"+447700900123":                      deployTo,
		"<operator key>":                     opLine,
	}
	run := map[string]func(ctx context.Context, cmd string) (string, string, error){
		placeJump:     func(ctx context.Context, cmd string) (string, string, error) { return deployInMachine(ctx, jump, cmd) },
		placePi:       func(ctx context.Context, cmd string) (string, string, error) { return deployInMachine(ctx, pi, cmd) },
		placeOperator: func(ctx context.Context, cmd string) (string, string, error) { return site.operator(ctx, home, cmd) },
	}
	outputs := map[string]string{} // kind -> stdout of its last run

	for _, b := range blocks {
		cmds, err := b.commands()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds {
			cmd, err := substituteDeploy(c.text, values)
			if err != nil {
				t.Fatalf("README.md:%d: %v", c.line, err)
			}
			k, err := classifyDeploy(c.place, cmd)
			if err != nil {
				t.Fatalf("README.md:%d: %v", c.line, err)
			}
			switch k.name {
			case "operator-jump":
				// A shell on the Pi, non-interactive: BatchMode, the Pi's
				// hop checked strictly (the jump hop is, by the README's
				// ssh_config block), and a command to show where it landed.
				site.waitRegistered(t, pi)
				cmd = strings.Replace(cmd, "ssh ", "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=15 ", 1) + " 'hostname; id -un'"
			case "operator-status":
				cmd = strings.Replace(cmd, "ssh ", "ssh -o BatchMode=yes -o ConnectTimeout=15 ", 1)
			}
			ctx, cancel := context.WithTimeout(t.Context(), deployCmdTimeout)
			t0 := time.Now()
			stdout, stderr, err := run[c.place](ctx, cmd)
			cancel()
			t.Logf("%s$ %s  (README.md:%d, %s, %s)\n%s%s", c.place, firstLine(cmd), c.line, k.name,
				time.Since(t0).Round(10*time.Millisecond), indent(stdout, "  | "), indent(stderr, "  ! "))
			if err != nil {
				t.Fatalf("README.md:%d, on the %s: %s: %v\nstdout:\n%s\nstderr:\n%s", c.line, c.place, firstLine(cmd), err, stdout, stderr)
			}
			outputs[k.name] = stdout
			// What a reader copies to the next machine.
			switch k.name {
			case "bastion-hostkey":
				values["<bastion known_hosts line>"] = deployCopy(t, stdout, "["+bastionIP+"]:2222 ssh-ed25519 ", "lifeline-bastion hostkey")
			case "agent-pair":
				values["<agents line>"] = deployCopy(t, stdout, `permitlisten="pi:22" ssh-ed25519 `, "lifeline-agent pair")
			case "pi-hostkey":
				values["<pi known_hosts line>"] = deployCopy(t, stdout, "pi ssh-ed25519 ", "the Pi's host key")
			}
			// The internet's stand-ins, which a real machine would not
			// need: the test's only additions to the configuration.
			switch k.name {
			case "bastion-install":
				deployAppend(t, jump, "/etc/lifeline/bastion.env", "LIFELINE_TWILIO_URL=http://"+deployTwilio)
			case "agent-install":
				deployAppend(t, pi, "/etc/lifeline/agent.env", "LIFELINE_SPEEDTEST_URL=http://"+deploySpeed)
			}
		}
	}
	step("README deploy steps done")
	for _, p := range deployPlaceholders {
		if _, ok := values[p.token]; !ok {
			t.Errorf("the placeholder %s (%s) never got a value", p.token, p.what)
		}
	}

	// ssh -J bastion pi landed on the Pi's own sshd, as root (the account
	// whose authorized_keys the README's Pi block filled, as root here).
	if got := sshtest.Lines(outputs["operator-jump"]); len(got) != 2 || got[0] != "pi" || got[1] != "root" {
		t.Errorf("ssh -J bastion pi ran on %q, want [pi root]", got)
	}
	// Both hops were checked strictly: the jump host by the README's block.
	gctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	g, _, err := site.operator(gctx, home, "ssh -G bastion")
	cancel()
	if err != nil || !strings.Contains(g, "\nstricthostkeychecking true\n") {
		t.Errorf("ssh -G bastion (%v): StrictHostKeyChecking is not yes for the jump host:\n%s", err, g)
	}
	known, err := os.ReadFile(filepath.Join(home, ".ssh", "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	// Nothing was learnt on first use: the README's two lines are first.
	// (The Pi's sshd may add its other host key types after them, signed
	// by the pinned key: OpenSSH's UpdateHostKeys.)
	if want := values["<bastion known_hosts line>"] + "\n" + values["<pi known_hosts line>"] + "\n"; !strings.HasPrefix(string(known), want) {
		t.Errorf("the operator's known_hosts is not what the README wrote:\n%q\nwant it to start with:\n%q", known, want)
	}
	if st := outputs["operator-status"]; !strings.Contains(st, "pi:22") || !strings.Contains(st, "online") {
		t.Errorf("ssh bastion status does not show pi:22 online:\n%s", st)
	}

	// The login was texted.
	fp := keyfile.Fingerprint(opKey.Signer.PublicKey())
	var texts []string
	sshtest.Eventually(t, 20*time.Second, func() bool {
		texts = texts[:0]
		found := false
		for _, m := range twilio.Messages() {
			texts = append(texts, fmt.Sprintf("%s -> %s: %s", m.From, m.To, m.Body))
			if m.From == deployFrom && m.To == deployTo && strings.Contains(m.Body, "login") &&
				strings.Contains(m.Body, fp) && strings.Contains(m.Body, operatorIP) {
				found = true
			}
		}
		return found
	}, "no text of the operator's login (%s from %s) reached the fake Twilio; it got:\n%s", fp, operatorIP,
		func() string { return strings.Join(texts, "\n") })
	t.Logf("texts: %s", strings.Join(texts, " | "))

	// Both doctors: only ✓ (and skipped lines), exit 0 (the run above).
	for _, d := range []string{"bastion-doctor", "agent-doctor"} {
		deployDoctorClean(t, d, outputs[d])
	}

	// Both services run, from their packages' units, no drop-ins.
	for _, u := range []struct {
		m    *nspawn.Machine
		unit string
	}{{jump, "lifeline-bastion"}, {pi, "lifeline-agent"}} {
		deployUnitAsShipped(t, u.m, u.unit)
	}
	step("checked")
}

// deploySite is the topology drawn at the top of this file.
type deploySite struct {
	t      *testing.T
	prefix string
}

func (s *deploySite) ns(role string) string { return s.prefix + "-d" + role }

func newDeploySite(t *testing.T) *deploySite {
	t.Helper()
	s := &deploySite{t: t, prefix: fmt.Sprintf("ll%d", os.Getpid())}
	for _, r := range []string{"cloud", "carrier", "pi", "op"} {
		ns := s.ns(r)
		unitHost(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		unitHost(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	cloud, carrier, pi, op := s.ns("cloud"), s.ns("carrier"), s.ns("pi"), s.ns("op")
	unitHost(t, "ip", "-n", cloud, "link", "add", "br0", "type", "bridge")
	unitHost(t, "ip", "-n", cloud, "link", "set", "br0", "up")
	for _, a := range []string{bastionIP + "/24", servicesIP + "/24", "198.51.100.1/24"} {
		unitHost(t, "ip", "-n", cloud, "addr", "add", a, "dev", "br0")
	}
	// veth pairs, made in their first namespace with their final names.
	for _, v := range []struct{ nsA, ifA, addrA, nsB, ifB, addrB string }{
		{carrier, "out0", carrierOut + "/24", cloud, "c-carrier", ""},
		{op, "eth0", operatorIP + "/24", cloud, "c-op", ""},
		{pi, "wwan0", piHotspotIP + "/24", carrier, "pi0", carrierIn + "/24"},
	} {
		unitHost(t, "ip", "-n", v.nsA, "link", "add", v.ifA, "type", "veth", "peer", "name", v.ifB, "netns", v.nsB)
		unitHost(t, "ip", "-n", v.nsA, "addr", "add", v.addrA, "dev", v.ifA)
		if v.addrB == "" {
			unitHost(t, "ip", "-n", v.nsB, "link", "set", v.ifB, "master", "br0")
		} else {
			unitHost(t, "ip", "-n", v.nsB, "addr", "add", v.addrB, "dev", v.ifB)
		}
		unitHost(t, "ip", "-n", v.nsA, "link", "set", v.ifA, "up")
		unitHost(t, "ip", "-n", v.nsB, "link", "set", v.ifB, "up")
	}
	unitHost(t, "ip", "-n", op, "route", "add", "default", "via", "198.51.100.1")
	unitHost(t, "ip", "-n", pi, "route", "add", "default", "via", carrierIn)
	// The carrier: a CGNAT. The Pi reaches the jump host only through it,
	// and nothing reaches the Pi from outside.
	unitHost(t, "ip", "netns", "exec", carrier, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	unitHost(t, "ip", "netns", "exec", carrier, "nft",
		"add table ip cgnat; add chain ip cgnat post { type nat hook postrouting priority 100; }; add rule ip cgnat post oifname out0 masquerade random")
	return s
}

// operator runs cmd as the operator: stock ssh in the operator namespace,
// root with home as its home. OpenSSH reads ~/.ssh from the password
// database, not $HOME, so a private mount namespace puts home on /root.
func (s *deploySite) operator(ctx context.Context, home, cmd string) (string, string, error) {
	c := exec.CommandContext(ctx, "ip", "netns", "exec", s.ns("op"),
		"unshare", "--mount", "--propagation", "private",
		"/bin/sh", "-c", `mount --bind "$1" /root && cd /root && exec /bin/sh -c "$2"`, "sh", home, cmd)
	c.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root", "LANG=C.UTF-8", "USER=root", "LOGNAME=root"}
	var out, errb sshtest.Buffer
	c.Stdout, c.Stderr = &out, &errb
	c.WaitDelay = 5 * time.Second
	err := c.Run()
	return out.String(), errb.String(), err
}

// waitRegistered waits until the Pi's agent says its name is registered
// (systemctl status lifeline-agent), as a reader would look before the
// first jump.
func (s *deploySite) waitRegistered(t *testing.T, pi *nspawn.Machine) {
	t.Helper()
	var status string
	t0 := time.Now()
	sshtest.Eventually(t, 30*time.Second, func() bool {
		out, err := pi.Run(t.Context(), "systemctl", "show", "-p", "StatusText", "--value", "lifeline-agent")
		status = strings.TrimSpace(out)
		return err == nil && strings.Contains(status, "pi:22 registered")
	}, "the agent did not register pi:22; its status: %q", func() string { return status })
	t.Logf("agent status after %s: %s", time.Since(t0).Round(10*time.Millisecond), status)
}

// deployInMachine runs one README command in m as root, from root's home.
func deployInMachine(ctx context.Context, m *nspawn.Machine, cmd string) (stdout, stderr string, err error) {
	const errFile = "/run/lifeline-deploy.stderr"
	stdout, err = m.Run(ctx, "/bin/sh", "-c", deployPreamble+"exec 2>"+errFile+"\n"+cmd)
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e, _ := m.Run(c, "cat", errFile)
	return stdout, e, err
}

// deployCopy is the line of out a reader copies: the one starting with
// prefix. It fails the test when there is none, or more than one.
func deployCopy(t *testing.T, out, prefix, what string) string {
	t.Helper()
	var found []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			found = append(found, strings.TrimSpace(l))
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s printed %d lines starting with %q, want 1 to copy:\n%s", what, len(found), prefix, out)
	}
	return found[0]
}

// deployAppend adds a line to a configuration file in m.
func deployAppend(t *testing.T, m *nspawn.Machine, file, line string) {
	t.Helper()
	if out, err := m.Run(t.Context(), "/bin/sh", "-c", `printf '%s\n' "$1" >>"$2"`, "sh", line, file); err != nil {
		t.Fatalf("append to %s: %v\n%s", file, err, out)
	}
	t.Logf("%s: test-only line added to %s: %s", m.Name(), file, line)
}

// deployDoctorClean checks a doctor's output: only passed (✓) and skipped
// (-) checks, then its summary.
func deployDoctorClean(t *testing.T, kind, out string) {
	t.Helper()
	lines := sshtest.Lines(out)
	if len(lines) < 5 {
		t.Errorf("%s printed only:\n%s", kind, out)
		return
	}
	passed := 0
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "✓ "):
			passed++
		case strings.HasPrefix(l, "- "):
		case i == len(lines)-1 && (strings.HasPrefix(l, "all ") || strings.HasPrefix(l, "no problem found")):
		default:
			t.Errorf("%s: not a passed or skipped check: %q\n%s", kind, l, out)
		}
	}
	t.Logf("%s: %d checks passed", kind, passed)
}

// deployUnitAsShipped checks that unit is active, from its package's unit
// file with no drop-in, sandboxed as that file says.
func deployUnitAsShipped(t *testing.T, m *nspawn.Machine, unit string) {
	t.Helper()
	out, err := m.Run(t.Context(), "systemctl", "is-active", unit)
	if strings.TrimSpace(out) != "active" {
		t.Errorf("%s: systemctl is-active %s: %q (%v)", m.Name(), unit, strings.TrimSpace(out), err)
	}
	out, err = m.Run(t.Context(), "systemctl", "show", unit, "-p", "FragmentPath,DropInPaths,UnitFileState,NRestarts,MainPID,User")
	if err != nil {
		t.Fatal(err)
	}
	props := map[string]string{}
	for _, l := range sshtest.Lines(out) {
		k, v, _ := strings.Cut(l, "=")
		props[k] = v
	}
	want := map[string]string{"DropInPaths": "", "UnitFileState": "enabled", "NRestarts": "0", "User": "lifeline"}
	for k, v := range want {
		if props[k] != v {
			t.Errorf("%s: %s %s=%q, want %q", m.Name(), unit, k, props[k], v)
		}
	}
	// The package's file (systemd may name it by /lib, a link to /usr/lib).
	shipped := "/usr/lib/systemd/system/" + unit + ".service"
	real, err := m.Run(t.Context(), "readlink", "-f", props["FragmentPath"])
	if strings.TrimSpace(real) != shipped {
		t.Errorf("%s: %s is loaded from %s (%s, %v), not the package's %s", m.Name(), unit, props["FragmentPath"], strings.TrimSpace(real), err, shipped)
	}
	if owner, err := m.Run(t.Context(), "dpkg", "-S", shipped); err != nil || !strings.HasPrefix(owner, unit+": ") {
		t.Errorf("%s: dpkg -S %s: %q %v", m.Name(), shipped, owner, err)
	}
	// The sandbox, as the kernel sees the process.
	status, err := m.Run(t.Context(), "cat", "/proc/"+props["MainPID"]+"/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "Seccomp:\t2"} {
		if !strings.Contains(status, "\n"+w+"\n") {
			t.Errorf("%s: %s (PID %s) is not sandboxed as shipped: no %q in its /proc status", m.Name(), unit, props["MainPID"], w)
		}
	}
}

// deployTwilioFake serves the fake Twilio from this process on addr in the
// network namespace ns.
func deployTwilioFake(t *testing.T, ns, addr string) *twiliofake.Server {
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
	fake := twiliofake.New(twiliofake.Config{})
	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		fake.Release()
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("fake Twilio: %v", err)
		}
	})
	return fake
}

func firstLine(s string) string {
	first, _, more := strings.Cut(s, "\n")
	if more {
		return first + " …"
	}
	return first
}

func indent(s, prefix string) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	return prefix + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+prefix) + "\n"
}
