package server

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/gate"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// The bastion chooses the ciphers it offers per connection, from the
// client's identification line ("SSH-2.0-OpenSSH_9.2p1"), which every
// client sends before the key exchange. The client's order of preference
// decides among what the server offers, so offering a client everything
// lets it pick what is slow on the jump host: OpenSSH puts
// chacha20-poly1305 first, which Go runs without assembly on amd64 (the
// relay ran at 0.78x of sshd). Clients known to speak AES-GCM, the fastest
// cipher on every CPU the jump host runs on (AES-NI, ARMv8 crypto), are
// offered AES-GCM only; every other client is offered the whole audited
// list, so that Dropbear (chacha20-poly1305, aes-ctr) and Paramiko (aes-ctr
// with ETM MACs) get in. Nothing outside sshalgo's lists is ever offered:
// a client lying about its version only gets another audited set.

// profile names one set of algorithms offered.
type profile string

const (
	// profileGCM: clients known to speak AES-GCM.
	profileGCM profile = "aes-gcm"
	// profileAgent: lifeline agents, AES-GCM and chacha20-poly1305: the
	// agent picks by its CPU (sshalgo.AgentCiphers; a Pi 3/4 has no AES
	// instructions).
	profileAgent profile = "agent"
	// profileCompat: everyone else. Same key exchanges, host key and MACs;
	// chacha20-poly1305 and aes-ctr (with ETM MACs) besides AES-GCM.
	profileCompat profile = "compat"
)

// profiles are every profile, each with its server configuration.
var profiles = []profile{profileGCM, profileAgent, profileCompat}

// profileFor picks the profile for a client identification line.
func profileFor(version string) profile {
	software := version
	if rest, ok := strings.CutPrefix(software, "SSH-2.0-"); ok {
		software = rest
	} else if rest, ok := strings.CutPrefix(software, "SSH-1.99-"); ok {
		software = rest
	} else {
		return profileCompat
	}
	if i := strings.IndexByte(software, ' '); i >= 0 {
		software = software[:i] // comments after a space
	}
	switch {
	case strings.HasPrefix(software, "OpenSSH_"):
		// AES-GCM since OpenSSH 6.2 (2013).
		if atLeast(strings.TrimPrefix(software, "OpenSSH_"), 6, 2) {
			return profileGCM
		}
	case strings.HasPrefix(software, "PuTTY_Release_"):
		// AES-GCM since PuTTY 0.76 (2021).
		if atLeast(strings.TrimPrefix(software, "PuTTY_Release_"), 0, 76) {
			return profileGCM
		}
	case strings.HasPrefix(software, "lifeline"):
		return profileAgent
	case software == "Go", // x/crypto's client, always with AES-GCM
		strings.HasPrefix(software, "AsyncSSH_"): // AES-GCM since asyncssh 1.0
		return profileGCM
	}
	return profileCompat
}

// atLeast reports whether a version string "9.2p1", "0.78", "6.2" is at
// least major.minor. Unparsable versions are not.
func atLeast(v string, major, minor int) bool {
	end := strings.IndexFunc(v, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if end >= 0 {
		v = v[:end]
	}
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(parts[0])
	mnr, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return maj > major || maj == major && mnr >= minor
}

// algorithms returns the ssh.Config offered under p.
func (p profile) algorithms() ssh.Config {
	c := sshalgo.Config()
	switch p {
	case profileGCM:
		c.Ciphers = sshalgo.BastionCiphers()
	case profileAgent:
		c.Ciphers = sshalgo.BastionAgentCiphers()
	default:
		c.Ciphers = sshalgo.CompatCiphers()
	}
	return c
}

// serverVersion is the bastion's identification line.
const serverVersion = "SSH-2.0-lifeline"

// peekVersion sends the bastion's identification line on c (the gate's
// connection, so its deadlines and limits apply) and reads the client's,
// with any lines before it. It returns a connection to hand to
// ssh.NewServerConn in c's place: its first reads return what was read here,
// and the first write of the same identification line by x/crypto is
// dropped, since it was already sent. The client's line is returned without
// its line end.
//
// x/crypto (v0.58) as a server writes its line first and then reads the
// client's, so sending ours before reading theirs changes nothing on the
// wire, and a client that waits for the server's line first is served.
func peekVersion(c net.Conn) (net.Conn, string, error) {
	line := []byte(serverVersion + "\r\n")
	if _, err := c.Write(line); err != nil {
		return nil, "", fmt.Errorf("send version: %w", err)
	}
	buf := make([]byte, 0, 512)
	start := 0 // start of the current line in buf
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= maxPeek {
				return nil, "", errPeekOverflow
			}
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		for {
			i := bytes.IndexByte(buf[start:], '\n')
			if i < 0 {
				break
			}
			l := buf[start : start+i]
			start += i + 1
			if bytes.HasPrefix(l, []byte("SSH-")) {
				version := string(bytes.TrimSuffix(l, []byte("\r")))
				return &peekedConn{Conn: c, pending: buf, sent: line}, version, nil
			}
		}
		if err != nil {
			return nil, "", fmt.Errorf("read client version: %w", err)
		}
	}
}

// maxPeek bounds what peekVersion buffers: the gate allows
// gate.MaxPreamble bytes of lines before the version line (and closes the
// connection past that), and the version line may have 255 bytes.
const maxPeek = 2 * (gate.MaxPreamble + 256)

var errPeekOverflow = errors.New("no SSH version line in the first bytes")

// peekedConn is a connection whose first bytes were already read, and whose
// identification line was already sent.
type peekedConn struct {
	net.Conn
	pending []byte // read by peekVersion, not yet returned; owned by the reader

	once sync.Once
	sent []byte // the line already sent: x/crypto's own first write of it is dropped
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *peekedConn) Write(p []byte) (int, error) {
	dropped := false
	c.once.Do(func() { dropped = bytes.Equal(p, c.sent) })
	if dropped {
		return len(p), nil
	}
	return c.Conn.Write(p)
}
