package email

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/alert"
)

const (
	testUser = "bastion@example.com"
	testPass = "s3cret-Pa55"
)

var created = time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("CET", 3600))

// TestSendDelivers: over STARTTLS with AUTH PLAIN, STARTTLS with AUTH
// LOGIN, implicit TLS and plaintext to loopback, the server receives one
// message for exactly the configured recipients, with the headers of the
// contract and the text as the body (dot-stuffing and long lines intact).
func TestSendDelivers(t *testing.T) {
	t.Parallel()
	text := "Login to home-pi by alice from 203.0.113.5"
	detail := text + "\n" +
		"key SHA256:abc\n.\n.hidden line\n" + strings.Repeat("long ", 300) + "\nünïcode ✓\n"
	tests := []struct {
		name  string
		opts  smtpdOpts
		mode  TLSMode
		login bool
	}{
		{"starttls plain", smtpdOpts{tls: true, user: testUser, password: testPass}, "", true},
		{"starttls login", smtpdOpts{tls: true, user: testUser, password: testPass, noPlain: true}, StartTLS, true},
		{"implicit tls", smtpdOpts{tls: true, implicit: true, user: testUser, password: testPass}, ImplicitTLS, true},
		{"plaintext loopback", smtpdOpts{}, PlainLoopback, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, ca := startSMTPD(t, tt.opts)
			cfg := Config{Addr: srv.addr, From: "lifeline <bastion@example.com>", To: []string{"owner@example.com", "Second Person <second@example.org>"},
				TLS: tt.mode, CAFile: ca, Timeout: 20 * time.Second}
			if tt.login {
				cfg.User, cfg.Password = testUser, testPass
			}
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			m := alert.Message{ID: "a1b2-c3", Kind: alert.KindLogin, Text: text, Detail: detail, Created: created}
			if err := s.Send(t.Context(), m); err != nil {
				t.Fatal(err)
			}
			msgs := srv.messages(t)
			if len(msgs) != 1 {
				t.Fatalf("%d messages received, want 1", len(msgs))
			}
			got := msgs[0]
			if got.MailFrom != "bastion@example.com" || !slices.Equal(got.RcptTos, []string{"owner@example.com", "second@example.org"}) {
				t.Errorf("envelope from %q to %q", got.MailFrom, got.RcptTos)
			}
			if got.TLS != (tt.mode != PlainLoopback) {
				t.Errorf("server saw tls=%v", got.TLS)
			}
			if tt.login && (got.Login == nil || *got.Login != testUser) {
				t.Errorf("server saw login %v", got.Login)
			}
			if n := strings.Count(string(got.raw), "\n"); n != strings.Count(string(got.raw), "\r\n") {
				t.Errorf("bare LF in the message:\n%q", got.raw)
			}
			for l := range strings.Lines(string(got.raw)) {
				if len(l) > 78+2 && !strings.HasPrefix(l, "To:") {
					t.Errorf("line of %d bytes: %q", len(l), l)
				}
			}
			pm, err := mail.ReadMessage(strings.NewReader(string(got.raw)))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				"Date":                      "Wed, 04 Mar 2026 05:06:07 +0100",
				"From":                      `"lifeline" <bastion@example.com>`,
				"Message-Id":                "<a1b2-c3@lifeline>",
				"Subject":                   "Login to home-pi by alice from 203.0.113.5",
				"Content-Type":              "text/plain; charset=utf-8",
				"Content-Transfer-Encoding": "quoted-printable",
				"Mime-Version":              "1.0",
				"Auto-Submitted":            "auto-generated",
				"X-Lifeline-Kind":           "login",
			}
			for k, v := range want {
				if g := pm.Header.Get(k); g != v {
					t.Errorf("%s: %q, want %q", k, g, v)
				}
			}
			to, err := pm.Header.AddressList("To")
			if err != nil || len(to) != 2 || to[0].Address != "owner@example.com" || to[1].Address != "second@example.org" || to[1].Name != "Second Person" {
				t.Errorf("To: %v, %v", to, err)
			}
			b, err := io.ReadAll(quotedprintable.NewReader(pm.Body))
			if err != nil {
				t.Fatal(err)
			}
			if g := strings.ReplaceAll(string(b), "\r\n", "\n"); g != detail+"\n" {
				t.Errorf("body:\n%q\nwant the detail\n%q", g, detail+"\n")
			}
		})
	}
}

// TestSubject: the first non-empty line, cut and RFC 2047-encoded when
// not ASCII; the kind when there is no text.
func TestSubject(t *testing.T) {
	t.Parallel()
	srv, _ := startSMTPD(t, smtpdOpts{})
	s, err := New(Config{Addr: srv.addr, From: "b@example.com", To: []string{"o@example.com"}, TLS: PlainLoopback})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("ä", 300)
	tests := []struct{ text, kind, want string }{
		{"\n  \nSite home-pi is down ⚠\nsince 10:00", alert.KindAgentDown, "Site home-pi is down ⚠"},
		{"", alert.KindAgentBack, "lifeline alert: agent_back"},
		{long, alert.KindSummary, strings.Repeat("ä", maxSubjectRunes-1) + "…"},
	}
	for i, tt := range tests {
		if err := s.Send(t.Context(), alert.Message{ID: "s" + string(rune('0'+i)), Kind: tt.kind, Text: tt.text, Created: created}); err != nil {
			t.Fatal(err)
		}
		msgs := srv.messages(t)
		pm, err := mail.ReadMessage(strings.NewReader(string(msgs[len(msgs)-1].raw)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := new(mime.WordDecoder).DecodeHeader(pm.Header.Get("Subject"))
		if err != nil || got != tt.want {
			t.Errorf("subject of %q: %q (%v), want %q", tt.text, got, err, tt.want)
		}
	}
}

// TestHeaderInjection: line breaks in the text, kind and ID never make a
// header of their own, and the recipients stay the configured ones.
func TestHeaderInjection(t *testing.T) {
	t.Parallel()
	srv, _ := startSMTPD(t, smtpdOpts{})
	s, err := New(Config{Addr: srv.addr, From: "b@example.com", To: []string{"o@example.com"}, TLS: PlainLoopback})
	if err != nil {
		t.Fatal(err)
	}
	m := alert.Message{
		ID:      "id\r\nX-Id-Evil: 1",
		Kind:    "login\r\nX-Kind-Evil: 1",
		Text:    "agent down\rBcc: evil@example.net\r\nX-Evil: 1\n\nbody\r\n.\r\nMAIL FROM:<evil@example.net>\r\n",
		Created: created,
	}
	if err := s.Send(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	msgs := srv.messages(t)
	if len(msgs) != 1 || !slices.Equal(msgs[0].RcptTos, []string{"o@example.com"}) {
		t.Fatalf("received %+v", msgs)
	}
	pm, err := mail.ReadMessage(strings.NewReader(string(msgs[0].raw)))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"Bcc", "X-Evil", "X-Kind-Evil", "X-Id-Evil"} {
		if v, ok := pm.Header[h]; ok {
			t.Errorf("injected header %s: %q", h, v)
		}
	}
	if g := pm.Header.Get("Subject"); g != "agent down Bcc: evil@example.net" {
		t.Errorf("Subject %q", g)
	}
	if g := pm.Header.Get("Message-Id"); g != "<id__X-Id-Evil__1@lifeline>" {
		t.Errorf("Message-ID %q", g)
	}
	if g := pm.Header.Get("X-Lifeline-Kind"); g != "loginx-kind-evil1" {
		t.Errorf("X-Lifeline-Kind %q", g)
	}
	b, err := io.ReadAll(quotedprintable.NewReader(pm.Body))
	if err != nil {
		t.Fatal(err)
	}
	// No Detail: the body is Text, with its bare CR as a line end.
	lf := strings.NewReplacer("\r\n", "\n", "\r", "\n")
	if got, want := lf.Replace(string(b)), lf.Replace(m.Text)+"\n"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
}

// TestStartTLSRequired: a server that does not offer STARTTLS (though it
// offers AUTH in the clear), and a real STARTTLS server behind a relay that
// strips STARTTLS from its EHLO reply: Send fails, retryably, and the
// client sent neither AUTH nor the password nor MAIL.
func TestStartTLSRequired(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		opts  smtpdOpts
		strip bool
	}{
		{"server without starttls", smtpdOpts{user: testUser, password: testPass, authInClear: true}, false},
		{"starttls stripped", smtpdOpts{tls: true, user: testUser, password: testPass}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, ca := startSMTPD(t, tt.opts)
			r := startRelay(t, srv.addr, tt.strip)
			s, err := New(Config{Addr: r.addr, From: "b@example.com", To: []string{"o@example.com"}, User: testUser, Password: testPass, CAFile: ca, Timeout: 20 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Send(t.Context(), alert.Message{ID: "x", Kind: alert.KindLogin, Text: "login", Created: created})
			if err == nil || !strings.Contains(err.Error(), "STARTTLS") || errors.Is(err, alert.ErrPermanent) {
				t.Fatalf("Send: %v, want a retryable STARTTLS error", err)
			}
			sent := r.clientSent()
			if !strings.Contains(sent, "EHLO") {
				t.Errorf("relay saw no EHLO: %q", sent)
			}
			plain := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00" + testPass))
			for _, bad := range []string{"AUTH", "MAIL FROM", testPass, plain, base64.StdEncoding.EncodeToString([]byte(testPass))} {
				if strings.Contains(sent, bad) {
					t.Errorf("client sent %q in plaintext: %q", bad, sent)
				}
			}
			if n := len(srv.messages(t)); n != 0 || len(srv.authAttempts(t)) != 0 {
				t.Errorf("server got %d messages, auth %v", n, srv.authAttempts(t))
			}
		})
	}
}

// TestUntrustedCertificate: a server whose certificate is not trusted
// (here: CAFile unset, so the system roots) gets no password.
func TestUntrustedCertificate(t *testing.T) {
	t.Parallel()
	srv, _ := startSMTPD(t, smtpdOpts{tls: true, user: testUser, password: testPass})
	s, err := New(Config{Addr: srv.addr, From: "b@example.com", To: []string{"o@example.com"}, User: testUser, Password: testPass, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(t.Context(), alert.Message{ID: "x", Text: "t", Created: created})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Send: %v, want a certificate error", err)
	}
	if len(srv.authAttempts(t)) != 0 || len(srv.messages(t)) != 0 {
		t.Errorf("server got auth %v, %d messages", srv.authAttempts(t), len(srv.messages(t)))
	}
}

// TestBadPassword: 535 is permanent, and nothing is sent.
func TestBadPassword(t *testing.T) {
	t.Parallel()
	srv, ca := startSMTPD(t, smtpdOpts{tls: true, user: testUser, password: testPass})
	s, err := New(Config{Addr: srv.addr, From: "b@example.com", To: []string{"o@example.com"}, User: testUser, Password: "wrong", CAFile: ca, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(t.Context(), alert.Message{ID: "x", Text: "t", Created: created})
	if !errors.Is(err, alert.ErrPermanent) || !strings.Contains(err.Error(), "535") {
		t.Fatalf("Send: %v, want a permanent 535", err)
	}
	if a := srv.authAttempts(t); len(a) != 1 || a[0].OK || !a[0].TLS {
		t.Errorf("auth attempts %+v", a)
	}
	if n := len(srv.messages(t)); n != 0 {
		t.Errorf("%d messages", n)
	}
}

// TestRecipients: a 550 recipient is permanent, a 451 one retryable; the
// others get the message once, also when Send is called again.
func TestRecipients(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		to        []string
		permanent bool
		delivered []string
	}{
		{"one refused", []string{"refused@example.com", "owner@example.com"}, true, []string{"owner@example.com"}},
		{"one later", []string{"owner@example.com", "later@example.com"}, false, []string{"owner@example.com"}},
		{"all refused", []string{"refused@example.com", "refused2@example.com"}, true, nil},
		{"refused and later", []string{"refused@example.com", "later@example.com"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := startSMTPD(t, smtpdOpts{})
			s, err := New(Config{Addr: srv.addr, From: "b@example.com", To: tt.to, TLS: PlainLoopback})
			if err != nil {
				t.Fatal(err)
			}
			m := alert.Message{ID: "r1", Kind: alert.KindAgentDown, Text: "down", Created: created}
			for range 2 {
				err := s.Send(t.Context(), m)
				if err == nil || errors.Is(err, alert.ErrPermanent) != tt.permanent {
					t.Fatalf("Send: %v, want permanent=%v", err, tt.permanent)
				}
			}
			var got []string
			for _, r := range srv.messages(t) {
				got = append(got, r.RcptTos...)
			}
			if !slices.Equal(got, tt.delivered) {
				t.Errorf("delivered to %q, want %q", got, tt.delivered)
			}
		})
	}
}

// TestStuckServer: a server that accepts TCP and says nothing, one that
// trickles an endless greeting, and one that floods it: Send gives up by
// its Timeout (or at MaxReplyBytes), retryably.
func TestStuckServer(t *testing.T) {
	t.Parallel()
	trickle := func(c net.Conn) int64 {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var n int64
		for i := 0; i < 10000; i++ { // bounded: 200 s at most, the client leaves far sooner
			<-tick.C
			k, err := io.WriteString(c, "220-")
			n += int64(k)
			if err != nil {
				return n
			}
		}
		return n
	}
	const flood = 64 << 20
	floodFn := func(c net.Conn) int64 {
		line := "220-" + strings.Repeat("x", 1020) + "\r\n"
		var n int64
		for n < flood {
			k, err := io.WriteString(c, line)
			n += int64(k)
			if err != nil {
				break
			}
		}
		return n
	}
	tests := []struct {
		name    string
		talk    func(net.Conn) int64
		timeout time.Duration
		want    string
	}{
		{"silent", nil, 300 * time.Millisecond, "gave up: context deadline exceeded"},
		{"trickle", trickle, 300 * time.Millisecond, "gave up: context deadline exceeded"},
		{"flood", floodFn, time.Minute, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr, written := startStuck(t, tt.talk)
			s, err := New(Config{Addr: addr, From: "b@example.com", To: []string{"o@example.com"}, Timeout: tt.timeout})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = s.Send(t.Context(), alert.Message{ID: "x", Text: "t", Created: created})
			if err == nil || errors.Is(err, alert.ErrPermanent) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Send: %v, want a retryable error with %q", err, tt.want)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("Send took %s", d)
			}
			if tt.name == "flood" && written() >= flood {
				t.Errorf("client read the whole flood")
			}
		})
	}
}

// TestContextCancel: cancelling ctx ends a Send that waits on a silent
// server long before Timeout.
func TestContextCancel(t *testing.T) {
	t.Parallel()
	addr, _ := startStuck(t, nil)
	s, err := New(Config{Addr: addr, From: "b@example.com", To: []string{"o@example.com"}, Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	timer := time.AfterFunc(100*time.Millisecond, cancel)
	defer timer.Stop()
	start := time.Now()
	err = s.Send(ctx, alert.Message{ID: "x", Text: "t", Created: created})
	if !errors.Is(err, context.Canceled) || errors.Is(err, alert.ErrPermanent) {
		t.Fatalf("Send: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Send took %s", d)
	}
}

// TestValidate: every problem is reported at once, naming its setting;
// plaintext is refused for any server but a loopback IP.
func TestValidate(t *testing.T) {
	t.Parallel()
	_, err := New(Config{Addr: "smtp.example.com", User: "u", From: "not an address", To: []string{"ok@example.com", "a@b\r\nBcc: c@d"}, TLS: "ssl", CAFile: "/nonexistent.pem", Timeout: -1})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{envAddr, envUser, envPassword, envFrom, envTo, envTLS, envCAFile, envTimeout, "control character"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
	tests := []struct {
		cfg Config
		ok  bool
	}{
		{Config{Addr: "smtp.example.com:587", From: "b@example.com", To: []string{"o@example.com"}}, true},
		{Config{Addr: "smtp.example.com:465", From: "b@example.com", To: []string{"o@example.com"}, TLS: ImplicitTLS, User: "u", Password: "p"}, true},
		{Config{Addr: "127.0.0.1:25", From: "b@example.com", To: []string{"o@example.com"}, TLS: PlainLoopback}, true},
		{Config{Addr: "[::1]:25", From: "b@example.com", To: []string{"o@example.com"}, TLS: PlainLoopback}, true},
		{Config{Addr: "localhost:25", From: "b@example.com", To: []string{"o@example.com"}, TLS: PlainLoopback}, false},
		{Config{Addr: "192.168.1.10:25", From: "b@example.com", To: []string{"o@example.com"}, TLS: PlainLoopback}, false},
		{Config{Addr: "smtp.example.com:587", From: "b@example.com"}, false},
		{Config{Addr: "smtp.example.com:0", From: "b@example.com", To: []string{"o@example.com"}}, false},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); (err == nil) != tt.ok {
			t.Errorf("%+v: %v, want ok=%v", tt.cfg, err, tt.ok)
		}
	}
}

var _ alert.Sender = (*Sender)(nil)
