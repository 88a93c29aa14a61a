package gate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrHelloTimeout is in the chain of the read error (and so of the
// ssh.NewServerConn error) of a connection whose client did not send its
// version line and first packet within HelloTimeout. The chain also holds
// os.ErrDeadlineExceeded, and the error is a net.Error with Timeout true.
var ErrHelloTimeout = errors.New("no SSH version line and first packet in time (LIFELINE_HELLO_TIMEOUT)")

// ErrLoginGrace is in the chain of the read or write error of a connection
// that had not authenticated within LoginGrace, like ErrHelloTimeout.
var ErrLoginGrace = errors.New("no login in time (LIFELINE_LOGIN_GRACE)")

// ErrPreamble is the read error of a connection that sent more than
// MaxPreamble bytes of lines before its SSH version line; the gate closes it.
var ErrPreamble = fmt.Errorf("more than %d bytes before the SSH version line", MaxPreamble)

// MaxPreamble bounds the lines a client may send before its version line.
const MaxPreamble = 8 << 10

// helloConn applies the gate's deadlines to an admitted connection.
//
// x/crypto/ssh (v0.58) as a server writes its version line, reads the
// client's byte by byte straight from the conn (transport.go readVersion),
// then reads binary packets through a bufio.Reader in a goroutine of its
// own (handshake.go readLoop); the first is the client's KEXINIT. Reads are
// therefore sequential, and counting the bytes they return tells when the
// hello is complete: after the '\n' ending a line that starts "SSH-", the
// 4-byte packet length L and then L more bytes. Until then the read deadline
// is Admit + HelloTimeout; from then on it is Admit + LoginGrace, as the
// write deadline always is, until authenticated clears both. Timeouts of
// these deadlines come back as ErrHelloTimeout or ErrLoginGrace errors.
//
// Deadlines are socket deadlines and so on the wall clock (time.Now), not
// the gate's Clock.
type helloConn struct {
	net.Conn
	start        time.Time // wall clock at Admit
	hello, grace time.Duration

	mu     sync.Mutex  // orders deadline changes between Read and authenticated
	authed atomic.Bool // set by authenticated

	// Owned by the reading goroutine.
	done    bool // hello complete: reads pass straight through
	phase   int
	line    int     // bytes of the current line before the version line
	head    [4]byte // its first bytes
	skipped int     // bytes of whole lines before the version line
	lenBuf  [4]byte
	lenN    int
	rest    uint32 // bytes of the first packet still to come
}

const (
	phaseVersion = iota // reading lines until "SSH-...\n"
	phaseLength         // reading the first packet's length
	phasePacket         // reading the rest of the first packet
)

func newHelloConn(nc net.Conn, start time.Time, hello, grace time.Duration) *helloConn {
	return &helloConn{Conn: nc, start: start, hello: hello, grace: grace}
}

// arm sets the initial deadlines.
func (c *helloConn) arm() error {
	if err := c.Conn.SetWriteDeadline(c.start.Add(c.grace)); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(c.start.Add(c.hello))
}

func (c *helloConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		err = c.explain(err, true)
	}
	if c.done {
		return n, err
	}
	if c.authed.Load() {
		c.done = true
		return n, err
	}
	if perr := c.scan(p[:n]); perr != nil {
		c.Conn.Close()
		return 0, perr
	}
	if c.done {
		c.lift()
	}
	return n, err
}

func (c *helloConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		err = c.explain(err, false)
	}
	return n, err
}

// explain says which of the gate's deadlines a timeout is. Called from
// Read (which owns c.done) and Write (which only sees deadlines of grace).
func (c *helloConn) explain(err error, reading bool) error {
	var ne net.Error
	if c.authed.Load() || !errors.As(err, &ne) || !ne.Timeout() {
		return err
	}
	if reading && !c.done {
		return &deadlineError{what: ErrHelloTimeout, msg: "no SSH version line and first packet", after: c.hello, err: err}
	}
	return &deadlineError{what: ErrLoginGrace, msg: "no login", after: c.grace, err: err}
}

// scan follows the hello through b and sets c.done when it is complete.
func (c *helloConn) scan(b []byte) error {
	for i := 0; i < len(b) && !c.done; i++ {
		switch c.phase {
		case phaseVersion:
			x := b[i]
			if x == '\n' {
				if c.line >= len(c.head) && string(c.head[:]) == "SSH-" {
					c.phase = phaseLength
					continue
				}
				c.skipped += c.line + 1
				c.line = 0
				if c.skipped > MaxPreamble {
					return ErrPreamble
				}
				continue
			}
			if c.line < len(c.head) {
				c.head[c.line] = x
			}
			c.line++
			if c.skipped+c.line > MaxPreamble+maxVersionLine {
				return ErrPreamble
			}
		case phaseLength:
			c.lenBuf[c.lenN] = b[i]
			c.lenN++
			if c.lenN == len(c.lenBuf) {
				c.rest = binary.BigEndian.Uint32(c.lenBuf[:])
				c.phase = phasePacket
				c.done = c.rest == 0 // x/crypto rejects it; nothing to wait for
			}
		case phasePacket:
			take := min(uint32(len(b)-i), c.rest)
			c.rest -= take
			i += int(take) - 1
			c.done = c.rest == 0
		}
	}
	return nil
}

// maxVersionLine is RFC 4253's limit on the version line, CR LF included.
const maxVersionLine = 255

// lift replaces the hello deadline by the login grace.
func (c *helloConn) lift() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.authed.Load() {
		return
	}
	// An error means the socket is closed; the next read reports it.
	_ = c.Conn.SetReadDeadline(c.start.Add(c.grace))
}

// authenticated clears the deadlines for good.
func (c *helloConn) authenticated() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.authed.Store(true)
	_ = c.Conn.SetDeadline(time.Time{})
}

// deadlineError is a timeout of one of the gate's deadlines.
type deadlineError struct {
	what  error // ErrHelloTimeout or ErrLoginGrace
	msg   string
	after time.Duration
	err   error
}

func (e *deadlineError) Error() string {
	name := "LIFELINE_LOGIN_GRACE"
	if e.what == ErrHelloTimeout {
		name = "LIFELINE_HELLO_TIMEOUT"
	}
	return fmt.Sprintf("%s within %s (%s): %v", e.msg, e.after, name, e.err)
}
func (e *deadlineError) Timeout() bool   { return true }
func (e *deadlineError) Temporary() bool { return true }
func (e *deadlineError) Unwrap() []error { return []error{e.what, e.err} }

var _ net.Error = (*deadlineError)(nil)
