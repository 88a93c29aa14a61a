package mainwatch

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/lifeline-dev/lifeline/shared/report"
)

// question is what a DNS probe asks: small, fixed, and answerable by every
// recursive resolver from its cache (the root servers' addresses are
// cached for weeks). It proves the path to the resolver, not the
// resolver's upstream; a forwarder whose upstream is gone answers SERVFAIL.
var question = dnsmessage.Question{
	Name:  dnsmessage.MustNewName("a.root-servers.net."),
	Type:  dnsmessage.TypeA,
	Class: dnsmessage.ClassINET,
}

// maxDatagram is the read buffer of a DNS probe: a whole UDP datagram, so
// that what is counted is what arrived.
const maxDatagram = 64 << 10

// Result is the outcome of one probe.
type Result struct {
	Target Target
	// OK: the target answered (see Watcher for what counts).
	OK bool
	// Reason says, for people, why a probe failed ("" when OK); Code is its
	// report code (report.CodeMain...).
	Reason, Code string
	// Bytes estimates what the probe moved at the IP level, both ways:
	// IP and UDP/TCP headers included (TCP options as Linux sends them),
	// link-layer framing and ICMP errors not.
	Bytes int64
}

// prober runs probes. Its buffer makes it one probe at a time.
type prober struct {
	w   *Watcher
	buf []byte
}

// probe probes t once, for at most the watch's timeout by its clock. It
// returns ctx's error, and no result, when ctx ends first.
func (p *prober) probe(ctx context.Context, t Target) (Result, error) {
	pctx, cancel := context.WithCancel(ctx)
	var timedOut atomic.Bool
	var wg sync.WaitGroup
	timer := p.w.clock.NewTimer(p.w.timeout)
	p.w.started.Add(1) // after the timer: a test waits for both
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-timer.C():
			timedOut.Store(true)
			cancel()
		case <-pctx.Done():
		}
	}()
	defer func() {
		timer.Stop()
		cancel()
		wg.Wait()
	}()
	var r Result
	switch t.Kind {
	case DNS:
		r = p.dns(pctx, t)
	case TCP:
		r = p.tcp(pctx, t)
	default:
		return Result{}, fmt.Errorf("target %v: unknown kind", t)
	}
	r.Target = t
	if pctx.Err() != nil && !r.OK && r.Code == "" {
		if !timedOut.Load() && ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		r.Reason, r.Code = fmt.Sprintf("no answer within %s", p.w.timeout), report.CodeMainUnreachable
	}
	if !r.OK && r.Code == "" {
		r.Code = report.CodeMainUnreachable
	}
	if !r.OK {
		r.Reason = t.String() + ": " + r.Reason
	}
	return r, nil
}

// ipHeader is the size of t's IP header.
func ipHeader(t Target) int64 {
	if t.Addr.Addr().Is4() {
		return 20
	}
	return 40
}

// dns sends one query to t from a connected UDP socket, so that the kernel
// delivers only datagrams from t's address and port, and waits for a reply
// with the query's random ID and question. Anything else (garbage, another
// ID or question, a truncated reply, a query) is counted and ignored until
// pctx ends. NOERROR and NXDOMAIN are up, other rcodes a failure naming it.
// An ICMP port unreachable (ECONNREFUSED) is a failure at once.
func (p *prober) dns(pctx context.Context, t Target) Result {
	var r Result
	overhead := ipHeader(t) + 8
	var d net.Dialer
	conn, err := d.DialContext(pctx, "udp", t.Addr.String())
	if err != nil {
		r.Reason = errText(err)
		return r
	}
	defer conn.Close()
	stop := context.AfterFunc(pctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var idb [2]byte
	_, _ = rand.Read(idb[:]) // never fails (Go >= 1.24)
	id := binary.BigEndian.Uint16(idb[:])
	query, err := buildQuery(id)
	if err != nil {
		r.Reason = err.Error()
		return r
	}
	n, err := conn.Write(query)
	if n > 0 {
		r.Bytes += int64(n) + overhead
	}
	if err != nil {
		r.Reason = errText(err)
		return r
	}
	for {
		n, err := conn.Read(p.buf)
		if n > 0 {
			r.Bytes += int64(n) + overhead
		}
		if err != nil {
			if pctx.Err() != nil {
				return r // the caller says why
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				r.Reason = "port unreachable (nothing answers DNS there)"
				return r
			}
			r.Reason = errText(err)
			return r
		}
		rcode, ok := matchReply(p.buf[:n], id)
		if !ok {
			continue
		}
		switch rcode {
		case dnsmessage.RCodeSuccess, dnsmessage.RCodeNameError:
			r.OK = true
		case dnsmessage.RCodeServerFailure:
			r.Reason, r.Code = "DNS answer SERVFAIL (a forwarder whose upstream is gone answers so)", report.CodeMainDNSServfail
		case dnsmessage.RCodeRefused:
			r.Reason, r.Code = "DNS answer REFUSED", report.CodeMainDNSRefused
		default:
			r.Reason, r.Code = "DNS answer "+rcodeName(rcode), report.CodeMainDNSError
		}
		return r
	}
}

func buildQuery(id uint16) ([]byte, error) {
	b := dnsmessage.NewBuilder(make([]byte, 0, 64), dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return nil, fmt.Errorf("build DNS query: %w", err)
	}
	if err := b.Question(question); err != nil {
		return nil, fmt.Errorf("build DNS query: %w", err)
	}
	q, err := b.Finish()
	if err != nil {
		return nil, fmt.Errorf("build DNS query: %w", err)
	}
	return q, nil
}

// matchReply is the rcode of msg if it is a reply to the query id: a
// response, not truncated, with that ID and exactly our question (the
// name's case aside).
func matchReply(msg []byte, id uint16) (dnsmessage.RCode, bool) {
	var parser dnsmessage.Parser
	h, err := parser.Start(msg)
	if err != nil || !h.Response || h.ID != id || h.Truncated || h.OpCode != 0 {
		return 0, false
	}
	qs, err := parser.AllQuestions()
	if err != nil || len(qs) != 1 {
		return 0, false
	}
	q := qs[0]
	if q.Type != question.Type || q.Class != question.Class || !strings.EqualFold(q.Name.String(), question.Name.String()) {
		return 0, false
	}
	return h.RCode, true
}

func rcodeName(c dnsmessage.RCode) string {
	s := c.String() // "RCodeFormatError", or a number
	return strings.ToUpper(strings.TrimPrefix(s, "RCode"))
}

// TCP segment sizes as Linux sends them: a SYN (or SYN-ACK) with MSS, SACK
// permitted, timestamps and window scale (20 bytes of options), other
// segments with timestamps (12), a RST with none.
const (
	tcpSYN = 20 + 20
	tcpSeg = 20 + 12
	tcpRST = 20
)

// tcp connects to t and closes at once. Only a completed handshake is up:
// a refused connection (a RST, or an ICMP port unreachable) is a failure,
// because anything on the path can send one (the site's own router with no
// upstream, a firewall with reject, a captive portal), so it does not
// prove that the far host was reached.
func (p *prober) tcp(pctx context.Context, t Target) Result {
	var r Result
	ip := ipHeader(t)
	var d net.Dialer
	start := p.w.clock.Now()
	conn, err := d.DialContext(pctx, "tcp", t.Addr.String())
	if err == nil {
		_ = conn.Close()
		// SYN, SYN-ACK, ACK; our FIN, its ACK and FIN, our ACK.
		r.OK, r.Bytes = true, 2*(ip+tcpSYN)+5*(ip+tcpSeg)
		return r
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		r.Reason, r.Code, r.Bytes = "connection refused (a reset, which proves no more than that something on the path answered)", report.CodeMainTCPRefused, (ip+tcpSYN)+(ip+tcpRST)
	case pctx.Err() != nil:
		// SYNs sent until the deadline: Linux retransmits after 1 s, then
		// doubles.
		spent := p.w.clock.Now().Sub(start)
		for at, rto := time.Duration(0), time.Second; at < spent || at == 0; at, rto = at+rto, 2*rto {
			r.Bytes += ip + tcpSYN
		}
	default:
		r.Reason = errText(err) // no route, network unreachable: nothing sent
	}
	return r
}

// errText is err's text without the Go prefixes that repeat the target.
func errText(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	return err.Error()
}
