package alert_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/alert/email"
	"github.com/lifeline-dev/lifeline/bastion/alert/webhook"
	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/smtptest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// The channel tests deliver through the real senders to real peers on
// loopback:
//
//	Alerter --twilio-go--> fake Twilio API (httptest-like server, 127.0.0.1)
//	        --net/smtp---> aiosmtpd (internal/smtptest, 127.0.0.1, plaintext)
//	        --net/http---> httptest webhook (127.0.0.1)
//
// and count what each peer received by the alert's ID: the fake Twilio by
// the body (each test alert names a unique operator), aiosmtpd by
// Message-ID, the webhook by Idempotency-Key.

var messageIDHeader = regexp.MustCompile(`(?mi)^Message-ID:\s*<([^>]+)>`)

// mailIDs counts the Message-IDs of the mails the server accepted.
func mailIDs(t *testing.T, s *smtptest.Server) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range s.Messages(t) {
		id := messageIDHeader.FindSubmatch(m.Raw)
		if id == nil {
			t.Fatalf("mail without Message-ID:\n%s", m.Raw)
		}
		out[strings.TrimSuffix(string(id[1]), "@lifeline")]++
	}
	return out
}

// hook is an httptest webhook that counts Idempotency-Keys of the requests
// it accepted, and can be told to answer every request with a status.
type hook struct {
	srv *httptest.Server

	mu       sync.Mutex
	answer   int // 0: 200
	accepted map[string]int
	bodies   map[string]string
	requests int
}

func startHook(t *testing.T) *hook {
	h := &hook{accepted: map[string]int{}, bodies: map[string]string{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.requests++
		if h.answer != 0 {
			http.Error(w, "not now", h.answer)
			return
		}
		key := r.Header.Get("Idempotency-Key")
		h.accepted[key]++
		h.bodies[key] = string(b)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) setAnswer(status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.answer = status
}

func (h *hook) requestCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests
}

func (h *hook) ids() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.accepted))
	for k, v := range h.accepted {
		out[k] = v
	}
	return out
}

// peers are the three channels' servers and the senders pointed at them.
type peers struct {
	twilio *twiliofake.Server
	smtp   *smtptest.Server
	hook   *hook
	chans  []alert.Channel
}

func startPeers(t *testing.T, perMinute int) *peers {
	t.Helper()
	p := &peers{smtp: smtptest.Start(t, smtptest.Options{}), hook: startHook(t)}
	var err error
	p.twilio, err = twiliofake.Start("127.0.0.1:0", twiliofake.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.twilio.Close() })
	p.chans = p.channels(t, perMinute)
	return p
}

// channels are new senders pointed at the peers, as a restarted bastion
// has: none remembers what an earlier one delivered.
func (p *peers) channels(t *testing.T, perMinute int) []alert.Channel {
	t.Helper()
	sms, err := alert.NewTwilio(alert.TwilioConfig{AccountSID: p.twilio.AccountSID(), AuthToken: p.twilio.AuthToken(),
		From: "+15005550006", To: []string{"+15551230001"}, BaseURL: p.twilio.URL(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mail, err := email.New(email.Config{Addr: p.smtp.Addr(), From: "lifeline <bastion@example.com>", To: []string{"owner@example.com"},
		TLS: email.PlainLoopback, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	wh, err := webhook.New(webhook.Config{URL: p.hook.srv.URL, Site: "bast1", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return []alert.Channel{
		{Name: "twilio", Sender: sms, PerMinute: perMinute},
		{Name: "email", Sender: mail, PerMinute: perMinute},
		{Name: "webhook", Sender: wh, PerMinute: perMinute},
	}
}

// smsIDs counts the texts by the operator each names ("login op-07 ").
func (p *peers) smsIDs() map[string]int {
	out := map[string]int{}
	for _, m := range p.twilio.Messages() {
		if _, rest, ok := strings.Cut(m.Body, ": login "); ok {
			op, _, _ := strings.Cut(rest, " ")
			out[op]++
		}
	}
	return out
}

func channelConfig(t *testing.T, dir string, chans []alert.Channel) alert.Config {
	return alert.Config{
		Dir: dir, Channels: chans, Log: slog.New(slog.DiscardHandler), BastionName: "bast1",
		RetryMin: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond, SendTimeout: 5 * time.Second,
	}
}

func newAlerter(t *testing.T, cfg alert.Config) *alert.Alerter {
	t.Helper()
	a, err := alert.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// runAlerter starts a.Run; stop cancels it and waits for it to return.
func runAlerter(t *testing.T, a *alert.Alerter) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func opLogin(i int) alert.Login {
	return alert.Login{Operator: fmt.Sprintf("op-%02d", i), Fingerprint: "SHA256:abc", User: "ops", Source: netip.MustParseAddrPort("203.0.113.5:50022")}
}

func channelStatus(st alert.Status, name string) alert.ChannelStatus {
	for _, c := range st.Channels {
		if c.Name == name {
			return c
		}
	}
	return alert.ChannelStatus{}
}

// exactlyOnce fails unless counts has n keys, each counted once.
func exactlyOnce(t *testing.T, channel string, counts map[string]int, n int) {
	t.Helper()
	if len(counts) != n {
		t.Errorf("%s delivered %d distinct alerts, want %d: %v", channel, len(counts), n, counts)
	}
	for id, c := range counts {
		if c != 1 {
			t.Errorf("%s delivered %s %d times, want once", channel, id, c)
		}
	}
}

// THE test: a burst of alerts while one channel is dead. The others deliver
// everything at once; the dead one catches up after it comes back, also
// across a restart of the Alerter in the middle; every channel delivers
// every alert exactly once.
func TestDeadChannelDelaysNoOther(t *testing.T) {
	t.Parallel()
	const burst = 12
	tests := []struct {
		dead string
		kill func(p *peers)
		heal func(t *testing.T, p *peers)
	}{
		{"email", func(p *peers) { p.smtp.Stop() }, func(t *testing.T, p *peers) { // again on its port, keeping what it received
			p.smtp = smtptest.Start(t, smtptest.Options{Port: p.smtp.Port(), OutDir: p.smtp.OutDir()})
		}},
		{"webhook", func(p *peers) { p.hook.setAnswer(http.StatusServiceUnavailable) }, func(_ *testing.T, p *peers) { p.hook.setAnswer(0) }},
	}
	for _, tt := range tests {
		t.Run(tt.dead+" dead", func(t *testing.T) {
			t.Parallel()
			p := startPeers(t, 1000)
			cfg := channelConfig(t, t.TempDir(), p.chans)
			a := newAlerter(t, cfg)
			stop := runAlerter(t, a)
			tt.kill(p)
			for i := range burst {
				a.Login(opLogin(i))
			}
			live := func(st alert.Status) bool {
				for _, c := range st.Channels {
					if c.Name != tt.dead && (c.Pending != 0 || c.Delivered != burst) {
						return false
					}
				}
				return true
			}
			sshtest.Eventually(t, 20*time.Second, func() bool { return live(a.Status()) }, "the live channels deliver the burst")
			sshtest.Eventually(t, 10*time.Second, func() bool { return channelStatus(a.Status(), tt.dead).LastError != "" }, "the dead channel retries")
			if d := channelStatus(a.Status(), tt.dead); d.Pending != burst || d.Delivered != 0 || d.Failed != 0 {
				t.Fatalf("dead channel %+v: want all %d pending", d, burst)
			}

			stop() // the bastion restarts while the channel is dead
			files, _ := filepath.Glob(filepath.Join(cfg.Dir, "alerts", tt.dead, "*.json"))
			if len(files) != burst {
				t.Fatalf("%s spool holds %d alerts after the stop, want %d", tt.dead, len(files), burst)
			}
			for _, c := range []string{"twilio", "email", "webhook"} {
				fi, err := os.Stat(filepath.Join(cfg.Dir, "alerts", c))
				if err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("spool folder of %s: %v, %v; want mode 0700", c, fi, err)
				}
				if left, _ := filepath.Glob(filepath.Join(cfg.Dir, "alerts", c, "*.json")); c != tt.dead && len(left) != 0 {
					t.Errorf("%s spool still holds %v", c, left)
				}
			}
			cfg.Channels = p.channels(t, 1000) // the restarted bastion's senders
			b := newAlerter(t, cfg)
			if st := b.Status(); channelStatus(st, tt.dead).Pending != burst || channelStatus(st, "twilio").Pending != 0 {
				t.Fatalf("after restart %+v: want only %s pending", st.Channels, tt.dead)
			}
			runAlerter(t, b)
			b.Login(opLogin(burst)) // one more, while still dead
			sshtest.Eventually(t, 20*time.Second, func() bool {
				st := b.Status()
				return channelStatus(st, "twilio").Delivered == 1 && channelStatus(st, tt.dead).Pending == burst+1 && channelStatus(st, tt.dead).LastError != ""
			}, "the new alert delivered by the live channels only")

			tt.heal(t, p)
			sshtest.Eventually(t, 30*time.Second, func() bool {
				d := channelStatus(b.Status(), tt.dead)
				return d.Pending == 0 && d.Delivered == burst+1
			}, "the %s channel catches up", tt.dead)
			exactlyOnce(t, "twilio", p.smsIDs(), burst+1)
			exactlyOnce(t, "email", mailIDs(t, p.smtp), burst+1)
			exactlyOnce(t, "webhook", p.hook.ids(), burst+1)
			if st := b.Status(); st.LastError != "" || channelStatus(st, tt.dead).LastError != "" {
				t.Errorf("errors left after recovery: %+v", st)
			}
		})
	}
}

// A permanent failure of one channel (the webhook answers 400) sets aside
// that channel's copy only; the others deliver theirs.
func TestPermanentFailureSetsAsideOneChannel(t *testing.T) {
	t.Parallel()
	p := startPeers(t, 1000)
	p.hook.setAnswer(http.StatusBadRequest)
	cfg := channelConfig(t, t.TempDir(), p.chans)
	a := newAlerter(t, cfg)
	runAlerter(t, a)
	const n = 3
	for i := range n {
		a.Login(opLogin(i))
	}
	sshtest.Eventually(t, 20*time.Second, func() bool {
		st := a.Status()
		return channelStatus(st, "webhook").Failed == n && channelStatus(st, "twilio").Delivered == n && channelStatus(st, "email").Delivered == n
	}, "webhook copies set aside, the others delivered")
	st := a.Status()
	if w := channelStatus(st, "webhook"); w.Pending != 0 || w.Delivered != 0 || !strings.Contains(w.LastFailed, "400") {
		t.Errorf("webhook %+v: want the copies set aside with the 400", w)
	}
	if st.Permanent != 0 || st.Sent != n {
		t.Errorf("top-level status %+v: want the first channel's (twilio) counts", st)
	}
	for c, want := range map[string]int{"twilio": 0, "email": 0, "webhook": n} {
		failed, _ := filepath.Glob(filepath.Join(cfg.Dir, "alerts", c, "failed", "*.json"))
		if len(failed) != want {
			t.Errorf("%s/failed holds %d, want %d", c, len(failed), want)
		}
	}
	if r := p.hook.requestCount(); r != n {
		t.Errorf("%d webhook requests, want %d (a 400 is not retried)", r, n)
	}
	exactlyOnce(t, "twilio", p.smsIDs(), n)
	exactlyOnce(t, "email", mailIDs(t, p.smtp), n)
	// A restart counts the set-aside copies again, for that channel only.
	if b := newAlerter(t, cfg).Status(); channelStatus(b, "webhook").Failed != n || channelStatus(b, "email").Failed != 0 {
		t.Errorf("after restart %+v", b.Channels)
	}
}

// A spool written by the release before channels (alert files, the
// overflow count and failed/ in the spool folder itself) is moved into
// every channel at start and delivered by each, once.
func TestSpoolOfPreviousReleaseMigrates(t *testing.T) {
	t.Parallel()
	p := startPeers(t, 1000)
	cfg := channelConfig(t, t.TempDir(), p.chans)
	root := filepath.Join(cfg.Dir, "alerts")
	if err := os.MkdirAll(filepath.Join(root, "failed"), 0o700); err != nil {
		t.Fatal(err)
	}
	id := "0000000000000001-000001-00000001"
	old := `{"v":1,"message":{"id":"` + id + `","kind":"login","text":"bast1: login op-old (key SHA256:abc) from 203.0.113.5:1","created":"2026-11-22T10:00:00Z"},"subject":"op-old"}`
	files := map[string]string{
		id + ".json":     old,
		"overflow.state": `{"v":1,"counts":{"login":2}}`,
		"failed/0000000000000000-000001-00000002.json": `{"v":1}`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a := newAlerter(t, cfg)
	st := a.Status()
	for _, c := range st.Channels {
		if c.Pending != 1 || c.Overflow != 2 {
			t.Errorf("channel %s after migration: %+v, want the old alert pending and 2 overflowed", c.Name, c)
		}
	}
	if channelStatus(st, "twilio").Failed != 1 || channelStatus(st, "email").Failed != 0 {
		t.Errorf("set-aside alert of the old release: %+v, want it in the first channel's failed/", st.Channels)
	}
	for name := range files {
		if _, err := os.Stat(filepath.Join(root, name)); !os.IsNotExist(err) {
			t.Errorf("%s left in the spool root: %v", name, err)
		}
	}
	runAlerter(t, a)
	sshtest.Eventually(t, 20*time.Second, func() bool {
		for _, c := range a.Status().Channels {
			if c.Pending != 0 || c.Overflow != 0 || c.Delivered != 1 {
				return false
			}
		}
		return true
	}, "every channel delivers the old alert (a summary with the overflow)")
	// The old alert and the 2 overflowed ones go out as one summary per channel.
	for _, m := range p.twilio.Messages() {
		if !strings.Contains(m.Body, "3 alerts held back") {
			t.Errorf("text %q, want the summary of 3", m.Body)
		}
	}
	if n := len(p.twilio.Messages()); n != 1 {
		t.Errorf("%d texts, want 1", n)
	}
	exactlyOnce(t, "email", mailIDs(t, p.smtp), 1)
	exactlyOnce(t, "webhook", p.hook.ids(), 1)
	p.hook.mu.Lock()
	defer p.hook.mu.Unlock()
	for key, body := range p.hook.bodies {
		if !strings.Contains(body, "op-old") {
			t.Errorf("webhook %s body %q lacks the old alert", key, body)
		}
	}
}

// Each channel has its own rate limit and summarises only what its own
// limit held back, in its own form: Text for SMS, Detail for the others.
func TestRateLimitPerChannel(t *testing.T) {
	t.Parallel()
	p := startPeers(t, 1000)
	p.chans[0].PerMinute = 2 // twilio: one text, then the summary
	clk := clocktest.New(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	cfg := channelConfig(t, t.TempDir(), p.chans)
	cfg.Clock = clk
	a := newAlerter(t, cfg)
	const n = 5
	for i := range n { // queued before Run: a deterministic burst
		a.Login(opLogin(i))
	}
	runAlerter(t, a)
	sshtest.Eventually(t, 20*time.Second, func() bool {
		st := a.Status()
		return channelStatus(st, "twilio").Delivered == 2 && channelStatus(st, "email").Delivered == n && channelStatus(st, "webhook").Delivered == n
	}, "twilio: one text and a summary; the others: every alert")
	st := a.Status()
	if tw := channelStatus(st, "twilio"); tw.RateLimited != n-1 || tw.Pending != 0 {
		t.Errorf("twilio %+v: want %d summarised", tw, n-1)
	}
	for _, c := range []string{"email", "webhook"} {
		if s := channelStatus(st, c); s.RateLimited != 0 || s.PerMinute != 1000 {
			t.Errorf("%s %+v: its own limit held nothing back", c, s)
		}
	}
	texts := p.twilio.Messages()
	if len(texts) != 2 || !strings.Contains(texts[1].Body, fmt.Sprintf("%d alerts held back", n-1)) || texts[1].Segments != 1 {
		t.Errorf("texts %+v: want a login and a one-segment summary", texts)
	}
	exactlyOnce(t, "email", mailIDs(t, p.smtp), n)
	exactlyOnce(t, "webhook", p.hook.ids(), n)
	// The minute is used up for twilio only: a new alert waits there, not
	// elsewhere.
	a.Login(opLogin(n))
	sshtest.Eventually(t, 20*time.Second, func() bool {
		st := a.Status()
		return channelStatus(st, "email").Delivered == n+1 && channelStatus(st, "webhook").Delivered == n+1 && channelStatus(st, "twilio").Pending == 1
	}, "e-mail and webhook deliver while twilio waits for its minute")
	clk.Advance(time.Minute)
	sshtest.Eventually(t, 20*time.Second, func() bool { return channelStatus(a.Status(), "twilio").Delivered == 3 }, "twilio after its minute")
}

// Status shows every channel, in --json and in text, and keeps the fields
// of before from the first channel.
func TestStatusShowsEveryChannel(t *testing.T) {
	t.Parallel()
	p := startPeers(t, 1000)
	p.hook.setAnswer(http.StatusServiceUnavailable)
	a := newAlerter(t, channelConfig(t, t.TempDir(), p.chans))
	runAlerter(t, a)
	a.Login(opLogin(1))
	sshtest.Eventually(t, 20*time.Second, func() bool {
		st := a.Status()
		return st.Sent == 1 && channelStatus(st, "email").Delivered == 1 && channelStatus(st, "webhook").LastError != ""
	}, "twilio and e-mail delivered, webhook retrying")
	st := a.Status()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"notifier", "pending", "sent", "rate_limited", "overflow", "quiet", "undeliverable", "channels"} {
		if _, ok := got[k]; !ok {
			t.Errorf("--json lacks %q: %s", k, b)
		}
	}
	if got["notifier"] != "twilio" {
		t.Errorf("notifier %v, want the first channel", got["notifier"])
	}
	chans, _ := got["channels"].([]any)
	if len(chans) != 3 {
		t.Fatalf("channels %v", got["channels"])
	}
	for _, k := range []string{"name", "pending", "delivered", "last_delivered", "failed", "per_minute"} {
		if _, ok := chans[0].(map[string]any)[k]; !ok {
			t.Errorf("channel lacks %q: %v", k, chans[0])
		}
	}
	if w := chans[2].(map[string]any); w["name"] != "webhook" || w["last_error"] == nil || w["last_error_at"] == nil || w["pending"] != 1.0 {
		t.Errorf("webhook channel %v: want it pending with its error", w)
	}
	text := st.String()
	for _, w := range []string{"alerts via 3 channels: twilio, email, webhook", "  twilio: 0 pending, 1 delivered (last ", "  email: 0 pending, 1 delivered",
		"  webhook: 1 pending, 0 delivered", "    retrying after: webhook"} {
		if !strings.Contains(text, w) {
			t.Errorf("status text lacks %q:\n%s", w, text)
		}
	}
}

// New refuses channels it cannot keep apart.
func TestChannelsChecked(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	s := alert.NewLogSender(log)
	_, err := alert.New(alert.Config{Dir: t.TempDir(), Log: log, Channels: []alert.Channel{{Sender: s}, {Sender: s}, {Name: "Bad/Name", Sender: s}, {Name: "failed", Sender: s}, {Name: "x"}}})
	if err == nil {
		t.Fatal("New accepted them")
	}
	for _, w := range []string{`"log": configured twice`, `"Bad/Name": a name is`, `"failed": a name is`, "channel 5: no sender"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}
