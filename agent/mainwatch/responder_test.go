package mainwatch

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// mode is how a responder answers.
type mode int

const (
	answer         mode = iota // NOERROR with the A record, as a real resolver does
	nxdomain                   // NXDOMAIN, no records
	servfail                   // SERVFAIL
	refused                    // REFUSED
	formerr                    // FORMERR
	silent                     // nothing
	garbage                    // bytes that are no DNS message
	wrongID                    // a NOERROR answer with another ID
	wrongIDAndGood             // that, then the right answer
	wrongQuestion              // right ID, another question
	truncated                  // right ID and question, TC set
	notResponse                // right ID and question, QR clear
	spoofed                    // the right answer, from another port
	huge                       // hugeCount datagrams of 60000 garbage bytes
)

const hugeCount = 20

// responder is a DNS server on 127.0.0.1 for tests, built with dnsmessage.
// It serves until the test ends.
type responder struct {
	conn    *net.UDPConn
	spoofer *net.UDPConn
	mode    atomic.Int32
	queries atomic.Int64 // queries received
	sent    atomic.Int64 // datagrams sent
}

func newResponder(t *testing.T, m mode) *responder {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	r := &responder{conn: listen(), spoofer: listen()}
	r.mode.Store(int32(m))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.serve(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		r.conn.Close()
		r.spoofer.Close()
		wg.Wait()
	})
	return r
}

func (r *responder) set(m mode) { r.mode.Store(int32(m)) }

func (r *responder) target() Target {
	return Target{Kind: DNS, Addr: r.conn.LocalAddr().(*net.UDPAddr).AddrPort()}
}

func (r *responder) serve(ctx context.Context) {
	buf := make([]byte, 2048)
	for ctx.Err() == nil {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		r.queries.Add(1)
		r.reply(mode(r.mode.Load()), h, q, from)
	}
}

func (r *responder) send(b []byte, to netip.AddrPort) {
	if _, err := r.conn.WriteToUDPAddrPort(b, to); err == nil {
		r.sent.Add(1)
	}
}

func (r *responder) reply(m mode, h dnsmessage.Header, q dnsmessage.Question, to netip.AddrPort) {
	rh := dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	switch m {
	case silent:
	case answer, wrongID, wrongIDAndGood, spoofed:
		b := message(rh, q, true)
		switch m {
		case wrongID, wrongIDAndGood:
			wh := rh
			wh.ID++
			r.send(message(wh, q, true), to)
			if m == wrongIDAndGood {
				r.send(b, to)
			}
		case spoofed:
			if _, err := r.spoofer.WriteToUDPAddrPort(b, to); err == nil {
				r.sent.Add(1)
			}
		default:
			r.send(b, to)
		}
	case nxdomain, servfail, refused, formerr:
		rh.RCode = map[mode]dnsmessage.RCode{nxdomain: dnsmessage.RCodeNameError, servfail: dnsmessage.RCodeServerFailure,
			refused: dnsmessage.RCodeRefused, formerr: dnsmessage.RCodeFormatError}[m]
		r.send(message(rh, q, false), to)
	case garbage:
		r.send([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"), to)
	case wrongQuestion:
		q.Name = dnsmessage.MustNewName("b.root-servers.net.")
		r.send(message(rh, q, false), to)
	case truncated:
		rh.Truncated = true
		r.send(message(rh, q, false), to)
	case notResponse:
		rh.Response = false
		r.send(message(rh, q, false), to)
	case huge:
		big := make([]byte, 60000)
		copy(big, message(rh, q, true)[:2]) // even the right ID
		for range hugeCount {
			r.send(big, to)
		}
	}
}

// message is a reply with question q and, if withA, the A record of
// a.root-servers.net.
func message(h dnsmessage.Header, q dnsmessage.Question, withA bool) []byte {
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(q)
	if withA {
		_ = b.StartAnswers()
		_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 3600000},
			dnsmessage.AResource{A: [4]byte{198, 41, 0, 4}})
	}
	out, err := b.Finish()
	if err != nil {
		panic(err)
	}
	return out
}
