package twiliofake

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func get(t *testing.T, h http.Handler, path, user, pass string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("response %q is not JSON: %v", rec.Body.String(), err)
	}
	return rec.Code, body
}

// TestAccountFetch: GET /2010-04-01/Accounts/{Sid}.json answers Twilio's
// Account resource, or its error document.
func TestAccountFetch(t *testing.T) {
	t.Parallel()
	path := "/2010-04-01/Accounts/" + DefaultAccountSID + ".json"
	s := New(Config{})
	status, body := get(t, s, path, DefaultAccountSID, DefaultAuthToken)
	if status != 200 || body["sid"] != DefaultAccountSID || body["status"] != "active" || body["type"] != "Full" ||
		body["uri"] != path {
		t.Fatalf("account fetch: %d %v", status, body)
	}
	for _, tc := range []struct {
		name, path, user, pass string
		status                 int
		code                   float64
	}{
		{"wrong token", path, DefaultAccountSID, "nope", 401, 20003},
		{"no auth", path, "", "", 401, 20003},
		{"another account", "/2010-04-01/Accounts/AC99.json", DefaultAccountSID, DefaultAuthToken, 404, 20404},
	} {
		status, body := get(t, s, tc.path, tc.user, tc.pass)
		if status != tc.status || body["code"] != tc.code || body["status"] != float64(tc.status) || body["more_info"] == "" {
			t.Errorf("%s: %d %v, want %d / %v", tc.name, status, body, tc.status, tc.code)
		}
	}
	s.SetAccountStatus("suspended")
	if _, body := get(t, s, path, DefaultAccountSID, DefaultAuthToken); body["status"] != "suspended" {
		t.Errorf("after SetAccountStatus: %v", body)
	}
	s.RejectCredentials(true)
	if status, _ := get(t, s, path, DefaultAccountSID, DefaultAuthToken); status != 401 {
		t.Errorf("RejectCredentials: account fetch answered %d", status)
	}
	if n := s.AccountFetches(); n != 6 {
		t.Errorf("AccountFetches = %d, want 6", n)
	}
	if s.Count() != 0 || s.Requests() != 0 {
		t.Errorf("account fetches counted as messages: %d %d", s.Count(), s.Requests())
	}
}
