package server

import (
	"net"
	"sync/atomic"
	"time"
)

// heardConn is a connection that remembers when its peer was last heard
// from: the time of the latest read that returned data. x/crypto/ssh reads
// through a buffer, so this costs one clock reading per batch of packets.
type heardConn struct {
	net.Conn
	now  func() time.Time
	unix atomic.Int64 // nanoseconds; 0: nothing read yet
}

func (c *heardConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.unix.Store(c.now().UnixNano())
	}
	return n, err
}

// last is when data last arrived (zero if never).
func (c *heardConn) last() time.Time {
	if n := c.unix.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}
