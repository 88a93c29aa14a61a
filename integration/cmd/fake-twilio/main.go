// Command fake-twilio runs the fake Twilio Messages API and account fetch
// (package twiliofake) on a local address and prints every SMS it accepts,
// one line each. It is for `make demo`, manual tests and trying
// `lifeline-bastion doctor`; point LIFELINE_TWILIO_URL at it.
//
//	fake-twilio -addr 127.0.0.1:8089
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8089", "address to listen on (loopback or a test namespace only)")
	sid := flag.String("sid", envOr("TWILIO_ACCOUNT_SID", twiliofake.DefaultAccountSID), "account SID to accept")
	token := flag.String("token", envOr("TWILIO_AUTH_TOKEN", twiliofake.DefaultAuthToken), "auth token to accept")
	status := flag.String("account-status", "active", "status the account fetch answers: active, suspended or closed")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := twiliofake.Start(*addr, twiliofake.Config{
		AccountSID:    *sid,
		AuthToken:     *token,
		AccountStatus: *status,
		OnMessage: func(m twiliofake.Message) {
			fmt.Printf("%s SMS %s -> %s (%d segment(s)): %s\n", m.Received.UTC().Format(time.TimeOnly), m.From, m.To, m.Segments, strconv.Quote(m.Body))
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake-twilio:", err)
		os.Exit(1)
	}
	fmt.Printf("fake-twilio: listening on %s (account %s)\n", srv.URL(), *sid)
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "fake-twilio:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
