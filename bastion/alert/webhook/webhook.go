// Package webhook delivers alerts by HTTP POST: as a JSON document to any
// webhook, or as an ntfy push notification (https://docs.ntfy.sh/publish/),
// a channel beside SMS and e-mail so that one outage cannot hide an alert.
//
// The channel needs a URL: the webhook's, or for ntfy the topic's
// (https://ntfy.sh/TOPIC or a self-hosted server's); https unless the host
// is a loopback IP address. A Bearer token is optional (ntfy: an access
// token, tk_...). Certificates are checked against the system roots or the
// roots of Config.CAFile.
//
// Limits: one Send, dial, TLS, request and reading the response included,
// ends within Config.Timeout (DefaultTimeout) or when ctx is done. At most
// MaxResponseBytes of an error response are read (a 2xx body is not read
// at all), and response headers may total MaxResponseBytes. JSON fields
// text and detail are cut at MaxTextBytes; an ntfy body at NtfyMaxBody
// (longer ntfy messages would become attachments).
//
// Answers: 2xx means accepted. 4xx other than 408 and 429, and redirects
// (3xx), are permanent: redirects are not followed, so the body and token
// go only to the configured URL; retrying a redirect cannot help, the URL
// must be fixed. 5xx, 408, 429 and network errors are retried by the
// caller. Every request carries "Idempotency-Key: <ID>", the same on every
// retry, so a receiver can drop a second copy (ntfy ignores it: a retry
// after a lost answer may notify twice).
package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lifeline-dev/lifeline/bastion/alert"
)

// Names of the settings in error messages: the environment variables the
// bastion's config package is expected to map onto Config.
const (
	envURL     = "LIFELINE_WEBHOOK_URL"
	envFormat  = "LIFELINE_WEBHOOK_FORMAT"
	envToken   = "LIFELINE_WEBHOOK_TOKEN"
	envCAFile  = "LIFELINE_WEBHOOK_CA_FILE"
	envTimeout = "LIFELINE_WEBHOOK_TIMEOUT"
)

const (
	// DefaultTimeout bounds one Send when Config.Timeout is zero.
	DefaultTimeout = 15 * time.Second
	// MaxResponseBytes caps what is read of a response body, and the
	// response headers.
	MaxResponseBytes = 64 << 10
	// MaxTextBytes caps the text and detail fields of a JSON document.
	MaxTextBytes = 256 << 10
	// NtfyMaxBody is ntfy's message size limit.
	NtfyMaxBody = 4096
	// maxTitleRunes caps the ntfy Title.
	maxTitleRunes = 100
	// errSnippet is how much of an error response goes into the error.
	errSnippet = 200
)

// Format is the shape of the request.
type Format string

const (
	// JSON posts {"id","kind","text","detail","created","site"} as
	// application/json.
	JSON Format = "json"
	// Ntfy posts the text as the body, with Title, Tags and Priority
	// headers.
	Ntfy Format = "ntfy"
)

// Config configures a Sender. URL is required.
type Config struct {
	// URL is where to POST: the webhook, or the ntfy topic URL.
	URL string
	// Format is JSON (when empty) or Ntfy.
	Format Format
	// Token, when set, is sent as "Authorization: Bearer <Token>".
	Token string
	// Site names this bastion: the JSON field "site" (left out when
	// empty) and the start of the ntfy Title.
	Site string
	// CAFile is a PEM file of the root certificates to trust; empty means
	// the system roots.
	CAFile string
	// Timeout bounds one Send; zero means DefaultTimeout.
	Timeout time.Duration
	// Transport makes the requests; nil means a transport of the Sender's
	// own (proxy from the environment, CAFile's roots, the limits above).
	// Redirects are never followed, whatever the transport.
	Transport http.RoundTripper
}

// Validate reports every problem of c at once, each naming its setting.
func (c *Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, fmt.Errorf("%s is empty: set it to the webhook URL (for ntfy: https://ntfy.sh/YOUR-TOPIC)", envURL))
	} else if u, err := url.Parse(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", envURL, err))
	} else {
		switch {
		case u.Scheme == "https":
		case u.Scheme == "http" && alert.LoopbackIP(u.Hostname()):
		case u.Scheme == "http":
			errs = append(errs, fmt.Errorf("%s %s: use https (plain http is allowed only to a loopback IP address such as 127.0.0.1)", envURL, redact(u)))
		default:
			errs = append(errs, fmt.Errorf("%s %s: want an https URL", envURL, redact(u)))
		}
		if u.Host == "" {
			errs = append(errs, fmt.Errorf("%s %s has no host", envURL, redact(u)))
		}
		if c.Format == Ntfy && strings.Trim(u.Path, "/") == "" {
			errs = append(errs, fmt.Errorf("%s %s has no topic: for ntfy, give the topic URL, e.g. https://ntfy.sh/YOUR-TOPIC", envURL, redact(u)))
		}
	}
	switch c.Format {
	case "", JSON, Ntfy:
	default:
		errs = append(errs, fmt.Errorf("%s %q: want %s or %s", envFormat, c.Format, JSON, Ntfy))
	}
	if strings.ContainsFunc(c.Token, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		errs = append(errs, fmt.Errorf("%s contains a space, a control character (a line break?) or a non-ASCII character", envToken))
	}
	if c.CAFile != "" {
		if _, err := alert.CertPool(c.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", envCAFile, err))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%s %s is negative", envTimeout, c.Timeout))
	}
	return errors.Join(errs...)
}

// Sender posts alerts to a webhook or ntfy. It is an alert.Sender; its
// methods may be called from several goroutines.
type Sender struct {
	cfg    Config
	url    string // for errors, without credentials
	client *http.Client
}

// New validates cfg and returns a Sender. It reads cfg.CAFile once.
func New(cfg Config) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Format == "" {
		cfg.Format = JSON
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	rt := cfg.Transport
	if rt == nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pool, err := alert.CertPool(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", envCAFile, err)
			}
			tc.RootCAs = pool
		}
		// No timeouts of its own: Send's ctx bounds dial, TLS, request
		// and response alike, and says so in the error.
		rt = &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:        tc,
			MaxResponseHeaderBytes: MaxResponseBytes,
			ForceAttemptHTTP2:      true,
			MaxIdleConns:           2,
			IdleConnTimeout:        90 * time.Second,
		}
	}
	u, _ := url.Parse(cfg.URL)
	return &Sender{
		cfg: cfg,
		url: redact(u),
		client: &http.Client{
			Transport:     rt,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Name is "ntfy" or "webhook".
func (s *Sender) Name() string {
	if s.cfg.Format == Ntfy {
		return "ntfy"
	}
	return "webhook"
}

// Send posts m once. It returns nil when the server answered 2xx; an error
// wrapping alert.ErrPermanent for 3xx and for 4xx other than 408 and 429;
// any other error (5xx, 408, 429, network, TLS, the end of ctx) is not
// permanent.
func (s *Sender) Send(ctx context.Context, m alert.Message) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := s.request(ctx, m)
	if err != nil {
		return fmt.Errorf("%s %s: %w", s.Name(), s.url, err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // its URL may hold a secret in the query
		}
		return fmt.Errorf("%s %s: %w", s.Name(), s.url, err)
	}
	defer resp.Body.Close() // a 2xx body stays unread: the answer is the status
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	// Read a bounded part of the answer for the error; a slow or broken
	// body only shortens the snippet (ctx bounds the wait).
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	err = fmt.Errorf("%s %s: http %d%s", s.Name(), s.url, resp.StatusCode, snippet(b))
	switch code := resp.StatusCode; {
	case code >= 300 && code < 400:
		return fmt.Errorf("%w: redirect to %q not followed: set %s to the final URL: %w", err, oneLine(resp.Header.Get("Location"), errSnippet), envURL, alert.ErrPermanent)
	case code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		return fmt.Errorf("%w: %w", err, alert.ErrPermanent)
	}
	return err
}

func (s *Sender) request(ctx context.Context, m alert.Message) (*http.Request, error) {
	var body []byte
	var ctype string
	switch s.cfg.Format {
	case Ntfy:
		body, ctype = []byte(ntfyBody(m)), "text/plain; charset=utf-8"
	default:
		doc := struct {
			ID      string    `json:"id"`
			Kind    string    `json:"kind"`
			Text    string    `json:"text"`
			Detail  string    `json:"detail"`
			Created time.Time `json:"created"`
			Site    string    `json:"site,omitempty"`
		}{m.ID, m.Kind, cutUTF8(m.Text, MaxTextBytes), cutUTF8(detail(m), MaxTextBytes), m.Created, s.cfg.Site}
		var err error
		if body, err = json.Marshal(doc); err != nil {
			return nil, err
		}
		ctype = "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", "lifeline-bastion")
	if k := idempotencyKey(m.ID); k != "" {
		req.Header.Set("Idempotency-Key", k)
	}
	if s.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	}
	if s.cfg.Format == Ntfy {
		req.Header.Set("Title", ntfyTitle(s.cfg.Site, m))
		req.Header.Set("Tags", ntfyTags(m.Kind))
		req.Header.Set("Priority", ntfyPriority(m.Kind))
	}
	return req, nil
}

// detail is m.Detail, or m.Text for an alert without one.
func detail(m alert.Message) string {
	if m.Detail != "" {
		return m.Detail
	}
	return m.Text
}

// ntfyBody is the detail when it fits ntfy's limit, else the text, cut to
// the limit.
func ntfyBody(m alert.Message) string {
	if d := detail(m); len(d) <= NtfyMaxBody {
		return d
	}
	if len(m.Text) <= NtfyMaxBody {
		return m.Text
	}
	return cutUTF8(m.Text, NtfyMaxBody-len("…")) + "…"
}

// ntfyTitle is "lifeline SITE: kind words", one line, RFC 2047-encoded
// when not ASCII (ntfy decodes it).
func ntfyTitle(site string, m alert.Message) string {
	t := "lifeline"
	if s := oneLine(site, maxTitleRunes); s != "" {
		t += " " + s
	}
	if k := oneLine(strings.ReplaceAll(m.Kind, "_", " "), maxTitleRunes); k != "" {
		t += ": " + k
	}
	return mime.QEncoding.Encode("utf-8", oneLine(t, maxTitleRunes))
}

var kindEmoji = map[string]string{
	alert.KindLogin:      "key",
	alert.KindAgentDown:  "rotating_light",
	alert.KindAgentBack:  "white_check_mark",
	alert.KindLinkFailed: "warning",
	alert.KindLinkOK:     "white_check_mark",
	alert.KindNameMoved:  "arrows_counterclockwise",
	alert.KindAuthFailed: "no_entry",
	alert.KindSummary:    "memo",
}

// ntfyTags is an emoji tag (shown in the title) and the kind itself.
func ntfyTags(kind string) string {
	k := token(kind)
	if e, ok := kindEmoji[kind]; ok {
		return e + "," + k
	}
	if k == "" {
		return "bell"
	}
	return "bell," + k
}

// ntfyPriority is high for what needs the owner now.
func ntfyPriority(kind string) string {
	switch kind {
	case alert.KindLogin, alert.KindAgentDown, alert.KindLinkFailed:
		return "high"
	}
	return "default"
}

// idempotencyKey is id as printable ASCII without spaces or quotes.
func idempotencyKey(id string) string {
	return strings.Map(func(r rune) rune {
		if r > ' ' && r < 0x7f && r != '"' && r != '\\' && r != ',' {
			return r
		}
		return '_'
	}, id)
}

// token keeps [a-z0-9_-] of s.
func token(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			return r
		}
		return -1
	}, strings.ToLower(s))
}

// oneLine replaces control characters by spaces, trims, and cuts to n
// runes.
func oneLine(s string, n int) string {
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD")))
	if utf8.RuneCountInString(s) > n {
		s = string([]rune(s)[:n-1]) + "…"
	}
	return s
}

// snippet is the start of an error response, on one line, for the error.
func snippet(b []byte) string {
	s := oneLine(string(b), errSnippet)
	if s == "" {
		return ""
	}
	return ": " + s
}

// cutUTF8 cuts s to at most n bytes without splitting a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// redact is u without its password or query (either may hold a secret).
func redact(u *url.URL) string {
	c := *u
	c.RawQuery, c.ForceQuery, c.Fragment = "", false, ""
	return c.Redacted()
}
