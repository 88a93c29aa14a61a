package netbind

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestKeepAliveSettings(t *testing.T) {
	tests := []struct {
		name         string
		dead, every  time.Duration
		probes       int
		idle, interv time.Duration
	}{
		{"agent default", 15 * time.Second, time.Second, 4, 11 * time.Second, time.Second},
		{"bastion default", 90 * time.Second, 10 * time.Second, 3, 60 * time.Second, 10 * time.Second},
		{"agent, a minute", time.Minute, 4 * time.Second, 4, 44 * time.Second, 4 * time.Second},
		// Linux counts whole seconds: shorter bounds take the shortest it has.
		{"below a second", 300 * time.Millisecond, 20 * time.Millisecond, 4, time.Second, time.Second},
		{"interval rounds", 15 * time.Second, 1400 * time.Millisecond, 4, 11 * time.Second, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka := KeepAlive(tt.dead, tt.probes, tt.every)
			if !ka.Enable || ka.Idle != tt.idle || ka.Interval != tt.interv || ka.Count != tt.probes {
				t.Errorf("KeepAlive(%s, %d, %s) = %+v, want idle %s interval %s count %d", tt.dead, tt.probes, tt.every, ka, tt.idle, tt.interv, tt.probes)
			}
		})
	}
}

// TestSocketsCarryTheBounds checks what the kernel holds: a dialled socket
// with Control and a dialer's KeepAliveConfig, and an accepted one after
// SetUserTimeout and SetKeepAlive.
func TestSocketsCarryTheBounds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	d := &net.Dialer{KeepAliveConfig: KeepAlive(15*time.Second, 4, time.Second), Control: Control("", 15*time.Second)}
	c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expect(t, "dialled", c, 15000, 11, 1, 4)

	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer s.Close()
	if err := SetUserTimeout(s, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := SetKeepAlive(s, KeepAlive(90*time.Second, 3, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	expect(t, "accepted", s, 90000, 60, 10, 3)
}

func expect(t *testing.T, what string, c net.Conn, userMS, idle, intvl, cnt int) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	rc.Control(func(fd uintptr) {
		for name, opt := range map[string]int{"TCP_USER_TIMEOUT": unix.TCP_USER_TIMEOUT, "TCP_KEEPIDLE": unix.TCP_KEEPIDLE,
			"TCP_KEEPINTVL": unix.TCP_KEEPINTVL, "TCP_KEEPCNT": unix.TCP_KEEPCNT} {
			v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, opt)
			if err != nil {
				t.Errorf("%s: getsockopt %s: %v", what, name, err)
			}
			got[name] = v
		}
		v, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		got["SO_KEEPALIVE"] = v
	})
	want := map[string]int{"TCP_USER_TIMEOUT": userMS, "TCP_KEEPIDLE": idle, "TCP_KEEPINTVL": intvl, "TCP_KEEPCNT": cnt, "SO_KEEPALIVE": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s socket: %s = %d, want %d", what, k, got[k], v)
		}
	}
}
