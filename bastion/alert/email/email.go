// Package email delivers alerts as e-mail through an SMTP submission server,
// a second channel beside SMS so that one outage cannot hide an alert.
//
// The channel needs a server address (host:port), a From address and at
// least one recipient; a user and password when the server wants AUTH
// (PLAIN, or LOGIN when PLAIN is not offered). By default the connection
// must be upgraded with STARTTLS before anything but EHLO is sent: a server
// (or a man in the middle) that does not offer STARTTLS gets neither the
// password nor the mail. Implicit TLS (port 465) is the other choice;
// plaintext is allowed only when configured explicitly and the server is a
// loopback IP address (a local relay, tests). Certificates are checked
// against the system roots or the roots of Config.CAFile.
//
// Limits: one Send, dial and every SMTP command included, ends within
// Config.Timeout (DefaultTimeout) or when ctx is done, whichever is first:
// the deadline is set on the connection, and ctx's end closes it. The
// server's replies may total MaxReplyBytes. The body is cut at
// MaxBodyBytes, the Subject at maxSubjectRunes.
//
// Retries: every message carries Message-ID <ID@lifeline>, so a second copy
// after a retry is recognisable as the same mail; recipients that accepted
// a message are remembered (for the last rememberIDs IDs, in memory) and not
// sent it again when Send is called again with the same ID.
package email

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/netip"
	"net/smtp"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lifeline-dev/lifeline/bastion/alert"
)

// Names of the settings in error messages: the environment variables the
// bastion's config package is expected to map onto Config.
const (
	envAddr     = "LIFELINE_SMTP_ADDR"
	envUser     = "LIFELINE_SMTP_USER"
	envPassword = "LIFELINE_SMTP_PASSWORD"
	envFrom     = "LIFELINE_SMTP_FROM"
	envTo       = "LIFELINE_SMTP_TO"
	envTLS      = "LIFELINE_SMTP_TLS"
	envCAFile   = "LIFELINE_SMTP_CA_FILE"
	envTimeout  = "LIFELINE_SMTP_TIMEOUT"
	envHelo     = "LIFELINE_SMTP_HELO"
)

const (
	// DefaultTimeout bounds one Send when Config.Timeout is zero.
	DefaultTimeout = 30 * time.Second
	// DefaultHeloName is the name given in EHLO when Config.HeloName is empty.
	DefaultHeloName = "localhost"
	// MaxBodyBytes caps the body; a longer text is cut and marked.
	MaxBodyBytes = 256 << 10
	// MaxReplyBytes caps what one Send reads from the server, all replies
	// together: a server that talks without end is cut off here, long
	// before Timeout.
	MaxReplyBytes = 1 << 20
	// maxSubjectRunes caps the Subject.
	maxSubjectRunes = 120
	// rememberIDs is how many message IDs the Sender remembers the
	// accepting recipients of.
	rememberIDs = 256
)

// TLSMode says how the connection to the server is protected.
type TLSMode string

const (
	// StartTLS (the default) connects in plaintext, requires the server to
	// offer STARTTLS and upgrades before AUTH or MAIL; typically port 587.
	StartTLS TLSMode = "starttls"
	// ImplicitTLS speaks TLS from the first byte; typically port 465.
	ImplicitTLS TLSMode = "tls"
	// PlainLoopback sends in plaintext, allowed only when Config.Addr is a
	// loopback IP address (127.0.0.0/8, ::1).
	PlainLoopback TLSMode = "none-on-loopback-only"
)

// Config configures a Sender. The zero value is not usable: Addr, From and
// To are required.
type Config struct {
	// Addr is the server, host:port, e.g. "smtp.example.com:587".
	Addr string
	// User and Password are the AUTH credentials; both or neither. Empty
	// means no AUTH.
	User, Password string
	// From is the sender address, e.g. "lifeline <bastion@example.com>".
	From string
	// To are the recipients; at least one.
	To []string
	// TLS is the protection of the connection; empty means StartTLS.
	TLS TLSMode
	// CAFile is a PEM file of the root certificates to trust; empty means
	// the system roots.
	CAFile string
	// ServerName is the name the server's certificate must carry; empty
	// means the host of Addr.
	ServerName string
	// HeloName is the name given in EHLO; empty means DefaultHeloName.
	HeloName string
	// Timeout bounds one Send, dial to QUIT; zero means DefaultTimeout.
	Timeout time.Duration
	// Dial opens the TCP connection; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is used for the Date header of a message without Created; nil
	// means time.Now.
	Now func() time.Time
}

// Validate reports every problem of c at once, each naming its setting.
func (c *Config) Validate() error {
	var errs []error
	host, port, err := net.SplitHostPort(c.Addr)
	switch {
	case c.Addr == "":
		errs = append(errs, fmt.Errorf("%s is empty: set it to the SMTP server as host:port, e.g. smtp.example.com:587", envAddr))
	case err != nil:
		errs = append(errs, fmt.Errorf("%s %q: want host:port, e.g. smtp.example.com:587: %w", envAddr, c.Addr, err))
	case host == "":
		errs = append(errs, fmt.Errorf("%s %q has no host", envAddr, c.Addr))
	default:
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("%s %q: port %q is not a number from 1 to 65535", envAddr, c.Addr, port))
		}
	}
	switch c.TLS {
	case "", StartTLS, ImplicitTLS:
	case PlainLoopback:
		if !alert.LoopbackIP(host) {
			errs = append(errs, fmt.Errorf("%s=%s needs %s to be a loopback IP address (127.0.0.1:25, [::1]:25), not %q: use starttls or tls for any other server", envTLS, PlainLoopback, envAddr, c.Addr))
		}
	default:
		errs = append(errs, fmt.Errorf("%s %q: want %s, %s or %s", envTLS, c.TLS, StartTLS, ImplicitTLS, PlainLoopback))
	}
	if (c.User == "") != (c.Password == "") {
		errs = append(errs, fmt.Errorf("%s and %s: set both for AUTH, or neither", envUser, envPassword))
	}
	if hasCtl(c.User) || hasCtl(c.Password) {
		errs = append(errs, fmt.Errorf("%s or %s contains a control character (a line break?)", envUser, envPassword))
	}
	if _, err := parseAddr(c.From); err != nil {
		errs = append(errs, fmt.Errorf("%s %q: %w", envFrom, c.From, err))
	}
	if len(c.To) == 0 {
		errs = append(errs, fmt.Errorf("%s is empty: name at least one recipient", envTo))
	}
	for _, to := range c.To {
		if _, err := parseAddr(to); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", envTo, to, err))
		}
	}
	if c.CAFile != "" {
		if _, err := alert.CertPool(c.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", envCAFile, err))
		}
	}
	if hasCtl(c.ServerName) || strings.ContainsRune(c.ServerName, ' ') {
		errs = append(errs, fmt.Errorf("TLS server name %q is not a host name", c.ServerName))
	}
	if hasCtl(c.HeloName) || strings.ContainsRune(c.HeloName, ' ') {
		errs = append(errs, fmt.Errorf("%s %q is not a host name", envHelo, c.HeloName))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%s %s is negative", envTimeout, c.Timeout))
	}
	return errors.Join(errs...)
}

// Sender sends alerts as e-mail. It is an alert.Notifier; its methods may
// be called from several goroutines.
type Sender struct {
	cfg  Config
	host string
	tls  *tls.Config
	from *mail.Address
	to   []*mail.Address

	mu        sync.Mutex
	delivered map[string][]string // message ID -> recipients that accepted it
	order     []string            // IDs in delivered, oldest first
}

// New validates cfg and returns a Sender. It reads cfg.CAFile once.
func New(cfg Config) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TLS == "" {
		cfg.TLS = StartTLS
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.HeloName == "" {
		cfg.HeloName = DefaultHeloName
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.To = slices.Clone(cfg.To)
	host, _, _ := net.SplitHostPort(cfg.Addr)
	s := &Sender{cfg: cfg, host: host, delivered: map[string][]string{}}
	s.tls = &tls.Config{ServerName: cmp.Or(cfg.ServerName, host), MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pool, err := alert.CertPool(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envCAFile, err)
		}
		s.tls.RootCAs = pool
	}
	s.from, _ = parseAddr(cfg.From)
	for _, to := range cfg.To {
		a, _ := parseAddr(to)
		s.to = append(s.to, a)
	}
	return s, nil
}

// Name is "email".
func (s *Sender) Name() string { return "email" }

// Send mails m (Subject: the first line of m.Text; body: m.Detail, or
// m.Text when Detail is empty) to the recipients that have not yet
// accepted m.ID. It
// returns nil once the server accepted the message (the reply to the end
// of DATA) for every recipient. An error wraps alert.ErrPermanent when
// the server refused with a 5xx reply (bad credentials, refused
// recipient, a server that offers no AUTH although credentials are set);
// 4xx replies, network and TLS errors, a missing STARTTLS and the end of
// ctx are not permanent. When some recipients accepted and others refused,
// the message went to those that accepted and the error names the others.
func (s *Sender) Send(ctx context.Context, m alert.Message) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	rcpts := s.pending(m.ID)
	if len(rcpts) == 0 {
		return nil
	}
	err := s.deliver(ctx, m, rcpts)
	if err == nil {
		return nil
	}
	cause := ctx.Err()
	if cause == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		cause = context.DeadlineExceeded // the connection's deadline fired a moment before ctx's
	}
	if cause != nil && !errors.Is(err, cause) {
		// The connection was closed or timed out under us: say why.
		return fmt.Errorf("email via %s: gave up: %w (%v)", s.cfg.Addr, cause, err)
	}
	return fmt.Errorf("email via %s: %w", s.cfg.Addr, err)
}

func (s *Sender) deliver(ctx context.Context, m alert.Message, rcpts []string) error {
	raw, err := s.cfg.Dial(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer raw.Close()
	// The end of ctx closes the TCP connection under whatever reads or
	// writes it; the deadline covers every step without a ctx of its own.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	deadline, _ := ctx.Deadline() // always set: Send adds a timeout
	if err := raw.SetDeadline(deadline); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	if s.cfg.TLS == PlainLoopback {
		// Validate checked the configured address; check the peer too, in
		// case a Dial hook went elsewhere.
		if ap, err := netip.ParseAddrPort(raw.RemoteAddr().String()); err != nil || !ap.Addr().Unmap().IsLoopback() {
			return fmt.Errorf("%s=%s but the connection went to %s, not a loopback address", envTLS, PlainLoopback, raw.RemoteAddr())
		}
	}
	var conn net.Conn = &limitedConn{Conn: raw, left: MaxReplyBytes}
	if s.cfg.TLS == ImplicitTLS {
		tc := tls.Client(conn, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, s.host)
	if err != nil {
		return classify("greeting", err)
	}
	defer c.Close()
	if err := c.Hello(s.cfg.HeloName); err != nil {
		return classify("EHLO", err)
	}
	if s.cfg.TLS == StartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return fmt.Errorf("server does not offer STARTTLS: refusing to send credentials or mail in plaintext (a man in the middle may have removed it; if the server really has no TLS, use %s=tls or a local relay)", envTLS)
		}
		if err := c.StartTLS(s.tls); err != nil {
			return classify("STARTTLS", err)
		}
	}
	if _, ok := c.TLSConnectionState(); !ok && s.cfg.TLS != PlainLoopback {
		return errors.New("connection is not encrypted") // cannot happen: both modes above end in TLS
	}
	if s.cfg.User != "" {
		if err := s.auth(c); err != nil {
			return err
		}
	}
	if err := c.Mail(s.from.Address); err != nil {
		return classify("MAIL FROM", err)
	}
	var accepted []string
	var refused []error
	permanent := true
	for _, r := range rcpts {
		if err := c.Rcpt(r); err != nil {
			var tp *textproto.Error
			if !errors.As(err, &tp) {
				return classify("RCPT TO", err) // the connection broke
			}
			permanent = permanent && tp.Code >= 500
			refused = append(refused, fmt.Errorf("%s: %w", r, err))
			continue
		}
		accepted = append(accepted, r)
	}
	if len(accepted) == 0 {
		_ = c.Reset()
		_ = c.Quit()
		return refusal(nil, refused, permanent)
	}
	w, err := c.Data()
	if err != nil {
		return classify("DATA", err)
	}
	if _, err := w.Write(s.compose(m)); err != nil {
		return classify("DATA", err)
	}
	if err := w.Close(); err != nil { // reads the server's verdict on the message
		return classify("end of DATA", err)
	}
	s.remember(m.ID, accepted)
	_ = c.Quit() // the message is accepted; a lost QUIT changes nothing
	if len(refused) > 0 {
		return refusal(accepted, refused, permanent)
	}
	return nil
}

func refusal(accepted []string, refused []error, permanent bool) error {
	err := errors.Join(refused...)
	prefix := "every recipient refused"
	if len(accepted) > 0 {
		prefix = "sent to " + strings.Join(accepted, ", ") + "; refused"
	}
	if permanent {
		return fmt.Errorf("%s: %w: %w", prefix, err, alert.ErrPermanent)
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// auth authenticates with PLAIN, or LOGIN when PLAIN is not offered.
func (s *Sender) auth(c *smtp.Client) error {
	ok, mechs := c.Extension("AUTH")
	if !ok {
		return fmt.Errorf("server offers no AUTH but %s is set: unset it, or check %s: %w", envUser, envAddr, alert.ErrPermanent)
	}
	plainOK := s.cfg.TLS == PlainLoopback
	var a smtp.Auth
	switch offered := strings.Fields(strings.ToUpper(mechs)); {
	case slices.Contains(offered, "PLAIN"):
		a = &plainAuth{user: s.cfg.User, pass: s.cfg.Password, plainOK: plainOK}
	case slices.Contains(offered, "LOGIN"):
		a = &loginAuth{user: s.cfg.User, pass: s.cfg.Password, plainOK: plainOK}
	default:
		return fmt.Errorf("server offers AUTH %s, none of PLAIN and LOGIN: %w", mechs, alert.ErrPermanent)
	}
	if err := c.Auth(a); err != nil {
		return classify("AUTH", err)
	}
	return nil
}

// classify names the step and wraps alert.ErrPermanent around 5xx replies.
func classify(step string, err error) error {
	var tp *textproto.Error
	if errors.As(err, &tp) && tp.Code >= 500 && tp.Code < 600 {
		return fmt.Errorf("%s: %w: %w", step, err, alert.ErrPermanent)
	}
	return fmt.Errorf("%s: %w", step, err)
}

// pending is the configured recipients that have not accepted id yet.
func (s *Sender) pending(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := s.delivered[id]
	var out []string
	for _, a := range s.to {
		if !slices.Contains(done, a.Address) {
			out = append(out, a.Address)
		}
	}
	return out
}

func (s *Sender) remember(id string, accepted []string) {
	if id == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.delivered[id]; !ok {
		s.order = append(s.order, id)
		if len(s.order) > rememberIDs {
			delete(s.delivered, s.order[0])
			s.order = s.order[1:]
		}
	}
	s.delivered[id] = append(s.delivered[id], accepted...)
}

// compose renders m as an RFC 5322 message with CRLF line ends. Nothing
// of m reaches a header unsanitised: the Subject is one line without
// control characters, encoded when not ASCII; the Message-ID keeps only
// [A-Za-z0-9._-] of the ID.
func (s *Sender) compose(m alert.Message) []byte {
	date := m.Created
	if date.IsZero() {
		date = s.cfg.Now()
	}
	var b bytes.Buffer
	h := func(name, value string) { b.WriteString(name + ": " + value + "\r\n") }
	h("Date", date.Format(time.RFC1123Z))
	h("From", s.from.String())
	to := make([]string, len(s.to))
	for i, a := range s.to {
		to[i] = a.String()
	}
	h("To", strings.Join(to, ",\r\n "))
	h("Subject", encodeHeader(subject(m)))
	h("Message-ID", "<"+messageID(m)+"@lifeline>")
	h("MIME-Version", "1.0")
	h("Content-Type", "text/plain; charset=utf-8")
	h("Content-Transfer-Encoding", "quoted-printable")
	h("Auto-Submitted", "auto-generated") // RFC 3834: no vacation replies
	if k := token(m.Kind); k != "" {
		h("X-Lifeline-Kind", k)
	}
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b) // CRLF line ends, lines <= 76
	_, _ = qp.Write([]byte(body(m)))
	_ = qp.Close()
	b.WriteString("\r\n")
	return b.Bytes()
}

// body is the full text of m (Detail, or Text for an alert without one),
// cut at MaxBodyBytes.
func body(m alert.Message) string {
	t := m.Detail
	if t == "" {
		t = m.Text
	}
	if len(t) > MaxBodyBytes {
		t = cutUTF8(t, MaxBodyBytes) + "\n[cut at " + strconv.Itoa(MaxBodyBytes) + " bytes]"
	}
	return t
}

// subject is the first non-empty line of m.Text, or a line naming m.Kind.
func subject(m alert.Message) string {
	for line := range strings.Lines(m.Text) {
		if line = oneLine(line); line != "" {
			return cutRunes(line, maxSubjectRunes)
		}
	}
	if k := oneLine(m.Kind); k != "" {
		return cutRunes("lifeline alert: "+k, maxSubjectRunes)
	}
	return "lifeline alert"
}

// encodeHeader RFC 2047-encodes s when it is not plain ASCII, folding
// between encoded words so no line grows past the SMTP limit.
func encodeHeader(s string) string {
	e := mime.BEncoding.Encode("utf-8", s)
	if e == s {
		return s
	}
	return strings.ReplaceAll(e, "?= =?", "?=\r\n =?")
}

// messageID is m.ID reduced to [A-Za-z0-9._-], or a digest of m when
// nothing is left.
func messageID(m alert.Message) string {
	id := strings.Trim(strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (r == '.' || r == '-' || r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return r
		}
		return '_'
	}, m.ID), ".")
	for strings.Contains(id, "..") {
		id = strings.ReplaceAll(id, "..", ".")
	}
	if strings.Trim(id, "_") == "" || len(id) > 200 {
		sum := sha256.Sum256([]byte(m.ID + "\x00" + m.Kind + "\x00" + m.Text + "\x00" + m.Created.UTC().String()))
		return hex.EncodeToString(sum[:16])
	}
	return id
}

// token keeps [a-z0-9_-] of s (a Kind in a header).
func token(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			return r
		}
		return -1
	}, strings.ToLower(s))
}

// oneLine replaces control characters (CR, LF, tab, ...) by spaces and
// trims.
func oneLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s))
}

func cutRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
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

func hasCtl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// parseAddr parses one address, refusing anything with a line break.
func parseAddr(s string) (*mail.Address, error) {
	if s == "" {
		return nil, errors.New("empty: want an address like bastion@example.com")
	}
	if hasCtl(s) {
		return nil, errors.New("contains a control character (a line break?)")
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("not an e-mail address: %w", err)
	}
	return a, nil
}

// limitedConn fails reads once the server has sent left bytes in all.
type limitedConn struct {
	net.Conn
	left int64
}

func (c *limitedConn) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("server sent more than %d bytes of replies", MaxReplyBytes)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= int64(n)
	return n, err
}

// plainAuth is AUTH PLAIN (RFC 4616) that refuses an unencrypted
// connection unless the Sender is in PlainLoopback mode.
type plainAuth struct {
	user, pass string
	plainOK    bool
}

func (a *plainAuth) Start(si *smtp.ServerInfo) (string, []byte, error) {
	if !si.TLS && !a.plainOK {
		return "", nil, errors.New("refusing to send the password over an unencrypted connection")
	}
	return "PLAIN", []byte("\x00" + a.user + "\x00" + a.pass), nil
}

func (a *plainAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("unexpected challenge after AUTH PLAIN")
	}
	return nil, nil
}

// loginAuth is AUTH LOGIN: the user, then the password, each on the
// server's challenge.
type loginAuth struct {
	user, pass string
	plainOK    bool
	step       int
}

func (a *loginAuth) Start(si *smtp.ServerInfo) (string, []byte, error) {
	if !si.TLS && !a.plainOK {
		return "", nil, errors.New("refusing to send the password over an unencrypted connection")
	}
	a.step = 0
	return "LOGIN", nil, nil
}

func (a *loginAuth) Next(_ []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	a.step++
	switch a.step {
	case 1:
		return []byte(a.user), nil
	case 2:
		return []byte(a.pass), nil
	}
	return nil, errors.New("unexpected third challenge in AUTH LOGIN")
}
