package linkcheck

import (
	"context"
	"time"
)

// SpeedTester measures the link once. It is the seam between the verdict
// logic and the outside world. The production one (speedtest-go, package
// agent/linkcheck/measure) runs only in the link check program
// (lifeline-linkcheck, see ProgramMain), never in the agent's own process;
// tests give theirs to New with WithSpeedTester, and the check then runs in
// the calling process.
//
// Measure must return within about lim.Duration (twice when lim.Upload)
// plus the time its network requests take (each bounded by ControlTimeout)
// after ctx is done at the latest, must not move more than lim.Budget
// bytes, and must report every problem it met in Measurement.Errors rather
// than stopping at the first: a partial measurement is normal.
type SpeedTester interface {
	Measure(ctx context.Context, lim Limits) Measurement
}

// Limits bound one measurement.
type Limits struct {
	Budget      int64         // most bytes moved, both directions, everything counted
	Duration    time.Duration // capture time of the download, and of the upload
	Connections int           // parallel connections
	Upload      bool          // measure upload too
}

// Measurement is what one test found. A Have* flag is false when that part
// could not be measured; Errors then says why.
type Measurement struct {
	ISP, IP, Server string
	HaveLatency     bool
	Latency, Jitter time.Duration
	HaveDownload    bool
	DownloadBps     float64
	HaveUpload      bool
	UploadBps       float64
	Bytes           int64 // bytes moved, both directions
	Errors          []error
}

// ControlTimeout bounds each of a measurement's steps before the measured
// phases (client info, server list, latency).
const ControlTimeout = 30 * time.Second
