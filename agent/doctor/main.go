package doctor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/mainwatch"
)

// The checks of the main internet watch (LIFELINE_MAIN_GATEWAY set): the
// probes must leave by the main router, or a dead main link looks up.

const applyFix = "sudo lifeline-agent netsetup apply (sudo systemctl restart lifeline-netsetup), with LIFELINE_LAN_INTERFACE and LIFELINE_MAIN_GATEWAY set in "

func (d *Doctor) mainChecks() []Check {
	m := d.cfg.Agent.Main
	if m == nil {
		return nil
	}
	return []Check{
		{Name: "main internet routes", Run: func(context.Context) Result { return d.checkMainRoutes(m) }},
		{Name: "main internet resolver", Run: func(context.Context) Result { return d.checkMainResolver(m) }},
		{Name: "main internet probe", Run: func(ctx context.Context) Result { return d.checkMainProbe(ctx, m) }},
	}
}

// checkMainRoutes asks the kernel (ip route get) how each target address
// is reached: via the main gateway, on the LAN interface when netsetup's
// configuration names it.
func (d *Doctor) checkMainRoutes(m *config.MainWatch) Result {
	lan := ""
	if d.cfg.Net != nil {
		lan = d.cfg.Net.LANInterface
	}
	addrs := mainwatch.Addrs(m.Targets)
	what := fmt.Sprintf("main internet targets %s routed via the main gateway %s", joinAddrs(addrs), m.Gateway)
	if lan != "" {
		what += " dev " + lan
	}
	var bad []string
	for _, a := range addrs {
		l, err := d.cfg.Route(a)
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s: %v", a, err))
		case l.Gateway != m.Gateway || (lan != "" && l.Device != lan):
			via := "directly"
			if l.Gateway.IsValid() {
				via = "via " + l.Gateway.String()
			}
			bad = append(bad, fmt.Sprintf("%s goes %s dev %s", a, via, l.Device))
		}
	}
	if len(bad) == 0 {
		return Passed(what)
	}
	r := Failed(what, "the probes would not leave by the main router (a dead main link could look up, over the backup link)", applyFix+d.envWhere())
	r.Detail = bad
	return r
}

// checkMainResolver fails when a target is a name server of the Pi's own
// (resolv.conf): its host route sends every lookup by the main link, so
// the Pi could resolve nothing (the bastion's name included) while the
// main link is down.
func (d *Doctor) checkMainResolver(m *config.MainWatch) Result {
	what := "the Pi's resolvers (" + d.cfg.ResolvConf + ") are not main internet targets"
	servers, err := nameservers(d.cfg.ResolvConf)
	if errors.Is(err, fs.ErrNotExist) {
		return Skipped(what, d.cfg.ResolvConf+" does not exist")
	}
	if err != nil {
		return Skipped(what, err.Error())
	}
	var clash []string
	for _, a := range mainwatch.Addrs(m.Targets) {
		if slices.Contains(servers, a) {
			clash = append(clash, a.String())
		}
	}
	if len(clash) == 0 {
		return Passed(what)
	}
	return Failed(what, "the Pi resolves names with "+strings.Join(clash, ", ")+", a main internet target: its host route via the main gateway means the Pi cannot resolve names (the bastion's included) while the main internet is down",
		"give other targets in LIFELINE_MAIN_TARGETS (the default uses secondary resolver addresses for this reason), or another resolver in "+d.cfg.ResolvConf)
}

// nameservers reads the nameserver lines of a resolv.conf.
func nameservers(path string) ([]netip.Addr, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, a.WithZone("").Unmap())
			}
		}
	}
	return out, sc.Err()
}

// checkMainProbe probes the targets once, as the agent does every
// LIFELINE_MAIN_EVERY, and says what answered.
func (d *Doctor) checkMainProbe(ctx context.Context, m *config.MainWatch) Result {
	what := "main internet probe"
	results, err := d.cfg.MainProbe(ctx, m.Targets)
	if err != nil {
		return Failed(what, err.Error(), "run doctor again")
	}
	var failed []string
	for _, r := range results {
		if r.OK {
			return Passed(fmt.Sprintf("%s: %s answered", what, r.Target))
		}
		failed = append(failed, r.Reason)
	}
	r := Failed(what, "no target answered: the main internet is down, or the probes do not leave by the main router",
		"if the site's main internet works, check the routes above and LIFELINE_MAIN_GATEWAY; the agent reports the main link down after LIFELINE_MAIN_DOWN_AFTER")
	r.Detail = failed
	return r
}

// probeOnce is Config.MainProbe on the real network.
func probeOnce(ctx context.Context, targets []mainwatch.Target) ([]mainwatch.Result, error) {
	w, err := mainwatch.New(mainwatch.Config{Targets: targets})
	if err != nil {
		return nil, err
	}
	return w.ProbeOnce(ctx)
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
