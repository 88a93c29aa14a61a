package webhook

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/alert"
)

var _ alert.Sender = (*Sender)(nil)

var created = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// seen is one request a test server received.
type seen struct {
	method, path string
	header       http.Header
	body         string
}

// recorder is an httptest server on 127.0.0.1 that records every request
// and answers with reply.
type recorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []seen
	// done is closed at cleanup, before the server closes: handlers that
	// hold a request end then.
	done chan struct{}
}

func startRecorder(t *testing.T, tls bool, reply func(w http.ResponseWriter, r *http.Request, n int)) *recorder {
	t.Helper()
	rec := &recorder{done: make(chan struct{})}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{r.Method, r.URL.RequestURI(), r.Header.Clone(), string(b)})
		n := len(rec.reqs)
		rec.mu.Unlock()
		reply(w, r, n)
	})
	rec.srv = httptest.NewUnstartedServer(h)
	rec.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	if tls {
		rec.srv.StartTLS()
	} else {
		rec.srv.Start()
	}
	t.Cleanup(rec.srv.Close)
	t.Cleanup(func() { close(rec.done) })
	return rec
}

func (r *recorder) requests() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.reqs...)
}

// caFile writes the TLS test server's certificate as a PEM file.
func (r *recorder) caFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func status(code int) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(code) }
}

// wantHeaders checks the headers of the contract, and that nothing else
// of ours was sent.
func wantHeaders(t *testing.T, got http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if g := got.Values(k); len(g) != 1 || g[0] != v {
			t.Errorf("header %s: %q, want %q", k, g, v)
		}
	}
	for k := range got {
		switch k {
		case "Content-Length", "Accept-Encoding":
			continue
		}
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected header %s: %q", k, got[k])
		}
	}
}

// TestJSON: the exact request, over plain http to loopback and over TLS
// with the roots of CAFile; detail falls back to text, site is left out
// when unset.
func TestJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		tls      bool
		token    string
		site     string
		m        alert.Message
		wantBody string
		headers  map[string]string
	}{
		{
			name: "tls, token, site, detail", tls: true, token: "tok_123", site: "home",
			m:        alert.Message{ID: "a1-b2", Kind: alert.KindLogin, Text: "Login alice", Detail: "Login alice from 203.0.113.5\nkey SHA256:x", Created: created},
			wantBody: `{"id":"a1-b2","kind":"login","text":"Login alice","detail":"Login alice from 203.0.113.5\nkey SHA256:x","created":"2026-03-04T05:06:07Z","site":"home"}`,
			headers:  map[string]string{"Authorization": "Bearer tok_123"},
		},
		{
			name:     "plain loopback, no token, no detail",
			m:        alert.Message{ID: "c3", Kind: alert.KindAgentBack, Text: "home is back", Created: created},
			wantBody: `{"id":"c3","kind":"agent_back","text":"home is back","detail":"home is back","created":"2026-03-04T05:06:07Z"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := startRecorder(t, tt.tls, status(http.StatusNoContent))
			cfg := Config{URL: rec.srv.URL + "/hook/x?k=v", Token: tt.token, Site: tt.site, Timeout: 10 * time.Second}
			if tt.tls {
				cfg.CAFile = rec.caFile(t)
			}
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if s.Name() != "webhook" {
				t.Errorf("Name %q", s.Name())
			}
			if err := s.Send(t.Context(), tt.m); err != nil {
				t.Fatal(err)
			}
			reqs := rec.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodPost || r.path != "/hook/x?k=v" || r.body != tt.wantBody {
				t.Errorf("got %s %s\n%s\nwant POST /hook/x?k=v\n%s", r.method, r.path, r.body, tt.wantBody)
			}
			want := map[string]string{"Content-Type": "application/json", "User-Agent": "lifeline-bastion", "Idempotency-Key": tt.m.ID}
			for k, v := range tt.headers {
				want[k] = v
			}
			wantHeaders(t, r.header, want)
		})
	}
}

// TestNtfy: the text as the body, Title, Tags and Priority per kind; a
// detail over ntfy's limit falls back to the text; a non-ASCII title is
// RFC 2047-encoded.
func TestNtfy(t *testing.T) {
	t.Parallel()
	rec := startRecorder(t, true, status(http.StatusOK))
	s, err := New(Config{URL: rec.srv.URL + "/lifeline-alerts", Format: Ntfy, Token: "tk_abc", Site: "home", CAFile: rec.caFile(t), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "ntfy" {
		t.Errorf("Name %q", s.Name())
	}
	long := strings.Repeat("x", NtfyMaxBody+1)
	tests := []struct {
		m                     alert.Message
		site                  string
		body, title, tags, pr string
	}{
		{alert.Message{ID: "n1", Kind: alert.KindAgentDown, Text: "home down", Detail: "home down since 10:00\nlast seen 203.0.113.5", Created: created},
			"", "home down since 10:00\nlast seen 203.0.113.5", "lifeline home: agent down", "rotating_light,agent_down", "high"},
		{alert.Message{ID: "n2", Kind: alert.KindAgentBack, Text: "home back", Detail: long, Created: created},
			"", "home back", "lifeline home: agent back", "white_check_mark,agent_back", "default"},
		{alert.Message{ID: "n3", Kind: alert.KindLogin, Text: "login", Created: created},
			"", "login", "lifeline home: login", "key,login", "high"},
		{alert.Message{ID: "n4", Kind: alert.KindLinkFailed, Text: "link", Created: created},
			"", "link", "lifeline home: link failed", "warning,link_failed", "high"},
		{alert.Message{ID: "n5", Kind: "new_kind", Text: "?", Created: created},
			"", "?", "lifeline home: new kind", "bell,new_kind", "default"},
	}
	for _, tt := range tests {
		if err := s.Send(t.Context(), tt.m); err != nil {
			t.Fatal(err)
		}
		reqs := rec.requests()
		r := reqs[len(reqs)-1]
		if r.method != http.MethodPost || r.path != "/lifeline-alerts" || r.body != tt.body {
			t.Errorf("%s: got %s %s %q, want body %q", tt.m.ID, r.method, r.path, r.body, tt.body)
		}
		wantHeaders(t, r.header, map[string]string{
			"Content-Type": "text/plain; charset=utf-8", "User-Agent": "lifeline-bastion", "Idempotency-Key": tt.m.ID,
			"Authorization": "Bearer tk_abc", "Title": tt.title, "Tags": tt.tags, "Priority": tt.pr,
		})
	}

	s2, err := New(Config{URL: rec.srv.URL + "/t", Format: Ntfy, Site: "Küche", CAFile: rec.caFile(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Send(t.Context(), alert.Message{ID: "u", Kind: alert.KindAgentDown, Text: strings.Repeat("ü", NtfyMaxBody), Created: created}); err != nil {
		t.Fatal(err)
	}
	reqs := rec.requests()
	r := reqs[len(reqs)-1]
	if g := r.header.Get("Title"); g != "=?utf-8?q?lifeline_K=C3=BCche:_agent_down?=" {
		t.Errorf("Title %q", g)
	}
	if len(r.body) > NtfyMaxBody || !strings.HasSuffix(r.body, "…") || !strings.HasPrefix(r.body, "üü") {
		t.Errorf("long body: %d bytes, ends %q", len(r.body), r.body[len(r.body)-8:])
	}
}

// TestStatus: 2xx is accepted; 3xx (not followed) and 4xx but 408/429 are
// permanent; the rest is retryable.
func TestStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code      int
		ok        bool
		permanent bool
	}{
		{200, true, false}, {201, true, false}, {202, true, false}, {204, true, false},
		{301, false, true}, {302, false, true}, {307, false, true}, {308, false, true},
		{400, false, true}, {401, false, true}, {403, false, true}, {404, false, true}, {413, false, true},
		{408, false, false}, {429, false, false},
		{500, false, false}, {502, false, false}, {503, false, false},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.code), func(t *testing.T) {
			t.Parallel()
			var followed atomic.Int32
			rec := startRecorder(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {
				if r.URL.Path == "/elsewhere" {
					followed.Add(1)
					return
				}
				if tt.code >= 300 && tt.code < 400 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.code)
				io.WriteString(w, "the reason\r\nX-Injected: 1")
			})
			s, err := New(Config{URL: rec.srv.URL + "/hook", Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Send(t.Context(), alert.Message{ID: "s", Kind: alert.KindLogin, Text: "t", Created: created})
			if (err == nil) != tt.ok || errors.Is(err, alert.ErrPermanent) != tt.permanent {
				t.Fatalf("%d: %v, want ok=%v permanent=%v", tt.code, err, tt.ok, tt.permanent)
			}
			if err != nil && (!strings.Contains(err.Error(), "the reason  X-Injected: 1") || strings.ContainsAny(err.Error(), "\r\n")) {
				t.Errorf("error %q lacks the server's reason on one line", err)
			}
			if followed.Load() != 0 || len(rec.requests()) != 1 {
				t.Errorf("redirect followed: %d requests", len(rec.requests()))
			}
		})
	}
}

// TestRetrySameKey: after a 500, the second Send delivers and the server
// saw the same Idempotency-Key twice.
func TestRetrySameKey(t *testing.T) {
	t.Parallel()
	rec := startRecorder(t, false, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	s, err := New(Config{URL: rec.srv.URL + "/hook"})
	if err != nil {
		t.Fatal(err)
	}
	m := alert.Message{ID: "0190a1b2-retry", Kind: alert.KindAgentDown, Text: "down", Created: created}
	if err := s.Send(t.Context(), m); err == nil || errors.Is(err, alert.ErrPermanent) {
		t.Fatalf("first Send: %v, want a retryable error", err)
	}
	if err := s.Send(t.Context(), m); err != nil {
		t.Fatalf("second Send: %v", err)
	}
	reqs := rec.requests()
	if len(reqs) != 2 || reqs[0].header.Get("Idempotency-Key") != m.ID || reqs[1].header.Get("Idempotency-Key") != m.ID || reqs[0].body != reqs[1].body {
		t.Errorf("requests %+v", reqs)
	}
}

// TestHostileServer: a server that never answers, one that trickles an
// error body, one that floods a body or headers: Send returns by its
// Timeout, reads at most MaxResponseBytes, and classifies by the status.
func TestHostileServer(t *testing.T) {
	t.Parallel()
	const flood = 64 << 20
	tests := []struct {
		name      string
		reply     func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) int64
		timeout   time.Duration
		ok        bool
		permanent bool
		want      string
	}{
		{"no answer", func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) int64 {
			select {
			case <-r.Context().Done():
			case <-done:
			}
			return 0
		}, 300 * time.Millisecond, false, false, "deadline exceeded"},
		{"trickled 500", func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) int64 {
			w.WriteHeader(http.StatusInternalServerError)
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			var n int64
			for range 10000 { // bounded; the client leaves far sooner
				select {
				case <-r.Context().Done():
					return n
				case <-done:
					return n
				case <-tick.C:
				}
				k, err := io.WriteString(w, "x")
				n += int64(k)
				if err != nil {
					return n
				}
				w.(http.Flusher).Flush()
			}
			return n
		}, 300 * time.Millisecond, false, false, "http 500"},
		{"flooded 400", floodBody(http.StatusBadRequest, flood), time.Minute, false, true, "http 400"},
		{"flooded 200", floodBody(http.StatusOK, flood), time.Minute, true, false, ""},
		{"flooded headers", func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) int64 {
			for i := range 200 {
				w.Header().Set("X-Big-"+string(rune('a'+i%26))+strings.Repeat("b", i), strings.Repeat("v", 4000))
			}
			w.WriteHeader(http.StatusOK)
			return 0
		}, time.Minute, false, false, "header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var written atomic.Int64
			var rec *recorder
			rec = startRecorder(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {
				written.Add(tt.reply(w, r, rec.done))
			})
			s, err := New(Config{URL: rec.srv.URL + "/hook", Timeout: tt.timeout})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = s.Send(t.Context(), alert.Message{ID: "h", Kind: alert.KindLogin, Text: "t", Created: created})
			if (err == nil) != tt.ok || errors.Is(err, alert.ErrPermanent) != tt.permanent || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Send: %v, want ok=%v permanent=%v containing %q", err, tt.ok, tt.permanent, tt.want)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("Send took %s", d)
			}
			if err != nil && len(err.Error()) > 1000 {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
			if written.Load() >= flood {
				t.Errorf("the client read the whole flood")
			}
		})
	}
}

func floodBody(code int, total int64) func(http.ResponseWriter, *http.Request, <-chan struct{}) int64 {
	return func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) int64 {
		w.WriteHeader(code)
		chunk := []byte(strings.Repeat("y", 32<<10))
		var n int64
		for n < total {
			k, err := w.Write(chunk)
			n += int64(k)
			if err != nil {
				break
			}
		}
		return n
	}
}

// TestContextCancel: the end of ctx ends a Send long before Timeout.
func TestContextCancel(t *testing.T) {
	t.Parallel()
	var rec *recorder
	rec = startRecorder(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {
		select {
		case <-r.Context().Done():
		case <-rec.done:
		}
	})
	s, err := New(Config{URL: rec.srv.URL + "/hook", Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	timer := time.AfterFunc(100*time.Millisecond, cancel)
	defer timer.Stop()
	err = s.Send(ctx, alert.Message{ID: "c", Text: "t", Created: created})
	if !errors.Is(err, context.Canceled) || errors.Is(err, alert.ErrPermanent) {
		t.Fatalf("Send: %v, want context.Canceled", err)
	}
}

// TestHeaderInjection: line breaks in ID, kind and site never make a
// header of their own, and the request still goes out.
func TestHeaderInjection(t *testing.T) {
	t.Parallel()
	rec := startRecorder(t, false, status(http.StatusOK))
	s, err := New(Config{URL: rec.srv.URL + "/t", Format: Ntfy, Site: "home\r\nX-Site-Evil: 1"})
	if err != nil {
		t.Fatal(err)
	}
	m := alert.Message{ID: "id\r\nX-Id-Evil: 1", Kind: "login\r\nX-Kind-Evil: 1", Text: "hi\r\nX-Text-Evil: 1", Created: created}
	if err := s.Send(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	r := rec.requests()[0]
	for _, h := range []string{"X-Site-Evil", "X-Id-Evil", "X-Kind-Evil", "X-Text-Evil"} {
		if v, ok := r.header[h]; ok {
			t.Errorf("injected header %s: %q", h, v)
		}
	}
	if g := r.header.Get("Idempotency-Key"); g != "id__X-Id-Evil:_1" {
		t.Errorf("Idempotency-Key %q", g)
	}
	if g := r.header.Get("Title"); g != "lifeline home  X-Site-Evil: 1: login  X-Kind-Evil: 1" {
		t.Errorf("Title %q", g)
	}
	if g := r.header.Get("Tags"); g != "bell,loginx-kind-evil1" {
		t.Errorf("Tags %q", g)
	}
	if r.body != m.Text {
		t.Errorf("body %q", r.body)
	}
}

// TestUntrustedCertificate: without CAFile the test server's certificate
// is not trusted; nothing reaches it, and the error is retryable.
func TestUntrustedCertificate(t *testing.T) {
	t.Parallel()
	rec := startRecorder(t, true, status(http.StatusOK))
	s, err := New(Config{URL: rec.srv.URL + "/hook", Token: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(t.Context(), alert.Message{ID: "x", Text: "t", Created: created})
	if err == nil || !strings.Contains(err.Error(), "certificate") || errors.Is(err, alert.ErrPermanent) {
		t.Fatalf("Send: %v, want a retryable certificate error", err)
	}
	if n := len(rec.requests()); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
}

// TestValidate: every problem at once, each naming its setting; plain
// http only to a loopback IP.
func TestValidate(t *testing.T) {
	t.Parallel()
	_, err := New(Config{URL: "http://user:pw@hooks.example.com/x?token=sekrit", Format: "xml", Token: "a\r\nb", CAFile: "/nonexistent.pem", Timeout: -1})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{envURL + " http://user:xxxxx@hooks.example.com/x: use https", envFormat, envToken, envCAFile, envTimeout} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "sekrit") || strings.Contains(err.Error(), ":pw@") {
		t.Errorf("error shows a secret: %v", err)
	}
	tests := []struct {
		cfg Config
		ok  bool
	}{
		{Config{URL: "https://hooks.example.com/x"}, true},
		{Config{URL: "https://ntfy.sh/topic", Format: Ntfy}, true},
		{Config{URL: "http://127.0.0.1:8080/x"}, true},
		{Config{URL: "http://[::1]:8080/x"}, true},
		{Config{URL: "http://localhost:8080/x"}, false},
		{Config{URL: "http://192.168.1.10/x"}, false},
		{Config{URL: "ftp://hooks.example.com/x"}, false},
		{Config{URL: "https:///x"}, false},
		{Config{URL: "https://ntfy.sh/", Format: Ntfy}, false},
		{Config{URL: ""}, false},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); (err == nil) != tt.ok {
			t.Errorf("%+v: %v, want ok=%v", tt.cfg, err, tt.ok)
		}
	}
}
