// Package netsetup does the Pi's router duties: net.ipv4.ip_forward (now and
// persistently), forwarding from the operator tunnel to the site LAN with
// masquerade, LAN to tunnel for replies only, a TCP MSS clamp on forwarded
// SYNs, host routes sending the bastion's addresses via the backup
// uplink gateway, and host routes sending the main internet watch's target
// addresses via the main router on the LAN (each with an unreachable
// fallback, so a probe never leaves by the backup uplink). Apply is idempotent and all-or-nothing, remove takes out
// exactly what apply added, status reports what differs and what defeats it.
//
// It needs CAP_NET_ADMIN and acts on the network namespace of the process.
package netsetup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/mainwatch"
)

// Resolver resolves bastion host names; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options are the seams to the outside world. Every nil field gets the real
// system implementation (NFTables, Netlink, ProcSys, net.DefaultResolver,
// the host's interfaces, a discarding logger).
type Options struct {
	Firewall Firewall
	Router   Router
	Sysctl   Sysctl
	Resolver Resolver
	// Interfaces lists the names of the network interfaces that exist.
	Interfaces func() ([]string, error)
	Logger     *slog.Logger
}

// Setup applies, removes and inspects lifeline's router duties for one
// configuration.
type Setup struct {
	cfg Config
	mss int
	gw  netip.Addr
	// mainGW and mainTargets are the main internet watch's (invalid and
	// nil: no watch).
	mainGW      netip.Addr
	mainTargets []mainwatch.Target
	o           Options
}

// FallbackMetric is the metric of the unreachable route beside each main
// internet watch target's route via the main gateway (metric 0): it is
// used only while that route is gone (its device went down and the kernel
// flushed it), so that the probes fail, as they should, rather than leave
// by the default route over the backup uplink and call the main link up.
const FallbackMetric = 65535

// New checks cfg (it must pass Validate) and fills unset options.
func New(cfg Config, o Options) (*Setup, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mss, _ := ParseMSS(cfg.MSS)
	s := &Setup{cfg: cfg, mss: mss, o: o}
	if cfg.UplinkGateway != "" {
		s.gw, _ = parseGateway(cfg.UplinkGateway)
	}
	if cfg.MainGateway != "" {
		s.mainGW, s.mainTargets, _ = cfg.main()
	}
	if s.o.Firewall == nil {
		s.o.Firewall = NFTables{}
	}
	if s.o.Router == nil {
		s.o.Router = Netlink{}
	}
	if s.o.Sysctl == nil {
		s.o.Sysctl = ProcSys{}
	}
	if s.o.Resolver == nil {
		s.o.Resolver = net.DefaultResolver
	}
	if s.o.Interfaces == nil {
		s.o.Interfaces = systemInterfaces
	}
	if s.o.Logger == nil {
		s.o.Logger = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

func systemInterfaces() ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	names := make([]string, len(ifs))
	for i, ifi := range ifs {
		names[i] = ifi.Name
	}
	return names, nil
}

func (s *Setup) rules() Rules {
	return Rules{LAN: s.cfg.LANInterface, Tunnel: s.cfg.TunnelInterface, MSS: s.mss}
}

func (s *Setup) statePath() string  { return filepath.Join(s.cfg.StateDir, StateFile) }
func (s *Setup) sysctlPath() string { return filepath.Join(s.cfg.SysctlDir, SysctlFile) }

// routes resolves the bastion hosts to IPv4 addresses and returns the host
// routes the configuration wants, sorted: each bastion address via the
// uplink gateway (none without one; IPv6 addresses are left out, the
// uplink gateway is IPv4), and each main internet watch target address
// via the main gateway on the LAN interface, with its unreachable
// fallback. A target that is a bastion address is an error: the tunnel
// must leave by the backup link.
func (s *Setup) routes(ctx context.Context) ([]Route, error) {
	if !s.gw.IsValid() && !s.mainGW.IsValid() {
		return nil, nil
	}
	var out []Route
	bastions, err := s.bastionAddrs(ctx)
	switch {
	case s.gw.IsValid() && err != nil:
		return nil, err
	case s.gw.IsValid():
		if len(bastions) == 0 {
			return nil, fmt.Errorf("LIFELINE_BASTION=%q: no IPv4 address to route via the uplink gateway", s.cfg.Bastion)
		}
		for _, a := range bastions {
			out = append(out, Route{Dst: a, Gateway: s.gw})
		}
	case err != nil:
		s.o.Logger.Warn("netsetup: cannot check that no main internet watch target is a bastion's address", "err", err)
	}
	for _, a := range mainwatch.Addrs(s.mainTargets) {
		if slices.Contains(bastions, a) {
			return nil, fmt.Errorf("LIFELINE_MAIN_TARGETS=%q: %s is an address of a bastion (LIFELINE_BASTION=%q): its route must go via the backup uplink, not via the main gateway; give other targets", s.cfg.MainTargets, a, s.cfg.Bastion)
		}
		out = append(out, Route{Dst: a, Gateway: s.mainGW, Dev: s.cfg.LANInterface}, Route{Dst: a, Unreachable: true, Metric: FallbackMetric})
	}
	sortRoutes(out)
	return out, nil
}

// bastionAddrs are the IPv4 addresses of the bastion hosts, each once;
// none when LIFELINE_BASTION is empty.
func (s *Setup) bastionAddrs(ctx context.Context) ([]netip.Addr, error) {
	if strings.TrimSpace(s.cfg.Bastion) == "" {
		return nil, nil
	}
	bastions, err := config.ParseBastions(s.cfg.Bastion)
	if err != nil {
		return nil, fmt.Errorf("LIFELINE_BASTION: %w", err)
	}
	var out []netip.Addr
	for _, h := range config.BastionHosts(bastions) {
		var addrs []netip.Addr
		if a, err := netip.ParseAddr(h); err == nil {
			addrs = []netip.Addr{a}
		} else {
			addrs, err = s.o.Resolver.LookupNetIP(ctx, "ip4", h)
			if err != nil {
				return nil, fmt.Errorf("resolve bastion %s: %w", h, err)
			}
		}
		for _, a := range addrs {
			a = a.Unmap()
			if a.Is4() && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// checkMainGateway says whether LIFELINE_MAIN_GATEWAY is on a subnet of
// the LAN interface, as the kernel routes it now.
func (s *Setup) checkMainGateway() error {
	l, err := s.o.Router.Get(s.mainGW)
	if err != nil {
		return fmt.Errorf("LIFELINE_MAIN_GATEWAY=%s: %w", s.mainGW, err)
	}
	if l.Device != s.cfg.LANInterface || l.Gateway.IsValid() {
		how := "directly"
		if l.Gateway.IsValid() {
			how = "via " + l.Gateway.String()
		}
		return fmt.Errorf("LIFELINE_MAIN_GATEWAY=%s is not on a subnet of the LAN interface %s (LIFELINE_LAN_INTERFACE): the kernel reaches it %s dev %s; give the main router's address on the LAN, and check that %s is up with its address",
			s.mainGW, s.cfg.LANInterface, how, l.Device, s.cfg.LANInterface)
	}
	return nil
}

func sortRoutes(rs []Route) {
	slices.SortFunc(rs, func(a, b Route) int {
		if c := a.Dst.Compare(b.Dst); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Metric, b.Metric); c != 0 {
			return c
		}
		return a.Gateway.Compare(b.Gateway)
	})
}

// step is one change apply makes, with its undo.
type step struct {
	name string
	do   func() error
	undo func() error
}

// Apply puts the configuration in place: ip_forward=1 now and in
// LIFELINE_SYSCTL_DIR, lifeline's firewall table, the uplink host routes.
// Applying again changes nothing; applying a changed configuration leaves
// exactly the new state. When a step fails, every earlier step is undone
// (back to the previous state) and the error names the failed step and any
// undo that failed too.
func (s *Setup) Apply(ctx context.Context) error {
	prev, err := readState(s.statePath())
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	wantRoutes, err := s.routes(ctx)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if s.mainGW.IsValid() {
		if err := s.checkMainGateway(); err != nil {
			return fmt.Errorf("apply: nothing changed: %w", err)
		}
	}
	curForward, err := s.o.Sysctl.Get(ipForward)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	haveRoutes, err := s.o.Router.Owned()
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	stateSnap, err := snapshot(s.statePath())
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	sysctlSnap, err := snapshot(s.sysctlPath())
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}

	next := state{PriorIPForward: curForward, Rules: s.rules(), Routes: wantRoutes}
	if prev != nil {
		next.PriorIPForward = prev.PriorIPForward
	}
	fw := s.o.Firewall
	fwBefore, err := fw.Inspect(s.rules())
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	steps := []step{
		{
			name: "save state " + s.statePath(),
			do:   func() error { return writeState(s.statePath(), next) },
			undo: stateSnap.restore,
		},
		{
			name: "set " + ipForward + "=1",
			do:   func() error { return s.o.Sysctl.Set(ipForward, "1") },
			undo: func() error { return s.o.Sysctl.Set(ipForward, curForward) },
		},
		{
			name: "write " + s.sysctlPath(),
			do:   func() error { return writeFileAtomic(s.sysctlPath(), []byte(sysctlContents), 0o644) },
			undo: sysctlSnap.restore,
		},
		{
			name: "install firewall table ip " + TableName,
			do:   func() error { return fw.Apply(next.Rules) },
			// Undo restores the table that was there: none, or the one
			// the last successful apply wrote (a table with no saved
			// state cannot be rebuilt and is removed).
			undo: func() error {
				if fwBefore.Present && prev != nil {
					return fw.Apply(prev.Rules)
				}
				return fw.Remove()
			},
		},
		{
			name: "set uplink routes and main internet watch routes",
			do:   func() error { return s.syncRoutes(haveRoutes, wantRoutes) },
			undo: func() error {
				now, err := s.o.Router.Owned()
				if err != nil {
					return err
				}
				return s.syncRoutes(now, haveRoutes)
			},
		},
	}
	for i, st := range steps {
		if err := ctx.Err(); err != nil {
			return s.rollback(steps[:i], st.name, err)
		}
		if err := st.do(); err != nil {
			// The failed step may have changed part of its own state
			// (routes), so it is undone too.
			return s.rollback(steps[:i+1], st.name, err)
		}
		s.o.Logger.Info("netsetup apply", "step", st.name)
	}
	return nil
}

func (s *Setup) rollback(done []step, failed string, cause error) error {
	errs := []error{fmt.Errorf("apply: %s: %w", failed, cause)}
	for i := len(done) - 1; i >= 0; i-- {
		if err := done[i].undo(); err != nil {
			errs = append(errs, fmt.Errorf("roll back %s: %w", done[i].name, err))
		}
	}
	if len(errs) == 1 {
		errs = append(errs, errors.New("rolled back: nothing changed"))
	}
	s.o.Logger.Warn("netsetup apply failed", "step", failed, "err", cause)
	return errors.Join(errs...)
}

// syncRoutes adds the routes of want missing from have and deletes those of
// have not in want. Deletions go first so that a changed gateway for the
// same address does not collide with the old route.
func (s *Setup) syncRoutes(have, want []Route) error {
	for _, r := range have {
		if !slices.ContainsFunc(want, r.satisfies) {
			if err := s.o.Router.Delete(r); err != nil {
				return err
			}
		}
	}
	for _, r := range want {
		if !slices.ContainsFunc(have, func(h Route) bool { return h.satisfies(r) }) {
			if err := s.o.Router.Add(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// Remove takes out what apply added: lifeline's routes and firewall table,
// the persistent sysctl file, and puts ip_forward back to its value before
// the first apply (left as it is when no state was saved). It goes on past
// a failing step and reports every failure; the state file is kept until
// everything else is gone, so running remove again finishes the job.
// Removing when nothing is applied is not an error.
func (s *Setup) Remove(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	st, err := readState(s.statePath())
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	var errs []error
	if owned, err := s.o.Router.Owned(); err != nil {
		errs = append(errs, fmt.Errorf("remove routes: %w", err))
	} else {
		for _, r := range owned {
			if err := s.o.Router.Delete(r); err != nil {
				errs = append(errs, fmt.Errorf("remove: %w", err))
			}
		}
	}
	if err := s.o.Firewall.Remove(); err != nil {
		errs = append(errs, fmt.Errorf("remove firewall table ip %s: %w", TableName, err))
	}
	if err := removeFile(s.sysctlPath()); err != nil {
		errs = append(errs, fmt.Errorf("remove: %w", err))
	}
	if st != nil {
		if err := s.o.Sysctl.Set(ipForward, st.PriorIPForward); err != nil {
			errs = append(errs, fmt.Errorf("remove: restore %s: %w", ipForward, err))
		}
	} else {
		s.o.Logger.Warn("netsetup remove: no saved state, " + ipForward + " left as it is")
	}
	if len(errs) == 0 {
		if err := removeFile(s.statePath()); err != nil {
			errs = append(errs, fmt.Errorf("remove: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Report is what Status found.
type Report struct {
	// Applied lists what is in place and matches the configuration.
	Applied []string
	// Differences lists what is missing or differs from the configuration.
	Differences []string
	// Warnings lists what will defeat the configuration even when applied.
	Warnings []string
}

// OK reports whether everything is applied as configured (warnings aside).
func (r Report) OK() bool { return len(r.Differences) == 0 }

// String renders the report, one finding a line.
func (r Report) String() string {
	var b strings.Builder
	for _, l := range r.Applied {
		fmt.Fprintf(&b, "ok       %s\n", l)
	}
	for _, l := range r.Differences {
		fmt.Fprintf(&b, "differs  %s\n", l)
	}
	for _, l := range r.Warnings {
		fmt.Fprintf(&b, "warning  %s\n", l)
	}
	if r.OK() {
		b.WriteString("netsetup: applied as configured\n")
	} else {
		b.WriteString("netsetup: not applied as configured (run: lifeline-agent netsetup apply)\n")
	}
	return b.String()
}

// Status compares what is in place with the configuration. An error means
// the state could not be read at all; findings are in the Report.
func (s *Setup) Status(ctx context.Context) (Report, error) {
	var r Report
	add := func(ok bool, okText, diffText string) {
		if ok {
			r.Applied = append(r.Applied, okText)
		} else {
			r.Differences = append(r.Differences, diffText)
		}
	}

	fwd, err := s.o.Sysctl.Get(ipForward)
	if err != nil {
		return r, fmt.Errorf("status: %w", err)
	}
	add(fwd == "1", ipForward+" = 1", fmt.Sprintf("%s = %s, want 1", ipForward, fwd))

	snap, err := snapshot(s.sysctlPath())
	if err != nil {
		return r, fmt.Errorf("status: %w", err)
	}
	add(snap.existed && string(snap.data) == sysctlContents, s.sysctlPath()+" sets "+ipForward+" = 1 at boot",
		s.sysctlPath()+" missing or changed")

	fs, err := s.o.Firewall.Inspect(s.rules())
	if err != nil {
		return r, fmt.Errorf("status: %w", err)
	}
	switch {
	case !fs.Present:
		r.Differences = append(r.Differences, "firewall table ip "+TableName+" missing")
	case len(fs.Differences) == 0:
		r.Applied = append(r.Applied, "firewall table ip "+TableName+": "+s.rulesSummary())
	default:
		for _, d := range fs.Differences {
			r.Differences = append(r.Differences, "firewall table ip "+TableName+": "+d)
		}
	}
	r.Warnings = append(r.Warnings, fs.Warnings...)

	if err := s.routeStatus(ctx, &r); err != nil {
		return r, fmt.Errorf("status: %w", err)
	}

	names, err := s.o.Interfaces()
	if err != nil {
		return r, fmt.Errorf("status: %w", err)
	}
	if !slices.Contains(names, s.cfg.LANInterface) {
		r.Warnings = append(r.Warnings, fmt.Sprintf("LAN interface %s does not exist", s.cfg.LANInterface))
	}
	if t := s.cfg.TunnelInterface; t != "" && !slices.ContainsFunc(names, func(n string) bool { return ifaceMatches(t, n) }) {
		r.Warnings = append(r.Warnings, fmt.Sprintf("tunnel interface %s does not exist (yet): nothing to forward", t))
	}
	return r, nil
}

func (s *Setup) rulesSummary() string {
	mss := "pmtu"
	if s.mss != 0 {
		mss = fmt.Sprint(s.mss)
	}
	if s.cfg.TunnelInterface == "" {
		return "MSS clamp " + mss + ", no tunnel forwarding"
	}
	return fmt.Sprintf("MSS clamp %s, %s->%s accepted with masquerade, %s->%s replies only",
		mss, s.cfg.TunnelInterface, s.cfg.LANInterface, s.cfg.LANInterface, s.cfg.TunnelInterface)
}

func (s *Setup) routeStatus(ctx context.Context, r *Report) error {
	have, err := s.o.Router.Owned()
	if err != nil {
		return err
	}
	want, err := s.routes(ctx)
	if err != nil {
		r.Differences = append(r.Differences, err.Error())
		return nil
	}
	if s.mainGW.IsValid() {
		if err := s.checkMainGateway(); err != nil {
			r.Differences = append(r.Differences, err.Error())
		}
	}
	for _, w := range want {
		if slices.ContainsFunc(have, func(h Route) bool { return h.satisfies(w) }) {
			r.Applied = append(r.Applied, "route "+w.String())
		} else {
			r.Differences = append(r.Differences, "route "+w.String()+" missing")
		}
		if w.Unreachable {
			continue
		}
		what, gateway := "bastion", "the uplink gateway"
		if w.Dev != "" {
			what, gateway = "main internet watch target", "the main gateway"
		}
		l, err := s.o.Router.Get(w.Dst)
		if err != nil {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s %s: %v", what, w.Dst, err))
			continue
		}
		if l.Gateway != w.Gateway || (w.Dev != "" && l.Device != w.Dev) {
			via := "directly"
			if l.Gateway.IsValid() {
				via = "via " + l.Gateway.String()
			}
			r.Warnings = append(r.Warnings, fmt.Sprintf("traffic to %s %s goes %s dev %s, not via %s %s", what, w.Dst, via, l.Device, gateway, w.Gateway))
		}
	}
	for _, h := range have {
		if !slices.ContainsFunc(want, h.satisfies) {
			r.Differences = append(r.Differences, "route "+h.String()+" not wanted")
		}
	}
	return nil
}
