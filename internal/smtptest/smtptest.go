// Package smtptest runs a real SMTP server for lifeline's tests: aiosmtpd
// (Debian: python3-aiosmtpd) in a process of its own on 127.0.0.1, driven
// by smtpd.py, which is embedded here and written to a test's temporary
// folder, so tests in any package can start it. Only _test.go files may
// import it.
package smtptest

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Python is Debian's, which sees python3-aiosmtpd.
const Python = "/usr/bin/python3"

//go:embed smtpd.py
var script []byte

// Options say how the server runs; the zero value is a plaintext server
// without AUTH on a port of the kernel's choosing.
type Options struct {
	// CertFile and KeyFile (PEM) enable TLS: STARTTLS, required before
	// anything else, or with Implicit TLS from the first byte (port 465).
	CertFile, KeyFile string
	Implicit          bool
	// User and Password enable AUTH (PLAIN and LOGIN; NoPlain offers LOGIN
	// only). AuthInClear offers AUTH on a connection that is not
	// encrypted, as a careless server does.
	User, Password       string
	NoPlain, AuthInClear bool
	// Port, when not 0, is the port to listen on: that of a server that was
	// stopped, to start it again.
	Port int
	// OutDir is the folder the messages and AUTH attempts are written to;
	// "" is a new one. A server started again on the OutDir of one that
	// was stopped goes on from what that one received.
	OutDir string
}

// Server is a running smtpd.py.
type Server struct {
	port   int
	outdir string
	stop   func()
}

// Start runs the server and stops it when the test ends. It skips the test
// when Python cannot import aiosmtpd.
func Start(t *testing.T, o Options) *Server {
	t.Helper()
	if err := exec.Command(Python, "-c", "import aiosmtpd").Run(); err != nil {
		t.Skipf("needs a real SMTP server: %s -c 'import aiosmtpd' failed (%v); install Debian's python3-aiosmtpd (integration/deps.sh does)", Python, err)
	}
	dir := t.TempDir()
	s := &Server{outdir: o.OutDir}
	if s.outdir == "" {
		s.outdir = filepath.Join(dir, "out")
		if err := os.Mkdir(s.outdir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "smtpd.py")
	if err := os.WriteFile(path, script, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{path, "--outdir", s.outdir, "--port", strconv.Itoa(o.Port)}
	if o.CertFile != "" {
		args = append(args, "--cert", o.CertFile, "--key", o.KeyFile)
	}
	if o.Implicit {
		args = append(args, "--implicit")
	}
	if o.User != "" {
		args = append(args, "--user", o.User, "--password", o.Password)
	}
	if o.NoPlain {
		args = append(args, "--no-plain")
	}
	if o.AuthInClear {
		args = append(args, "--auth-in-clear")
	}
	cmd := exec.Command(Python, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.stop = sync.OnceFunc(func() {
		stdin.Close()
		_ = cmd.Process.Kill() // by PID
		_ = cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("smtpd stderr:\n%s", stderr.String())
		}
	})
	t.Cleanup(s.Stop)
	line := make(chan string, 1)
	go func() { // ends when stdout closes (the process ends in Stop)
		r := bufio.NewReader(stdout)
		l, _ := r.ReadString('\n')
		line <- l
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case l := <-line:
		port, ok := strings.CutPrefix(strings.TrimSpace(l), "PORT ")
		if s.port, err = strconv.Atoi(port); !ok || err != nil {
			s.Stop()
			t.Fatalf("smtpd said %q, want PORT n; stderr: %s", l, stderr.String())
		}
	case <-time.After(30 * time.Second):
		s.Stop()
		t.Fatalf("smtpd did not start within 30s")
	}
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the port the server listens on.
func (s *Server) Port() int { return s.port }

// OutDir is the folder of what the server received.
func (s *Server) OutDir() string { return s.outdir }

// Stop ends the server (it may be called more than once); what it
// received stays in OutDir.
func (s *Server) Stop() { s.stop() }

// Message is one the server accepted.
type Message struct {
	MailFrom string   `json:"mail_from"`
	RcptTos  []string `json:"rcpt_tos"`
	Data     string   `json:"data"` // base64 of Raw
	TLS      bool     `json:"tls"`
	Login    *string  `json:"login"`
	Raw      []byte   `json:"-"`
}

// Messages are the messages the server accepted, in order.
func (s *Server) Messages(t *testing.T) []Message {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(s.outdir, "[0-9]*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []Message
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m Message
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m.Raw, err = base64.StdEncoding.DecodeString(m.Data); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// AuthAttempt is one AUTH command the server answered.
type AuthAttempt struct {
	Mechanism string `json:"mechanism"`
	OK        bool   `json:"ok"`
	TLS       bool   `json:"tls"`
}

// AuthAttempts are the AUTH attempts the server saw, in order.
func (s *Server) AuthAttempts(t *testing.T) []AuthAttempt {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.outdir, "auth.jsonl"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []AuthAttempt
	for l := range strings.Lines(string(b)) {
		var a AuthAttempt
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}
