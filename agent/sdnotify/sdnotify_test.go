package sdnotify

import (
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestNotify(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		socket func(t *testing.T) string
	}{
		{"path", func(t *testing.T) string { return filepath.Join(t.TempDir(), "notify") }},
		{"abstract", func(t *testing.T) string { return "@lifeline-test-" + strconv.Itoa(int(time.Now().UnixNano())) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sock := tt.socket(t)
			c := listen(t, sock)
			n := FromEnv(func(k string) string {
				if k == "NOTIFY_SOCKET" {
					return sock
				}
				return ""
			})
			if !n.Enabled() {
				t.Fatal("notifier with a socket is disabled")
			}
			for _, state := range []string{"READY=1\nSTATUS=up", "WATCHDOG=1", "STOPPING=1"} {
				if err := n.Notify(state); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 256)
				if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
					t.Fatal(err)
				}
				k, err := c.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				if got := string(buf[:k]); got != state {
					t.Errorf("received %q, want %q", got, state)
				}
			}
		})
	}
}

func TestDisabledAndErrors(t *testing.T) {
	t.Parallel()
	var nilN *Notifier
	if err := nilN.Notify("READY=1"); err != nil {
		t.Errorf("nil notifier: %v", err)
	}
	if err := New("").Notify("READY=1"); err != nil {
		t.Errorf("empty socket: %v", err)
	}
	if err := New(filepath.Join(t.TempDir(), "absent")).Notify("READY=1"); err == nil {
		t.Error("missing socket: no error")
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Parallel()
	tests := []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"0", "", 0},
		{"junk", "", 0},
		{"-5", "", 0},
		{"30000000", "", 15 * time.Second},
		{"30000000", "42", 15 * time.Second},
		{"30000000", "43", 0},
	}
	for _, tt := range tests {
		env := map[string]string{"WATCHDOG_USEC": tt.usec, "WATCHDOG_PID": tt.pid}
		if got := WatchdogInterval(func(k string) string { return env[k] }, 42); got != tt.want {
			t.Errorf("WatchdogInterval(usec=%q pid=%q) = %v, want %v", tt.usec, tt.pid, got, tt.want)
		}
	}
}
