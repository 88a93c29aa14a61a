package server

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/lifeline-dev/lifeline/shared/netbind"
)

// keepalive asks an agent that was quiet for AgentQuiet once whether it is
// alive, and closes the connection unless it answers within
// AgentDeadAfter. Any packet from the agent counts as an answer.
func (c *conn) keepalive(ctx context.Context) {
	s := c.s
	for {
		quiet := s.cfg.Clock.Now().Sub(c.lastHeard())
		if quiet < s.cfg.AgentQuiet {
			if !c.sleep(ctx, s.cfg.AgentQuiet-quiet) {
				return
			}
			continue
		}
		start := s.cfg.Clock.Now()
		if c.ping(ctx, s.cfg.AgentDeadAfter) {
			c.rttNanos.Store(int64(s.cfg.Clock.Now().Sub(start)))
			continue
		}
		if ctx.Err() != nil {
			return
		}
		c.close(fmt.Sprintf("keepalive timeout: nothing heard for %s and no keepalive reply within %s, agent dead",
			s.cfg.AgentQuiet, s.cfg.AgentDeadAfter))
		return
	}
}

// sleep waits d on the server's clock; false means ctx ended first.
func (c *conn) sleep(ctx context.Context, d time.Duration) bool {
	t := c.s.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// agentKeepAlive is the TCP keepalive of agent connections for a dead
// agent dropped after d: for 90s, the first probe after 60s idle and three
// chances 10s apart. An idle live agent costs one probe and its ACK a
// minute from this side: 0.19 MB a day on its link.
func agentKeepAlive(d time.Duration) net.KeepAliveConfig {
	return netbind.KeepAlive(d, 3, d/9)
}

// lastHeard is when the client last sent anything (the connection's
// start when unknown).
func (c *conn) lastHeard() time.Time {
	if c.heard != nil {
		if t := c.heard.last(); !t.IsZero() {
			return t
		}
	}
	return c.start
}

// ping sends one keepalive and waits at most d for any reply.
func (c *conn) ping(ctx context.Context, d time.Duration) bool {
	done := make(chan error, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		// SendRequest blocks until a reply or the connection closes; the
		// connection is closed on shutdown or after too many misses.
		_, _, err := c.sc.SendRequest("keepalive@openssh.com", true, nil)
		done <- err
	}()
	timer := c.s.cfg.Clock.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-done:
		return err == nil
	case <-timer.C():
		return false
	case <-ctx.Done():
		return false
	}
}
