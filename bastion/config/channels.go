package config

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/alert/email"
	"github.com/lifeline-dev/lifeline/bastion/alert/webhook"
)

// Channel names: the alert spool folders (keep them stable) and the names
// in status.
const (
	ChannelTwilio  = "twilio"
	ChannelEmail   = "email"
	ChannelWebhook = "webhook"
)

// emailVars are the settings e-mail alerts need, all or none; emailExtra
// are optional, but set alone they are a mistake (a typo'd LIFELINE_SMTP_ADDR).
var (
	emailVars    = []string{"LIFELINE_SMTP_ADDR", "LIFELINE_SMTP_FROM", "LIFELINE_SMTP_TO"}
	emailExtra   = []string{"LIFELINE_SMTP_USER", "LIFELINE_SMTP_PASSWORD", "LIFELINE_SMTP_CA_FILE"}
	webhookVars  = []string{"LIFELINE_WEBHOOK_URL"}
	webhookExtra = []string{"LIFELINE_WEBHOOK_TOKEN", "LIFELINE_WEBHOOK_CA_FILE"}
)

// ChannelSettings says how one channel is configured: Set lists its
// variables that are set, Missing those it needs that are not. Nothing set
// means the channel is off; something set with Missing not empty is a
// mistake the bastion refuses to start with.
type ChannelSettings struct {
	Set, Missing []string
	// Needed lists every variable the channel needs.
	Needed []string
}

// Off reports whether none of the channel's variables is set.
func (s ChannelSettings) Off() bool { return len(s.Set) == 0 }

// Half reports whether some are set and some it needs are not.
func (s ChannelSettings) Half() bool { return len(s.Set) > 0 && len(s.Missing) > 0 }

func settings(needed, extra []string, values map[string]string) ChannelSettings {
	s := ChannelSettings{Needed: slices.Clone(needed)}
	for _, v := range needed {
		if values[v] == "" {
			s.Missing = append(s.Missing, v)
		} else {
			s.Set = append(s.Set, v)
		}
	}
	for _, v := range extra {
		if values[v] != "" {
			s.Set = append(s.Set, v)
		}
	}
	return s
}

// EmailSettings says which e-mail variables are set.
func (e *Env) EmailSettings() ChannelSettings {
	return settings(emailVars, emailExtra, map[string]string{
		"LIFELINE_SMTP_ADDR": e.SMTPAddr, "LIFELINE_SMTP_FROM": e.SMTPFrom, "LIFELINE_SMTP_TO": e.SMTPTo,
		"LIFELINE_SMTP_USER": e.SMTPUser, "LIFELINE_SMTP_PASSWORD": e.SMTPPassword, "LIFELINE_SMTP_CA_FILE": e.SMTPCAFile,
	})
}

// WebhookSettings says which webhook variables are set.
func (e *Env) WebhookSettings() ChannelSettings {
	return settings(webhookVars, webhookExtra, map[string]string{
		"LIFELINE_WEBHOOK_URL": e.WebhookURL, "LIFELINE_WEBHOOK_TOKEN": e.WebhookToken, "LIFELINE_WEBHOOK_CA_FILE": e.WebhookCAFile,
	})
}

// Email is the e-mail configuration the variables give, with every
// problem of those that are set, each naming its variable (unset ones are
// EmailSettings' business).
func (e *Env) Email() (*email.Config, error) {
	ec := &email.Config{
		Addr: e.SMTPAddr, User: e.SMTPUser, Password: e.SMTPPassword, From: e.SMTPFrom, To: splitList(e.SMTPTo),
		TLS: email.TLSMode(e.SMTPTLS), CAFile: e.SMTPCAFile, HeloName: e.SMTPHelo, Timeout: e.SMTPTimeout,
	}
	return ec, onlySet(ec.Validate(), e.EmailSettings().Missing)
}

// Webhook is the webhook configuration the variables give, as Email's;
// site names this bastion in each request.
func (e *Env) Webhook(site string) (*webhook.Config, error) {
	wc := &webhook.Config{
		URL: e.WebhookURL, Format: webhook.Format(e.WebhookFormat), Token: e.WebhookToken, Site: site,
		CAFile: e.WebhookCAFile, Timeout: e.WebhookTimeout,
	}
	return wc, onlySet(wc.Validate(), e.WebhookSettings().Missing)
}

// channels checks the e-mail and webhook settings and their rate limits.
func (e *Env) channels(p *problems, site string) (*email.Config, *webhook.Config) {
	atLeast(p, 1, map[string]int{"LIFELINE_SMTP_PER_MINUTE": e.SMTPPerMinute, "LIFELINE_WEBHOOK_PER_MINUTE": e.WebhookPerMinute})
	var ec *email.Config
	if s := e.EmailSettings(); !s.Off() {
		if s.Half() {
			*p = append(*p, fmt.Errorf("e-mail alerts are half configured: %v not set (set all of %s, or none of the LIFELINE_SMTP_ variables)", s.Missing, strings.Join(s.Needed, ", ")))
		}
		var err error
		ec, err = e.Email()
		if err != nil {
			*p = append(*p, unjoin(err)...)
		}
	}
	var wc *webhook.Config
	if s := e.WebhookSettings(); !s.Off() {
		if s.Half() {
			*p = append(*p, fmt.Errorf("webhook alerts are half configured: %v not set (set it, or none of the LIFELINE_WEBHOOK_ variables)", s.Missing))
		}
		var err error
		wc, err = e.Webhook(site)
		if err != nil {
			*p = append(*p, unjoin(err)...)
		}
	}
	return ec, wc
}

// Channels builds the alert channels that are configured, in order of
// importance: Twilio SMS, e-mail, webhook, each with its rate limit. With
// none it is the log, with a loud warning that nobody will be told.
func (c *Config) Channels(log *slog.Logger) ([]alert.Channel, error) {
	var chans []alert.Channel
	var errs []error
	if c.SMS != nil {
		s, err := alert.NewTwilio(*c.SMS)
		if err != nil {
			errs = append(errs, fmt.Errorf("twilio configuration: %w", twilioVars(err)))
		} else {
			chans = append(chans, alert.Channel{Name: ChannelTwilio, Sender: s, PerMinute: c.SMSPerMinute})
		}
	}
	if c.Email != nil {
		s, err := email.New(*c.Email)
		if err != nil {
			errs = append(errs, fmt.Errorf("e-mail configuration: %w", err))
		} else {
			chans = append(chans, alert.Channel{Name: ChannelEmail, Sender: s, PerMinute: c.SMTPPerMinute})
		}
	}
	if c.Webhook != nil {
		s, err := webhook.New(*c.Webhook)
		if err != nil {
			errs = append(errs, fmt.Errorf("webhook configuration: %w", err))
		} else {
			chans = append(chans, alert.Channel{Name: ChannelWebhook, Sender: s, PerMinute: c.WebhookPerMinute})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	switch {
	case len(chans) == 0:
		log.Warn("no alert channel configured (SMS: " + smsVarList + "; e-mail: " + strings.Join(emailVars, ", ") + "; webhook: LIFELINE_WEBHOOK_URL): alerts go to this log only, NOBODY WILL BE TEXTED")
		return []alert.Channel{{Sender: alert.NewLogSender(log), PerMinute: c.SMSPerMinute}}, nil
	case c.SMS == nil:
		names := make([]string, len(chans))
		for i, ch := range chans {
			names[i] = ch.Name
		}
		log.Warn("no SMS configured ("+smsVarList+"): nobody will be texted; alerts go by "+strings.Join(names, " and ")+" only", "channels", len(chans))
	}
	return chans, nil
}

// onlySet drops the problems of err that name a variable in unset: those
// are reported once, as missing.
func onlySet(err error, unset []string) error {
	var out []error
	for _, e := range unjoin(err) {
		if !slices.ContainsFunc(unset, func(v string) bool { return strings.HasPrefix(e.Error(), v+" ") || strings.HasPrefix(e.Error(), v+":") }) {
			out = append(out, e)
		}
	}
	return errors.Join(out...)
}

// splitList splits a comma-separated list, trimming spaces, dropping empty
// items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
