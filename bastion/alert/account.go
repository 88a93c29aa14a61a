package alert

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	twclient "github.com/twilio/twilio-go/client"
	twapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// TwilioAccount is what Twilio says of an account.
type TwilioAccount struct {
	SID, Name string
	// Status is "active", "suspended" or "closed"; only an active account
	// sends texts.
	Status string
	// Type is "Trial" or "Full"; a trial account texts verified numbers only.
	Type string
}

// TwilioAPIError is an answer of the Twilio API other than success: the
// HTTP status, and Twilio's error code and message when it sent its error
// document (401 / 20003: the account SID or auth token is wrong).
type TwilioAPIError struct {
	HTTPStatus int
	Code       int
	Message    string
}

func (e *TwilioAPIError) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("twilio error %d (http %d): %s", e.Code, e.HTTPStatus, e.Message)
	}
	return fmt.Sprintf("twilio http %d: %s", e.HTTPStatus, e.Message)
}

// FetchTwilioAccount asks the Twilio API for the account of cfg.AccountSID
// (GET /2010-04-01/Accounts/{Sid}.json through twilio-go) with cfg's
// credentials, base URL and transport; cfg.Timeout (zero: 15s) and ctx
// bound it. No text is sent. An answer other than success is a
// *TwilioAPIError; anything else (DNS, connection, timeout) another error.
func FetchTwilioAccount(ctx context.Context, cfg TwilioConfig) (TwilioAccount, error) {
	var acct TwilioAccount
	err := callTwilio(ctx, cfg, func(api *twapi.ApiService) error {
		a, err := api.FetchAccount(cfg.AccountSID)
		if err != nil {
			return err
		}
		acct = TwilioAccount{SID: deref(a.Sid), Name: deref(a.FriendlyName), Status: deref(a.Status), Type: deref(a.Type)}
		return nil
	})
	return acct, err
}

// SendTwilioText sends one text to the number to, from cfg.From, with
// cfg's credentials, base URL and transport, and returns the SID Twilio
// gave the message. Errors are as FetchTwilioAccount's.
func SendTwilioText(ctx context.Context, cfg TwilioConfig, to, body string) (string, error) {
	var sid string
	err := callTwilio(ctx, cfg, func(api *twapi.ApiService) error {
		m, err := api.CreateMessage((&twapi.CreateMessageParams{}).SetTo(to).SetFrom(cfg.From).SetBody(body))
		if err != nil {
			return err
		}
		sid = deref(m.Sid)
		return nil
	})
	return sid, err
}

func callTwilio(ctx context.Context, cfg TwilioConfig, call func(*twapi.ApiService) error) error {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultTwilioURL
	}
	base, err := parseBaseURL(cfg.BaseURL)
	if err != nil {
		return fmt.Errorf("twilio base URL: %w", err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTwilioTimeout
	}
	rt := cfg.Transport
	if rt == nil {
		rt = http.DefaultTransport.(*http.Transport).Clone()
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	api, rw := newAPI(ctx, cfg.AccountSID, cfg.AuthToken, base, rt)
	err = call(api)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("twilio at %s: no answer within %s: %w", cfg.BaseURL, cfg.Timeout, ctx.Err())
	}
	var rest *twclient.TwilioRestError
	if errors.As(err, &rest) {
		status := rest.Status
		if status == 0 {
			status = rw.status()
		}
		return &TwilioAPIError{HTTPStatus: status, Code: rest.Code, Message: rest.Message}
	}
	if s := rw.status(); s >= 300 {
		return &TwilioAPIError{HTTPStatus: s, Message: err.Error()}
	}
	return fmt.Errorf("twilio at %s: %w", cfg.BaseURL, err)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
