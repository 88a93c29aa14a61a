package tunnel

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jpillora/backoff"
	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/shared/relay"
	"github.com/lifeline-dev/lifeline/shared/wire"
)

// registerAll registers every forward concurrently; a refused forward is
// retried slowly without touching the others or the connection.
func (s *conn) registerAll(ctx context.Context) {
	for _, f := range s.cfg.Forwards {
		s.goroutine(func() { s.register(ctx, f) })
	}
}

func (s *conn) register(ctx context.Context, f forward.Forward) {
	b := &backoff.Backoff{Min: max(s.cfg.BackoffMax/6, 100*time.Millisecond), Max: s.cfg.BackoffMax, Factor: 2, Jitter: true}
	payload := wire.Forward{BindAddr: f.Name, BindPort: uint32(f.Port)}.Marshal()
	for {
		ok, err := s.request(ctx, "tcpip-forward", payload)
		if ctx.Err() != nil {
			return
		}
		if err == nil && ok {
			s.l.update(func(st *Status) { st.Registered = append(st.Registered, f.Listen()) })
			s.log.Info("registered", "forward", f.Listen(), "target", f.Target())
			if w := stockServerWarning(string(s.sc.ServerVersion()), f.Name); w != "" {
				s.log.Warn(w, "forward", f.Listen(), "server", string(s.sc.ServerVersion()))
			}
			s.l.t.registered()
			s.l.t.rolesChanged()
			s.resent.Do(func() {
				s.l.t.resendReport(ctx, s)
				s.l.t.connReady(s)
			})
			return
		}
		wait := b.Duration()
		if err != nil {
			// No reply: the keepalive loop will judge the link.
			s.log.Warn("forward registration unanswered", "forward", f.Listen(), "err", err, "retry_in", wait.Round(time.Millisecond))
		} else {
			s.log.Error("forward refused by the bastion: is it in the agent key's permitlisten options (sudo lifeline-agent pair; lifeline-agent doctor checks it), or still held by an old connection?",
				"forward", f.Listen(), "retry_in", wait.Round(time.Millisecond))
		}
		tm := s.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			tm.Stop()
			return
		case <-tm.C():
		}
	}
}

// stockServerWarning says what a server other than lifeline's bastion does
// with a forward registered under a name: a stock sshd takes the name as a
// bind address and, with its default GatewayPorts no, binds the loopback
// address instead, so operators must use localhost:PORT there, not the name.
// It returns "" for lifeline's bastion, or when name is already an address.
func stockServerWarning(serverVersion, name string) string {
	if strings.HasPrefix(serverVersion, "SSH-2.0-lifeline") || name == "localhost" || net.ParseIP(name) != nil {
		return ""
	}
	return fmt.Sprintf("the bastion is not lifeline's (%s): it binds the forward's name %q as an address, which a stock sshd rewrites to 127.0.0.1 unless GatewayPorts allows more; operators reach it there as localhost:PORT, not by the name", serverVersion, name)
}

// serveChannels accepts forwarded-tcpip channels and rejects everything else.
func (s *conn) serveChannels(ctx context.Context, chans <-chan ssh.NewChannel) {
	for nc := range chans {
		if nc.ChannelType() != "forwarded-tcpip" {
			s.log.Warn("refused channel from the bastion", "type", nc.ChannelType())
			nc.Reject(ssh.UnknownChannelType, "lifeline-agent only serves forwarded-tcpip")
			continue
		}
		if !s.takeSlot() {
			s.reject(nc, ssh.ResourceShortage, fmt.Sprintf("too many connections (%d)", s.cfg.MaxChannels), "", nil)
			continue
		}
		if !s.goroutine(func() {
			defer s.releaseSlot()
			s.serve(ctx, nc)
		}) {
			s.releaseSlot()
			nc.Reject(ssh.ConnectionFailed, "agent is shutting down")
		}
	}
}

func (s *conn) reject(nc ssh.NewChannel, why ssh.RejectionReason, msg, fwd string, p *wire.ForwardedTCPIP) {
	s.l.update(func(st *Status) { st.Rejected++ })
	args := []any{"reason", msg}
	if fwd != "" {
		args = append(args, "forward", fwd)
	}
	if p != nil {
		args = append(args, "from", net.JoinHostPort(p.OriginAddr, strconv.Itoa(int(p.OriginPort))))
	}
	s.log.Warn("forwarded connection rejected", args...)
	if err := nc.Reject(why, msg); err != nil {
		s.log.Debug("reject", "err", err)
	}
}

// serve dials the forward's target and copies both ways with half-close.
func (s *conn) serve(ctx context.Context, nc ssh.NewChannel) {
	p, err := wire.ParseForwardedTCPIP(nc.ExtraData())
	if err != nil {
		s.reject(nc, ssh.Prohibited, err.Error(), "", nil)
		return
	}
	f, ok := matchForward(s.cfg.Forwards, p.Addr, p.Port)
	if !ok {
		s.reject(nc, ssh.Prohibited, fmt.Sprintf("no forward for %s", net.JoinHostPort(p.Addr, strconv.Itoa(int(p.Port)))), "", &p)
		return
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.TargetDialTimeout)
	target, err := s.cfg.TargetDialer.DialContext(dctx, "tcp", f.Target())
	cancel()
	if err != nil {
		s.reject(nc, ssh.ConnectionFailed, fmt.Sprintf("dial target %s: %v", f.Target(), err), f.Listen(), &p)
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		target.Close()
		s.log.Warn("accept forwarded connection", "forward", f.Listen(), "err", err)
		return
	}
	s.l.update(func(st *Status) { st.Served++ })
	from := net.JoinHostPort(p.OriginAddr, strconv.Itoa(int(p.OriginPort)))
	s.log.Info("forwarded connection", "forward", f.Listen(), "target", f.Target(), "from", from)
	start := time.Now()
	stop := context.AfterFunc(ctx, func() { ch.Close(); target.Close() })
	defer stop()
	s.goroutine(func() { ssh.DiscardRequests(reqs) })
	up, down := relay.Copy(ch, target)
	s.log.Debug("forwarded connection closed", "forward", f.Listen(), "from", from, "bytes_in", up, "bytes_out", down, "took", time.Since(start).Round(time.Millisecond))
}
