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
