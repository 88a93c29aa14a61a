package config

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/lifeline-dev/lifeline/bastion/alert"
)

// smsVars are the four settings SMS alerts need, all or none.
var smsVars = []string{"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "LIFELINE_SMS_FROM", "LIFELINE_SMS_TO"}

var smsVarList = strings.Join(smsVars, ", ")

// twilioFields names the variable of each field alert.TwilioConfig checks.
var twilioFields = map[string]string{
	"AccountSID": "TWILIO_ACCOUNT_SID", "AuthToken": "TWILIO_AUTH_TOKEN",
	"From": "LIFELINE_SMS_FROM", "To": "LIFELINE_SMS_TO", "BaseURL": "LIFELINE_TWILIO_URL",
}

// SMSMissing lists, in the order of smsVars, the SMS variables that are
// not set. All four missing means no SMS; some is a mistake.
func (e *Env) SMSMissing() []string {
	var missing []string
	for i, v := range []bool{e.TwilioSID != "", e.TwilioToken != "", e.SMSFrom != "", e.SMSTo != ""} {
		if !v {
			missing = append(missing, smsVars[i])
		}
	}
	return missing
}

// SMSVars lists the four SMS variables, all or none of which must be set.
func SMSVars() []string { return slices.Clone(smsVars) }

// sms checks the SMS settings and returns the Twilio configuration, nil
// when none of them is set. LIFELINE_TWILIO_URL is checked either way.
func (e *Env) sms(p *problems) *alert.TwilioConfig {
	if u, err := url.Parse(e.TwilioURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add("LIFELINE_TWILIO_URL", "%q is not an http(s) URL", e.TwilioURL)
	}
	missing := e.SMSMissing()
	if len(missing) == len(smsVars) {
		return nil
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		*p = append(*p, fmt.Errorf("SMS alerts are half configured: %v not set (set all of %s, or none)", missing, smsVarList))
	}
	tc, err := e.Twilio()
	if err != nil {
		*p = append(*p, err)
	}
	return tc
}

// Twilio is the Twilio configuration the variables give, with every
// problem of those that are set, each naming its variable. Unset ones are
// SMSMissing's business, LIFELINE_TWILIO_URL is checked with the other
// settings.
func (e *Env) Twilio() (*alert.TwilioConfig, error) {
	var errs []error
	to, err := alert.SplitNumbers(e.SMSTo)
	if err != nil {
		errs = append(errs, fmt.Errorf("LIFELINE_SMS_TO: %w", err))
	}
	tc := &alert.TwilioConfig{AccountSID: e.TwilioSID, AuthToken: e.TwilioToken, From: e.SMSFrom, To: to, BaseURL: e.TwilioURL}
	checked := map[string]bool{"AccountSID": e.TwilioSID != "", "AuthToken": e.TwilioToken != "", "From": e.SMSFrom != "", "To": e.SMSTo != "" && err == nil}
	for _, err := range unjoin(tc.Validate()) {
		var fe *alert.FieldError
		if errors.As(err, &fe) && !checked[fe.Field] {
			continue
		}
		errs = append(errs, twilioVars(err))
	}
	return tc, errors.Join(errs...)
}

// twilioVars names the variable in an *alert.FieldError.
func twilioVars(err error) error {
	var out []error
	for _, e := range unjoin(err) {
		var fe *alert.FieldError
		if errors.As(e, &fe) && twilioFields[fe.Field] != "" {
			e = fmt.Errorf("%s: %w", twilioFields[fe.Field], fe.Err)
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// unjoin is the errors of an errors.Join, or err alone.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
