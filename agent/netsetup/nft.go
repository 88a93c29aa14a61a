package netsetup

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family ip) that holds every rule lifeline
// installs.
const TableName = "lifeline"

// Rules is what lifeline's firewall table must contain.
type Rules struct {
	// LAN is the site LAN interface.
	LAN string
	// Tunnel is the operator-side interface (a name or a prefix ending in
	// '+'); empty means no forwarding or NAT rules, only the MSS clamp.
	Tunnel string
	// MSS is the clamp on forwarded TCP SYNs; 0 clamps to the path MTU.
	MSS int
}

// FirewallState is what Inspect found.
type FirewallState struct {
	// Present reports whether lifeline's table exists.
	Present bool
	// Differences lists how the table differs from the wanted rules (empty
	// when it matches exactly).
	Differences []string
	// Warnings lists what elsewhere defeats the rules (a forward drop
	// policy in another table).
	Warnings []string
}

// Firewall holds lifeline's firewall rules. Implementations must only ever
// touch their own rules.
type Firewall interface {
	// Apply replaces lifeline's rules with r in one transaction: afterwards
	// either all of r is in place or nothing changed.
	Apply(r Rules) error
	// Remove takes out all of lifeline's rules; none present is not an error.
	Remove() error
	// Inspect compares what is installed with r and looks for rules of
	// others that defeat them.
	Inspect(r Rules) (FirewallState, error)
}

// NFTables is the Firewall on the real kernel, in the network namespace of
// the calling process.
//
// Why nftables, in a table of lifeline's own (for the README):
//
// All of lifeline's firewall state is one nftables table, "ip lifeline",
// written through netlink with github.com/google/nftables. That buys three
// things iptables chains cannot give as cleanly:
//   - apply is one netlink transaction (create table, delete it, create it
//     again with every chain and rule): the kernel commits all of it or none,
//     so there is never a half-written firewall, and applying twice or with a
//     changed configuration leaves exactly the new rules, never duplicates;
//   - remove is one call (delete the table) and cannot touch anything else:
//     no rule of another owner lives in lifeline's table, and lifeline never
//     edits another table;
//   - no iptables binary, no text parsing, no dependence on which iptables
//     flavour (legacy or nft) the distribution ships.
//
// The price: a drop in another table's forward hook still drops what
// lifeline accepts (every base chain on a hook must accept). Status detects
// nftables chains (including iptables-nft's FORWARD) with policy drop and
// warns; iptables-legacy rules are invisible to nftables and not checked.
//
// The table, as `nft list table ip lifeline` shows it (tunnel tun0, LAN eth0):
//
//	chain forward { type filter hook forward priority filter; policy accept;
//	  tcp flags syn / syn,rst tcp option maxseg size set 1452   (or: set rt mtu)
//	  iifname "tun0" oifname "eth0" accept
//	  iifname "eth0" oifname "tun0" ct state established,related accept
//	  iifname "eth0" oifname "tun0" drop }
//	chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//	  iifname "tun0" oifname "eth0" masquerade }
//
// Without a tunnel interface only the MSS clamp is installed. The table is
// family ip: forwarding is IPv4 (net.ipv4.ip_forward).
type NFTables struct{}

var _ Firewall = NFTables{}

func (NFTables) conn() (*nftables.Conn, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	return c, nil
}

var table = &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}

// chainSpec is one base chain with its rules, as lifeline builds it.
type chainSpec struct {
	chain *nftables.Chain
	rules []ruleSpec
}

type ruleSpec struct {
	comment string
	exprs   []expr.Any
}

// build turns r into the chains and rules of lifeline's table. The same
// builder serves Apply and Inspect, so what is compared is what is written.
func build(r Rules) []chainSpec {
	fwd := &nftables.Chain{
		Name:     "forward",
		Table:    table,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter,
		Policy:   policyRef(nftables.ChainPolicyAccept),
	}
	specs := []chainSpec{{chain: fwd, rules: []ruleSpec{mssRule(r.MSS)}}}
	if r.Tunnel == "" {
		return specs
	}
	tun, lan := ifnameData(r.Tunnel), ifnameData(r.LAN)
	specs[0].rules = append(specs[0].rules,
		ruleSpec{
			comment: "lifeline: tunnel to LAN",
			exprs: append(ifPair(tun, lan),
				&expr.Verdict{Kind: expr.VerdictAccept}),
		},
		ruleSpec{
			comment: "lifeline: LAN to tunnel, replies only",
			exprs: append(append(ifPair(lan, tun),
				&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: nativeU32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
					Xor:  nativeU32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: nativeU32(0)}),
				&expr.Verdict{Kind: expr.VerdictAccept}),
		},
		ruleSpec{
			comment: "lifeline: LAN to tunnel, new connections dropped",
			exprs:   append(ifPair(lan, tun), &expr.Verdict{Kind: expr.VerdictDrop}),
		},
	)
	nat := &nftables.Chain{
		Name:     "postrouting",
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
		Policy:   policyRef(nftables.ChainPolicyAccept),
	}
	specs = append(specs, chainSpec{chain: nat, rules: []ruleSpec{{
		comment: "lifeline: masquerade tunnel traffic leaving by the LAN",
		exprs:   append(ifPair(tun, lan), &expr.Masq{}),
	}}})
	return specs
}

// mssRule is `tcp flags & (syn|rst) == syn tcp option maxseg size set N`
// (or `set rt mtu` for pmtu). The kernel only ever lowers an MSS.
func mssRule(mss int) ruleSpec {
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02 | 0x04}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
	comment := "lifeline: clamp MSS of forwarded SYNs to the path MTU"
	if mss == 0 {
		// rt tcpmss loads the MSS in host byte order; the option is big endian.
		exprs = append(exprs,
			&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2})
	} else {
		comment = fmt.Sprintf("lifeline: clamp MSS of forwarded SYNs to %d", mss)
		exprs = append(exprs, &expr.Immediate{Register: 1, Data: []byte{byte(mss >> 8), byte(mss)}})
	}
	exprs = append(exprs, &expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt})
	return ruleSpec{comment: comment, exprs: exprs}
}

// ifPair matches input interface in and output interface out.
func ifPair(in, out []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: in},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: out},
	}
}

// ifnameData is the comparison data for an interface name: the name padded
// with NULs to IFNAMSIZ, or for a prefix "zt+" only the prefix bytes (the
// kernel then compares just those, as nft does for "zt*").
func ifnameData(name string) []byte {
	if p, ok := strings.CutSuffix(name, "+"); ok {
		return []byte(p)
	}
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// nativeU32 encodes v in host byte order, as ct state is compared.
func nativeU32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func policyRef(p nftables.ChainPolicy) *nftables.ChainPolicy { return &p }

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

// Apply writes lifeline's table in one netlink batch: add the table (a no-op
// when present), delete it with everything in it, then add it again with
// every chain and rule. The kernel commits the batch atomically.
func (n NFTables) Apply(r Rules) error {
	c, err := n.conn()
	if err != nil {
		return err
	}
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	for _, cs := range build(r) {
		c.AddChain(cs.chain)
		for _, rs := range cs.rules {
			c.AddRule(&nftables.Rule{Table: table, Chain: cs.chain, Exprs: rs.exprs, UserData: comment(rs.comment)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write nftables table ip %s: %w", TableName, err)
	}
	return nil
}

// Remove deletes lifeline's table, if present.
func (n NFTables) Remove() error {
	c, err := n.conn()
	if err != nil {
		return err
	}
	present, err := n.present(c)
	if err != nil || !present {
		return err
	}
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table ip %s: %w", TableName, err)
	}
	return nil
}

func (NFTables) present(c *nftables.Conn) (bool, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			return true, nil
		}
	}
	return false, nil
}

// Inspect compares lifeline's table with r chain by chain and rule by rule
// (hook, type, priority, policy, and every expression the nftables library
// can read back), and lists forward-hook chains of other tables whose policy
// is drop.
func (n NFTables) Inspect(r Rules) (FirewallState, error) {
	var st FirewallState
	c, err := n.conn()
	if err != nil {
		return st, err
	}
	chains, err := c.ListChains()
	if err != nil {
		return st, fmt.Errorf("list nftables chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == TableName && ch.Table.Family == nftables.TableFamilyIPv4 {
			continue
		}
		fam := ch.Table.Family
		if fam != nftables.TableFamilyIPv4 && fam != nftables.TableFamilyINet {
			continue
		}
		if ch.Hooknum != nil && *ch.Hooknum == *nftables.ChainHookForward && ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
			st.Warnings = append(st.Warnings, fmt.Sprintf("chain %s %s %s has a forward hook with policy drop: forwarded traffic lifeline accepts is still dropped there unless that chain accepts it", familyName(fam), ch.Table.Name, ch.Name))
		}
	}
	st.Present, err = n.present(c)
	if err != nil || !st.Present {
		return st, err
	}
	have := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table.Name == TableName && ch.Table.Family == nftables.TableFamilyIPv4 {
			have[ch.Name] = ch
		}
	}
	for _, want := range build(r) {
		got, ok := have[want.chain.Name]
		if !ok {
			st.Differences = append(st.Differences, fmt.Sprintf("chain %s missing", want.chain.Name))
			continue
		}
		delete(have, want.chain.Name)
		if d := chainDiff(want.chain, got); d != "" {
			st.Differences = append(st.Differences, fmt.Sprintf("chain %s: %s", want.chain.Name, d))
		}
		rules, err := c.GetRules(table, got)
		if err != nil {
			return st, fmt.Errorf("list rules of chain %s: %w", got.Name, err)
		}
		st.Differences = append(st.Differences, rulesDiff(want.chain.Name, want.rules, rules)...)
	}
	for name := range have {
		st.Differences = append(st.Differences, fmt.Sprintf("chain %s not wanted", name))
	}
	return st, nil
}

func chainDiff(want, got *nftables.Chain) string {
	switch {
	case got.Type != want.Type:
		return fmt.Sprintf("type %s, want %s", got.Type, want.Type)
	case got.Hooknum == nil || *got.Hooknum != *want.Hooknum:
		return "wrong hook"
	case got.Priority == nil || *got.Priority != *want.Priority:
		return "wrong priority"
	case got.Policy == nil || *got.Policy != *want.Policy:
		return "wrong policy"
	}
	return ""
}

func rulesDiff(chain string, want []ruleSpec, got []*nftables.Rule) []string {
	var diffs []string
	for i, w := range want {
		if i >= len(got) {
			diffs = append(diffs, fmt.Sprintf("chain %s: rule %q missing", chain, w.comment))
			continue
		}
		g := got[i]
		gc, _ := userdata.GetString(g.UserData, userdata.TypeComment)
		if gc != w.comment || !sameExprs(w.exprs, g.Exprs) {
			diffs = append(diffs, fmt.Sprintf("chain %s: rule %d is %q, want %q", chain, i+1, gc, w.comment))
		}
	}
	for _, g := range got[min(len(want), len(got)):] {
		gc, _ := userdata.GetString(g.UserData, userdata.TypeComment)
		diffs = append(diffs, fmt.Sprintf("chain %s: extra rule %q", chain, gc))
	}
	return diffs
}

// sameExprs compares expressions by their netlink encoding. Expression
// kinds the library cannot read back (rt, byteorder) are left out of both sides; the
// rule comment, written by the same builder, still tells them apart.
func sameExprs(want, got []expr.Any) bool {
	w := readable(want)
	if len(w) != len(got) {
		return false
	}
	for i := range w {
		a, err1 := expr.Marshal(byte(nftables.TableFamilyIPv4), w[i])
		b, err2 := expr.Marshal(byte(nftables.TableFamilyIPv4), got[i])
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			return false
		}
	}
	return true
}

func readable(es []expr.Any) []expr.Any {
	out := make([]expr.Any, 0, len(es))
	for _, e := range es {
		switch e.(type) {
		case *expr.Rt, *expr.Byteorder:
			continue
		}
		out = append(out, e)
	}
	return out
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprintf("family-%d", f)
}
