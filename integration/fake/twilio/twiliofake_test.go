package twiliofake

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func post(t *testing.T, h http.Handler, path, user, pass string, form url.Values) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
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

func TestMessagesAPI(t *testing.T) {
	t.Parallel()
	path := "/2010-04-01/Accounts/" + DefaultAccountSID + "/Messages.json"
	good := url.Values{"To": {"+15551230001"}, "From": {"+15005550006"}, "Body": {"hi"}}
	with := func(k, v string) url.Values {
		f := url.Values{}
		for key, vs := range good {
			f[key] = vs
		}
		f.Set(k, v)
		return f
	}
	tests := []struct {
		name       string
		path       string
		user, pass string
		form       url.Values
		status     int
		code       float64
	}{
		{"created", path, DefaultAccountSID, DefaultAuthToken, good, 201, 0},
		{"no auth", path, "", "", good, 401, 20003},
		{"wrong token", path, DefaultAccountSID, "nope", good, 401, 20003},
		{"other account in path", "/2010-04-01/Accounts/AC99/Messages.json", DefaultAccountSID, DefaultAuthToken, good, 401, 20003},
		{"unknown path", "/2010-04-01/Accounts/x/Calls.json", DefaultAccountSID, DefaultAuthToken, good, 404, 20404},
		{"bad To", path, DefaultAccountSID, DefaultAuthToken, with("To", "12345"), 400, 21211},
		{"no Body", path, DefaultAccountSID, DefaultAuthToken, with("Body", ""), 400, 21602},
		{"body too long", path, DefaultAccountSID, DefaultAuthToken, with("Body", strings.Repeat("x", 1601)), 400, 21617},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := New(Config{})
			status, body := post(t, s, tt.path, tt.user, tt.pass, tt.form)
			if status != tt.status {
				t.Fatalf("status %d, want %d (%v)", status, tt.status, body)
			}
			if tt.status == 201 {
				if body["status"] != "queued" || body["to"] != "+15551230001" || !strings.HasPrefix(body["sid"].(string), "SM") {
					t.Errorf("message resource %v", body)
				}
				if m := s.Messages(); len(m) != 1 || m[0].Body != "hi" || s.Count() != 1 {
					t.Errorf("recorded %+v", m)
				}
				return
			}
			if body["code"] != tt.code || body["status"] != float64(tt.status) || body["more_info"] == "" || body["message"] == "" {
				t.Errorf("error document %v, want code %v", body, tt.code)
			}
			if s.Count() != 0 {
				t.Errorf("a refused message was recorded")
			}
		})
	}
}

func TestFailNextThenSucceed(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	s.FailNext(2, 503)
	path := "/2010-04-01/Accounts/" + DefaultAccountSID + "/Messages.json"
	form := url.Values{"To": {"+15551230001"}, "From": {"+15005550006"}, "Body": {"hi"}}
	for i, want := range []int{503, 503, 201} {
		if got, _ := post(t, s, path, DefaultAccountSID, DefaultAuthToken, form); got != want {
			t.Errorf("request %d: status %d, want %d", i+1, got, want)
		}
	}
	if s.Requests() != 3 || s.Count() != 1 {
		t.Errorf("requests %d, accepted %d", s.Requests(), s.Count())
	}
}

func TestSegments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body string
		want int
	}{
		{"hello", 1},
		{strings.Repeat("a", 160), 1},
		{strings.Repeat("a", 161), 2},
		{strings.Repeat("[", 80), 1},
		{strings.Repeat("[", 81), 2},
		{"caf\u00e9 \u2192", 1},
		{strings.Repeat("\u2192", 71), 2},
	}
	for _, tt := range tests {
		if got := Segments(tt.body); got != tt.want {
			t.Errorf("Segments(%q) = %d, want %d", tt.body, got, tt.want)
		}
	}
}
