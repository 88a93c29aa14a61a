package doctor

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	"github.com/lifeline-dev/lifeline/agent/mainwatch"
	"github.com/lifeline-dev/lifeline/agent/netsetup"
	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// ServiceUser is the account lifeline-agent.service runs as (User= in the
// unit): the owner the key must have, the user the checks run as.
type ServiceUser struct {
	Name     string
	UID, GID int
	// Group is the name of GID ("" when unknown: Name is used).
	Group string
	// Err is why the account could not be looked up (nil: it exists).
	Err error
}

// Owner is user:group for chown.
func (u ServiceUser) Owner() string {
	if u.Group == "" {
		return u.Name + ":" + u.Name
	}
	return u.Name + ":" + u.Group
}

// Resolver looks up host names; *net.Resolver implements it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Dialer opens TCP connections; *net.Dialer implements it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Config is what New needs. The configurations are passed decoded (and
// possibly invalid): the first check reports their errors, the others use
// what could be read.
type Config struct {
	// EnvFile is the environment file that was read ("" for none); Vars
	// is how many variables it set.
	EnvFile string
	Vars    int

	// Agent is the agent's configuration as decoded; AgentErr is what
	// decoding and validating it said (nil: valid). AgentDecoded is false
	// when a value could not even be decoded: then the checks that need
	// it are skipped.
	Agent        config.Config
	AgentErr     error
	AgentDecoded bool
	// Checks is the link checks' configuration, ChecksErr its errors.
	Checks    linkcheck.Config
	ChecksErr error
	// Net is netsetup's configuration, nil when LIFELINE_LAN_INTERFACE is
	// not set (the Pi does no routing); NetErr its errors.
	Net    *netsetup.Config
	NetErr error

	// User is the service's account.
	User ServiceUser
	// Drop, when not nil, makes the process the service's user. Run calls
	// it once the Privileged checks are done; the result is the "checking
	// as" line. nil: the process already is who it will be.
	Drop func() error
	// KeyComment ends the agents-file line shown in fixes
	// (lifeline-agent@HOST, as `lifeline-agent pair` prints it).
	KeyComment string

	// The seams to the outside world; nil is the real system.
	Resolver Resolver
	// TargetDialer dials forward targets (a plain net.Dialer, like the
	// tunnel's). Bastions are always dialled like the tunnel does: a
	// net.Dialer bound to LIFELINE_INTERFACE.
	TargetDialer Dialer
	// NetStatus is netsetup's status (nil: netsetup.New(*Net).Status).
	NetStatus func(ctx context.Context) (netsetup.Report, error)
	// Route says how the kernel routes an address, for the main internet
	// watch's targets (nil: netsetup.Netlink{}.Get, ip route get).
	Route func(netip.Addr) (netsetup.Lookup, error)
	// MainProbe probes the main internet watch's targets once (nil: a
	// mainwatch.Watcher's ProbeOnce).
	MainProbe func(ctx context.Context, targets []mainwatch.Target) ([]mainwatch.Result, error)
	// JumpProgram finds outage mode's jump start program (nil:
	// outage.FindProgram).
	JumpProgram func() (string, error)
	// ResolvConf is the Pi's resolver configuration ("": /etc/resolv.conf).
	ResolvConf string
	// Unit says whether systemd runs this machine and the agent unit's
	// state (nil: /run/systemd/system and `systemctl is-active`).
	Unit func(ctx context.Context) (booted bool, state string, err error)
	// Clock tells the time certificates and the last link check are
	// judged by (nil: clock.Real).
	Clock clock.Clock

	// StepTimeout bounds each check (5s); Timeout all of them (90s).
	StepTimeout time.Duration
	Timeout     time.Duration
}

// Doctor is the checklist of one configuration. Create it with New, run
// it once with Run.
type Doctor struct {
	cfg     Config
	checks  []Check
	dropErr error
	closers []func() bool  // false: could not close (a step still runs)
	wg      sync.WaitGroup // goroutines of the bastion connections

	// Shared between the checks, in the order they run.
	key    *keyState
	pinned map[string]bool // bastion -> known_hosts has a line for it
}

// New builds the checklist for cfg.
func New(cfg Config) *Doctor {
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.TargetDialer == nil {
		cfg.TargetDialer = &net.Dialer{}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 90 * time.Second
	}
	if cfg.Unit == nil {
		cfg.Unit = systemdUnit
	}
	if cfg.Route == nil {
		cfg.Route = netsetup.Netlink{}.Get
	}
	if cfg.MainProbe == nil {
		cfg.MainProbe = probeOnce
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	d := &Doctor{cfg: cfg, key: &keyState{}, pinned: map[string]bool{}}
	d.checks = d.build()
	return d
}

func (d *Doctor) build() []Check {
	cs := []Check{
		{Name: "checking as the service's user", Run: d.checkUser},
		{Name: "configuration", Run: d.checkConfig},
	}
	if !d.cfg.AgentDecoded {
		cs = append(cs, Check{Name: "the other checks", Run: func(context.Context) Result {
			return Skipped("key, known_hosts, bastions and forwards", "not checked: the configuration does not decode (above)")
		}})
		return append(cs, d.systemChecks()...)
	}
	cs = append(cs,
		Check{Name: "key", Run: d.checkKey},
		Check{Name: "certificate", Run: d.checkCert},
		Check{Name: "known_hosts", Run: d.checkKnownHosts},
	)
	bastions, fwds := d.bastions(), d.forwards()
	if len(bastions) == 0 {
		cs = append(cs, Check{Name: "bastions", Run: func(context.Context) Result {
			return Skipped("bastions", "not checked: LIFELINE_BASTION is not valid (above)")
		}})
	}
	for _, b := range bastions {
		cs = append(cs, d.bastionChecks(b, fwds)...)
	}
	if len(fwds) == 0 {
		cs = append(cs, Check{Name: "forwards", Run: func(context.Context) Result {
			return Skipped("forward targets", "not checked: LIFELINE_FORWARDS is not valid (above)")
		}})
	}
	for _, f := range localFirst(fwds) {
		cs = append(cs, Check{Name: "target of " + f.Listen(), Run: func(ctx context.Context) Result { return d.checkTarget(ctx, f) }})
	}
	cs = append(cs, d.mainChecks()...)
	cs = append(cs, d.outageChecks()...)
	return append(cs, d.systemChecks()...)
}

func (d *Doctor) systemChecks() []Check {
	return []Check{
		{Name: "netsetup", Run: d.checkNetsetup, Privileged: true},
		{Name: "last link check", Run: d.checkLastLinkCheck},
		{Name: "link check data this month", Run: d.checkLinkBudget},
		{Name: "unit lifeline-agent", Run: d.checkUnit, Privileged: true},
	}
}

func (d *Doctor) bastions() []string {
	b, err := config.ParseBastions(d.cfg.Agent.Bastion)
	if err != nil {
		return nil
	}
	return b
}

func (d *Doctor) forwards() []forward.Forward {
	f, err := forward.Parse(d.cfg.Agent.Forwards)
	if err != nil {
		return nil
	}
	return f
}

// Run runs every check, prints one line each to w as it finishes and a
// summary, and returns how many failed. Privileged checks run first, then
// Config.Drop; the lines keep the list's order.
func (d *Doctor) Run(ctx context.Context, w io.Writer) (failed int) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	defer func() {
		all := true
		for _, c := range d.closers {
			all = c() && all
		}
		if all {
			d.wg.Wait()
		}
	}()
	early := map[int]Result{}
	for i, c := range d.checks {
		if c.Privileged {
			early[i] = runCheck(ctx, c, d.cfg.StepTimeout)
		}
	}
	if d.cfg.Drop != nil {
		d.dropErr = d.cfg.Drop()
	}
	skipped := 0
	for i, c := range d.checks {
		r, ok := early[i]
		if !ok {
			r = runCheck(ctx, c, d.cfg.StepTimeout)
		}
		switch r.Outcome {
		case Fail:
			failed++
		case Skip:
			skipped++
		}
		io.WriteString(w, r.Line())
	}
	summary(w, failed, skipped, len(d.checks))
	return failed
}

// onClose registers f to run when Run ends (connections the checks
// share); f reports whether it could close what it holds.
func (d *Doctor) onClose(f func() bool) { d.closers = append(d.closers, f) }

// envWhere names where the configuration comes from, for fixes.
func (d *Doctor) envWhere() string {
	if d.cfg.EnvFile != "" {
		return d.cfg.EnvFile
	}
	return "/etc/lifeline/agent.env"
}

// pairLine is the agents-file line for the agent's key, or a placeholder
// when the key could not be read.
func (d *Doctor) pairLine() string {
	if d.key.pub == nil {
		return "the line of `sudo lifeline-agent pair --line`"
	}
	return AgentsLine(d.forwards(), d.key.pub, d.cfg.KeyComment)
}

// AgentsLine is the line for the bastion's agents file that lets pub
// register every forward of fs: permitlisten="pi:22",permitlisten="nuc:3389"
// ssh-ed25519 AAAA… lifeline-agent@pi (one permitlisten option per
// forward, the form both lifeline's bastion and OpenSSH read).
func AgentsLine(fs []forward.Forward, pub ssh.PublicKey, comment string) string {
	return forward.PermitListen(fs) + " " + keyfile.AuthorizedLine(pub, comment)
}

// checkUser says who the checks run as: the service's user, as the
// service will, or not (then the key's checks may differ from the
// service's view).
func (d *Doctor) checkUser(context.Context) Result {
	u := d.cfg.User
	const what = "checking as the service's user"
	if u.Err != nil {
		return Failed(what, fmt.Sprintf("user %s: %v: the lifeline-agent package is not installed properly", u.Name, u.Err),
			"sudo apt install --reinstall lifeline-agent (it creates the user with systemd-sysusers); the checks below run as "+whoami())
	}
	if d.dropErr != nil {
		return Failed(what, fmt.Sprintf("could not become %s: %v", u.Name, d.dropErr), "run it as root: sudo lifeline-agent doctor; the checks below run as "+whoami())
	}
	if os.Geteuid() != u.UID {
		return Failed(what, fmt.Sprintf("running as %s, not as %s (uid %d), the service's user", whoami(), u.Name, u.UID), "run it as root: sudo lifeline-agent doctor")
	}
	return Passed(fmt.Sprintf("checking as %s (uid %d), the service's user", u.Name, u.UID))
}

func whoami() string { return fmt.Sprintf("uid %d", os.Geteuid()) }

// checkConfig reports every configuration problem, each naming its
// variable.
func (d *Doctor) checkConfig(context.Context) Result {
	var details []string
	for _, err := range []error{d.cfg.AgentErr, d.cfg.ChecksErr, d.cfg.NetErr} {
		if err == nil {
			continue
		}
		for _, l := range strings.Split(err.Error(), "\n") {
			if l = strings.TrimSpace(l); l != "" && !slices.Contains(details, l) {
				details = append(details, l)
			}
		}
	}
	from := "the environment only (no environment file)"
	if d.cfg.EnvFile != "" {
		from = fmt.Sprintf("%s (%d variables set from it) and the environment", d.cfg.EnvFile, d.cfg.Vars)
	}
	if len(details) > 0 {
		n := "1 problem"
		if len(details) > 1 {
			n = fmt.Sprintf("%d problems", len(details))
		}
		r := Failed("configuration from "+from, n+" (below)", "correct them in "+d.envWhere()+" (lifeline-agent --help lists every variable and its default)")
		r.Detail = details
		return r
	}
	c := d.cfg.Agent
	what := fmt.Sprintf("configuration from %s: bastion %s; forwards %s", from, strings.Join(d.bastions(), ", "), c.Forwards)
	if c.Interface != "" {
		what += "; interface " + c.Interface
	}
	if c.Main != nil {
		what += "; main internet watch via " + c.Main.Gateway.String()
	}
	if c.Outage.Enabled() {
		what += "; outage mode for " + c.Outage.InstanceID
	}
	return Passed(what)
}
