package mainwatch

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"
)

// ProbeOnce runs one round, up to the first target that answers, and
// leaves the watch's state alone.
func TestProbeOnce(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	open := ln.Addr().(*net.TCPAddr).Port
	// The third target is never probed: the second answers.
	targets, err := ParseTargets("tcp://127.0.0.1:" + strconv.Itoa(closedPort) + ",tcp://127.0.0.1:" + strconv.Itoa(open) + ",tcp://127.0.0.2:" + strconv.Itoa(open))
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Targets: targets, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	results, err := w.ProbeOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || results[0].OK || results[0].Reason == "" || !results[1].OK || results[1].Target != targets[1] {
		t.Fatalf("results %+v", results)
	}
	if st := w.Status(); st.Rounds != 0 || st.State != StateUnknown {
		t.Errorf("ProbeOnce changed the status: %+v", st)
	}
}
