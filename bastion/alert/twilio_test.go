package alert

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
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
	sshtest.Eventually(t, 10*time.Second, func() bool { return srv.Hung() == 1 }, "the request hangs")
	cancel()
	var err error
	sshtest.Eventually(t, 10*time.Second, func() bool {
		select {
		case err = <-errc:
			return true
		default:
			return false
		}
	}, "Send returns after cancel")
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
	for _, w := range []string{"AccountSID", "AuthToken", "From", `To: "+1"`, "BaseURL"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %s", err, w)
		}
	}
	if strings.Contains(err.Error(), "LIFELINE_") || strings.Contains(err.Error(), "TWILIO_") {
		t.Errorf("error %q names an environment variable: only bastion/config knows them", err)
	}
}
