package server

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/gate"
)

// A banned source is told why it is refused, within the protocol: a line
// before the bastion's identification line (RFC 4253 4.2 allows a server
// to send such lines; clients show them in their debug output), then, once
// the client's identification line is in, an SSH_MSG_DISCONNECT in the
// clear, as allowed before the first key exchange, which OpenSSH prints
// ("Received disconnect from …: lifeline: …"), PuTTY, Dropbear and
// Paramiko too. Nothing else is read or answered.
//
// Telling costs a goroutine for at most tellFor, so it is bounded:
// maxTelling at once, and a banned source flooding connections gets a
// plain close for the rest.

const (
	tellFor    = 2 * time.Second
	maxTelling = 8
)

// tellRefused explains a refusal of the gate to the client on nc, if the
// refusal is a ban and a slot is free. The caller closes nc afterwards.
func (s *Server) tellRefused(nc net.Conn, r *gate.Refusal) {
	if r.Reason != gate.ReasonBanned {
		return
	}
	select {
	case s.telling <- struct{}{}:
		defer func() { <-s.telling }()
	default:
		return
	}
	msg := fmt.Sprintf("lifeline: %s is refused until %s after repeated failed logins; try again then, or from another address",
		r.Addr, r.Until.UTC().Format("2006-01-02 15:04Z"))
	nc.SetDeadline(time.Now().Add(tellFor))
	if _, err := io.WriteString(nc, msg+"\r\n"+serverVersion+"\r\n"); err != nil {
		return
	}
	if !readVersionLine(nc) {
		return
	}
	nc.Write(disconnectPacket(sshDisconnectHostNotAllowed, msg))
	if tc, ok := nc.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	// Let the client read it and close first: closing with its bytes
	// unread would reset the connection and could lose ours.
	io.Copy(io.Discard, io.LimitReader(nc, 64<<10))
}

// readVersionLine reads until a line starting with "SSH-" has ended, at
// most 8 KiB.
func readVersionLine(r io.Reader) bool {
	buf := make([]byte, 0, 1024)
	chunk := make([]byte, 512)
	for len(buf) < 8<<10 {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for _, line := range bytes.SplitAfter(buf, []byte("\n")) {
			if bytes.HasPrefix(line, []byte("SSH-")) && bytes.HasSuffix(line, []byte("\n")) {
				return true
			}
		}
		if err != nil {
			return false
		}
	}
	return false
}

// sshDisconnectHostNotAllowed is SSH_DISCONNECT_HOST_NOT_ALLOWED_TO_CONNECT.
const sshDisconnectHostNotAllowed = 1

// disconnectPacket is SSH_MSG_DISCONNECT as an unencrypted binary packet
// (RFC 4253 6, 11.1): no key exchange has happened, so no cipher and no MAC.
func disconnectPacket(reason uint32, msg string) []byte {
	var payload bytes.Buffer
	payload.WriteByte(1) // SSH_MSG_DISCONNECT
	binary.Write(&payload, binary.BigEndian, reason)
	binary.Write(&payload, binary.BigEndian, uint32(len(msg)))
	payload.WriteString(msg)
	binary.Write(&payload, binary.BigEndian, uint32(0)) // language tag
	// packet_length (4) + padding_length (1) + payload + padding is a
	// multiple of 8, with at least 4 bytes of padding.
	pad := 8 - (5+payload.Len())%8
	if pad < 4 {
		pad += 8
	}
	var p bytes.Buffer
	binary.Write(&p, binary.BigEndian, uint32(1+payload.Len()+pad))
	p.WriteByte(byte(pad))
	p.Write(payload.Bytes())
	p.Write(make([]byte, pad))
	return p.Bytes()
}
