package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/alert/email"
	"github.com/lifeline-dev/lifeline/bastion/alert/webhook"
)

// Email checks the e-mail settings: none is fine (one line saying so),
// half is a ✗ naming what is missing, then every problem of the values.
// With SendTest it mails the test message to every LIFELINE_SMTP_TO
// address through the configured server; without, no connection is made.
func (d *Doctor) Email(ctx context.Context) []Check {
	cfg := d.Config
	s := cfg.EmailSettings()
	restart := "then systemctl restart " + Unit
	if s.Off() {
		return []Check{pass("e-mail alerts: off (set %s to mail alerts too)", strings.Join(s.Needed, ", "))}
	}
	if s.Half() {
		return []Check{fail("e-mail alerts", "half configured: "+strings.Join(s.Missing, ", ")+" not set, so the bastion refuses to start",
			"set them too in "+d.where()+", or unset every LIFELINE_SMTP_ variable to run without e-mail, "+restart)}
	}
	ec, err := cfg.Env.Email()
	if err != nil {
		var checks []Check
		for _, e := range flatten(err) {
			checks = append(checks, fail("e-mail alerts", e.Error(), "correct it in "+d.where()+", "+restart))
		}
		return checks
	}
	ec.Timeout = min(ec.Timeout, d.timeout())
	tls := ec.TLS
	if tls == "" {
		tls = email.StartTLS
	}
	what := fmt.Sprintf("e-mail alerts: from %s to %s via %s (%s)", ec.From, strings.Join(ec.To, ", "), ec.Addr, tls)
	sender, err := email.New(*ec)
	if err != nil {
		return []Check{fail("e-mail alerts", err.Error(), "correct it in "+d.where()+", "+restart)}
	}
	if !d.SendTest {
		return []Check{pass("%s; not contacted (--send-test mails a test)", what)}
	}
	checks := []Check{pass("%s", what)}
	err = sender.Send(ctx, d.testMessage("email"))
	switch {
	case err == nil:
		return append(checks, pass("test e-mail to %s: accepted by %s", strings.Join(ec.To, ", "), ec.Addr))
	case errors.Is(err, alert.ErrPermanent):
		return append(checks, fail("test e-mail", err.Error(),
			"the server refused: check LIFELINE_SMTP_USER and LIFELINE_SMTP_PASSWORD, that LIFELINE_SMTP_FROM may send through this account, and LIFELINE_SMTP_TO in "+d.where()))
	}
	return append(checks, fail("test e-mail", err.Error(),
		fmt.Sprintf("check that this machine reaches %s (DNS, outbound port %s: many clouds block 25; a firewall), and LIFELINE_SMTP_TLS (starttls on 587, tls on 465) and LIFELINE_SMTP_CA_FILE in %s", ec.Addr, port(ec.Addr), d.where())))
}

// Webhook checks the webhook settings as Email does; with SendTest it
// posts the test message to LIFELINE_WEBHOOK_URL.
func (d *Doctor) Webhook(ctx context.Context) []Check {
	cfg := d.Config
	s := cfg.WebhookSettings()
	restart := "then systemctl restart " + Unit
	if s.Off() {
		return []Check{pass("webhook alerts: off (set LIFELINE_WEBHOOK_URL to post alerts to a webhook or ntfy too)")}
	}
	if s.Half() {
		return []Check{fail("webhook alerts", "half configured: "+strings.Join(s.Missing, ", ")+" not set, so the bastion refuses to start",
			"set it in "+d.where()+", or unset every LIFELINE_WEBHOOK_ variable to run without a webhook, "+restart)}
	}
	wc, err := cfg.Env.Webhook(cfg.Name)
	if err != nil {
		var checks []Check
		for _, e := range flatten(err) {
			checks = append(checks, fail("webhook alerts", e.Error(), "correct it in "+d.where()+", "+restart))
		}
		return checks
	}
	wc.Timeout = min(wc.Timeout, d.timeout())
	wc.Transport = d.Transport
	sender, err := webhook.New(*wc)
	if err != nil {
		return []Check{fail("webhook alerts", err.Error(), "correct it in "+d.where()+", "+restart)}
	}
	format := wc.Format
	if format == "" {
		format = webhook.JSON
	}
	what := fmt.Sprintf("webhook alerts: %s to %s", format, redactURL(wc.URL))
	if !d.SendTest {
		return []Check{pass("%s; not contacted (--send-test posts a test)", what)}
	}
	checks := []Check{pass("%s", what)}
	err = sender.Send(ctx, d.testMessage(sender.Name()))
	switch {
	case err == nil:
		return append(checks, pass("test %s post: accepted by %s", sender.Name(), redactURL(wc.URL)))
	case errors.Is(err, alert.ErrPermanent):
		return append(checks, fail("test "+sender.Name()+" post", err.Error(),
			"the server refused it: check LIFELINE_WEBHOOK_URL (the topic, the path), LIFELINE_WEBHOOK_TOKEN and LIFELINE_WEBHOOK_FORMAT in "+d.where()))
	}
	return append(checks, fail("test "+sender.Name()+" post", err.Error(),
		"check that this machine reaches the URL's host (DNS, outbound HTTPS, a proxy) and LIFELINE_WEBHOOK_CA_FILE in "+d.where()+"; try again later if the server said 5xx"))
}

// testMessage is the doctor's test alert for channel.
func (d *Doctor) testMessage(channel string) alert.Message {
	now := time.Now()
	text := fmt.Sprintf("lifeline test from %s: alerts of this jump host reach you by %s (lifeline-bastion doctor --send-test).", d.Config.Name, channel)
	return alert.Message{
		ID: fmt.Sprintf("doctor-%s-%d", channel, now.UnixNano()), Kind: "test", Created: now, Text: text,
		Detail: text + "\n\nNothing happened on the bastion: this message only shows that the " + channel + " channel works.",
	}
}

// otherChannels names the channels other than SMS that are configured.
func (d *Doctor) otherChannels() []string {
	var out []string
	if s := d.Config.EmailSettings(); !s.Off() {
		out = append(out, "e-mail")
	}
	if s := d.Config.WebhookSettings(); !s.Off() {
		out = append(out, "webhook")
	}
	return out
}

func port(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

// redactURL is u without user info or query, which may hold secrets.
func redactURL(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	if scheme, rest, ok := strings.Cut(u, "://"); ok {
		if at := strings.IndexByte(rest, '@'); at >= 0 && at < strings.IndexByte(rest+"/", '/') {
			rest = rest[at+1:]
		}
		return scheme + "://" + rest
	}
	return u
}
