package email

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/smtptest"
)

// The tests talk to a real SMTP server, aiosmtpd (Debian: python3-aiosmtpd),
// run by internal/smtptest on 127.0.0.1 with a port of its choosing:
//
//	Sender --TCP 127.0.0.1--> [relay: records client bytes, may strip STARTTLS] --> aiosmtpd
//
// The relay is used only where a test must see what the client sent.

type smtpd struct {
	*smtptest.Server
	addr string
}

type smtpdOpts struct {
	tls, implicit        bool
	user, password       string
	noPlain, authInClear bool
}

// testCert writes a self-signed certificate for 127.0.0.1 and localhost
// into dir and returns the paths of the certificate and key PEM files.
func testCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "lifeline test smtp"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// startSMTPD runs the server; it skips the test when aiosmtpd is not
// installed. With o.tls it returns the CA file the client must trust.
func startSMTPD(t *testing.T, o smtpdOpts) (srv smtpd, caFile string) {
	t.Helper()
	so := smtptest.Options{Implicit: o.implicit, User: o.user, Password: o.password, NoPlain: o.noPlain, AuthInClear: o.authInClear}
	if o.tls {
		so.CertFile, so.KeyFile = testCert(t, t.TempDir())
	}
	s := smtptest.Start(t, so)
	return smtpd{Server: s, addr: s.Addr()}, so.CertFile
}

type received struct {
	smtptest.Message
	raw []byte
}

// messages are the messages the server accepted, in order.
func (s smtpd) messages(t *testing.T) []received {
	t.Helper()
	var out []received
	for _, m := range s.Messages(t) {
		out = append(out, received{m, m.Raw})
	}
	return out
}

func (s smtpd) authAttempts(t *testing.T) []smtptest.AuthAttempt {
	t.Helper()
	return s.AuthAttempts(t)
}

// relay forwards connections to upstream, records what clients send and,
// with strip, replaces STARTTLS in the server's lines by XXXXXXXX as some
// middleboxes (and attackers) do.
type relay struct {
	addr string
	mu   sync.Mutex
	sent bytes.Buffer
}

func (r *relay) clientSent() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent.String()
}

func (r *relay) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent.Write(p)
}

func startRelay(t *testing.T, upstream string, strip bool) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Go(func() { // client -> server, recorded
				_, _ = io.Copy(io.MultiWriter(u, r), c)
				u.Close()
			})
			wg.Go(func() { // server -> client, maybe stripped
				br := bufio.NewReader(u)
				for {
					line, err := br.ReadString('\n')
					if strip {
						line = strings.ReplaceAll(line, "STARTTLS", "XXXXXXXX")
					}
					if _, werr := io.WriteString(c, line); werr != nil || err != nil {
						c.Close()
						return
					}
				}
			})
		}
	})
	return r
}

// startStuck listens on loopback; each connection gets what talk writes
// (nothing when talk is nil) and is then held open until cleanup. It
// returns the address and a count of bytes written.
func startStuck(t *testing.T, talk func(c net.Conn) int64) (string, func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var written int64
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				stopClose := make(chan struct{})
				defer close(stopClose)
				wg.Go(func() {
					select {
					case <-done:
						c.Close()
					case <-stopClose:
					}
				})
				if talk != nil {
					n := talk(c)
					mu.Lock()
					written += n
					mu.Unlock()
				}
				<-done
			})
		}
	})
	return ln.Addr().String(), func() int64 {
		mu.Lock()
		defer mu.Unlock()
		return written
	}
}
