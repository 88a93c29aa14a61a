package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// TwilioConfig configures the Twilio SMS Notifier.
type TwilioConfig struct {
	// AccountSID and AuthToken are TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN.
	AccountSID, AuthToken string
	// From is the sending number (E.164), To the recipients (E.164).
	From string
	To   []string
	// BaseURL replaces scheme, host and leading path of Twilio's API URL
	// (LIFELINE_TWILIO_URL); empty means DefaultTwilioURL.
	BaseURL string
	// Timeout bounds one HTTP request; zero means 15s.
	Timeout time.Duration
	// Transport carries the requests; nil means a clone of
	// http.DefaultTransport (never http.DefaultClient, which other
	// libraries replace).
	Transport http.RoundTripper
}

var alnum = regexp.MustCompile(`^[A-Za-z0-9]+$`)

// Validate reports every problem at once, naming the variable.
func (c TwilioConfig) Validate() error {
	var errs []error
	if !alnum.MatchString(c.AccountSID) {
		errs = append(errs, errors.New("TWILIO_ACCOUNT_SID must be set and hold only letters and digits"))
	}
	if !alnum.MatchString(c.AuthToken) {
		errs = append(errs, errors.New("TWILIO_AUTH_TOKEN must be set and hold only letters and digits"))
	}
	if err := checkNumber(c.From); err != nil {
		errs = append(errs, fmt.Errorf("LIFELINE_SMS_FROM: %w", err))
	}
	if len(c.To) == 0 {
		errs = append(errs, errors.New("LIFELINE_SMS_TO names no number"))
	}
	for _, n := range c.To {
		if err := checkNumber(n); err != nil {
			errs = append(errs, fmt.Errorf("LIFELINE_SMS_TO: %w", err))
		}
	}
	if c.BaseURL != "" {
		if _, err := parseBaseURL(c.BaseURL); err != nil {
			errs = append(errs, fmt.Errorf("LIFELINE_TWILIO_URL: %w", err))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("twilio timeout %s is negative", c.Timeout))
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

// NewTwilio returns a Notifier that texts every recipient through
// github.com/twilio/twilio-go. A message counts as sent when Twilio accepted
// it for every recipient; on a retry, recipients that already accepted that
// message ID are skipped. HTTP 4xx answers (bad credentials 20003, invalid
// number 21211, ...) are permanent, except 408 and 429; 5xx, timeouts and
// network errors are transient. twilio-go itself does not retry.
func NewTwilio(cfg TwilioConfig) (Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("twilio configuration: %w", err)
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultTwilioURL
	}
	base, _ := parseBaseURL(cfg.BaseURL) // validated above
	if cfg.Timeout == 0 {
		cfg.Timeout = 15 * time.Second
	}
	rt := cfg.Transport
	if rt == nil {
		rt = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &twilioNotifier{cfg: cfg, base: base, rt: rt, accepted: map[string]map[string]bool{}}, nil
}

type twilioNotifier struct {
	cfg  TwilioConfig
	base *url.URL
	rt   http.RoundTripper

	mu       sync.Mutex
	accepted map[string]map[string]bool // message ID -> recipients that accepted it (partial deliveries only)
}

// maxPartial bounds the memory of partially delivered messages.
const maxPartial = 256

func (t *twilioNotifier) Name() string { return "twilio" }

func (t *twilioNotifier) Send(ctx context.Context, m Message) error {
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

func (t *twilioNotifier) wasAccepted(id, to string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.accepted[id][to]
}

func (t *twilioNotifier) markAccepted(id, to string) {
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

func (t *twilioNotifier) forget(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.accepted, id)
}

// sendOne creates one message through twilio-go. twilio-go builds its
// requests with context.Background() and a fixed https://api.twilio.com base,
// so a per-call transport puts ctx (with the timeout) on the request and
// rewrites the URL to BaseURL.
func (t *twilioNotifier) sendOne(ctx context.Context, to, body string) error {
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
	rh.Edge, rh.Region = "", "" // BaseURL decides the host, not TWILIO_EDGE/TWILIO_REGION
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
	if permanentStatus(httpStatus) { // a 4xx without Twilio's JSON, e.g. a wrong LIFELINE_TWILIO_URL
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

// SelectNotifier applies the bastion's SMS rule: every one of
// TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, LIFELINE_SMS_FROM and
// LIFELINE_SMS_TO set gives the Twilio notifier; none set gives the log
// notifier and a warning on log that nobody will be texted; some but not
// all set is an error naming what is missing. log must not be nil.
func SelectNotifier(cfg TwilioConfig, log *slog.Logger) (Notifier, error) {
	set := map[string]bool{
		"TWILIO_ACCOUNT_SID": cfg.AccountSID != "",
		"TWILIO_AUTH_TOKEN":  cfg.AuthToken != "",
		"LIFELINE_SMS_FROM":  cfg.From != "",
		"LIFELINE_SMS_TO":    len(cfg.To) > 0,
	}
	var missing []string
	for _, name := range []string{"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "LIFELINE_SMS_FROM", "LIFELINE_SMS_TO"} {
		if !set[name] {
			missing = append(missing, name)
		}
	}
	switch len(missing) {
	case 0:
		return NewTwilio(cfg)
	case len(set):
		log.Warn("no SMS configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, LIFELINE_SMS_FROM, LIFELINE_SMS_TO): alerts go to this log only, NOBODY WILL BE TEXTED")
		return NewLogNotifier(log), nil
	default:
		return nil, fmt.Errorf("SMS alerts half configured: set %s too, or unset them all to log alerts only", strings.Join(missing, ", "))
	}
}
