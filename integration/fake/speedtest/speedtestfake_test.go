package speedtestfake

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T, cfg Config) (*Server, *http.Client) {
	t.Helper()
	s, err := Start("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) (int, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestConfigAndServerList(t *testing.T) {
	t.Parallel()
	s, c := start(t, Config{ISP: "Starlink"})
	_, body := get(t, c, s.URL()+"/speedtest-config.php")
	var cfg struct {
		Client struct {
			IP  string `xml:"ip,attr"`
			ISP string `xml:"isp,attr"`
		} `xml:"client"`
	}
	if err := xml.Unmarshal(body, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Client.ISP != "Starlink" || cfg.Client.IP != "127.0.0.1" {
		t.Fatalf("client %+v from %s", cfg.Client, body)
	}
	s.SetISP("T-Mobile")
	if _, body := get(t, c, s.URL()+"/speedtest-config.php"); !bytes.Contains(body, []byte(`isp="T-Mobile"`)) {
		t.Fatalf("ISP not changed: %s", body)
	}

	_, body = get(t, c, s.URL()+"/api/js/servers")
	var list []struct{ URL, Host, ID string }
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(s.URL(), "http://")
	if len(list) != 1 || list[0].URL != s.URL()+"/speedtest/upload.php" || list[0].Host != host {
		t.Fatalf("list %+v", list)
	}
	if _, body := get(t, c, s.URL()+"/speedtest-servers-static.php"); !bytes.Contains(body, []byte(`url="`+s.URL()+`/speedtest/upload.php"`)) {
		t.Fatalf("XML list %s", body)
	}
	if code, _ := get(t, c, s.URL()+"/nothing"); code != http.StatusNotFound {
		t.Fatalf("unknown path answered %d", code)
	}
	st := s.Stats()
	if st.ConfigRequests != 2 || st.ServerListLookup != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDownloadUploadAndCounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      Config
		path     string
		wantSize int
	}{
		{name: "real-like size", path: "/speedtest/random350x350.jpg", wantSize: 350 * 350 * 2},
		{name: "fixed size", cfg: Config{FileSize: 12345}, path: "/speedtest/random1000x1000.jpg", wantSize: 12345},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, c := start(t, tt.cfg)
			code, body := get(t, c, s.URL()+tt.path)
			if code != http.StatusOK || len(body) != tt.wantSize {
				t.Fatalf("status %d, %d bytes", code, len(body))
			}
			resp, err := c.Post(s.URL()+"/speedtest/upload.php", "application/octet-stream", bytes.NewReader(make([]byte, 100_000)))
			if err != nil {
				t.Fatal(err)
			}
			reply, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(reply) != "size=100000" {
				t.Fatalf("upload reply %q", reply)
			}
			st := s.Stats()
			if st.DownloadBytes != int64(tt.wantSize) || st.BytesServed != int64(tt.wantSize)+int64(len(reply)) || st.UploadBytes != 100_000 ||
				st.DownloadRequests != 1 || st.UploadRequests != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestPacing: a paced download cannot arrive faster than the rate (it may
// be slower on a busy machine, so only the lower bound is asserted).
func TestPacing(t *testing.T) {
	t.Parallel()
	const size, rate = 200_000, 3_200_000 // 0.5 s at the rate
	s, c := start(t, Config{RateBps: rate, FileSize: size, Latency: 50 * time.Millisecond})
	begin := time.Now()
	if _, body := get(t, c, s.URL()+"/speedtest/random1000x1000.jpg"); len(body) != size {
		t.Fatalf("%d bytes", len(body))
	}
	if took, least := time.Since(begin), time.Duration(size*8*float64(time.Second)/rate)*8/10; took < least {
		t.Fatalf("%d bytes at %d bit/s took %s, less than %s", size, rate, took, least)
	}
	begin = time.Now()
	if _, body := get(t, c, s.URL()+"/speedtest/latency.txt"); string(body) != "test=test\n" {
		t.Fatalf("latency.txt %q", body)
	}
	if took := time.Since(begin); took < 50*time.Millisecond {
		t.Fatalf("latency.txt answered in %s, before its 50ms delay", took)
	}
}

func TestClosedURL(t *testing.T) {
	t.Parallel()
	u, err := ClosedURL()
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	if resp, err := c.Get(u + "/speedtest-config.php"); err == nil {
		resp.Body.Close()
		t.Fatal("a closed port answered")
	}
}
