package alert

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
)

func TestTwilioSendClassifiesErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		setup     func(*twiliofake.Server)
		mod       func(*TwilioConfig)
		permanent bool
		wantErr   string // "" = success
	}{
		{name: "accepted"},
		{name: "bad credentials", mod: func(c *TwilioConfig) { c.AuthToken = "nottheright1" }, permanent: true, wantErr: "20003"},
		{name: "revoked credentials", setup: func(s *twiliofake.Server) { s.RejectCredentials(true) }, permanent: true, wantErr: "20003"},
		{name: "invalid number", setup: func(s *twiliofake.Server) { s.RejectNumber(testTo) }, permanent: true, wantErr: "21211"},
		{name: "server error", setup: func(s *twiliofake.Server) { s.FailNext(1, 500) }, wantErr: "20500"},
		{name: "unavailable", setup: func(s *twiliofake.Server) { s.FailNext(1, 503) }, wantErr: "http 503"},
		{name: "wrong path prefix", mod: func(c *TwilioConfig) { c.BaseURL += "/nothere" }, permanent: true, wantErr: "20404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startFake(t)
			if tt.setup != nil {
				tt.setup(srv)
			}
			n := twilioFor(t, srv, tt.mod)
			err := n.Send(context.Background(), Message{ID: "m1", Kind: KindLogin, Text: "hello"})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				if got := srv.Messages(); len(got) != 1 || got[0].Body != "hello" || got[0].AccountSID != srv.AccountSID() {
					t.Errorf("API received %+v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Send error %v, want one mentioning %s", err, tt.wantErr)
			}
			if errors.Is(err, ErrPermanent) != tt.permanent {
				t.Errorf("permanent=%v for %v, want %v", errors.Is(err, ErrPermanent), err, tt.permanent)
			}
		})
	}
}

func TestTwilioBaseURLWithPathPrefix(t *testing.T) {
	t.Parallel()
	fake := twiliofake.New(twiliofake.Config{})
	mux := http.NewServeMux()
	mux.Handle("/proxy/", http.StripPrefix("/proxy", fake))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	n, err := NewTwilio(TwilioConfig{AccountSID: fake.AccountSID(), AuthToken: fake.AuthToken(), From: testFrom, To: []string{testTo}, BaseURL: hs.URL + "/proxy/"})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Send(context.Background(), Message{ID: "m1", Text: "via proxy"}); err != nil {
		t.Fatal(err)
	}
	if fake.Count() != 1 {
		t.Errorf("fake behind the prefix got %d messages", fake.Count())
	}
}

func TestTwilioSendHonoursContext(t *testing.T) {
	t.Parallel()
	srv := startFake(t)
	srv.Hang()
	n := twilioFor(t, srv, func(c *TwilioConfig) { c.Timeout = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- n.Send(ctx, Message{ID: "m1", Text: "x"}) }()
	eventually(t, "the request hangs", func() bool { return srv.Hung() == 1 })
	cancel()
	var err error
	eventually(t, "Send returns after cancel", func() bool {
		select {
		case err = <-errc:
			return true
		default:
			return false
		}
	})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrPermanent) {
		t.Errorf("Send error %v, want a transient context.Canceled", err)
	}
}

func TestTwilioRetrySkipsRecipientsThatAccepted(t *testing.T) {
	t.Parallel()
	srv := startFake(t)
	second := "+15551230002"
	srv.FailTo(second, 1)
	n := twilioFor(t, srv, func(c *TwilioConfig) { c.To = []string{testTo, second} })
	m := Message{ID: "m1", Text: "to both"}
	if err := n.Send(context.Background(), m); err == nil || errors.Is(err, ErrPermanent) {
		t.Fatalf("first Send: %v, want a transient error", err)
	}
	if err := n.Send(context.Background(), m); err != nil {
		t.Fatalf("retry: %v", err)
	}
	got := map[string]int{}
	for _, msg := range srv.Messages() {
		got[msg.To]++
	}
	if got[testTo] != 1 || got[second] != 1 {
		t.Errorf("deliveries per number %v, want exactly one each", got)
	}
}

func TestNewTwilioValidates(t *testing.T) {
	t.Parallel()
	_, err := NewTwilio(TwilioConfig{AccountSID: "AC x", From: "555", To: []string{"+1"}, BaseURL: "ftp://x"})
	if err == nil {
		t.Fatal("NewTwilio accepted a bad configuration")
	}
	for _, w := range []string{"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "LIFELINE_SMS_FROM", `LIFELINE_SMS_TO: "+1"`, "LIFELINE_TWILIO_URL"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %s", err, w)
		}
	}
}

func TestSelectNotifier(t *testing.T) {
	t.Parallel()
	full := TwilioConfig{AccountSID: twiliofake.DefaultAccountSID, AuthToken: twiliofake.DefaultAuthToken, From: testFrom, To: []string{testTo}}
	tests := []struct {
		name    string
		cfg     TwilioConfig
		want    string
		wantErr []string
	}{
		{"all set", full, "twilio", nil},
		{"none set", TwilioConfig{BaseURL: DefaultTwilioURL}, "log", nil},
		{"token and to missing", TwilioConfig{AccountSID: full.AccountSID, From: testFrom}, "", []string{"TWILIO_AUTH_TOKEN", "LIFELINE_SMS_TO"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			buf := &syncWriter{w: &strings.Builder{}}
			n, err := SelectNotifier(tt.cfg, slog.New(slog.NewTextHandler(buf, nil)))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("got %v, want an error", n.Name())
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %s", err, w)
					}
				}
				if strings.Contains(err.Error(), "TWILIO_ACCOUNT_SID") {
					t.Errorf("error %q names a variable that is set", err)
				}
				return
			}
			if err != nil || n.Name() != tt.want {
				t.Fatalf("got %v, %v; want %s", n, err, tt.want)
			}
			if tt.want == "log" && !strings.Contains(buf.String(), "NOBODY WILL BE TEXTED") {
				t.Errorf("no warning logged: %q", buf.String())
			}
		})
	}
}
