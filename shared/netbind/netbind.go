// Package netbind configures the sockets lifeline dials out on: bound to one
// interface (so the tunnel and the link checks always leave by the backup
// uplink) and with a bound on unacknowledged writes (so a half-open TCP
// connection is noticed in seconds, not the kernel's 15 minutes).
package netbind

import (
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Control returns a net.Dialer.Control function. When iface is not empty the
// socket is bound to it with SO_BINDTODEVICE (no capability is needed for
// this since Linux 5.7 as long as the socket is not yet bound). When
// userTimeout is positive TCP_USER_TIMEOUT is set on TCP sockets. With
// neither, it returns nil (the dialer's default).
func Control(iface string, userTimeout time.Duration) func(network, address string, c syscall.RawConn) error {
	if iface == "" && userTimeout <= 0 {
		return nil
	}
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if iface != "" {
				if e := unix.BindToDevice(int(fd), iface); e != nil {
					serr = fmt.Errorf("bind socket to interface %s: %w", iface, e)
					return
				}
			}
			if userTimeout > 0 && (network == "tcp" || network == "tcp4" || network == "tcp6") {
				ms := int(userTimeout / time.Millisecond)
				if e := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms); e != nil {
					serr = fmt.Errorf("set TCP_USER_TIMEOUT: %w", e)
				}
			}
		})
		if err != nil {
			return fmt.Errorf("configure socket: %w", err)
		}
		return serr
	}
}

// SetUserTimeout sets TCP_USER_TIMEOUT on an established TCP connection
// (the bastion uses it on accepted agent connections).
func SetUserTimeout(conn net.Conn, d time.Duration) error {
	tc, ok := conn.(*net.TCPConn)
	if !ok || d <= 0 {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return fmt.Errorf("set TCP_USER_TIMEOUT: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d/time.Millisecond))
	}); err != nil {
		return fmt.Errorf("set TCP_USER_TIMEOUT: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("set TCP_USER_TIMEOUT: %w", serr)
	}
	return nil
}

// KeepAlive is the TCP keepalive of a connection declared dead after dead
// of silence, given TCP_USER_TIMEOUT = dead on the same socket (Control,
// SetUserTimeout). The kernel sends a probe only once nothing has been
// received for dead − probes×every, then one every every: probes chances
// to hear back. With a user timeout set, Linux resets the connection at the
// first probe timer after dead has passed since the last segment received
// with a probe unanswered (Count then does not end it), so a dead peer is
// found within dead and a live, idle one costs one probe and its ACK per
// idle period (66 bytes each on Ethernet with TCP timestamps). Traffic
// that flows anyway resets the idle time. Linux counts in whole seconds.
func KeepAlive(dead time.Duration, probes int, every time.Duration) net.KeepAliveConfig {
	every = max(every.Round(time.Second), time.Second)
	idle := max(dead-time.Duration(probes)*every, time.Second)
	return net.KeepAliveConfig{Enable: true, Idle: idle, Interval: every, Count: probes}
}

// SetKeepAlive sets TCP keepalive on an established TCP connection (other
// connections are left alone).
func SetKeepAlive(conn net.Conn, ka net.KeepAliveConfig) error {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	if err := tc.SetKeepAliveConfig(ka); err != nil {
		return fmt.Errorf("set TCP keepalive: %w", err)
	}
	return nil
}
