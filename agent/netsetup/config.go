package netsetup

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/mainwatch"
)

// Config is what netsetup reads from the environment. It is meant to be
// embedded anonymously in the agent's configuration so that its variables
// keep the plain LIFELINE_ names. LIFELINE_BASTION is the same variable the
// tunnel reads.
type Config struct {
	LANInterface    string `envconfig:"LAN_INTERFACE" desc:"netsetup: site LAN interface (required), e.g. eth0"`
	TunnelInterface string `envconfig:"TUNNEL_INTERFACE" desc:"netsetup: interface operator traffic arrives on (e.g. tun0, zt+ for a prefix); empty = no forwarding or NAT rules"`
	MSS             string `envconfig:"MSS" default:"1452" desc:"netsetup: TCP MSS clamp on forwarded SYNs, 536..65495 or pmtu"`
	UplinkGateway   string `envconfig:"UPLINK_GATEWAY" desc:"netsetup: IPv4 gateway of the backup uplink; host routes send the bastion's addresses via it"`
	Bastion         string `envconfig:"BASTION" desc:"comma-separated host:port list of bastions"`
	MainGateway     string `envconfig:"MAIN_GATEWAY" desc:"the main router's IPv4 address on the LAN; netsetup routes each main internet watch target via it on the LAN interface"`
	MainTargets     string `envconfig:"MAIN_TARGETS" default:"dns://1.0.0.1,dns://149.112.112.112,tcp://1.0.0.1:443" desc:"the main internet watch's targets (see the agent's variables)"`
	SysctlDir       string `envconfig:"SYSCTL_DIR" default:"/etc/sysctl.d" desc:"netsetup: folder of the persistent ip_forward file"`
	StateDir        string `envconfig:"STATE_DIR" default:"/var/lib/lifeline" desc:"folder where lifeline keeps its state (netsetup: ip_forward before apply)"`
}

// Validate reports every problem of the configuration at once, each naming
// its variable.
func (c *Config) Validate() error {
	var errs []error
	if c.LANInterface == "" {
		errs = append(errs, errors.New("LIFELINE_LAN_INTERFACE: required (the site LAN interface, e.g. eth0)"))
	} else if err := config.ParseInterfaceName(c.LANInterface, false); err != nil {
		errs = append(errs, fmt.Errorf("LIFELINE_LAN_INTERFACE=%q: %w", c.LANInterface, err))
	}
	if c.TunnelInterface != "" {
		if err := config.ParseInterfaceName(c.TunnelInterface, true); err != nil {
			errs = append(errs, fmt.Errorf("LIFELINE_TUNNEL_INTERFACE=%q: %w", c.TunnelInterface, err))
		} else if c.LANInterface != "" && ifaceMatches(c.TunnelInterface, c.LANInterface) {
			errs = append(errs, fmt.Errorf("LIFELINE_TUNNEL_INTERFACE=%q: matches the LAN interface %q", c.TunnelInterface, c.LANInterface))
		}
	}
	if _, err := ParseMSS(c.MSS); err != nil {
		errs = append(errs, fmt.Errorf("LIFELINE_MSS=%q: %w", c.MSS, err))
	}
	if c.UplinkGateway != "" {
		if _, err := parseGateway(c.UplinkGateway); err != nil {
			errs = append(errs, fmt.Errorf("LIFELINE_UPLINK_GATEWAY=%q: %w", c.UplinkGateway, err))
		}
		if strings.TrimSpace(c.Bastion) == "" {
			errs = append(errs, errors.New("LIFELINE_BASTION: required when LIFELINE_UPLINK_GATEWAY is set (its addresses get the uplink host routes)"))
		}
	}
	if strings.TrimSpace(c.Bastion) != "" {
		if _, err := config.ParseBastions(c.Bastion); err != nil {
			errs = append(errs, fmt.Errorf("LIFELINE_BASTION=%q: %w", c.Bastion, err))
		}
	}
	if c.MainGateway != "" {
		if _, _, err := c.main(); err != nil {
			errs = append(errs, err)
		}
	}
	if !filepath.IsAbs(c.SysctlDir) {
		errs = append(errs, fmt.Errorf("LIFELINE_SYSCTL_DIR=%q: must be an absolute path", c.SysctlDir))
	}
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("LIFELINE_STATE_DIR=%q: must be an absolute path", c.StateDir))
	}
	return errors.Join(errs...)
}

// main parses LIFELINE_MAIN_GATEWAY and LIFELINE_MAIN_TARGETS (config's
// rules: IPv4, no target the gateway or a bastion given as an address).
func (c *Config) main() (netip.Addr, []mainwatch.Target, error) {
	gw, err := config.ParseMainGateway(c.MainGateway)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	bastions, _ := config.ParseBastions(c.Bastion) // reported on its own
	targets, err := config.ParseMainTargets(c.MainTargets, gw, bastions)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	return gw, targets, nil
}

// MSS bounds: 536 is the IPv4 default MSS every host must accept; 65495 is
// the largest MSS a 65535-byte IPv4 MTU allows.
const (
	minMSS = 536
	maxMSS = 65495
)

// ParseMSS reads LIFELINE_MSS: a decimal MSS in [536, 65495], or "pmtu"
// (case-insensitive) for clamping to the path MTU, returned as 0.
func ParseMSS(s string) (int, error) {
	if strings.EqualFold(s, "pmtu") {
		return 0, nil
	}
	if s == "" || len(s) > 5 {
		return 0, fmt.Errorf("want a number from %d to %d, or pmtu", minMSS, maxMSS)
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("want a number from %d to %d, or pmtu", minMSS, maxMSS)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < minMSS || n > maxMSS {
		return 0, fmt.Errorf("want a number from %d to %d, or pmtu", minMSS, maxMSS)
	}
	return n, nil
}

// ifaceMatches reports whether pattern (a name, or a prefix ending in '+')
// matches the interface name.
func ifaceMatches(pattern, name string) bool {
	if p, ok := strings.CutSuffix(pattern, "+"); ok {
		return strings.HasPrefix(name, p)
	}
	return pattern == name
}

func parseGateway(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, errors.New("want an IPv4 address")
	}
	if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, errors.New("want a unicast IPv4 address")
	}
	return a, nil
}
