package doctor

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
	"github.com/lifeline-dev/lifeline/internal/smtptest"
	"github.com/lifeline-dev/lifeline/shared/envfile"
)

// recorder is an httptest webhook that answers status (0: 200) and keeps
// the bodies.
type recorder struct {
	mu     sync.Mutex
	status int
	bodies []string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies = append(r.bodies, string(b))
	if r.status != 0 {
		http.Error(w, "no", r.status)
	}
}

func (r *recorder) set(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = status
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

func TestEmailSettings(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	want(t, "off", only(t, f.d.Email(t.Context())), true, "e-mail alerts: off")
	f.d.Config.SMTPAddr = "smtp.example.com:587"
	want(t, "half", only(t, f.d.Email(t.Context())), false, "half configured: LIFELINE_SMTP_FROM, LIFELINE_SMTP_TO not set", "refuses to start", "/etc/lifeline/bastion.env")
	f.d.Config.SMTPFrom, f.d.Config.SMTPTo, f.d.Config.SMTPTLS = "bastion@example.com", "owner@example.com", "none-on-loopback-only"
	want(t, "plaintext to a remote server", only(t, f.d.Email(t.Context())), false, "LIFELINE_SMTP_TLS=none-on-loopback-only needs LIFELINE_SMTP_ADDR to be a loopback IP", "correct it in")
	f.d.Config.SMTPTLS = "starttls"
	want(t, "good, not contacted", only(t, f.d.Email(t.Context())), true, "e-mail alerts: from bastion@example.com to owner@example.com via smtp.example.com:587 (starttls); not contacted")

	// With no SMS, another channel makes the SMS line pass.
	want(t, "sms off, e-mail on", only(t, f.d.Twilio(t.Context())), true, "SMS alerts: off", "nobody is texted, alerts go by e-mail only")
}

func TestWebhookSettings(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	want(t, "off", only(t, f.d.Webhook(t.Context())), true, "webhook alerts: off")
	f.d.Config.WebhookToken = "tk_1"
	want(t, "half", only(t, f.d.Webhook(t.Context())), false, "half configured: LIFELINE_WEBHOOK_URL not set")
	f.d.Config.WebhookURL, f.d.Config.WebhookFormat = "https://user:pw@ntfy.example.com/site?auth=x", "ntfy"
	want(t, "good", only(t, f.d.Webhook(t.Context())), true, "webhook alerts: ntfy to https://ntfy.example.com/site; not contacted")
}

// --send-test sends through every configured channel and reports each
// result on its own line: a channel that fails does not hide the others.
func TestSendTestEveryChannel(t *testing.T) {
	t.Parallel()
	f, fake := smsFixture(t, twiliofake.Config{})
	smtpd := smtptest.Start(t, smtptest.Options{})
	addr := smtpd.Addr()
	hook := &recorder{}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	c := &f.d.Config
	c.SMTPAddr, c.SMTPFrom, c.SMTPTo, c.SMTPTLS = addr, "lifeline <bastion@example.com>", "owner@example.com", "none-on-loopback-only"
	c.WebhookURL, c.WebhookFormat = srv.URL, "json"
	f.d.SendTest = true

	var lines []string
	for _, ch := range f.d.Twilio(t.Context()) {
		lines = append(lines, ch.String())
	}
	email := f.d.Email(t.Context())
	want(t, "e-mail settings", email[0], true, "e-mail alerts: from lifeline <bastion@example.com> to owner@example.com via "+addr)
	want(t, "test e-mail", email[1], true, "test e-mail to owner@example.com: accepted by "+addr)
	hooked := f.d.Webhook(t.Context())
	want(t, "test post", hooked[1], true, "test webhook post: accepted by "+srv.URL)
	if len(lines) != 3 || fake.Count() != 2 {
		t.Errorf("twilio lines %q, %d texts: want the account and a text per number", lines, fake.Count())
	}
	if mails := smtpd.Messages(t); len(mails) != 1 {
		t.Errorf("%d mails, want 1", len(mails))
	}
	if hook.count() != 1 || !strings.Contains(hook.bodies[0], "lifeline test from test-bastion") || !strings.Contains(hook.bodies[0], `"site":"test-bastion"`) {
		t.Errorf("webhook got %q", hook.bodies)
	}

	// A webhook that refuses, one that is down: each its own ✗ with a fix;
	// the e-mail still goes.
	hook.set(http.StatusBadRequest)
	want(t, "refused", f.d.Webhook(t.Context())[1], false, "test webhook post", "400", "check LIFELINE_WEBHOOK_URL (the topic, the path), LIFELINE_WEBHOOK_TOKEN")
	hook.set(http.StatusServiceUnavailable)
	want(t, "unavailable", f.d.Webhook(t.Context())[1], false, "test webhook post", "503", "check that this machine reaches the URL's host")
	want(t, "e-mail still", f.d.Email(t.Context())[1], true, "test e-mail to owner@example.com")
	c.SMTPTo = "refused@example.com"
	want(t, "recipient refused", f.d.Email(t.Context())[1], false, "test e-mail", "550", "the server refused: check LIFELINE_SMTP_USER")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	c.SMTPAddr, c.SMTPTo = closed, "owner@example.com"
	want(t, "no server", f.d.Email(t.Context())[1], false, "test e-mail", "connection refused", "check that this machine reaches "+closed)
}

// A credential in a file others can read is a ✗, whichever channel's.
func TestEnvFileSecretsOfEveryChannel(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"TWILIO_AUTH_TOKEN", "LIFELINE_SMTP_PASSWORD", "LIFELINE_WEBHOOK_TOKEN"} {
		path := filepath.Join(t.TempDir(), "bastion.env")
		write(t, path, v+"=s3cret\n", 0o644)
		vars := []envfile.Var{{Name: v, Value: "s3cret"}} // envFileCheck, not LoadEnv: that sets the process's variables
		want(t, v, envFileCheck(path, vars), false, "holds "+v+" and has mode 0644", "chmod 600 "+path)
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
		want(t, v+" 0600", envFileCheck(path, vars), true, "1 settings read")
	}
}
