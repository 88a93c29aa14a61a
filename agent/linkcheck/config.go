package linkcheck

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/lifeline-dev/lifeline/agent/config"

	"github.com/lifeline-dev/lifeline/shared/clock"
	"github.com/lifeline-dev/lifeline/shared/units"
)

// Config is the link checks' part of the agent configuration. It is meant to
// be embedded anonymously in the agent's Config, so its variables keep their
// LIFELINE_ names. The zero value is not valid: decode it with
// envconf.Process (which applies the defaults) and call Validate.
type Config struct {
	CheckEvery       time.Duration  `envconfig:"CHECK_EVERY" default:"1h" desc:"time between link checks, from the latest one in the history (a fresh install checks shortly after start); every check proves ISP and latency, speed is measured as LIFELINE_CHECK_MONTHLY_BUDGET allows; 0 disables them"`
	ExpectISP        string         `envconfig:"EXPECT_ISP" desc:"the ISP the check must report (case-insensitive substring, e.g. Starlink); empty: any"`
	MinDownload      units.BitRate  `envconfig:"MIN_DOWNLOAD" default:"10Mbps" desc:"slowest acceptable download (bps, kbps, Mbps, Gbps); a measurement its data allowance cut short in under 2 s is too small to judge (the check says so, it does not fail); 0: no minimum"`
	MaxLatency       time.Duration  `envconfig:"MAX_LATENCY" default:"100ms" desc:"highest acceptable latency to the test server; 0: no maximum"`
	Budget           units.ByteSize `envconfig:"CHECK_BUDGET" default:"10MB" desc:"most data one speed measurement may use, both directions (e.g. 10MB, 512MiB; 10MB is 2 s at 40 Mbit/s); under LIFELINE_CHECK_MONTHLY_BUDGET a measurement may get less, paced to last the month"`
	MonthlyBudget    units.ByteSize `envconfig:"CHECK_MONTHLY_BUDGET" default:"300MB" desc:"most data all link checks may use in a calendar month (UTC), manual ones included, across restarts (300MB: 30% of a 1 GB plan); every check proves ISP and latency (a light check, about 50 kB), speed is measured as often as what is left after reserving the month's light checks allows, at least daily when it can (hourly checks and 300MB: daily, about 8.7 MB, on a fast link); a budget too small for a light check every LIFELINE_CHECK_EVERY spaces the checks out; over it checks are skipped; 0: no cap, speed at every check"`
	Upload           bool           `envconfig:"CHECK_UPLOAD" default:"false" desc:"also measure upload speed (download and upload then get half of each speed measurement's allowance)"`
	CheckDuration    time.Duration  `envconfig:"CHECK_DURATION" default:"10s" desc:"longest the download (and upload) measurement runs, 1s to 60s; it ends sooner at its data allowance"`
	CheckConnections int            `envconfig:"CHECK_CONNECTIONS" default:"4" desc:"parallel connections of the speed measurement, 1 to 16"`
	SpeedtestURL     string         `envconfig:"SPEEDTEST_URL" default:"https://www.speedtest.net" desc:"base URL of the speedtest.net API (client info and server list): a private server, or a test fake"`
	SpeedtestServer  string         `envconfig:"SPEEDTEST_SERVER" desc:"fixed test server URL (e.g. http://host:8080) instead of the nearest one"`
	Interface        string         `envconfig:"INTERFACE" desc:"bind the check's sockets (and DNS lookups) to this interface, like the tunnel; empty: any"`
	StateDir         string         `envconfig:"STATE_DIR" default:"/var/lib/lifeline" desc:"directory of checks.jsonl, the check history (rotated at 1 MiB, 3 files) from which checks are scheduled and budgeted"`

	// The seams to the outside world, neither read from the environment
	// nor sent to the link check program.

	// Clock gives report times and drives Run's schedule. nil: clock.Real.
	Clock clock.Clock `ignored:"true" json:"-"`
	// Tester measures in the calling process instead of the link check
	// program (the program itself gives it speedtest-go; tests a fake).
	// nil: run the program.
	Tester SpeedTester `ignored:"true" json:"-"`
	// Program is the link check program to run. Empty: FindProgram's, at
	// each check.
	Program string `ignored:"true" json:"-"`
	// Status, when not nil, gets one short line describing Run's schedule,
	// the pacing of its speed measurements and the month's data (e.g.
	// "link checks: next May 31 19:00 UTC, speed about Jun 1 09:00 UTC,
	// 48 MB of 300 MB used in 2026-05") at start and after every check or
	// skip; the agent shows it in systemd's STATUS=. It must return
	// promptly.
	Status func(string) `ignored:"true" json:"-"`
}

// Bounds of the tunables.
const (
	minCaptureTime = time.Second
	maxCaptureTime = time.Minute
	maxConnections = 16
	// minBudget leaves room for the control requests and one test file
	// (speedtest-go fetches random1000x1000.jpg, 1.98 MB on real servers)
	// even when an upload takes half of the budget.
	minBudget = 5 * units.MB
)

// Validate reports every problem at once, each naming its variable.
func (c Config) Validate() error {
	var errs []error
	if c.CheckEvery < 0 {
		errs = append(errs, fmt.Errorf("LIFELINE_CHECK_EVERY=%s: must not be negative (0 disables the checks)", c.CheckEvery))
	}
	if c.ExpectISP != "" && (len(c.ExpectISP) > 256 || strings.ContainsFunc(c.ExpectISP, isControl)) {
		errs = append(errs, fmt.Errorf("LIFELINE_EXPECT_ISP=%q: at most 256 characters, no control characters", c.ExpectISP))
	}
	if c.MinDownload < 0 {
		errs = append(errs, fmt.Errorf("LIFELINE_MIN_DOWNLOAD=%s: must not be negative", c.MinDownload))
	}
	if c.MaxLatency < 0 {
		errs = append(errs, fmt.Errorf("LIFELINE_MAX_LATENCY=%s: must not be negative (0: no maximum)", c.MaxLatency))
	}
	if c.Budget < minBudget {
		errs = append(errs, fmt.Errorf("LIFELINE_CHECK_BUDGET=%s: must be at least %s to measure anything", c.Budget, minBudget))
	}
	if c.MonthlyBudget < 0 || (c.MonthlyBudget > 0 && c.MonthlyBudget < minBudget) {
		errs = append(errs, fmt.Errorf("LIFELINE_CHECK_MONTHLY_BUDGET=%s: must be 0 (no cap) or at least %s", c.MonthlyBudget, minBudget))
	}
	if c.CheckDuration < minCaptureTime || c.CheckDuration > maxCaptureTime {
		errs = append(errs, fmt.Errorf("LIFELINE_CHECK_DURATION=%s: must be from %s to %s", c.CheckDuration, minCaptureTime, maxCaptureTime))
	}
	if c.CheckConnections < 1 || c.CheckConnections > maxConnections {
		errs = append(errs, fmt.Errorf("LIFELINE_CHECK_CONNECTIONS=%d: must be from 1 to %d", c.CheckConnections, maxConnections))
	}
	if err := checkURL(c.SpeedtestURL); err != nil {
		errs = append(errs, fmt.Errorf("LIFELINE_SPEEDTEST_URL=%q: %w", c.SpeedtestURL, err))
	}
	if c.SpeedtestServer != "" {
		if err := checkURL(c.SpeedtestServer); err != nil {
			errs = append(errs, fmt.Errorf("LIFELINE_SPEEDTEST_SERVER=%q: %w", c.SpeedtestServer, err))
		}
	}
	if err := config.CheckInterface(c.Interface); err != nil {
		errs = append(errs, err)
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("LIFELINE_STATE_DIR=%q: must be an absolute directory path", c.StateDir))
	}
	return errors.Join(errs...)
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an http:// or https:// URL")
	}
	if u.Host == "" {
		return errors.New("has no host")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not carry credentials, a query or a fragment")
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
