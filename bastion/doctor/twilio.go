package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/config"
)

// Twilio checks the SMS settings: all four or none (none means nobody is
// texted: a ✗, since texts on every login are what the bastion is for),
// then fetches the account through twilio-go (GET
// /2010-04-01/Accounts/{Sid}.json at LIFELINE_TWILIO_URL), which sends no
// text. With SendTest it then texts every LIFELINE_SMS_TO number once.
// Without SMS it passes when another channel (e-mail, webhook) is
// configured: alerts then reach people that way.
func (d *Doctor) Twilio(ctx context.Context) []Check {
	cfg := d.Config
	smsVars := config.SMSVars()
	missing := cfg.SMSMissing()
	restart := "then systemctl restart " + Unit
	switch len(missing) {
	case len(smsVars):
		if other := d.otherChannels(); len(other) > 0 {
			return []Check{pass("SMS alerts: off (none of %s is set): nobody is texted, alerts go by %s only", strings.Join(smsVars, ", "), strings.Join(other, " and "))}
		}
		return []Check{fail("SMS alerts", "none of "+strings.Join(smsVars, ", ")+" is set: no alerts will be texted (logins and sites going down reach only the journal)",
			"set all four in "+d.where()+" (on a Terraform jump host: the sms_from and sms_to variables and the Twilio SSM parameters), "+restart)}
	case 0:
	default:
		return []Check{fail("SMS alerts", "half configured: "+strings.Join(missing, ", ")+" not set, so the bastion refuses to start",
			"set them too in "+d.where()+", or unset all four to run without texts, "+restart)}
	}
	tcp, err := cfg.Env.Twilio()
	if err != nil {
		var checks []Check
		for _, e := range flatten(err) {
			checks = append(checks, fail("SMS alerts", e.Error(), "correct it in "+d.where()+", "+restart))
		}
		return checks
	}
	tc := *tcp
	tc.Timeout, tc.Transport = d.timeout(), d.Transport
	to := tc.To
	what := "Twilio account " + cfg.TwilioSID
	acct, err := alert.FetchTwilioAccount(ctx, tc)
	if err != nil {
		checks := []Check{d.twilioFailure(what, err)}
		if d.SendTest {
			checks = append(checks, fail("test texts", "not sent: the account check failed", "fix the account check first"))
		}
		return checks
	}
	if acct.Status != "active" {
		return []Check{fail(what+" ("+acct.Name+")", fmt.Sprintf("is %s: an account that is not active sends no texts", acct.Status),
			"reactivate it in the Twilio console (billing, or Twilio's support for a suspended one), or use another account's SID and token")}
	}
	trial := ""
	if acct.Type == "Trial" {
		trial = "; a trial account texts only numbers verified in the Twilio console"
	}
	checks := []Check{pass("%s (%s): %s, %s; texts go from %s to %s at %s%s", what, acct.Name, acct.Status, acct.Type, cfg.SMSFrom,
		plural(len(to), "number"), cfg.TwilioURL, trial)}
	if !d.SendTest {
		return checks
	}
	body := fmt.Sprintf("lifeline test from %s: alerts of this jump host reach this phone (lifeline-bastion doctor --send-test).", cfg.Name)
	for _, n := range to {
		sid, err := alert.SendTwilioText(ctx, tc, n, body)
		if err != nil {
			checks = append(checks, d.sendFailure("test text to "+n, err))
			continue
		}
		checks = append(checks, pass("test text to %s: accepted by Twilio as %s", n, sid))
	}
	return checks
}

func (d *Doctor) twilioFailure(what string, err error) Check {
	var api *alert.TwilioAPIError
	if !errors.As(err, &api) {
		return fail(what, err.Error(), fmt.Sprintf("check that this machine reaches %s (DNS, outbound HTTPS, a proxy; the security group's egress) and LIFELINE_TWILIO_URL in %s", d.Config.TwilioURL, d.where()))
	}
	switch api.HTTPStatus {
	case 401:
		return fail(what, fmt.Sprintf("Twilio refused TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN (%v)", api),
			"copy the Account SID and the Auth Token from the Twilio console (Account, API keys & tokens) into "+d.where()+
				" (Terraform: the Twilio SSM parameters); a token renewed in the console ends the old one")
	case 404:
		return fail(what, fmt.Sprintf("no such account at %s (%v)", d.Config.TwilioURL, api),
			"check TWILIO_ACCOUNT_SID (AC followed by 32 hex digits) and LIFELINE_TWILIO_URL (https://api.twilio.com) in "+d.where())
	}
	return fail(what, api.Error(), "check LIFELINE_TWILIO_URL in "+d.where()+" and Twilio's status page; try again later")
}

func (d *Doctor) sendFailure(what string, err error) Check {
	var api *alert.TwilioAPIError
	if !errors.As(err, &api) {
		return d.twilioFailure(what, err)
	}
	switch api.Code {
	case 21211, 21614:
		return fail(what, api.Error(), "correct the number in LIFELINE_SMS_TO (E.164: +, country code, number) in "+d.where())
	case 21608:
		return fail(what, api.Error(), "verify the number in the Twilio console (a trial account texts verified numbers only), or upgrade the account")
	case 21212, 21606, 21659:
		return fail(what, api.Error(), "LIFELINE_SMS_FROM must be a number of this Twilio account that can send SMS (Phone Numbers, Active numbers)")
	case 21408:
		return fail(what, api.Error(), "allow SMS to that country in the Twilio console (Messaging, Settings, Geo permissions)")
	}
	return d.twilioFailure(what, err)
}
