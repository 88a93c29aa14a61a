package linkcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/lifeline-dev/lifeline/agent/child"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/version"
)

// The link check program (lifeline-linkcheck, agent/cmd/lifeline-linkcheck)
// measures the link for the agent, one check per run:
//
//	agent                                   lifeline-linkcheck
//	  lock, marker, allowance (history.go)
//	  exec, stdin: programRequest (JSON) -->  Config.Validate, speedtest-go
//	  stderr: log lines, forwarded       <--  slog JSON lines (text on a crash)
//	  stdout: the result                 <--  one report.LinkReport JSON line, exit 0
//	  time, keepalives, month, journal, publish
//
// The agent trusts only the measurement from the result (ISP, address,
// server, latency, jitter, speeds, bytes, reasons, speed note); time, duration and
// everything about the schedule and the budget are its own. Anything else
// (no program, a start that fails, an exit status other than 0, output
// that is not one valid report, a program still running at the deadline)
// is a failed check whose reason says which; one that may have moved data
// counts at its whole allowance, like a check whose process died.

// ProgramName is the link check program's file name.
const ProgramName = "lifeline-linkcheck"

// ProgramDir is where the lifeline-agent package installs the program: it
// is no command for people, so not on PATH.
const ProgramDir = child.Dir

// ProgramProtocol is the version of programRequest. A program refuses a
// request of another version (exit ExitUsage), so an agent that has not
// been restarted since a package upgrade gets a failed check naming the
// mismatch, never a misread configuration. Fields added within a version
// are omitted when zero and mean what their absence meant (Light: false,
// measure speed), so a newer program reads an older agent's request as
// that agent meant it.
const ProgramProtocol = 1

// programRequest is what the agent writes to the program's stdin.
type programRequest struct {
	V      int    `json:"v"`
	Config Config `json:"config"`
	// Budget is what this check may move (the allowance: at most
	// Config.Budget, less when the month's budget paces it).
	Budget int64 `json:"budget"`
	// Light asks for a light check: client info, server and latency,
	// no download or upload.
	Light bool `json:"light,omitempty"`
	// Timeout is the check's deadline, from the program's start: the
	// agent's MaxDuration, or less when its context ends sooner.
	Timeout time.Duration `json:"timeout_ns"`
	// LogLevel is the lowest level the agent logs; the program logs
	// nothing below it.
	LogLevel slog.Level `json:"log_level"`
}

const (
	// programStopGrace: the program ends its measurement at its deadline
	// by itself; it is told to (SIGTERM) this long after.
	programStopGrace = 5 * time.Second
	// programKillGrace: a program told to stop gets its capture time(s)
	// plus this long to end its phases and write its result; then it is
	// killed (SIGKILL).
	programKillGrace = 10 * time.Second
	// programPipeWait: once the program has exited, its output is read
	// for at most this long (a process it left behind may hold the pipes).
	programPipeWait = 2 * time.Second
	// maxRequest bounds the request the program reads.
	maxRequest = 64 << 10
	// maxLogLines and maxLogLine bound what one run may put in the
	// agent's log.
	maxLogLines = 64
	maxLogLine  = 2 << 10
)

// programDirs are the directories FindProgram looks in, in order. Tests
// replace it.
var programDirs = child.Dirs

// FindProgram returns the link check program's path: ProgramName next to
// this process's executable (bin/ of a build, an unpacked release
// tarball, /usr/bin), else in ProgramDir (the package). The error names
// every path it tried and why each would not do.
func FindProgram() (string, error) { return findProgram(programDirs()) }

func findProgram(dirs []string) (string, error) {
	return child.Find("link check program", ProgramName, dirs)
}

// measureInProgram runs one measurement within lim in the link check
// program and returns its result, or a failed one that says what went
// wrong with the program (no time, verdict or duration yet: see finish).
func (c *Checker) measureInProgram(ctx context.Context, lim Limits) report.LinkReport {
	budget := lim.Budget
	path, err := c.program()
	if err != nil {
		c.log.Error("link check not run", "err", err)
		return report.LinkReport{Reasons: []string{err.Error()}} // nothing ran: nothing moved
	}
	timeout := c.MaxDuration()
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	req, err := json.Marshal(programRequest{V: ProgramProtocol, Config: c.cfg, Budget: budget, Light: lim.Light, Timeout: timeout, LogLevel: child.LowestLevel(ctx, c.log)})
	if err != nil {
		return report.LinkReport{Reasons: []string{fmt.Sprintf("link check request: %v", err)}}
	}
	run := c.runProgram(ctx, path, req, timeout)
	r, err := run.result()
	if err != nil {
		c.log.Error("link check program failed", "program", path, "err", err)
		if !run.started {
			return report.LinkReport{Reasons: []string{err.Error()}}
		}
		return report.LinkReport{Bytes: budget, Reasons: []string{fmt.Sprintf("%v; counted at its whole allowance of %s", err, mb(budget))}}
	}
	return r
}

// programRun is one run of the program.
type programRun struct {
	path    string
	timeout time.Duration
	started bool
	err     error // of the start, or of the wait
	killed  bool  // by us, after the deadline
	stdout  child.CappedBuffer
	stderr  *child.Log
}

// runProgram runs path with req on its stdin until it exits. It is told
// to stop (SIGTERM) when ctx is cancelled, or stopGrace after timeout (the
// program has the same deadline, so a deadline of ctx is left to it), and
// killed when it has not ended its capture times plus killGrace after that.
func (c *Checker) runProgram(ctx context.Context, path string, req []byte, timeout time.Duration) *programRun {
	run := &programRun{path: path, timeout: timeout, stdout: child.CappedBuffer{Max: report.MaxSize + 1},
		stderr: &child.Log{Ctx: ctx, Logger: c.log, Label: "link check program", MaxLines: maxLogLines, MaxLine: maxLogLine, ErrAttr: true}}
	cmd := exec.Command(path)
	cmd.Env = programEnv(os.Environ())
	cmd.Stdin = bytes.NewReader(req)
	cmd.Stdout = &run.stdout
	cmd.Stderr = run.stderr
	cmd.WaitDelay = programPipeWait
	if err := cmd.Start(); err != nil {
		run.err = err
		return run
	}
	run.started = true
	c.log.Debug("link check program started", "program", path, "pid", cmd.Process.Pid, "timeout", timeout.Round(time.Millisecond))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }() // always received below
	stopAt := time.NewTimer(max(timeout, 0) + c.stopGrace)
	defer stopAt.Stop()
	killAt := time.NewTimer(time.Hour)
	killAt.Stop() // armed by stop
	defer killAt.Stop()
	cancelled := ctx.Done()
	stopping := false
	stop := func(why string) {
		if stopping {
			return
		}
		stopping = true
		stopAt.Stop()
		c.log.Debug("link check program told to stop", "why", why, "pid", cmd.Process.Pid)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		killAt.Reset(c.phases()*c.cfg.CheckDuration + c.killGrace)
	}
	for {
		select {
		case err := <-done:
			run.err = err
			run.stderr.Flush()
			return run
		case <-cancelled:
			cancelled = nil
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				stop("check cancelled")
			}
		case <-stopAt.C:
			stop("deadline passed")
		case <-killAt.C:
			run.killed = true
			c.log.Warn("link check program killed: it did not end when told to stop", "pid", cmd.Process.Pid)
			_ = cmd.Process.Kill()
		}
	}
}

// result is the measurement from the program's output, or an error that
// says why there is none.
func (run *programRun) result() (report.LinkReport, error) {
	hint := ""
	if h := run.stderr.Problem(); h != "" {
		hint = ": " + h
	}
	switch {
	case !run.started:
		return report.LinkReport{}, fmt.Errorf("link check program %s could not be started: %v", run.path, child.UnwrapPath(run.err))
	case run.killed:
		return report.LinkReport{}, fmt.Errorf("link check program %s killed: no result in time (the check's deadline was %s after its start)%s", run.path, run.timeout.Round(100*time.Millisecond), hint)
	case run.err != nil:
		return report.LinkReport{}, fmt.Errorf("link check program %s failed (%v)%s", run.path, run.err, hint)
	case run.stdout.Over():
		return report.LinkReport{}, fmt.Errorf("link check program %s wrote more than %d bytes: not a result%s", run.path, report.MaxSize, hint)
	}
	out := bytes.TrimSpace(run.stdout.Bytes())
	if len(out) == 0 {
		return report.LinkReport{}, fmt.Errorf("link check program %s wrote no result%s", run.path, hint)
	}
	r, err := report.Decode(out)
	if err != nil {
		return report.LinkReport{}, fmt.Errorf("link check program %s wrote no valid result (%v)%s", run.path, err, hint)
	}
	// The measurement only: the rest is the agent's.
	return report.LinkReport{ISP: r.ISP, IP: r.IP, Server: r.Server, LatencyMS: r.LatencyMS, JitterMS: r.JitterMS,
		DownloadBps: r.DownloadBps, UploadBps: r.UploadBps, Bytes: r.Bytes, Reasons: r.Reasons, Codes: r.Codes, SpeedNote: r.SpeedNote}, nil
}

// programEnv is the agent's environment without what systemd meant for
// the agent alone (its notify socket, watchdog, sockets).
func programEnv(env []string) []string {
	return child.Env(env, func(k string) bool {
		switch k {
		case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES":
			return false
		}
		return true
	})
}

// Usage of the link check program.
const programUsage = "usage: " + ProgramName + " [--version | --help]\n\n" +
	ProgramName + " measures the backup link once (ISP, latency and, unless the check is light,\n" +
	"download and upload speed, with speedtest-go) for lifeline-agent, which runs it for every\n" +
	"link check, its own and those of `lifeline-agent check`, and keeps the schedule, the\n" +
	"history, the monthly budget and the pacing of speed measurements itself.\n" +
	"It reads the check's configuration as one JSON request on stdin, writes the result as one\n" +
	"JSON line (a line of checks.jsonl) on stdout and logs JSON lines on stderr; SIGTERM ends the\n" +
	"measurement early. To check the link by hand, run `lifeline-agent check`.\n" +
	"Exit status: 0 result written, 1 failed, 2 usage or request error.\n"

// ProgramMain is the link check program (lifeline-linkcheck): it reads a
// request from stdin, measures once with the SpeedTester newTester makes
// for the request's configuration, within the request's budget and
// deadline, judges the measurement and writes the result as one JSON line
// on stdout; it logs JSON lines on stderr. args are the arguments after
// the program's name (--version and --help only). When ctx ends (the
// agent's SIGTERM), the measurement stops as a cancelled check does and
// the result says so. It returns ExitOK when it wrote a result, whatever
// the verdict; ExitUsage on a usage or request error; ExitFailed when it
// could not measure at all.
func ProgramMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, newTester func(Config) (SpeedTester, error)) int {
	if len(args) > 0 {
		switch args[0] {
		case "-v", "--version", "version":
			fmt.Fprintln(stdout, ProgramName, version.Version)
			return ExitOK
		case "-h", "--help", "help":
			fmt.Fprint(stdout, programUsage)
			return ExitOK
		}
		fmt.Fprintf(stderr, "%s: unexpected argument %q: it is run by lifeline-agent (try --help)\n", ProgramName, args[0])
		return ExitUsage
	}
	start := time.Now()
	req, err := readRequest(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", ProgramName, err)
		return ExitUsage
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: req.LogLevel}))
	tester, err := newTester(req.Config)
	if err != nil {
		log.Error("cannot measure", "err", err)
		return ExitFailed
	}
	cfg := req.Config
	cfg.Tester = tester
	c, err := New(cfg, log)
	if err != nil {
		log.Error("cannot measure", "err", err)
		return ExitFailed
	}
	// Stopped by the agent, the check is cancelled as it would be in the
	// agent's own process (the reasons say "context canceled").
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	unhook := context.AfterFunc(ctx, cancel)
	defer unhook()
	if ctx.Err() != nil {
		cancel() // at once, not when AfterFunc's goroutine gets to it
	}
	log.Debug("measuring", "budget", req.Budget, "light", req.Light, "timeout", req.Timeout.Round(time.Millisecond))
	r := c.measureHere(mctx, c.limits(req.Budget, req.Light), min(req.Timeout, c.MaxDuration()))
	r.Light = req.Light
	finish(&r, start, time.Now())
	b, err := report.Encode(r)
	if err != nil {
		log.Error("cannot write the result", "err", err)
		return ExitFailed
	}
	if _, err := stdout.Write(append(b, '\n')); err != nil {
		log.Error("cannot write the result", "err", err)
		return ExitFailed
	}
	return ExitOK
}

// readRequest decodes and checks the agent's request, strictly.
func readRequest(r io.Reader) (programRequest, error) {
	var req programRequest
	if err := child.DecodeRequest(r, maxRequest, "run `lifeline-agent check` to check the link by hand", &req); err != nil {
		return req, err
	}
	if req.V != ProgramProtocol {
		return req, fmt.Errorf("request version %d, this %s (%s) reads version %d: restart lifeline-agent after an upgrade", req.V, ProgramName, version.Version, ProgramProtocol)
	}
	var errs []error
	if err := req.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if req.Budget <= 0 {
		errs = append(errs, fmt.Errorf("budget %d: must be positive", req.Budget))
	}
	if err := errors.Join(errs...); err != nil {
		return req, fmt.Errorf("request on stdin: %w", err)
	}
	return req, nil
}
