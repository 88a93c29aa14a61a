// Command fake-speedtest runs the fake speedtest.net and test server
// (package speedtestfake) on a local address until interrupted. It is for
// `make demo` and the namespace suite: point LIFELINE_SPEEDTEST_URL at it.
//
//	fake-speedtest -addr 127.0.0.1:8090 -isp Starlink -latency 40ms -rate 50Mbps
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	speedtestfake "github.com/lifeline-dev/lifeline/integration/fake/speedtest"
	"github.com/lifeline-dev/lifeline/shared/units"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "address to listen on (loopback or a test namespace only)")
	isp := flag.String("isp", "Fake ISP", "ISP reported to the client")
	ip := flag.String("client-ip", "", "client address reported (default: the address the request came from)")
	latency := flag.Duration("latency", 0, "delay added to latency.txt")
	var rate units.BitRate
	var size units.ByteSize
	flag.Var(&rate, "rate", "pace downloads and uploads to this rate, all connections together (0 = unlimited)")
	flag.Var(&size, "file-size", "size of every download file (0 = N*N*2 bytes, like the real files)")
	bySource := flag.String("isp-by-source", "", "comma-separated ADDRESS=ISP: the ISP reported to clients coming from ADDRESS")
	flag.Parse()
	ispBySource := map[string]string{}
	for _, pair := range strings.Split(*bySource, ",") {
		if pair == "" {
			continue
		}
		addr, isp, ok := strings.Cut(pair, "=")
		if !ok || net.ParseIP(addr) == nil || isp == "" {
			fmt.Fprintf(os.Stderr, "fake-speedtest: -isp-by-source %q: want ADDRESS=ISP\n", pair)
			os.Exit(2)
		}
		ispBySource[addr] = isp
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := speedtestfake.Start(*addr, speedtestfake.Config{
		ISP: *isp, ClientIP: *ip, ISPBySource: ispBySource, Latency: *latency, RateBps: int64(rate), FileSize: int64(size),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake-speedtest:", err)
		os.Exit(1)
	}
	fmt.Printf("fake-speedtest: listening on %s (isp %q, latency %s, rate %s)\n", srv.URL(), *isp, *latency, rate)
	<-ctx.Done()
	st := srv.Stats()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "fake-speedtest:", err)
		os.Exit(1)
	}
	fmt.Printf("fake-speedtest: served %d bytes (%d download requests, %d upload requests)\n", st.BytesServed, st.DownloadRequests, st.UploadRequests)
}
