package doctor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	"github.com/lifeline-dev/lifeline/agent/netsetup"
	"github.com/lifeline-dev/lifeline/shared/report"
)

func (d *Doctor) checkNetsetup(ctx context.Context) Result {
	const what = "netsetup (router duties)"
	if d.cfg.Net == nil {
		return Skipped(what, "LIFELINE_LAN_INTERFACE is not set: this Pi does no routing for a LAN")
	}
	if d.cfg.NetErr != nil {
		return Skipped(what, "not checked: its configuration is not valid (above)")
	}
	status := d.cfg.NetStatus
	if status == nil {
		s, err := netsetup.New(*d.cfg.Net, netsetup.Options{})
		if err != nil {
			return Skipped(what, "not checked: "+err.Error())
		}
		status = s.Status
	}
	rep, err := status(ctx)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EPERM) || strings.Contains(err.Error(), "operation not permitted") {
			return Skipped(what, "not checked: reading the firewall needs root: sudo lifeline-agent doctor")
		}
		return Failed(what, err.Error(), "sudo lifeline-agent netsetup status shows more; sudo systemctl restart lifeline-netsetup applies it again")
	}
	var detail []string
	for _, w := range rep.Warnings {
		detail = append(detail, "warning: "+w)
	}
	if rep.OK() {
		r := Passed(fmt.Sprintf("%s on %s: applied as configured (%s)", what, d.cfg.Net.LANInterface, strings.Join(rep.Applied, "; ")))
		r.Detail = detail
		return r
	}
	n := "1 difference"
	if len(rep.Differences) > 1 {
		n = fmt.Sprintf("%d differences", len(rep.Differences))
	}
	r := Failed(what+" on "+d.cfg.Net.LANInterface, "not applied as configured: "+n+" (below)",
		"sudo systemctl enable --now lifeline-netsetup (or restart it after a change to "+d.envWhere()+")")
	for _, l := range rep.Differences {
		r.Detail = append(r.Detail, "differs: "+l)
	}
	r.Detail = append(r.Detail, detail...)
	return r
}

// history is what doctor reads of the link checks' journal: the latest
// check and the data of this month's.
type history struct {
	last      *report.LinkReport
	month     string // "2006-01", UTC
	monthUsed int64
}

// maxHistory bounds what is read of the journal (it rotates at 1 MiB).
const maxHistory = 4 << 20

// readHistory reads LIFELINE_STATE_DIR's journal (linkcheck.JournalName):
// the newest file only, read-only, line by line as linkcheck writes them
// (report.LinkReport as JSON); unreadable lines are skipped, as the agent
// skips them. This month's data is the most of what its lines add up to
// and what the latest check of the month counted (a month that began
// before the journal rotated is in the older files).
func readHistory(dir string, now time.Time) (history, error) {
	h := history{month: now.UTC().Format("2006-01")}
	f, err := os.Open(filepath.Join(dir, linkcheck.JournalName))
	if err != nil {
		return h, err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxHistory))
	sc.Buffer(make([]byte, 0, 4096), 4*report.MaxSize)
	var sum, counted int64
	var lastInMonth time.Time
	for sc.Scan() {
		var r report.LinkReport
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Time.IsZero() {
			continue
		}
		if h.last == nil || !r.Time.Before(h.last.Time) {
			h.last = &r
		}
		if r.Time.UTC().Format("2006-01") == h.month {
			sum += max(r.Bytes, 0)
			if !r.Time.Before(lastInMonth) {
				lastInMonth, counted = r.Time, r.MonthBytes
			}
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return h, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	h.monthUsed = max(sum, counted)
	return h, nil
}

// manualCheck is the command that runs one link check now with the site's
// settings.
func (d *Doctor) manualCheck() string {
	return fmt.Sprintf("sudo sh -c 'set -a; . %s; exec lifeline-agent check'", d.envWhere())
}

func (d *Doctor) checkLastLinkCheck(context.Context) Result {
	const what = "last link check"
	c := d.cfg.Checks
	if d.cfg.ChecksErr != nil {
		return Skipped(what, "not checked: the link check configuration is not valid (above)")
	}
	if c.CheckEvery <= 0 {
		return Skipped(what, "link checks are disabled (LIFELINE_CHECK_EVERY=0)")
	}
	now := d.cfg.Clock.Now()
	h, err := readHistory(c.StateDir, now)
	journal := filepath.Join(c.StateDir, linkcheck.JournalName)
	switch {
	case errors.Is(err, fs.ErrNotExist) || (err == nil && h.last == nil):
		return Skipped(what, fmt.Sprintf("none recorded yet in %s: the agent checks about 30 s after it first starts; to run one now: %s", journal, d.manualCheck()))
	case errors.Is(err, fs.ErrPermission):
		return Failed(what, fmt.Sprintf("%s cannot read %s: %v", d.cfg.User.Name, journal, err), fmt.Sprintf("sudo chown -R %s %s", d.cfg.User.Owner(), c.StateDir))
	case err != nil:
		return Failed(what, err.Error(), fmt.Sprintf("sudo chown -R %s %s", d.cfg.User.Owner(), c.StateDir))
	}
	r := h.last
	ago := roughly(now.Sub(r.Time)) + " ago"
	if r.Time.After(now) {
		ago = "in the future: this Pi's clock went back"
	}
	if !r.OK() {
		return Failed(what, fmt.Sprintf("%s (%s)", r.Summary(), ago),
			"the reasons say what was off: the link itself, or the thresholds LIFELINE_EXPECT_ISP, LIFELINE_MIN_DOWNLOAD, LIFELINE_MAX_LATENCY; run one now: "+d.manualCheck())
	}
	// A cap too small for a light check every LIFELINE_CHECK_EVERY spaces
	// the checks out (linkcheck's pacing): allow for that.
	every := c.CheckEvery
	if b := int64(c.MonthlyBudget); b > 0 {
		every = max(every, time.Duration(float64(30*24*time.Hour)*float64(lightCheckBytes)/float64(b)))
	}
	stale := 2*every + 10*time.Minute
	if now.Sub(r.Time) > stale && !d.budgetUsedUp(h) {
		return Failed(what, fmt.Sprintf("%s, %s, and LIFELINE_CHECK_EVERY is %s: the agent has not checked since", r.Summary(), ago, c.CheckEvery),
			"is the agent running (systemctl status lifeline-agent)? journalctl -u lifeline-agent says why its checks stopped")
	}
	return Passed(fmt.Sprintf("%s: %s (%s)", what, r.Summary(), ago))
}

// lightCheckBytes is what linkcheck's pacing reserves for one light check
// (ISP and latency); with less than two of them left of the monthly
// budget, the agent skips its checks (agent/linkcheck/pace.go).
const (
	lightCheckBytes = 50_000
	minCheckBytes   = 2 * lightCheckBytes
)

func (d *Doctor) budgetUsedUp(h history) bool {
	b := int64(d.cfg.Checks.MonthlyBudget)
	return b > 0 && b-h.monthUsed < minCheckBytes
}

func (d *Doctor) checkLinkBudget(context.Context) Result {
	c := d.cfg.Checks
	now := d.cfg.Clock.Now()
	month := now.UTC().Format("2006-01")
	what := fmt.Sprintf("link check data in %s (UTC)", month)
	if d.cfg.ChecksErr != nil {
		return Skipped(what, "not checked: the link check configuration is not valid (above)")
	}
	h, err := readHistory(c.StateDir, now)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		h = history{month: month}
	case err != nil:
		return Skipped(what, "not checked: the history cannot be read (above)")
	}
	used := megabytes(h.monthUsed)
	if c.MonthlyBudget <= 0 {
		return Passed(fmt.Sprintf("%s: %s, no cap (LIFELINE_CHECK_MONTHLY_BUDGET=0)", what, used))
	}
	budget := megabytes(int64(c.MonthlyBudget))
	if d.budgetUsedUp(h) {
		t := now.UTC()
		next := time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC).Format("2006-01-02")
		return Failed(what, fmt.Sprintf("%s of LIFELINE_CHECK_MONTHLY_BUDGET=%s used: the agent skips its checks until %s", used, budget, next),
			fmt.Sprintf("nothing, if that is meant; otherwise raise LIFELINE_CHECK_MONTHLY_BUDGET in %s (the speed measurements are paced to it; light checks need about 50 kB each), then sudo systemctl restart lifeline-agent", d.envWhere()))
	}
	return Passed(fmt.Sprintf("%s: %s of %s used (LIFELINE_CHECK_MONTHLY_BUDGET)", what, used, budget))
}

// megabytes prints bytes in decimal megabytes, as the budgets are written.
func megabytes(b int64) string {
	if b%1_000_000 == 0 {
		return fmt.Sprintf("%d MB", b/1_000_000)
	}
	return fmt.Sprintf("%.1f MB", float64(b)/1e6)
}

// systemdUnit reports whether systemd runs this machine (sd_booted: the
// directory /run/systemd/system) and `systemctl is-active lifeline-agent`.
func systemdUnit(ctx context.Context) (booted bool, state string, err error) {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return false, "", nil
	}
	path, err := exec.LookPath("systemctl")
	if err != nil {
		return true, "", fmt.Errorf("systemctl not found: %w", err)
	}
	cmd := exec.CommandContext(ctx, path, "is-active", "lifeline-agent.service")
	cmd.WaitDelay = time.Second
	out, err := cmd.Output() // exit status 3 for every state but active
	if s := strings.TrimSpace(string(out)); s != "" {
		return true, s, nil
	}
	return true, "", fmt.Errorf("systemctl is-active lifeline-agent: %w", err)
}

func (d *Doctor) checkUnit(ctx context.Context) Result {
	const what = "unit lifeline-agent"
	booted, state, err := d.cfg.Unit(ctx)
	switch {
	case !booted:
		return Skipped(what, "not checked: this machine is not booted with systemd; start lifeline-agent your own way (as the service's user, with "+d.envWhere()+")")
	case err != nil:
		return Failed(what, err.Error(), "systemctl status lifeline-agent")
	}
	switch state {
	case "active":
		return Passed(what + ": active")
	case "inactive":
		return Failed(what, "inactive: the agent is not running", "sudo systemctl enable --now lifeline-agent")
	case "failed":
		return Failed(what, "failed: the agent stopped with an error", "journalctl -u lifeline-agent -n 50 says why; then sudo systemctl restart lifeline-agent")
	case "activating":
		return Failed(what, "activating: starting, or waiting to restart after a crash", "journalctl -u lifeline-agent -n 50 says why")
	default:
		return Failed(what, clean(state, 80), "systemctl status lifeline-agent")
	}
}
