//go:build integration

package integration

// Login -> SMS on a real bastion, with the fake Twilio API in this process.
//
//	this test process                       lifeline-bastion (child, 127.0.0.1:P)      this test process
//	Go operator clients --SSH login-->  alert spool (fsync) -> Twilio notifier --HTTP-->  twiliofake 127.0.0.1:T
//	  from 127.0.0.1 (texted)           rate limit LIFELINE_SMS_PER_MINUTE, summaries     records every SMS
//	status polls from 127.0.0.2 (LIFELINE_QUIET_FROM: audited, never texted)

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

const (
	smsLogins      = 50   // sequential logins timed to their SMS, and the baseline
	smsFlood       = 1000 // logins in the flood
	smsFloodWorker = 16   // concurrent logins in the flood
)

var (
	smsLoginFrom = regexp.MustCompile(`: login .* from 127\.0\.0\.1:(\d+)`)
	smsSummary   = regexp.MustCompile(`: (\d+) alerts held back by the SMS limit`)
	smsQuietAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
)

// startSMSBastion starts a fake Twilio and a bastion texting through it;
// perMinute "" keeps the default rate limit. Logins from 127.0.0.2 are quiet.
func startSMSBastion(b *testing.B, perMinute string) (*scaleBastion, *twiliofake.Server) {
	b.Helper()
	tw, err := twiliofake.Start("127.0.0.1:0", twiliofake.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tw.Close() })
	env := []string{
		"TWILIO_ACCOUNT_SID=" + tw.AccountSID(), "TWILIO_AUTH_TOKEN=" + tw.AuthToken(),
		"LIFELINE_SMS_FROM=+15550000001", "LIFELINE_SMS_TO=+15550000002",
		"LIFELINE_TWILIO_URL=" + tw.URL(), "LIFELINE_QUIET_FROM=127.0.0.2/32",
		"LIFELINE_BAN_AFTER=0",
	}
	if perMinute != "" {
		env = append(env, "LIFELINE_SMS_PER_MINUTE="+perMinute)
	}
	return startScaleBastion(b, "", env...), tw
}

// loginTimes is one operator login: until the handshake returned, and until
// the first session channel was confirmed (the bastion has queued the alert
// by then: it does so before it serves channels).
type loginTimes struct {
	port      int
	start     time.Time
	handshake time.Duration
	ready     time.Duration
}

func smsLogin(ctx context.Context, sb *scaleBastion) (loginTimes, error) {
	start := time.Now()
	c, nc, at, err := sb.dial(ctx, sb.clientConfig("alice", sb.operator.Signer), nil)
	if err != nil {
		return loginTimes{}, err
	}
	defer c.Close()
	lt := loginTimes{port: nc.LocalAddr().(*net.TCPAddr).Port, start: start, handshake: at.Sub(start)}
	sess, err := c.NewSession()
	if err != nil {
		return lt, fmt.Errorf("open session: %w", err)
	}
	lt.ready = time.Since(start)
	sess.Close()
	return lt, nil
}

// pollUntil asks cond every interval until it holds (true) or timeout or
// ctx ends (false).
func pollUntil(ctx context.Context, timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		waitFor(ctx, interval)
	}
}

type alertStatus struct {
	Alerts struct {
		Pending     int `json:"pending"`
		Sent        int `json:"sent"`
		RateLimited int `json:"rate_limited"`
		Overflow    int `json:"overflow"`
		Quiet       int `json:"quiet"`
		Permanent   int `json:"undeliverable"`
	} `json:"alerts"`
}

func sortedBy(ls []loginTimes, f func(loginTimes) time.Duration) []time.Duration {
	ds := make([]time.Duration, len(ls))
	for i, l := range ls {
		ds[i] = f(l)
	}
	slices.Sort(ds)
	return ds
}

func handshakeOf(l loginTimes) time.Duration { return l.handshake }
func readyOf(l loginTimes) time.Duration     { return l.ready }

// BenchmarkLoginToSMS measures the time from an operator's authentication to
// the fake Twilio receiving the login SMS (latency), and checks that a flood
// of logins under the default SMS rate limit neither slows logins down nor
// loses an alert: each is sent as its own SMS or counted in a summary text
// (flood). Each part runs once on its own bastion.
// Neither part needs root: the bastion, the fake and the clients are
// unprivileged processes on loopback.
func BenchmarkLoginToSMS(b *testing.B) {
	b.Run("latency", benchSMSLatency)
	b.Run("flood", benchSMSFlood)
}

// benchSMSLatency: no rate limiting, one login at a time, each waiting for
// its SMS; the login is the moment the client's handshake returned.
func benchSMSLatency(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sb, tw := startSMSBastion(b, "1000")
	var lat []time.Duration
	for range smsLogins {
		start := time.Now()
		c, nc, at, err := sb.dial(ctx, sb.clientConfig("alice", sb.operator.Signer), nil)
		if err != nil {
			b.Fatal(err)
		}
		port := strconv.Itoa(nc.LocalAddr().(*net.TCPAddr).Port)
		var got twiliofake.Message
		sshtest.Eventually(b, 20*time.Second, func() bool {
			for _, m := range tw.Messages() {
				if sm := smsLoginFrom.FindStringSubmatch(m.Body); sm != nil && sm[1] == port && !m.Received.Before(start) {
					got = m
					return true
				}
			}
			return false
		}, "no SMS for the login from port %s; bastion:\n%s", port, sb.proc.Output)
		c.Close()
		lat = append(lat, got.Received.Sub(at))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(median(lat).Microseconds())/1000, "login-to-SMS-p50-ms")
	b.ReportMetric(float64(pct(lat, 0.9).Microseconds())/1000, "login-to-SMS-p90-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "login-to-SMS-max-ms")
	b.Logf("\n| login -> SMS: Go operator's handshake returned -> fake Twilio received the text; %d logins one at a time, LIFELINE_SMS_PER_MINUTE=1000 | median | p90 | worst |\n|---|---|---|---|\n"+
		"| real lifeline-bastion, spool fsync, twilio-go over HTTP to 127.0.0.1 | %s | %s | %s |",
		smsLogins, ms(median(lat)), ms(pct(lat, 0.9)), ms(lat[len(lat)-1]))
}

// benchSMSFlood: default limit (6 texts a minute). A baseline of logins one
// at a time, the flood, then logins one at a time again while the flood's
// alerts are still held back; then every login must be accounted for.
func benchSMSFlood(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	sb, tw := startSMSBastion(b, "")
	run := func(n, workers int) []loginTimes {
		out := make([]loginTimes, n)
		next := make(chan int)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					lt, err := smsLogin(ctx, sb)
					if err != nil {
						mu.Lock()
						firstErr = keepFirst(firstErr, err)
						mu.Unlock()
						continue
					}
					out[i] = lt
				}
			}()
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
		if firstErr != nil {
			b.Fatalf("login failed: %v\nbastion:\n%s", firstErr, tail(sb.proc.Output(), 3000))
		}
		return out
	}
	baseline := run(smsLogins, 1)
	floodStart := time.Now()
	flood := run(smsFlood, smsFloodWorker)
	floodTime := time.Since(floodStart)
	slices.SortFunc(flood, func(x, y loginTimes) int { return x.start.Compare(y.start) })
	after := run(smsLogins, 1)
	logins := smsLogins + smsFlood + smsLogins

	var st alertStatus
	var statusErr error
	drained := pollUntil(ctx, 4*time.Minute, time.Second, func() bool {
		statusErr = sb.statusJSON(ctx, smsQuietAddr, &st)
		return statusErr == nil && st.Alerts.Pending == 0 && st.Alerts.Overflow == 0 && st.Alerts.Sent > 0
	})
	drainTime := time.Since(floodStart)

	// Account for every login: its own SMS, or a count in a summary.
	own := map[string]bool{}
	summarised, summaries, other := 0, 0, 0
	for _, m := range tw.Messages() {
		switch {
		case smsLoginFrom.MatchString(m.Body):
			own[smsLoginFrom.FindStringSubmatch(m.Body)[1]] = true
		case smsSummary.MatchString(m.Body):
			k, _ := strconv.Atoi(smsSummary.FindStringSubmatch(m.Body)[1])
			summarised += k
			summaries++
		default:
			other++
			b.Errorf("unexpected SMS (a quiet status poll from 127.0.0.2 must never be texted): %q", m.Body)
		}
	}
	floodOwn := 0
	for _, l := range flood {
		if own[strconv.Itoa(l.port)] {
			floodOwn++
		}
	}
	accounted := len(own) + summarised
	if !drained {
		b.Errorf("alerts not drained after %s (status error %v): %+v", drainTime.Round(time.Second), statusErr, st.Alerts)
	}
	if accounted != logins {
		b.Errorf("%d logins, but %d texted on their own + %d counted in %d summaries = %d", logins, len(own), summarised, summaries, accounted)
	}

	// Report: at most 8 lines, a benchmark's log is cut after 10.
	cols := []struct {
		name string
		ls   []loginTimes
	}{
		{fmt.Sprintf("baseline, %d one at a time", smsLogins), baseline},
		{fmt.Sprintf("flood: first %d", smsLogins), flood[:smsLogins]},
		{fmt.Sprintf("flood: last %d", smsLogins), flood[len(flood)-smsLogins:]},
		{fmt.Sprintf("flood: all %d, %d at a time, %.0f/s", smsFlood, smsFloodWorker, float64(smsFlood)/floodTime.Seconds()), flood},
		{fmt.Sprintf("after, %d one at a time, flood's alerts held", smsLogins), after},
	}
	var head, hs, ready strings.Builder
	for _, c := range cols {
		h, r := sortedBy(c.ls, handshakeOf), sortedBy(c.ls, readyOf)
		fmt.Fprintf(&head, " %s |", c.name)
		fmt.Fprintf(&hs, " %s / %s |", ms(median(h)), ms(pct(h, 0.99)))
		fmt.Fprintf(&ready, " %s / %s |", ms(median(r)), ms(pct(r, 0.99)))
	}
	base, aft := sortedBy(baseline, readyOf), sortedBy(after, readyOf)
	b.ReportMetric(float64(pct(base, 0.99).Microseconds())/1000, "baseline-login-p99-ms")
	b.ReportMetric(float64(pct(sortedBy(flood, readyOf), 0.99).Microseconds())/1000, "flood-login-p99-ms")
	b.ReportMetric(float64(pct(aft, 0.99).Microseconds())/1000, "after-flood-login-p99-ms")
	b.ReportMetric(float64(accounted), "alerts-accounted")
	b.ReportMetric(float64(logins), "logins")
	b.Logf("\n| login time p50 / p99 (default SMS limit: 6/min) |%s\n|---|%s\n"+
		"| TCP connect -> authenticated |%s\n"+
		"| TCP connect -> first session channel confirmed (alert spooled) |%s\n\n"+
		"| logins | texted on their own (of the flood) | counted in summaries (texts) | sent + summarised | bastion status: texts / rate-limited / undeliverable | queue empty |\n|---|---|---|---|---|---|\n"+
		"| %d | %d (%d) | %d (%d) | %d (%+d) | %d / %d / %d | %v, %s after the flood began |",
		head.String(), strings.Repeat("---|", len(cols)), hs.String(), ready.String(),
		logins, len(own), floodOwn, summarised, summaries, accounted, accounted-logins,
		st.Alerts.Sent, st.Alerts.RateLimited, st.Alerts.Permanent, drained, drainTime.Round(time.Second))
}

// keepFirst keeps the first error.
func keepFirst(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
