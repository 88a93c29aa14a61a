package server

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/shared/relay"
	"github.com/lifeline-dev/lifeline/shared/wire"
)

// jumpHelp is what a shell, a PTY or a command other than `status` and
// `hold` gets:
// %[1]s is the jump host as the operator names it, %[2]s a site's host,
// %[3]s the sites the operator may reach.
const jumpHelp = `lifeline: this is a jump host, not a shell; only ` + "`status` and `hold`" + ` run here.
  reach a site:         ssh -J %[1]s %[2]s
  copy files:           scp -J %[1]s file %[2]s:
  see what is online:   ssh %[1]s status   (or: status --json)
  keep it up (outage):  ssh %[1]s hold 2h  (hold 0 releases; hold alone shows)
  sites:                %[3]s
`

// help fills jumpHelp in for this operator.
func (c *conn) help() string {
	host := c.helpHostName()
	sites := c.s.sitesFor(c.identity())
	example := "pi"
	for _, t := range sites {
		if t.Port == 22 {
			example = t.Host
			break
		}
	}
	list := "none known"
	if len(sites) > 0 {
		names := make([]string, 0, len(sites))
		for _, t := range sites {
			names = append(names, t.String())
		}
		list = listOf(names, 6)
	}
	return fmt.Sprintf(jumpHelp, host, example, list)
}

// helpHostName is the jump host as the operator names it: what the client
// said (SetEnv LIFELINE_HOST=…), else LIFELINE_NAME, which is the Host of
// the Terraform module's ssh_config.
func (c *conn) helpHostName() string {
	if h := c.helpHost.Load(); h != nil {
		return *h
	}
	return c.s.cfg.Name
}

// listOf joins at most n items, saying how many more there are.
func listOf(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(" and %d more", len(items)-n)
}

// sitesFor lists the sites viewer may reach, online or not, sorted.
func (s *Server) sitesFor(viewer *authz.Identity) []authz.Target {
	seen := make(map[string]bool)
	var out []authz.Target
	add := func(t authz.Target) {
		k := targetKey(t.Host, t.Port)
		if seen[k] || viewer != nil && !viewer.MayOpen(t) {
			return
		}
		seen[k] = true
		out = append(out, t)
	}
	for _, b := range s.reg.Snapshot() {
		add(authz.Target{Host: b.Name, Port: b.Port})
	}
	for _, k := range s.knownSites() {
		add(k.target)
	}
	slices.SortFunc(out, func(a, b authz.Target) int {
		if c := strings.Compare(strings.ToLower(a.Host), strings.ToLower(b.Host)); c != 0 {
			return c
		}
		return cmp.Compare(a.Port, b.Port)
	})
	return out
}

// refuseChannel rejects nc with reason, which the client sees (it must name
// no server path) and the audit log keeps.
func (c *conn) refuseChannel(nc ssh.NewChannel, why ssh.RejectionReason, reason string) {
	c.refuseChannelDetail(nc, why, reason, "")
}

// refuseChannelDetail is refuseChannel with detail for the audit log only
// (key files and lines, the operator's permits).
func (c *conn) refuseChannelDetail(nc ssh.NewChannel, why ssh.RejectionReason, reason, detail string) {
	reason = redact(reason)
	ev := c.event(audit.KindRefused)
	ev.Reason = nc.ChannelType() + ": " + reason
	if detail != "" {
		ev.Reason += " [" + detail + "]"
	}
	c.s.cfg.Audit.Record(ev)
	c.s.cfg.Log.Debug("refused channel", "type", nc.ChannelType(), "key", c.identity().Name, "remote", c.remote, "reason", reason, "detail", detail)
	nc.Reject(why, reason)
}

func (c *conn) handleChannel(ctx context.Context, nc ssh.NewChannel) {
	if !c.allow() {
		c.refuseChannel(nc, ssh.ResourceShortage, fmt.Sprintf("more than %d requests a second (LIFELINE_REQUESTS_PER_SECOND)", c.s.cfg.Limits.RequestsPerSecond))
		return
	}
	if c.isAgent() {
		switch nc.ChannelType() {
		case "direct-tcpip":
			c.refuseChannel(nc, ssh.Prohibited, "agent keys may not open connections through the bastion")
		case "session":
			c.refuseChannel(nc, ssh.Prohibited, "agent keys may not open sessions")
		default:
			c.refuseChannel(nc, ssh.Prohibited, "channel type not offered by this jump host")
		}
		return
	}
	switch nc.ChannelType() {
	case "direct-tcpip", "session":
	default:
		c.refuseChannel(nc, ssh.Prohibited, "channel type not offered by this jump host")
		return
	}
	// Every channel re-checks the current policy: a key removed by a
	// reload, or a login past its expiry, opens nothing more.
	if !c.recheck("checked at a new channel") {
		nc.Reject(ssh.Prohibited, "this key is no longer authorized")
		return
	}
	id := c.identity()
	switch nc.ChannelType() {
	case "direct-tcpip":
		if id.NoPortForwarding {
			c.refuseChannel(nc, ssh.Prohibited, "this key may not jump (no-port-forwarding)")
			return
		}
		d, err := wire.ParseDirectTCPIP(nc.ExtraData())
		if err != nil {
			c.refuseChannel(nc, ssh.ConnectionFailed, err.Error())
			return
		}
		target, b, reason, detail := c.route(d)
		if reason != "" {
			c.refuseChannelDetail(nc, ssh.Prohibited, reason, detail)
			return
		}
		release, reason := c.acquire(b.agent)
		if reason != "" {
			c.refuseChannel(nc, ssh.ResourceShortage, reason)
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer release()
			c.jump(ctx, nc, target, b)
		}()
	case "session":
		release, reason := c.acquire(nil)
		if reason != "" {
			c.refuseChannel(nc, ssh.ResourceShortage, reason)
			return
		}
		ch, reqs, err := nc.Accept()
		if err != nil {
			release()
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer release()
			c.serveSession(ctx, ch, reqs)
		}()
	}
}

// route decides where an operator's direct-tcpip goes. It returns a reason
// the client sees when the request is refused, and detail for the audit log.
func (c *conn) route(d wire.DirectTCPIP) (t authz.Target, b bindingView, reason, detail string) {
	s := c.s
	t = authz.Target{Host: d.Host, Port: d.Port}
	host := strings.TrimSuffix(strings.ToLower(d.Host), ".")
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return t, b, fmt.Sprintf("%s is an address: the bastion only connects to names registered by agents, never to addresses", t), ""
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return t, b, fmt.Sprintf("%s: the bastion never connects to itself", t), ""
	}
	id := c.identity()
	see := "see: ssh " + s.cfg.Name + " status"
	if !id.MayOpen(t) {
		mine := make([]string, 0, len(id.Open))
		for _, o := range id.Open {
			mine = append(mine, o.String())
		}
		return t, b, fmt.Sprintf("%s is not permitted for this key (not in its permitopen): it may reach %s", t, listOf(mine, 6)),
			fmt.Sprintf("key %s authorized by %s", id.Name, id.Source)
	}
	if r, ok := s.reg.Lookup(d.Host, d.Port); ok {
		return t, bindingView{name: r.Name, port: r.Port, agent: r.Session}, "", ""
	}
	now := s.cfg.Clock.Now()
	for _, k := range s.knownSites() {
		if !sameTargetFold(k.target, t) {
			continue
		}
		if d := k.left; d != nil {
			short, _, _ := strings.Cut(d.reason, ": ")
			return t, b, fmt.Sprintf("%s is offline since %s (last seen from %s, %s); %s",
				k.target, shortTime(d.since, now), d.from.Addr(), short, see), "agent " + describe(&authz.Identity{Name: d.agent, Fingerprint: d.fingerprint}) + ": " + d.reason
		}
		return t, b, fmt.Sprintf("%s is offline: its agent has not connected since the bastion started at %s; %s",
			k.target, shortTime(s.started, now), see), "permitted to agent key " + describe(&authz.Identity{Name: k.agent, Fingerprint: k.fingerprint})
	}
	names := make([]string, 0)
	for _, o := range s.sitesFor(id) {
		names = append(names, o.String())
	}
	known := "no site is known here"
	if len(names) > 0 {
		known = "sites here: " + listOf(names, 6)
	}
	return t, b, fmt.Sprintf("%s is unknown: no agent may register it (%s)", t, known), ""
}

// sameTargetFold compares targets as the registry does: ASCII case folded.
func sameTargetFold(a, b authz.Target) bool {
	return a.Port == b.Port && targetKey(a.Host, 0) == targetKey(b.Host, 0)
}

type bindingView struct {
	name  string
	port  uint32
	agent *conn
}

// jump relays an operator's channel to the agent holding the name.
func (c *conn) jump(ctx context.Context, nc ssh.NewChannel, t authz.Target, b bindingView) {
	s := c.s
	start := s.cfg.Clock.Now()
	payload := wire.ForwardedTCPIP{
		Addr: b.name, Port: b.port,
		OriginAddr: c.remote.Addr().Unmap().String(), OriginPort: uint32(c.remote.Port()),
	}.Marshal()

	type opened struct {
		ch   ssh.Channel
		reqs <-chan *ssh.Request
		err  error
	}
	res := make(chan opened, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ch, reqs, err := b.agent.sc.OpenChannel("forwarded-tcpip", payload)
		res <- opened{ch, reqs, err}
	}()
	timer := s.cfg.Clock.NewTimer(s.cfg.OpenTimeout)
	defer timer.Stop()
	var up opened
	select {
	case up = <-res:
	case <-timer.C():
		up.err = fmt.Errorf("agent did not answer within %s", s.cfg.OpenTimeout)
		// Close whatever arrives late.
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if late := <-res; late.err == nil {
				late.ch.Close()
			}
		}()
	case <-ctx.Done():
		up.err = ctx.Err()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if late := <-res; late.err == nil {
				late.ch.Close()
			}
		}()
	}
	if up.err != nil {
		reason := fmt.Sprintf("%s: agent %s could not connect: %v", t, b.agent.identity().Name, up.err)
		c.refuseChannel(nc, ssh.ConnectionFailed, reason)
		return
	}
	down, downReqs, err := nc.Accept()
	if err != nil {
		up.ch.Close()
		return
	}
	c.wg.Add(2)
	go func() { defer c.wg.Done(); ssh.DiscardRequests(up.reqs) }()
	go func() { defer c.wg.Done(); ssh.DiscardRequests(downReqs) }()

	ev := c.event(audit.KindJump)
	ev.Target = t.String()
	ev.Agent = describe(b.agent.identity()) + " from " + b.agent.remote.String()
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("jump", "operator", c.identity().Name, "target", t.String(), "agent", b.agent.identity().Name, "session", c.id)

	stop := context.AfterFunc(ctx, func() {
		down.Close()
		up.ch.Close()
	})
	// in: towards the target; out: back to the operator.
	in, out := relay.Copy(down, up.ch)
	stop()

	end := c.event(audit.KindJumpEnd)
	end.Target = t.String()
	end.Agent = ev.Agent
	end.BytesIn, end.BytesOut = in, out
	end.DurationMS = s.cfg.Clock.Now().Sub(start).Milliseconds()
	s.cfg.Audit.Record(end)
}

// serveSession answers an operator's session channel: `status`,
// `status --json` and `hold` run; everything else is refused with a short
// help. A PTY
// is granted only so that the help reaches a terminal in raw mode: a shell
// then gets the help and exit status 1, `status` still runs.
func (c *conn) serveSession(ctx context.Context, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	defer stop()
	pty := false
	for req := range reqs {
		switch req.Type {
		case "exec":
			var cmd struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &cmd); err != nil {
				req.Reply(false, nil)
				continue
			}
			c.exec(ch, req, strings.TrimSpace(cmd.Command), pty)
			return
		case "shell":
			// Accept the request only to explain, then exit 1: nothing runs.
			what := "shell"
			if pty {
				what = "shell with a PTY"
			}
			c.audit(audit.KindRefused, what+": this is a jump host")
			req.Reply(true, nil)
			c.writeHelp(ch, pty)
			exit(ch, 1)
			return
		case "pty-req":
			// Granted, but nothing will run on it: without it, OpenSSH
			// prints only "PTY allocation request failed" and a stock
			// client configured with RequestTTY never sees the help.
			pty = true
			req.Reply(true, nil)
		case "env":
			// Refused like every variable, but LIFELINE_HOST (ssh_config
			// SetEnv) names this jump host in the help.
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil && kv.Name == "LIFELINE_HOST" && validHostName(kv.Value) {
				v := kv.Value
				c.helpHost.Store(&v)
			}
			c.refuseSessionReq(req, "env is not offered by this jump host")
		case "subsystem":
			// Accepted only to explain on stderr, then exit 1, like a
			// shell: OpenSSH exits at a refused subsystem without
			// printing what came before it.
			var sub struct{ Name string }
			ssh.Unmarshal(req.Payload, &sub)
			name := truncate(strings.Map(printable, sub.Name), 40)
			c.audit(audit.KindRefused, "subsystem "+name+" is not offered by this jump host")
			req.Reply(true, nil)
			host := c.helpHostName()
			fmt.Fprintf(ch.Stderr(), "lifeline: %s is a jump host without %s: go through it, e.g. scp -J %s file pi: or sftp -J %s pi\n",
				host, orQuoted(name), host, host)
			exit(ch, 1)
			return
		case "x11-req", "auth-agent-req@openssh.com", "keepalive@openssh.com":
			c.refuseSessionReq(req, req.Type+" is not offered by this jump host")
		default:
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
}

// orQuoted names a subsystem for the explanation.
func orQuoted(name string) string {
	if name == "" {
		return "subsystems"
	}
	return name
}

func printable(r rune) rune {
	if r < ' ' || r > '~' {
		return -1
	}
	return r
}

// validHostName accepts what may name a host in an ssh_config: letters,
// digits, dot, dash, underscore; at most 64 bytes.
func validHostName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// writeHelp writes the help: on stderr, or with a PTY on stdout with the
// CR LF line ends a terminal in raw mode needs.
func (c *conn) writeHelp(ch ssh.Channel, pty bool) {
	text := c.help()
	if pty {
		io.WriteString(ch, strings.ReplaceAll(text, "\n", "\r\n"))
		return
	}
	io.WriteString(ch.Stderr(), text)
}

func (c *conn) audit(kind, reason string) {
	ev := c.event(kind)
	ev.Reason = reason
	c.s.cfg.Audit.Record(ev)
}

func (c *conn) refuseSessionReq(req *ssh.Request, reason string) {
	if req.Type != "keepalive@openssh.com" && req.Type != "env" {
		c.audit(audit.KindRefused, reason)
	}
	if req.WantReply {
		req.Reply(false, nil)
	}
}

func (c *conn) exec(ch ssh.Channel, req *ssh.Request, cmd string, pty bool) {
	fields := strings.Fields(cmd)
	if len(fields) >= 1 && fields[0] == "status" && len(fields) <= 2 {
		asJSON := len(fields) == 2 && (fields[1] == "--json" || fields[1] == "-j")
		if len(fields) == 2 && !asJSON {
			req.Reply(true, nil)
			fmt.Fprintf(ch.Stderr(), "lifeline: unknown option %q: use status or status --json\n", fields[1])
			exit(ch, 2)
			return
		}
		req.Reply(true, nil)
		c.audit(audit.KindStatus, cmd)
		var out io.Writer = ch
		if pty {
			out = crlfWriter{ch}
		}
		if err := c.s.writeStatus(out, c.identity(), asJSON); err != nil {
			fmt.Fprintf(ch.Stderr(), "lifeline: status: %v\n", err)
			exit(ch, 1)
			return
		}
		exit(ch, 0)
		return
	}
	if len(fields) >= 1 && fields[0] == "hold" {
		var out io.Writer = ch
		if pty {
			out = crlfWriter{ch}
		}
		c.hold(ch, req, fields[1:], out)
		return
	}
	c.audit(audit.KindRefused, fmt.Sprintf("exec %q: only `status` and `hold` run here", truncate(cmd, 80)))
	req.Reply(true, nil)
	c.writeHelp(ch, pty)
	exit(ch, 1)
}

// crlfWriter turns line ends into CR LF, for a terminal in raw mode.
type crlfWriter struct{ w io.Writer }

func (c crlfWriter) Write(p []byte) (int, error) {
	if _, err := c.w.Write(bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}

func exit(ch ssh.Channel, code uint32) {
	ch.SendRequest("exit-status", false, ssh.Marshal(struct{ C uint32 }{code}))
	ch.CloseWrite()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
