package netsetup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol is the rtnetlink protocol number lifeline tags its routes
// with (`ip route show proto 76`), so that remove finds exactly its own
// routes and never deletes another owner's.
const RouteProtocol = 76

// Route is a host route lifeline adds: Dst/32 via Gateway in the main table
// (on Dev when it is set; otherwise the kernel picks the device), or, when
// Unreachable is set, an unreachable route to Dst/32 with no gateway: a
// fallback of a higher Metric that answers "no route to host" whenever the
// route via the gateway is gone (the kernel flushes it when its device goes
// down), so that what it guards never takes the default route instead.
type Route struct {
	Dst         netip.Addr
	Gateway     netip.Addr `json:",omitzero"`
	Dev         string     `json:",omitempty"`
	Unreachable bool       `json:",omitempty"`
	Metric      uint32     `json:",omitempty"`
}

func (r Route) String() string {
	var s string
	if r.Unreachable {
		s = fmt.Sprintf("unreachable %s/32", r.Dst)
	} else {
		s = fmt.Sprintf("%s/32 via %s", r.Dst, r.Gateway)
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.Metric != 0 {
		s += fmt.Sprintf(" metric %d", r.Metric)
	}
	return s
}

// satisfies reports whether have, a route in place, is the wanted route
// want: the same in every field, except that a want without Dev takes
// whatever device the kernel chose.
func (have Route) satisfies(want Route) bool {
	if want.Dev == "" {
		have.Dev = ""
	}
	return have == want
}

// Lookup is where the kernel would send a packet (`ip route get`).
type Lookup struct {
	// Gateway is the next hop; invalid when the destination is on-link.
	Gateway netip.Addr
	// Device is the output interface name.
	Device string
}

// Router adds and removes lifeline's host routes.
type Router interface {
	// Owned lists the routes carrying lifeline's protocol tag.
	Owned() ([]Route, error)
	// Add adds r tagged as lifeline's. It fails when any route to the same
	// destination and metric exists already.
	Add(r Route) error
	// Delete removes r only when it carries lifeline's tag.
	Delete(r Route) error
	// Get reports how the kernel routes dst.
	Get(dst netip.Addr) (Lookup, error)
}

// Netlink is the Router on the real kernel (rtnetlink, main table), in the
// network namespace of the calling process.
type Netlink struct{}

var _ Router = Netlink{}

func rtnl() (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	return c, nil
}

// rtmsg is struct rtmsg from <linux/rtnetlink.h>.
func rtmsg(dstLen, table, protocol, scope, typ uint8) []byte {
	return []byte{unix.AF_INET, dstLen, 0, 0, table, protocol, scope, typ, 0, 0, 0, 0}
}

func routeMsg(r Route) ([]byte, error) {
	dst := r.Dst.As4()
	typ := uint8(unix.RTN_UNICAST)
	attrs := []netlink.Attribute{{Type: unix.RTA_DST, Data: dst[:]}}
	if r.Unreachable {
		typ = unix.RTN_UNREACHABLE
	} else {
		gw := r.Gateway.As4()
		attrs = append(attrs, netlink.Attribute{Type: unix.RTA_GATEWAY, Data: gw[:]})
	}
	if r.Dev != "" {
		ifi, err := net.InterfaceByName(r.Dev)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", r.Dev, err)
		}
		attrs = append(attrs, netlink.Attribute{Type: unix.RTA_OIF, Data: binary.NativeEndian.AppendUint32(nil, uint32(ifi.Index))})
	}
	if r.Metric != 0 {
		attrs = append(attrs, netlink.Attribute{Type: unix.RTA_PRIORITY, Data: binary.NativeEndian.AppendUint32(nil, r.Metric)})
	}
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return nil, err
	}
	return append(rtmsg(32, unix.RT_TABLE_MAIN, RouteProtocol, unix.RT_SCOPE_UNIVERSE, typ), b...), nil
}

// Add implements Router.
func (Netlink) Add(r Route) error {
	c, err := rtnl()
	if err != nil {
		return err
	}
	defer c.Close()
	data, err := routeMsg(r)
	if err != nil {
		return fmt.Errorf("add route %s: %w", r, err)
	}
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWROUTE, Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl},
		Data:   data,
	})
	if errors.Is(err, syscall.ENETUNREACH) {
		on := "no connected network (is the uplink up?)"
		if r.Dev != "" {
			on = "no network of " + r.Dev + " (is it up, with its address?)"
		}
		return fmt.Errorf("add route %s: gateway %s is on %s: %w", r, r.Gateway, on, err)
	}
	if errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("add route %s: a route to %s exists already and is not lifeline's: %w", r, r.Dst, err)
	}
	if err != nil {
		return fmt.Errorf("add route %s: %w", r, err)
	}
	return nil
}

// Delete implements Router. The protocol in the request makes the kernel
// delete only a route carrying lifeline's tag.
func (Netlink) Delete(r Route) error {
	c, err := rtnl()
	if err != nil {
		return err
	}
	defer c.Close()
	data, err := routeMsg(r)
	if err != nil {
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_DELROUTE, Flags: netlink.Request | netlink.Acknowledge},
		Data:   data,
	})
	if err != nil {
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	return nil
}

// parsedRoute is the part of an RTM_NEWROUTE message lifeline reads.
type parsedRoute struct {
	dstLen, protocol, typ uint8
	table                 uint32
	dst, gw               netip.Addr
	oif, priority         uint32
}

func parseRoute(b []byte) (parsedRoute, error) {
	var p parsedRoute
	if len(b) < 12 {
		return p, errors.New("short rtmsg")
	}
	p.dstLen, p.protocol, p.table, p.typ = b[1], b[5], uint32(b[4]), b[7]
	ad, err := netlink.NewAttributeDecoder(b[12:])
	if err != nil {
		return p, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.RTA_DST:
			p.dst, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.RTA_GATEWAY:
			p.gw, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.RTA_OIF:
			p.oif = binary.NativeEndian.Uint32(ad.Bytes())
		case unix.RTA_PRIORITY:
			p.priority = binary.NativeEndian.Uint32(ad.Bytes())
		case unix.RTA_TABLE:
			p.table = binary.NativeEndian.Uint32(ad.Bytes())
		}
	}
	return p, ad.Err()
}

// Owned implements Router: IPv4 host routes in the main table tagged with
// RouteProtocol, unicast (with their device) or unreachable.
func (Netlink) Owned() ([]Route, error) {
	c, err := rtnl()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETROUTE, Flags: netlink.Request | netlink.Dump},
		Data:   rtmsg(0, 0, 0, 0, 0),
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []Route
	for _, m := range msgs {
		p, err := parseRoute(m.Data)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		if p.protocol != RouteProtocol || p.table != unix.RT_TABLE_MAIN || p.dstLen != 32 || !p.dst.Is4() {
			continue
		}
		r := Route{Dst: p.dst, Gateway: p.gw, Metric: p.priority}
		switch p.typ {
		case unix.RTN_UNICAST:
			if p.oif != 0 {
				r.Dev = ifName(p.oif)
			}
		case unix.RTN_UNREACHABLE:
			r.Unreachable = true
		default:
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// Get implements Router.
func (Netlink) Get(dst netip.Addr) (Lookup, error) {
	c, err := rtnl()
	if err != nil {
		return Lookup{}, err
	}
	defer c.Close()
	d := dst.As4()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.RTA_DST, Data: d[:]}})
	if err != nil {
		return Lookup{}, fmt.Errorf("route get %s: %w", dst, err)
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETROUTE, Flags: netlink.Request},
		Data:   append(rtmsg(32, 0, 0, 0, 0), attrs...),
	})
	if err != nil {
		return Lookup{}, fmt.Errorf("route get %s: %w", dst, err)
	}
	if len(msgs) == 0 {
		return Lookup{}, fmt.Errorf("route get %s: no answer", dst)
	}
	p, err := parseRoute(msgs[0].Data)
	if err != nil {
		return Lookup{}, fmt.Errorf("route get %s: %w", dst, err)
	}
	return Lookup{Gateway: p.gw, Device: ifName(p.oif)}, nil
}

// ifName is the name of the interface of index i ("ifindex N" when it has
// none any more).
func ifName(i uint32) string {
	if ifi, err := net.InterfaceByIndex(int(i)); err == nil {
		return ifi.Name
	}
	return fmt.Sprintf("ifindex %d", i)
}
