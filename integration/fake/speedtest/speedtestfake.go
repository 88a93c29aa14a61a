// Package speedtestfake is a local HTTP server that speaks what
// github.com/showwin/speedtest-go v1.7.10 asks speedtest.net and its test
// servers for:
//
//	GET  /speedtest-config.php           client info: ip, isp, lat, lon (XML)
//	GET  /api/js/servers                 server list (JSON), pointing at this server
//	GET  /speedtest-servers-static.php   the same list as XML (the library's fallback)
//	GET  /speedtest/latency.txt          "test=test", after a programmable delay
//	GET  /speedtest/random{N}x{N}.jpg    N*N*2 bytes (about the size of the real files),
//	                                     paced by a token bucket when a rate is set
//	POST /speedtest/upload.php           body read (paced the same way) and discarded
//
// The client reaches the first three by rewriting https://www.speedtest.net
// to this server's URL; the test-server paths are what the server list (or a
// fixed server URL) names. The server counts every response byte it wrote,
// so tests can assert that a client stayed within a data budget. ISP, client
// address, latency and rate can be changed while it runs.
//
// It exists for tests, the integration suite and `make demo`; it never talks
// to the network beyond the listener it is given.
package speedtestfake

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config is the initial behaviour of a Server; each field can be changed
// later with the matching setter.
type Config struct {
	// ISP is what the config reports as the client's provider; empty means
	// "Fake ISP".
	ISP string
	// ClientIP is the client's public address as reported; empty means the
	// address the request came from.
	ClientIP string
	// Latency is added before answering latency.txt.
	Latency time.Duration
	// RateBps paces download and upload bodies to this many bits per second
	// in total over all connections (a shared token bucket); 0 means as fast
	// as the machine goes.
	RateBps int64
	// FileSize, when positive, is the size of every download file instead
	// of N*N*2 bytes.
	FileSize int64
	// Sponsor and Name label this server in the list; empty means
	// "lifeline fake" and "Loopback".
	Sponsor, Name string
	// ISPBySource overrides ISP for clients whose address (as this server
	// sees it) is a key: like the real service, which names the ISP of the
	// public address the test came from. Tests use it to catch traffic
	// leaving by the wrong uplink.
	ISPBySource map[string]string
	// ExtraServers are more test servers (base URLs such as
	// "http://127.0.0.1:9"), listed before this one as nearer to the client:
	// tests use dead ones to check that the client skips them.
	ExtraServers []string
}

// Stats counts what the server was asked and what it sent.
type Stats struct {
	ConfigRequests   int64
	ServerListLookup int64
	LatencyRequests  int64
	DownloadRequests int64
	UploadRequests   int64
	// BytesServed is every response body byte written, all paths together.
	BytesServed int64
	// DownloadBytes is the part of BytesServed sent as download files.
	DownloadBytes int64
	// UploadBytes is every request body byte read by the upload endpoint.
	UploadBytes int64
}

// Server is the fake. Create it with New (an http.Handler) or Start (which
// also listens). Its methods are safe for concurrent use.
type Server struct {
	mu      sync.Mutex
	cfg     Config
	pace    pacer
	stats   struct{ config, list, latency, download, upload, served, dl, ul atomic.Int64 }
	srv     *http.Server
	ln      net.Listener
	done    chan struct{}
	serveEr error
}

// New returns a fake serving cfg. It listens nowhere: use it as a handler
// (httptest.NewServer(fake)) or call Start instead.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg}
	s.pace.setRate(cfg.RateBps)
	return s
}

// Start listens on addr (use "127.0.0.1:0" for any free port) and serves a
// new fake until Close.
func Start(addr string, cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	s := New(cfg)
	s.ln = ln
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveEr = err
		}
	}()
	return s, nil
}

// URL is "http://ADDR" of a started server ("" for one made with New).
func (s *Server) URL() string {
	if s.ln == nil {
		return ""
	}
	return "http://" + s.ln.Addr().String()
}

// Close stops a started server, ending open connections, and waits for it.
// It is a no-op for a server made with New.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	err := s.srv.Close()
	<-s.done
	if err != nil {
		return fmt.Errorf("close fake speedtest: %w", err)
	}
	return s.serveEr
}

// ClosedURL returns the URL of a loopback port that was just listened on and
// closed: connecting to it is refused, the "unreachable server" of tests.
func ClosedURL() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("reserve a port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("close reserved port: %w", err)
	}
	return "http://" + addr, nil
}

// SetISP changes the reported ISP.
func (s *Server) SetISP(isp string) { s.mu.Lock(); s.cfg.ISP = isp; s.mu.Unlock() }

// SetLatency changes the delay added to latency.txt.
func (s *Server) SetLatency(d time.Duration) { s.mu.Lock(); s.cfg.Latency = d; s.mu.Unlock() }

// SetRate changes the pacing of download and upload bodies (0 = unlimited).
func (s *Server) SetRate(bps int64) { s.pace.setRate(bps) }

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	return Stats{
		ConfigRequests:   s.stats.config.Load(),
		ServerListLookup: s.stats.list.Load(),
		LatencyRequests:  s.stats.latency.Load(),
		DownloadRequests: s.stats.download.Load(),
		UploadRequests:   s.stats.upload.Load(),
		BytesServed:      s.stats.served.Load(),
		DownloadBytes:    s.stats.dl.Load(),
		UploadBytes:      s.stats.ul.Load(),
	}
}

func (s *Server) config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

var randomFile = regexp.MustCompile(`^/speedtest/random(\d{1,4})x(\d{1,4})\.jpg$`)

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/speedtest-config.php":
		s.stats.config.Add(1)
		s.serveConfig(w, r)
	case r.URL.Path == "/api/js/servers":
		s.stats.list.Add(1)
		s.serveListJSON(w, r)
	case r.URL.Path == "/speedtest-servers-static.php":
		s.stats.list.Add(1)
		s.serveListXML(w, r)
	case r.URL.Path == "/speedtest/latency.txt":
		s.stats.latency.Add(1)
		s.serveLatency(w, r)
	case r.URL.Path == "/speedtest/upload.php" && r.Method == http.MethodPost:
		s.stats.upload.Add(1)
		s.serveUpload(w, r)
	case randomFile.MatchString(r.URL.Path) && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.stats.download.Add(1)
		s.serveDownload(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) write(w http.ResponseWriter, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	n, _ := w.Write(body)
	s.stats.served.Add(int64(n))
}

type xmlClient struct {
	IP  string `xml:"ip,attr"`
	Lat string `xml:"lat,attr"`
	Lon string `xml:"lon,attr"`
	ISP string `xml:"isp,attr"`
}

func (s *Server) serveConfig(w http.ResponseWriter, r *http.Request) {
	cfg := s.config()
	c := xmlClient{IP: cfg.ClientIP, Lat: "48.8566", Lon: "2.3522", ISP: cfg.ISP}
	if c.ISP == "" {
		c.ISP = "Fake ISP"
	}
	src, _, _ := net.SplitHostPort(r.RemoteAddr)
	if isp, ok := cfg.ISPBySource[src]; ok {
		c.ISP = isp
	}
	if c.IP == "" {
		c.IP = src
	}
	body, err := xml.Marshal(struct {
		XMLName xml.Name  `xml:"settings"`
		Client  xmlClient `xml:"client"`
	}{Client: c})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.write(w, "text/xml; charset=utf-8", append([]byte(xml.Header), body...))
}

type listedServer struct {
	URL      string  `json:"url" xml:"url,attr"`
	Lat      string  `json:"lat" xml:"lat,attr"`
	Lon      string  `json:"lon" xml:"lon,attr"`
	Distance float64 `json:"distance" xml:"-"`
	Name     string  `json:"name" xml:"name,attr"`
	Country  string  `json:"country" xml:"country,attr"`
	Sponsor  string  `json:"sponsor" xml:"sponsor,attr"`
	ID       string  `json:"id" xml:"id,attr"`
	Host     string  `json:"host" xml:"host,attr"`
}

// servers is the list: the extra servers, then this one as the client
// reached it.
func (s *Server) servers(r *http.Request) []listedServer {
	cfg := s.config()
	sponsor, name := cfg.Sponsor, cfg.Name
	if sponsor == "" {
		sponsor = "lifeline fake"
	}
	if name == "" {
		name = "Loopback"
	}
	var list []listedServer
	for i, base := range cfg.ExtraServers {
		u, err := url.Parse(base)
		if err != nil || u.Host == "" {
			continue
		}
		list = append(list, listedServer{
			URL: u.Scheme + "://" + u.Host + "/speedtest/upload.php", Lat: "48.8566", Lon: "2.3522",
			Distance: 0.5, Name: fmt.Sprintf("Extra %d", i+1), Country: "Nowhere", Sponsor: "extra", ID: strconv.Itoa(5000 + i), Host: u.Host,
		})
	}
	return append(list, listedServer{
		URL: "http://" + r.Host + "/speedtest/upload.php", Lat: "48.8566", Lon: "2.3522",
		Distance: 1, Name: name, Country: "Nowhere", Sponsor: sponsor, ID: "4242", Host: r.Host,
	})
}

func (s *Server) serveListJSON(w http.ResponseWriter, r *http.Request) {
	body, err := json.Marshal(s.servers(r))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.write(w, "application/json", body)
}

func (s *Server) serveListXML(w http.ResponseWriter, r *http.Request) {
	body, err := xml.Marshal(struct {
		XMLName xml.Name       `xml:"settings"`
		Servers []listedServer `xml:"servers>server"`
	}{Servers: s.servers(r)})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.write(w, "text/xml; charset=utf-8", append([]byte(xml.Header), body...))
}

func (s *Server) serveLatency(w http.ResponseWriter, r *http.Request) {
	if d := s.config().Latency; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	s.write(w, "text/plain", []byte("test=test\n"))
}

const chunkSize = 16 << 10

var filler = func() []byte {
	b := make([]byte, chunkSize)
	for i := range b {
		b[i] = byte(i*7 + 0xAA)
	}
	return b
}()

func (s *Server) serveDownload(w http.ResponseWriter, r *http.Request) {
	m := randomFile.FindStringSubmatch(r.URL.Path)
	n, _ := strconv.ParseInt(m[1], 10, 64)
	size := n * n * 2
	if fs := s.config().FileSize; fs > 0 {
		size = fs
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	for left := size; left > 0; {
		c := min(left, chunkSize)
		if err := s.pace.wait(r.Context(), c); err != nil {
			return
		}
		k, err := w.Write(filler[:c])
		s.stats.served.Add(int64(k))
		s.stats.dl.Add(int64(k))
		if err != nil {
			return
		}
		left -= int64(k)
	}
}

func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request) {
	buf := make([]byte, chunkSize)
	var total int64
	for {
		if err := s.pace.wait(r.Context(), chunkSize); err != nil {
			return
		}
		n, err := io.ReadFull(r.Body, buf)
		total += int64(n)
		s.stats.ul.Add(int64(n))
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return
		}
	}
	s.write(w, "text/plain", fmt.Appendf(nil, "size=%d", total))
}

// pacer is a token bucket holding one chunk: each chunk of n bytes is given
// the next free slot of n*8/rate seconds on a shared timeline, so all
// connections together get the configured rate and an idle link saves up
// no burst.
type pacer struct {
	mu   sync.Mutex
	bps  int64
	next time.Time
}

func (p *pacer) setRate(bps int64) {
	p.mu.Lock()
	p.bps = bps
	p.next = time.Time{}
	p.mu.Unlock()
}

func (p *pacer) wait(ctx context.Context, n int64) error {
	p.mu.Lock()
	if p.bps <= 0 {
		p.mu.Unlock()
		return ctx.Err()
	}
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(time.Duration(float64(n*8) / float64(p.bps) * float64(time.Second)))
	p.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
