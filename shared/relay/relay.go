// Package relay copies bytes both ways between two connections, the one
// mechanism behind every forwarded connection: the bastion's relay from an
// operator's channel to an agent's, and the agent's from that channel to
// the target on the LAN.
package relay

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Chunk is what one write into an SSH channel carries: 9 bytes short of a
// 32 KiB packet, so that the receiving x/crypto, which copies each packet
// (type, channel id and length: 9 bytes, then the data) into a fresh slice,
// allocates exactly 32 KiB for it instead of rounding 32 KiB + 9 up to
// 40 KiB. A stalled channel then holds its 2 MiB window, not 2.5 MiB.
const Chunk = 32<<10 - 9

var bufPool = sync.Pool{New: func() any { b := make([]byte, Chunk); return &b }}

// Copy copies a to b and b to a until both directions are done, passing
// each half-close on (CloseWrite where the connection has one; a
// connection without it is closed once its sending side ends). It closes
// both connections before it returns, and returns the bytes copied each
// way. SSH channel windows and TCP give backpressure end to end: a side
// that stops reading stops the other side's reads, holding at most one
// window. To end a relay early, close both connections.
func Copy(a, b io.ReadWriteCloser) (aToB, bToA int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		bToA = copyHalf(a, b)
	}()
	aToB = copyHalf(b, a)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA
}

// copyHalf copies src to dst, then passes the end of src on to dst.
func copyHalf(dst, src io.ReadWriteCloser) int64 {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	// Only dst's Write and src's Read: no ReaderFrom/WriterTo shortcut, so
	// every write is at most one Chunk.
	n, _ := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
	closeWrite(dst)
	return n
}

func closeWrite(c io.Closer) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
			return
		}
	}
	c.Close()
}
