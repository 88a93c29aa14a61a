// Package sdnotify speaks systemd's notify protocol (sd_notify(3)) directly:
// one datagram per state change on the unix socket named by $NOTIFY_SOCKET.
// Without that variable (not started by systemd, or Type= is not notify)
// every call is a no-op.
package sdnotify

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// writeTimeout bounds one datagram's send.
const writeTimeout = time.Second

// Notifier sends states to systemd. The zero value and a nil *Notifier send
// nothing.
type Notifier struct {
	socket string
}

// New returns a Notifier for the socket path (a leading '@' names an
// abstract socket, as systemd writes it). An empty path sends nothing.
func New(socket string) *Notifier { return &Notifier{socket: socket} }

// FromEnv returns a Notifier for $NOTIFY_SOCKET as read by getenv
// (os.Getenv in production).
func FromEnv(getenv func(string) string) *Notifier { return New(getenv("NOTIFY_SOCKET")) }

// Enabled reports whether notifications go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Notify sends one datagram holding state (newline-separated assignments,
// e.g. "READY=1\nSTATUS=tunnel up"). It returns an error naming the socket
// when the datagram could not be sent; it is nil when disabled.
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	// Go maps a leading '@' to the abstract namespace itself.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	defer c.Close()
	// A datagram socket whose reader is stuck would block the caller (a
	// tunnel loop) for good; systemd reads at once.
	if err := c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	return nil
}

// WatchdogInterval returns how often WATCHDOG=1 should be sent: half of
// $WATCHDOG_USEC, as sd_watchdog_enabled(3) recommends. It returns 0 when the
// watchdog is off, when the value is not a positive number, or when
// $WATCHDOG_PID names another process than pid.
func WatchdogInterval(getenv func(string) string, pid int) time.Duration {
	usec, err := strconv.ParseUint(getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 {
		return 0
	}
	if p := getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(pid) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
