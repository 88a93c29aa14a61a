package server

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/bastion/wire"
)

const jumpHelp = `lifeline: this is a jump host, not a shell; only ` + "`status`" + ` runs here.
  reach a site:         ssh -J %[1]s pi
  copy files:           scp -J %[1]s file pi:
  see what is online:   ssh %[1]s status   (or: status --json)
`

func (ss *session) refuseChannel(nc ssh.NewChannel, why ssh.RejectionReason, reason string) {
	ev := ss.event(audit.KindRefused)
	ev.Reason = nc.ChannelType() + ": " + reason
	ss.s.cfg.Audit.Record(ev)
	ss.s.cfg.Log.Debug("refused channel", "type", nc.ChannelType(), "key", ss.identity().Name, "remote", ss.remote, "reason", reason)
	nc.Reject(why, reason)
}

func (ss *session) handleChannel(ctx context.Context, nc ssh.NewChannel) {
	if !ss.allow() {
		ss.refuseChannel(nc, ssh.ResourceShortage, fmt.Sprintf("more than %d requests a second (LIFELINE_REQUESTS_PER_SECOND)", ss.s.cfg.Limits.RequestsPerSecond))
		return
	}
	if ss.isAgent() {
		switch nc.ChannelType() {
		case "direct-tcpip":
			ss.refuseChannel(nc, ssh.Prohibited, "agent keys may not open connections through the bastion")
		case "session":
			ss.refuseChannel(nc, ssh.Prohibited, "agent keys may not open sessions")
		default:
			ss.refuseChannel(nc, ssh.Prohibited, "channel type not offered by this jump host")
		}
		return
	}
	switch nc.ChannelType() {
	case "direct-tcpip", "session":
	default:
		ss.refuseChannel(nc, ssh.Prohibited, "channel type not offered by this jump host")
		return
	}
	// Every channel re-checks the current policy: a key removed by a
	// reload, or a login past its expiry, opens nothing more.
	if !ss.recheck("checked at a new channel") {
		nc.Reject(ssh.Prohibited, "this key is no longer authorized")
		return
	}
	id := ss.identity()
	switch nc.ChannelType() {
	case "direct-tcpip":
		if id.NoPortForwarding {
			ss.refuseChannel(nc, ssh.Prohibited, "this key may not jump (no-port-forwarding)")
			return
		}
		d, err := wire.ParseDirectTCPIP(nc.ExtraData())
		if err != nil {
			ss.refuseChannel(nc, ssh.ConnectionFailed, err.Error())
			return
		}
		target, b, reason := ss.route(d)
		if reason != "" {
			ss.refuseChannel(nc, ssh.Prohibited, reason)
			return
		}
		release, reason := ss.acquire(b.agent)
		if reason != "" {
			ss.refuseChannel(nc, ssh.ResourceShortage, reason)
			return
		}
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			defer release()
			ss.jump(ctx, nc, target, b)
		}()
	case "session":
		release, reason := ss.acquire(nil)
		if reason != "" {
			ss.refuseChannel(nc, ssh.ResourceShortage, reason)
			return
		}
		ch, reqs, err := nc.Accept()
		if err != nil {
			release()
			return
		}
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			defer release()
			ss.serveSession(ctx, ch, reqs)
		}()
	}
}

// route decides where an operator's direct-tcpip goes. It returns a reason
// when the request is refused.
func (ss *session) route(d wire.DirectTCPIP) (authz.Target, bindingView, string) {
	t := authz.Target{Host: d.Host, Port: d.Port}
	host := strings.TrimSuffix(strings.ToLower(d.Host), ".")
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return t, bindingView{}, fmt.Sprintf("%s is an address: the bastion only connects to names registered by agents, never to addresses", t)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return t, bindingView{}, fmt.Sprintf("%s: the bastion never connects to itself", t)
	}
	if !ss.identity().MayOpen(t) {
		return t, bindingView{}, fmt.Sprintf("%s is not permitted for this key (not in its permitopen)", t)
	}
	b, ok := ss.s.reg.Lookup(d.Host, d.Port)
	if !ok {
		return t, bindingView{}, fmt.Sprintf("%s is not registered by any connected agent", t)
	}
	return t, bindingView{name: b.Name, port: b.Port, agent: b.Session}, ""
}

type bindingView struct {
	name  string
	port  uint32
	agent *session
}

// jump relays an operator's channel to the agent holding the name.
func (ss *session) jump(ctx context.Context, nc ssh.NewChannel, t authz.Target, b bindingView) {
	s := ss.s
	start := s.cfg.Now()
	payload := wire.ForwardedTCPIP{
		Addr: b.name, Port: b.port,
		OriginAddr: ss.remote.Addr().Unmap().String(), OriginPort: uint32(ss.remote.Port()),
	}.Marshal()

	type opened struct {
		ch   ssh.Channel
		reqs <-chan *ssh.Request
		err  error
	}
	res := make(chan opened, 1)
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		ch, reqs, err := b.agent.conn.OpenChannel("forwarded-tcpip", payload)
		res <- opened{ch, reqs, err}
	}()
	timer := time.NewTimer(s.cfg.OpenTimeout)
	defer timer.Stop()
	var up opened
	select {
	case up = <-res:
	case <-timer.C:
		up.err = fmt.Errorf("agent did not answer within %s", s.cfg.OpenTimeout)
		// Close whatever arrives late.
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			if late := <-res; late.err == nil {
				late.ch.Close()
			}
		}()
	case <-ctx.Done():
		up.err = ctx.Err()
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			if late := <-res; late.err == nil {
				late.ch.Close()
			}
		}()
	}
	if up.err != nil {
		reason := fmt.Sprintf("%s: agent %s could not connect: %v", t, b.agent.identity().Name, up.err)
		ss.refuseChannel(nc, ssh.ConnectionFailed, reason)
		return
	}
	down, downReqs, err := nc.Accept()
	if err != nil {
		up.ch.Close()
		return
	}
	ss.wg.Add(2)
	go func() { defer ss.wg.Done(); ssh.DiscardRequests(up.reqs) }()
	go func() { defer ss.wg.Done(); ssh.DiscardRequests(downReqs) }()

	ev := ss.event(audit.KindJump)
	ev.Target = t.String()
	ev.Agent = describe(b.agent.identity()) + " from " + b.agent.remote.String()
	s.cfg.Audit.Record(ev)
	s.cfg.Log.Info("jump", "operator", ss.identity().Name, "target", t.String(), "agent", b.agent.identity().Name, "session", ss.id)

	stop := context.AfterFunc(ctx, func() {
		down.Close()
		up.ch.Close()
	})
	in, out := relay(down, up.ch)
	stop()

	end := ss.event(audit.KindJumpEnd)
	end.Target = t.String()
	end.Agent = ev.Agent
	end.BytesIn, end.BytesOut = in, out
	end.DurationMS = s.cfg.Now().Sub(start).Milliseconds()
	s.cfg.Audit.Record(end)
}

// relay copies both ways between the operator's channel and the agent's
// until both directions are done, passing half-closes on. The SSH channel
// windows give backpressure end to end. It returns the bytes sent towards the
// target (in) and back to the operator (out).
func relay(operator, agent ssh.Channel) (in, out int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		in, _ = copyBuf(agent, operator)
		agent.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		out, _ = copyBuf(operator, agent)
		operator.CloseWrite()
	}()
	wg.Wait()
	operator.Close()
	agent.Close()
	return in, out
}

// relayChunk is what one write into a channel carries: 9 bytes short of a
// 32 KiB packet, so that the receiving x/crypto, which copies each packet
// (type, channel id and length: 9 bytes, then the data) into a fresh slice,
// allocates exactly 32 KiB for it instead of rounding 32 KiB + 9 up to
// 40 KiB. A stalled channel then holds its 2 MiB window, not 2.5 MiB.
const relayChunk = 32<<10 - 9

// bufPool holds the relay's copy buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, relayChunk); return &b }}

func copyBuf(dst io.Writer, src io.Reader) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	return io.CopyBuffer(dst, src, *bp)
}

// serveSession answers an operator's session channel: `status` and
// `status --json` run; everything else is refused with a short help.
func (ss *session) serveSession(ctx context.Context, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	defer stop()
	for req := range reqs {
		switch req.Type {
		case "exec":
			var cmd struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &cmd); err != nil {
				req.Reply(false, nil)
				continue
			}
			ss.exec(ch, req, strings.TrimSpace(cmd.Command))
			return
		case "shell":
			// Accept the request only to explain, then exit 1: nothing runs.
			ss.audit(audit.KindRefused, "shell: this is a jump host")
			req.Reply(true, nil)
			fmt.Fprintf(ch.Stderr(), jumpHelp, ss.s.cfg.Name)
			exit(ch, 1)
			return
		case "pty-req", "env", "subsystem", "x11-req", "auth-agent-req@openssh.com", "keepalive@openssh.com":
			ss.refuseSessionReq(req, req.Type+" is not offered by this jump host")
		default:
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
}

func (ss *session) audit(kind, reason string) {
	ev := ss.event(kind)
	ev.Reason = reason
	ss.s.cfg.Audit.Record(ev)
}

func (ss *session) refuseSessionReq(req *ssh.Request, reason string) {
	if req.Type != "keepalive@openssh.com" && req.Type != "env" {
		ss.audit(audit.KindRefused, reason)
	}
	if req.WantReply {
		req.Reply(false, nil)
	}
}

func (ss *session) exec(ch ssh.Channel, req *ssh.Request, cmd string) {
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
		ss.audit(audit.KindStatus, cmd)
		if err := ss.s.writeStatus(ch, ss.identity(), asJSON); err != nil {
			fmt.Fprintf(ch.Stderr(), "lifeline: status: %v\n", err)
			exit(ch, 1)
			return
		}
		exit(ch, 0)
		return
	}
	ss.audit(audit.KindRefused, fmt.Sprintf("exec %q: only `status` runs here", truncate(cmd, 80)))
	req.Reply(true, nil)
	fmt.Fprintf(ch.Stderr(), jumpHelp, ss.s.cfg.Name)
	exit(ch, 1)
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
