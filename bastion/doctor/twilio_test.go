package doctor

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
)

// smsFixture is a fixture whose SMS settings point at a fake Twilio.
func smsFixture(t *testing.T, cfg twiliofake.Config) (*fixture, *twiliofake.Server) {
	t.Helper()
	fake, err := twiliofake.Start("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	f := newFixture(t)
	c := &f.d.Config
	c.TwilioSID, c.TwilioToken, c.SMSFrom, c.SMSTo, c.TwilioURL = fake.AccountSID(), fake.AuthToken(), "+15005550006", "+15551230001,+15551230002", fake.URL()
	return f, fake
}

func TestTwilioSettings(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	want(t, "none", only(t, f.d.Twilio(t.Context())), false, "SMS alerts: none of TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, LIFELINE_SMS_FROM, LIFELINE_SMS_TO is set",
		"no alerts will be texted", "set all four in /etc/lifeline/bastion.env", "Twilio SSM parameters")

	f.d.Config.SMSTo, f.d.Config.TwilioSID = "+15551230001", "AC1"
	want(t, "half", only(t, f.d.Twilio(t.Context())), false, "half configured: TWILIO_AUTH_TOKEN, LIFELINE_SMS_FROM not set", "the bastion refuses to start",
		"or unset all four")

	f.d.Config.TwilioToken, f.d.Config.SMSFrom, f.d.Config.SMSTo = "x", "+15005550006", "555-1234"
	want(t, "a bad number", only(t, f.d.Twilio(t.Context())), false, "LIFELINE_SMS_TO", "555-1234", "correct it in /etc/lifeline/bastion.env")
}

func TestTwilioAccount(t *testing.T) {
	t.Parallel()
	f, fake := smsFixture(t, twiliofake.Config{})
	want(t, "active", only(t, f.d.Twilio(t.Context())), true, "Twilio account "+fake.AccountSID()+" (lifeline test account): active, Full",
		"texts go from +15005550006 to 2 numbers at "+fake.URL())
	if fake.AccountFetches() != 1 || fake.Requests() != 0 {
		t.Errorf("account fetches %d, message requests %d: want one fetch and no text", fake.AccountFetches(), fake.Requests())
	}

	f.d.Config.TwilioToken = "0000000000000000000000000000dead"
	want(t, "wrong token", only(t, f.d.Twilio(t.Context())), false, "Twilio refused TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN", "http 401", "20003",
		"copy the Account SID and the Auth Token from the Twilio console", "/etc/lifeline/bastion.env")

	f.d.Config.TwilioToken = fake.AuthToken()
	fake.SetAccountStatus("suspended")
	want(t, "suspended", only(t, f.d.Twilio(t.Context())), false, "is suspended", "sends no texts", "reactivate it in the Twilio console")

	trial, _ := smsFixture(t, twiliofake.Config{AccountType: "Trial"})
	want(t, "trial", only(t, trial.d.Twilio(t.Context())), true, "active, Trial", "texts only numbers verified")
}

func TestTwilioUnreachable(t *testing.T) {
	t.Parallel()
	f, _ := smsFixture(t, twiliofake.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	f.d.Config.TwilioURL = closed
	want(t, "nothing listens", only(t, f.d.Twilio(t.Context())), false, "connection refused", "check that this machine reaches "+closed, "LIFELINE_TWILIO_URL")

	// A Twilio that never answers costs the deadline, no more.
	hung, fake := smsFixture(t, twiliofake.Config{})
	fake.Hang()
	hung.d.Timeout = 300 * time.Millisecond
	start := time.Now()
	want(t, "no answer", only(t, hung.d.Twilio(t.Context())), false, "no answer within 300ms", "check that this machine reaches")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the check took %s with a 300ms deadline", d)
	}

	// Not Twilio at that URL: a 404 without Twilio's error document.
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	f.d.Config.TwilioURL = srv.URL
	want(t, "not Twilio", only(t, f.d.Twilio(t.Context())), false, "no such account at "+srv.URL, "http 404", "check TWILIO_ACCOUNT_SID", "LIFELINE_TWILIO_URL")
}

func TestTwilioSendTest(t *testing.T) {
	t.Parallel()
	f, fake := smsFixture(t, twiliofake.Config{})
	f.d.SendTest = true
	checks := f.d.Twilio(t.Context())
	if len(checks) != 3 {
		t.Fatalf("want the account and one line per number: %v", checks)
	}
	msgs := fake.Messages()
	if len(msgs) != 2 || msgs[0].To != "+15551230001" || msgs[1].To != "+15551230002" || msgs[0].From != "+15005550006" ||
		!strings.Contains(msgs[0].Body, "lifeline test from test-bastion") {
		t.Fatalf("texts sent: %+v", msgs)
	}
	want(t, "first number", checks[1], true, "test text to +15551230001: accepted by Twilio as "+msgs[0].SID)
	want(t, "second number", checks[2], true, "test text to +15551230002: accepted by Twilio as "+msgs[1].SID)

	fake.RejectNumber("+15551230002")
	checks = f.d.Twilio(t.Context())
	want(t, "a number Twilio refuses", checks[2], false, "test text to +15551230002", "21211", "correct the number in LIFELINE_SMS_TO")

	fake.RejectCredentials(true)
	checks = f.d.Twilio(t.Context())
	if len(checks) != 2 {
		t.Fatalf("bad credentials with --send-test: %v", checks)
	}
	want(t, "not sent after a failed account check", checks[1], false, "test texts: not sent", "fix the account check first")
	if n := fake.Count(); n != 3 {
		t.Errorf("%d texts accepted in all, want 3", n)
	}
}

// TestRun: an installation that is right passes every check, in order.
func TestRun(t *testing.T) {
	t.Parallel()
	f, fake := smsFixture(t, twiliofake.Config{})
	f.d.SendTest = true
	var lines []string
	var b strings.Builder
	r := NewReport(&b)
	f.d.Run(t.Context(), func(c Check) { r.Add(c); lines = append(lines, c.String()) })
	if r.Failed() != 0 {
		t.Fatalf("%d checks failed:\n%s", r.Failed(), b.String())
	}
	prefixes := []string{"✓ host key ", "✓ agents file ", "✓ operators file ", "✓ state directory ", "✓ disk space ", "✓ listen address ",
		"✓ Twilio account ", "✓ test text to +15551230001", "✓ test text to +15551230002", "✓ e-mail alerts: off", "✓ webhook alerts: off"}
	if len(lines) != len(prefixes) {
		t.Fatalf("lines:\n%s", b.String())
	}
	for i, p := range prefixes {
		if !strings.HasPrefix(lines[i], p) {
			t.Errorf("line %d %q, want it to start with %q", i+1, lines[i], p)
		}
	}
	if fake.Count() != 2 {
		t.Errorf("%d test texts, want 2", fake.Count())
	}
}
