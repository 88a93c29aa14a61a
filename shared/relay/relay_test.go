package relay

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// pair is a connected TCP pair on loopback: TCP has half-close.
func pair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestCopyBothWaysWithHalfClose(t *testing.T) {
	t.Parallel()
	client, a := pair(t)
	b, server := pair(t)
	up := bytes.Repeat([]byte("u"), 3*Chunk+17)
	down := bytes.Repeat([]byte("d"), 2*Chunk+5)
	type res struct{ aToB, bToA int64 }
	done := make(chan res, 1)
	go func() { x, y := Copy(a, b); done <- res{x, y} }()

	// The server answers only after the client's half-close reached it:
	// the relay must pass the end of one direction on and keep the other.
	go func() {
		got, _ := io.ReadAll(server)
		if !bytes.Equal(got, up) {
			t.Errorf("server got %d bytes, want %d", len(got), len(up))
		}
		server.Write(down)
		server.CloseWrite()
	}()
	client.Write(up)
	client.CloseWrite()
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, down) {
		t.Fatalf("client got %d bytes (%v), want %d", len(got), err, len(down))
	}
	select {
	case r := <-done:
		if r.aToB != int64(len(up)) || r.bToA != int64(len(down)) {
			t.Errorf("Copy = %d, %d; want %d, %d", r.aToB, r.bToA, len(up), len(down))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Copy did not return after both sides ended")
	}
}

// A connection without CloseWrite is closed when its side ends, so the
// peer sees the end instead of waiting for ever.
type noHalfClose struct{ net.Conn }

func TestCopyClosesWithoutHalfClose(t *testing.T) {
	t.Parallel()
	client, a := pair(t)
	b, server := pair(t)
	done := make(chan struct{})
	go func() { Copy(a, noHalfClose{b}); close(done) }()
	client.Write([]byte("hello"))
	client.CloseWrite()
	got, _ := io.ReadAll(server)
	if string(got) != "hello" {
		t.Fatalf("server got %q", got)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Copy did not return")
	}
}

func TestCopyEndsWhenBothSidesClose(t *testing.T) {
	t.Parallel()
	_, a := pair(t)
	b, _ := pair(t)
	done := make(chan struct{})
	go func() { Copy(a, b); close(done) }()
	time.AfterFunc(50*time.Millisecond, func() { a.Close(); b.Close() })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Copy did not return after its connections were closed")
	}
}
