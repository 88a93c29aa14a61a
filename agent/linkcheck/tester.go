package linkcheck

import (
	"context"
	"time"
)

// SpeedTester measures the link once. It is the seam between the verdict
// logic and the outside world. The production one (speedtest-go, package
// agent/linkcheck/measure) runs only in the link check program
// (lifeline-linkcheck, see ProgramMain), never in the agent's own process;
// tests give theirs to New in Config.Tester, and the check then runs in
// the calling process.
//
// Measure must return within about lim.Duration (twice when lim.Upload)
// plus the time its network requests take (each bounded by ControlTimeout)
// after ctx is done at the latest, must not move more than lim.Budget
// bytes, and must report every problem it met in Measurement.Errors rather
// than stopping at the first: a partial measurement is normal. With
// lim.Light it stops after the latency: no download, no upload, and no
// error for their absence.
type SpeedTester interface {
	Measure(ctx context.Context, lim Limits) Measurement
}

// Limits bound one measurement.
type Limits struct {
	Budget      int64         // most bytes moved, both directions, everything counted
	Duration    time.Duration // capture time of the download, and of the upload
	Connections int           // parallel connections
	Upload      bool          // measure upload too
	Light       bool          // client info, server and latency only: no download or upload
}

// Measurement is what one test found. A Have* flag is false when that part
// could not be measured; Errors then says why.
type Measurement struct {
	ISP, IP, Server string
	HaveLatency     bool
	Latency, Jitter time.Duration
	HaveDownload    bool
	DownloadBps     float64
	// DownloadCut is set when the download stopped at its share of
	// lim.Budget before its capture time ended, after DownloadTime of
	// moving data: a check does not call a download slow that the budget
	// cut short before minJudgeTime (a link has not reached its rate
	// yet), it says it was too small to judge.
	DownloadCut  bool
	DownloadTime time.Duration
	HaveUpload   bool
	UploadBps    float64
	Bytes        int64 // bytes moved, both directions
	Errors       []error
}

// ControlTimeout bounds each of a measurement's steps before the measured
// phases (client info, server list, latency).
const ControlTimeout = 30 * time.Second
