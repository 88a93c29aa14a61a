package twiliofake

import (
	"net/http"
	"regexp"
	"time"
)

var accountPath = regexp.MustCompile(`^/2010-04-01/Accounts/([^/]+)\.json$`)

// SetAccountStatus sets the status the account fetch answers ("active",
// "suspended", "closed").
func (s *Server) SetAccountStatus(status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
}

// AccountFetches is how many account fetches arrived, refused ones
// included.
func (s *Server) AccountFetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches
}

// serveAccount answers GET /2010-04-01/Accounts/{sid}.json as Twilio does:
// the Account resource for the account the credentials belong to, 401 /
// 20003 for wrong credentials (RejectCredentials too), 404 / 20404 for
// another account. Hang and HangNext hold it like a message request.
func (s *Server) serveAccount(w http.ResponseWriter, r *http.Request, sid string) {
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, 20004, "Method not allowed")
		return
	}
	s.mu.Lock()
	s.fetches++
	s.mu.Unlock()
	if s.hold(r) {
		return
	}
	s.mu.Lock()
	reject := s.rejectCreds
	s.mu.Unlock()
	user, pass, ok := r.BasicAuth()
	if reject || !ok || user != s.cfg.AccountSID || pass != s.cfg.AuthToken {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		writeError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if sid != s.cfg.AccountSID {
		writeError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
		return
	}
	s.mu.Lock()
	status := s.status
	s.mu.Unlock()
	date := s.cfg.Now().UTC().Add(-24 * time.Hour).Format(time.RFC1123Z)
	base := "/2010-04-01/Accounts/" + sid
	sub := map[string]string{}
	for _, r := range []string{"Addresses", "AvailablePhoneNumbers", "Balance", "Calls", "IncomingPhoneNumbers", "Messages", "Notifications", "OutgoingCallerIds", "Usage"} {
		sub[snake(r)] = base + "/" + r + ".json"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"date_created":      date,
		"date_updated":      date,
		"friendly_name":     "lifeline test account",
		"owner_account_sid": sid,
		"sid":               sid,
		"status":            status,
		"subresource_uris":  sub,
		"type":              s.cfg.AccountType,
		"uri":               base + ".json",
	})
}

// snake turns "IncomingPhoneNumbers" into "incoming_phone_numbers".
func snake(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			if i > 0 {
				b = append(b, '_')
			}
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return string(b)
}
