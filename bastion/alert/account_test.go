package alert

import (
	"errors"
	"strings"
	"testing"
	"time"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
)

// TestFetchTwilioAccountAndSendText: the account fetch sends no text and
// says the account's status; a wrong token is a *TwilioAPIError with
// Twilio's status and code; a text comes back with its SID.
func TestFetchTwilioAccountAndSendText(t *testing.T) {
	t.Parallel()
	fake, err := twiliofake.Start("127.0.0.1:0", twiliofake.Config{AccountStatus: "suspended"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	cfg := TwilioConfig{AccountSID: fake.AccountSID(), AuthToken: fake.AuthToken(), From: "+15005550006", BaseURL: fake.URL(), Timeout: 5 * time.Second}
	acct, err := FetchTwilioAccount(t.Context(), cfg)
	if err != nil || acct.SID != fake.AccountSID() || acct.Status != "suspended" || acct.Type != "Full" || acct.Name == "" {
		t.Fatalf("account: %+v, %v", acct, err)
	}
	if fake.AccountFetches() != 1 || fake.Requests() != 0 {
		t.Errorf("%d fetches, %d message requests", fake.AccountFetches(), fake.Requests())
	}
	sid, err := SendTwilioText(t.Context(), cfg, "+15551230001", "test")
	if msgs := fake.Messages(); err != nil || len(msgs) != 1 || msgs[0].SID != sid || !strings.HasPrefix(sid, "SM") {
		t.Fatalf("send: %q, %v, %+v", sid, err, msgs)
	}
	cfg.AuthToken = "ffffffffffffffffffffffffffffffff"
	_, err = FetchTwilioAccount(t.Context(), cfg)
	var api *TwilioAPIError
	if !errors.As(err, &api) || api.HTTPStatus != 401 || api.Code != 20003 {
		t.Errorf("wrong token: %v", err)
	}
	cfg.BaseURL = "ftp://x"
	if _, err := FetchTwilioAccount(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "base URL") {
		t.Errorf("bad base URL: %v", err)
	}
}
