package alert

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	twclient "github.com/twilio/twilio-go/client"
	twapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// DefaultTwilioURL is the base URL of Twilio's REST API.
const DefaultTwilioURL = "https://api.twilio.com"

// TwilioConfig configures the Twilio SMS Sender.
type TwilioConfig struct {
	// AccountSID and AuthToken are the account's credentials.
	AccountSID, AuthToken string
	// From is the sending number (E.164), To the recipients (E.164).
	From string
	To   []string
	// BaseURL replaces scheme, host and leading path of Twilio's API URL
	// (a proxy, a local fake); empty means DefaultTwilioURL.
	BaseURL string
	// Timeout bounds one HTTP request; zero means DefaultTwilioTimeout.
	Timeout time.Duration
	// Transport carries the requests; nil means a clone of
	// http.DefaultTransport (never http.DefaultClient, which other
	// libraries replace).
	Transport http.RoundTripper
}

// DefaultTwilioTimeout bounds one request to the Twilio API.
const DefaultTwilioTimeout = 15 * time.Second

// FieldError is a problem with one field of a TwilioConfig; Field is the
// field's Go name ("AccountSID", "To").
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

var alnum = regexp.MustCompile(`^[A-Za-z0-9]+$`)

// Validate reports every problem at once, each a *FieldError.
func (c TwilioConfig) Validate() error {
	var errs []error
	bad := func(field string, err error) { errs = append(errs, &FieldError{field, err}) }
	if !alnum.MatchString(c.AccountSID) {
		bad("AccountSID", errors.New("must be set and hold only letters and digits"))
	}
	if !alnum.MatchString(c.AuthToken) {
		bad("AuthToken", errors.New("must be set and hold only letters and digits"))
	}
	if err := checkNumber(c.From); err != nil {
		bad("From", err)
	}
	if len(c.To) == 0 {
		bad("To", errors.New("names no number"))
	}
	for _, n := range c.To {
		if err := checkNumber(n); err != nil {
			bad("To", err)
		}
	}
	if c.BaseURL != "" {
		if _, err := parseBaseURL(c.BaseURL); err != nil {
			bad("BaseURL", err)
		}
	}
	if c.Timeout < 0 {
		bad("Timeout", fmt.Errorf("%s is negative", c.Timeout))
	}
	return errors.Join(errs...)
}

func parseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%q: a base URL has no query, fragment or user info", s)
	}
	return u, nil
}

// NewTwilio returns a Sender that texts every recipient through
// github.com/twilio/twilio-go. A message counts as sent when Twilio accepted
// it for every recipient; on a retry, recipients that already accepted that
// message ID are skipped. HTTP 4xx answers (bad credentials 20003, invalid
// number 21211, ...) are permanent, except 408 and 429; 5xx, timeouts and
// network errors are transient. twilio-go itself does not retry.
func NewTwilio(cfg TwilioConfig) (Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("twilio configuration: %w", err)
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultTwilioURL
	}
	base, _ := parseBaseURL(cfg.BaseURL) // validated above
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTwilioTimeout
	}
	rt := cfg.Transport
	if rt == nil {
		rt = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &twilioSender{cfg: cfg, base: base, rt: rt, accepted: map[string]map[string]bool{}}, nil
}

type twilioSender struct {
	cfg  TwilioConfig
	base *url.URL
	rt   http.RoundTripper

	mu       sync.Mutex
	accepted map[string]map[string]bool // message ID -> recipients that accepted it (partial deliveries only)
}

// maxPartial bounds the memory of partially delivered messages.
const maxPartial = 256

func (t *twilioSender) Name() string { return "twilio" }

func (t *twilioSender) Send(ctx context.Context, m Message) error {
	var errs []error
	permanent := false
	for _, to := range t.cfg.To {
		if t.wasAccepted(m.ID, to) {
			continue
		}
		err := t.sendOne(ctx, to, m.Text)
		if err == nil {
			t.markAccepted(m.ID, to)
			continue
		}
		if errors.Is(err, ErrPermanent) {
			permanent = true
		}
		errs = append(errs, fmt.Errorf("sms to %s: %w", to, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 || permanent {
		t.forget(m.ID) // done, or never retried: drop the partial record
	}
	return errors.Join(errs...)
}

func (t *twilioSender) wasAccepted(id, to string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.accepted[id][to]
}

func (t *twilioSender) markAccepted(id, to string) {
	if len(t.cfg.To) == 1 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.accepted[id] == nil {
		if len(t.accepted) >= maxPartial {
			for k := range t.accepted { // forget an arbitrary old one: at worst a duplicate text
				delete(t.accepted, k)
				break
			}
		}
		t.accepted[id] = map[string]bool{}
	}
	t.accepted[id][to] = true
}

func (t *twilioSender) forget(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.accepted, id)
}

// sendOne creates one message through twilio-go. twilio-go builds its
// requests with context.Background() and a fixed https://api.twilio.com base,
// so a per-call transport puts ctx (with the timeout) on the request and
// rewrites the URL to BaseURL.
func (t *twilioSender) sendOne(ctx context.Context, to, body string) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	api, rw := newAPI(ctx, t.cfg.AccountSID, t.cfg.AuthToken, t.base, t.rt)
	params := (&twapi.CreateMessageParams{}).SetTo(to).SetFrom(t.cfg.From).SetBody(body)
	_, err := api.CreateMessage(params)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("twilio: %w (%w)", ctx.Err(), err)
	}
	return classify(err, rw.status())
}

// newAPI is twilio-go's API service for one call: its requests go to
// base under ctx (see rewriter).
func newAPI(ctx context.Context, sid, token string, base *url.URL, rt http.RoundTripper) (*twapi.ApiService, *rewriter) {
	rw := &rewriter{ctx: ctx, base: base, next: rt}
	c := &twclient.Client{
		Credentials: twclient.NewCredentials(sid, token),
		HTTPClient: &http.Client{
			Transport:     rw,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	c.SetAccountSid(sid)
	rh := twclient.NewRequestHandler(c)
	rh.Edge, rh.Region = "", "" // BaseURL decides the host, not twilio-go's edge and region settings
	return twapi.NewApiService(rh), rw
}

// classify wraps ErrPermanent around errors retrying cannot fix.
func classify(err error, httpStatus int) error {
	var rest *twclient.TwilioRestError
	if errors.As(err, &rest) {
		if rest.Status != 0 {
			httpStatus = rest.Status
		}
		if permanentStatus(httpStatus) {
			return fmt.Errorf("twilio error %d (http %d): %s: %w", rest.Code, httpStatus, rest.Message, ErrPermanent)
		}
		return fmt.Errorf("twilio error %d (http %d): %s", rest.Code, httpStatus, rest.Message)
	}
	if permanentStatus(httpStatus) { // a 4xx without Twilio's JSON, e.g. a wrong BaseURL
		return fmt.Errorf("twilio http %d: %w: %w", httpStatus, err, ErrPermanent)
	}
	return fmt.Errorf("twilio: %w", err)
}

func permanentStatus(s int) bool {
	return s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests
}

// rewriter sends twilio-go's requests to the configured base URL, under the
// caller's context, and remembers the last HTTP status.
type rewriter struct {
	ctx  context.Context
	base *url.URL
	next http.RoundTripper

	mu   sync.Mutex
	last int
}

func (r *rewriter) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(r.ctx)
	out.URL.Scheme = r.base.Scheme
	out.URL.Host = r.base.Host
	out.Host = r.base.Host
	if p := strings.TrimSuffix(r.base.Path, "/"); p != "" {
		out.URL.Path = p + out.URL.Path
		out.URL.RawPath = ""
	}
	resp, err := r.next.RoundTrip(out)
	if err == nil {
		r.mu.Lock()
		r.last = resp.StatusCode
		r.mu.Unlock()
	}
	return resp, err
}

func (r *rewriter) status() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}
