// Package twiliofake is a local HTTP server that speaks the part of Twilio's
// REST API lifeline uses: creating a message
// (POST /2010-04-01/Accounts/{AccountSid}/Messages.json) and fetching the
// account (GET /2010-04-01/Accounts/{AccountSid}.json, what
// `lifeline-bastion doctor` asks). It checks basic
// auth and the form body as Twilio does, answers with Twilio's JSON (201 with
// a Message resource; 4xx/5xx with Twilio's error document) and records every
// message it accepted. Tests program faults: hang, fail the next N requests,
// reject credentials, reject a number.
//
// It exists for tests, the integration suite and `make demo`; it never talks
// to the network beyond the listener it is given.
package twiliofake

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// DefaultAccountSID and DefaultAuthToken are well-formed test credentials.
const (
	DefaultAccountSID = "AC00000000000000000000000000000001"
	DefaultAuthToken  = "0123456789abcdef0123456789abcdef"
)

// MaxRecorded bounds how many accepted messages are kept for Messages; Count
// keeps counting beyond it.
const MaxRecorded = 10000

// Message is one SMS the fake accepted.
type Message struct {
	SID        string
	AccountSID string
	From       string
	To         string
	Body       string
	Segments   int
	Received   time.Time
}

// Config configures a Server.
type Config struct {
	// AccountSID and AuthToken are the credentials the server accepts;
	// empty means DefaultAccountSID / DefaultAuthToken.
	AccountSID string
	AuthToken  string
	// OnMessage, when not nil, is called (synchronously, outside the
	// server's lock) for every accepted message. It must not block for long.
	OnMessage func(Message)
	// Now tells the time; nil means time.Now.
	Now func() time.Time
	// AccountStatus is the status the account fetch answers: "active"
	// (the default), "suspended" or "closed". SetAccountStatus changes it.
	AccountStatus string
	// AccountType is "Full" (the default) or "Trial".
	AccountType string
}

// Server is the fake API. Create it with New; it is an http.Handler, or can
// listen by itself with Start.
type Server struct {
	cfg Config

	mu          sync.Mutex
	msgs        []Message
	count       int
	requests    int
	failNext    int
	failStatus  int
	hangNext    int
	hangAll     bool
	hung        int           // requests hanging right now
	release     chan struct{} // closed by Release to free hung requests
	rejectCreds bool
	badNumbers  map[string]bool
	failTo      map[string]int // number -> how many more requests to it fail with 500
	fetches     int            // account fetches answered, refused ones included
	status      string         // of the account

	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// New returns a server with cfg.
func New(cfg Config) *Server {
	if cfg.AccountSID == "" {
		cfg.AccountSID = DefaultAccountSID
	}
	if cfg.AuthToken == "" {
		cfg.AuthToken = DefaultAuthToken
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AccountStatus == "" {
		cfg.AccountStatus = "active"
	}
	if cfg.AccountType == "" {
		cfg.AccountType = "Full"
	}
	return &Server{cfg: cfg, release: make(chan struct{}), badNumbers: map[string]bool{}, failTo: map[string]int{}, status: cfg.AccountStatus}
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves until Close. The
// caller must call Close.
func Start(addr string, cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	s := New(cfg)
	s.ln = ln
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	return s, nil
}

// URL is the base URL of a server made by Start ("http://127.0.0.1:PORT").
func (s *Server) URL() string {
	if s.ln == nil {
		return ""
	}
	return "http://" + s.ln.Addr().String()
}

// Close frees hung requests, stops a server made by Start and waits for it.
func (s *Server) Close() error {
	s.Release()
	if s.srv == nil {
		return nil
	}
	err := s.srv.Close()
	<-s.done
	if err != nil {
		return fmt.Errorf("close fake twilio: %w", err)
	}
	return nil
}

// AccountSID and AuthToken are the credentials the server accepts.
func (s *Server) AccountSID() string { return s.cfg.AccountSID }

// AuthToken is the token the server accepts.
func (s *Server) AuthToken() string { return s.cfg.AuthToken }

// FailNext makes the next n message requests fail with HTTP status (a 5xx,
// e.g. 500 or 503) and Twilio's error JSON.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failStatus = n, status
}

// HangNext makes the next n requests (messages, account fetches) hang until
// Release, Close, or the client gives up. Hung requests are not recorded.
func (s *Server) HangNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hangNext = n
}

// Hang makes every request hang until Release (see HangNext).
func (s *Server) Hang() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hangAll = true
}

// Release ends Hang/HangNext and frees the requests hung so far; they are
// then served normally.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hangAll, s.hangNext = false, 0
	select {
	case <-s.release:
	default:
		close(s.release)
	}
	s.release = make(chan struct{})
}

// RejectCredentials makes every request fail with 401 / code 20003, as when
// the auth token was revoked, until called with false.
func (s *Server) RejectCredentials(reject bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejectCreds = reject
}

// RejectNumber makes messages to number fail with 400 / code 21211.
func (s *Server) RejectNumber(number string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.badNumbers[number] = true
}

// FailTo makes the next n messages to number fail with HTTP 500 (after
// authentication), leaving other recipients alone.
func (s *Server) FailTo(number string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failTo[number] = n
}

// Messages returns a copy of the accepted messages, oldest first (at most
// MaxRecorded, the newest).
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Count is how many messages were accepted in total.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Hung is how many requests are hanging right now; a request whose client
// hung up is no longer counted.
func (s *Server) Hung() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hung
}

// Requests is how many message requests arrived, failed ones included.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

var (
	messagesPath = regexp.MustCompile(`^/2010-04-01/Accounts/([^/]+)/Messages\.json$`)
	e164         = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)
)

// ServeHTTP implements the Messages API and the account fetch.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a := accountPath.FindStringSubmatch(r.URL.Path); a != nil {
		s.serveAccount(w, r, a[1])
		return
	}
	m := messagesPath.FindStringSubmatch(r.URL.Path)
	if m == nil {
		writeError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
		return
	}
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, 20004, "Method not allowed")
		return
	}
	// Read the body first: only then does net/http notice a client that
	// hangs up, which a hung request must see.
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, 20001, "Could not parse the request body")
		return
	}
	s.mu.Lock()
	s.requests++
	s.mu.Unlock()
	if s.hold(r) {
		return
	}

	s.mu.Lock()
	fail, status := s.failNext > 0, s.failStatus
	if fail {
		s.failNext--
	}
	reject := s.rejectCreds
	s.mu.Unlock()

	user, pass, ok := r.BasicAuth()
	if reject || !ok || user != s.cfg.AccountSID || pass != s.cfg.AuthToken || m[1] != s.cfg.AccountSID {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		writeError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if fail {
		if status < 500 {
			status = http.StatusInternalServerError
		}
		writeError(w, status, 20500, "An internal server error has occurred")
		return
	}
	to, from, body := r.PostForm.Get("To"), r.PostForm.Get("From"), r.PostForm.Get("Body")
	s.mu.Lock()
	badTo := s.badNumbers[to]
	failTo := s.failTo[to] > 0
	if failTo {
		s.failTo[to]--
	}
	s.mu.Unlock()
	switch {
	case failTo:
		writeError(w, http.StatusInternalServerError, 20500, "An internal server error has occurred")
		return
	case to == "":
		writeError(w, http.StatusBadRequest, 21604, "A 'To' phone number is required.")
		return
	case from == "":
		writeError(w, http.StatusBadRequest, 21603, "A 'From' phone number is required.")
		return
	case body == "":
		writeError(w, http.StatusBadRequest, 21602, "Message body is required.")
		return
	case badTo || !e164.MatchString(to):
		writeError(w, http.StatusBadRequest, 21211, fmt.Sprintf("Invalid 'To' Phone Number: %s", to))
		return
	case !e164.MatchString(from):
		writeError(w, http.StatusBadRequest, 21212, fmt.Sprintf("Invalid 'From' Phone Number: %s", from))
		return
	case utf8.RuneCountInString(body) > 1600:
		writeError(w, http.StatusBadRequest, 21617, "The concatenated message body exceeds the 1600 character limit.")
		return
	}

	msg := Message{SID: "SM" + randHex(16), AccountSID: m[1], From: from, To: to, Body: body, Segments: Segments(body), Received: s.cfg.Now()}
	s.mu.Lock()
	s.count++
	s.msgs = append(s.msgs, msg)
	if len(s.msgs) > MaxRecorded {
		s.msgs = append(s.msgs[:0], s.msgs[len(s.msgs)-MaxRecorded:]...)
	}
	s.mu.Unlock()
	if s.cfg.OnMessage != nil {
		s.cfg.OnMessage(msg)
	}

	date := msg.Received.UTC().Format(time.RFC1123Z)
	uri := fmt.Sprintf("/2010-04-01/Accounts/%s/Messages/%s", m[1], msg.SID)
	resp := map[string]any{
		"account_sid":           m[1],
		"api_version":           "2010-04-01",
		"body":                  body,
		"date_created":          date,
		"date_sent":             nil,
		"date_updated":          date,
		"direction":             "outbound-api",
		"error_code":            nil,
		"error_message":         nil,
		"from":                  from,
		"messaging_service_sid": nil,
		"num_media":             "0",
		"num_segments":          fmt.Sprint(msg.Segments),
		"price":                 nil,
		"price_unit":            "USD",
		"sid":                   msg.SID,
		"status":                "queued",
		"subresource_uris":      map[string]string{"media": uri + "/Media.json"},
		"to":                    to,
		"uri":                   uri + ".json",
	}
	writeJSON(w, http.StatusCreated, resp)
}

// hold makes a request hang while Hang or HangNext say so, until Release
// or Close; it reports whether the client hung up meanwhile.
func (s *Server) hold(r *http.Request) (gone bool) {
	s.mu.Lock()
	hang := s.hangAll || s.hangNext > 0
	if s.hangNext > 0 {
		s.hangNext--
	}
	release := s.release
	if hang {
		s.hung++
	}
	s.mu.Unlock()
	if !hang {
		return false
	}
	select {
	case <-release:
	case <-r.Context().Done():
		gone = true
	}
	s.mu.Lock()
	s.hung--
	s.mu.Unlock()
	return gone
}

func writeError(w http.ResponseWriter, status, code int, message string) {
	writeJSON(w, status, map[string]any{
		"code":      code,
		"message":   message,
		"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code),
		"status":    status,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client hung up: nothing to do
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go >= 1.24)
	return hex.EncodeToString(b)
}

// gsm7 is the GSM 03.38 basic character set; ext are the characters of its
// extension table, which cost two septets.
const (
	gsm7 = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
	ext  = "^{}\\[~]|€\f"
)

// Segments is how many SMS segments body takes: GSM-7 when every character
// is in that alphabet (160 septets, 153 per part when split), UCS-2
// otherwise (70 characters, 67 per part).
func Segments(body string) int {
	septets, isGSM := 0, true
	for _, r := range body {
		switch {
		case strings.ContainsRune(gsm7, r):
			septets++
		case strings.ContainsRune(ext, r):
			septets += 2
		default:
			isGSM = false
		}
	}
	if isGSM {
		if septets <= 160 {
			return 1
		}
		return (septets + 152) / 153
	}
	n := 0
	for _, r := range body {
		if r > 0xFFFF {
			n += 2
		} else {
			n++
		}
	}
	if n <= 70 {
		return 1
	}
	return (n + 66) / 67
}
