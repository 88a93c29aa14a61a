package outage

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
	"strings"
	"syscall"
	"time"

	"github.com/lifeline-dev/lifeline/agent/child"
	"github.com/lifeline-dev/lifeline/shared/version"
)

// The jump start program (lifeline-jumpstart, agent/cmd/lifeline-jumpstart)
// makes the one AWS call for the agent, so that the agent never links the
// AWS SDK, net/http or TLS:
//
//	agent (Starter)                          lifeline-jumpstart
//	  exec, no arguments, a trimmed env
//	  stdin: Request (JSON, secret inside) -->  ReadRequest, aws-sdk-go-v2 ec2
//	  stderr: log lines, logged again      <--  slog JSON lines (text on a crash)
//	  stdout: the result                   <--  one Result JSON line, exit 0
//
// Every way the program can fail (missing, cannot start, a refused
// request, a crash, no or bad output, still running at the deadline) is a
// Result too, with a code and whether retrying can help.

// ProgramName is the jump start program's file name.
const ProgramName = "lifeline-jumpstart"

// ProgramDir is where the lifeline-agent package installs the program,
// beside lifeline-linkcheck: it is no command for people, so not on PATH.
const ProgramDir = child.Dir

// ProgramProtocol is the version of Request. A program refuses a request
// of another version (exit ExitUsage): an agent not restarted after an
// upgrade gets a Result naming the mismatch.
const ProgramProtocol = 1

// Exit codes of the program.
const (
	ExitOK    = 0 // a Result was written, whatever it says
	ExitUsage = 2 // a bad argument or a malformed request: no Result
)

// Actions of a Request.
const (
	ActionStart = "start"
	ActionStop  = "stop"
)

// Codes of a Result: machine-readable, stable.
const (
	CodeOK         = "ok"
	CodeAuthFailed = "auth_failed" // AWS did not accept the key: wrong, deleted, inactive
	CodeDenied     = "denied"      // the key may not do this (IAM policy)
	CodeNotFound   = "not_found"   // no such instance in that region and account
	CodeCapacity   = "capacity"    // AWS has no capacity for the instance type now
	CodeWrongState = "wrong_state" // the instance cannot do this now (e.g. still stopping)
	CodeThrottled  = "throttled"   // too many API calls
	CodeNetwork    = "network"     // the API could not be reached
	CodeTimeout    = "timeout"     // no answer within the deadline
	CodeInternal   = "internal"    // anything else: AWS's errors, the program's
)

// knownCodes are the codes a Result may carry.
var knownCodes = map[string]bool{CodeOK: true, CodeAuthFailed: true, CodeDenied: true, CodeNotFound: true, CodeCapacity: true,
	CodeWrongState: true, CodeThrottled: true, CodeNetwork: true, CodeTimeout: true, CodeInternal: true}

// Request is what the agent writes to the program's stdin: one call.
type Request struct {
	V               int    `json:"v"`
	Action          string `json:"action"` // ActionStart or ActionStop
	Region          string `json:"region"`
	InstanceID      string `json:"instance_id"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	SessionToken    string `json:"session_token,omitempty"`
	// Endpoint replaces the region's EC2 endpoint (tests). Empty: AWS's.
	Endpoint string `json:"endpoint,omitempty"`
	// Interface binds the program's sockets to one interface. Empty: any.
	Interface string `json:"interface,omitempty"`
	// Timeout is the call's deadline from the program's start, retries
	// included ("30s").
	Timeout Duration `json:"timeout"`
	// LogLevel is the lowest level the program logs.
	LogLevel slog.Level `json:"log_level,omitempty"`
}

// LogValue is r without its secret and session token.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(slog.String("action", r.Action), slog.String("region", r.Region), slog.String("instance", r.InstanceID),
		slog.String("access_key_id", r.AccessKeyID), slog.String("secret_access_key", redacted(r.SecretAccessKey)),
		slog.String("endpoint", r.Endpoint), slog.Duration("timeout", time.Duration(r.Timeout)))
}

// Result is what the program writes to stdout, and what a Starter returns.
type Result struct {
	// OK: AWS accepted the call (Code is CodeOK).
	OK bool `json:"ok"`
	// State and PreviousState are the instance's, as AWS answered
	// (pending, running, stopping, stopped, ...), when OK.
	State         string `json:"state,omitempty"`
	PreviousState string `json:"previous_state,omitempty"`
	// Code is one of the Code… constants.
	Code string `json:"code"`
	// Message says what happened, for people (AWS's error code and
	// message included); it never contains the secret.
	Message string `json:"message,omitempty"`
	// Retry: calling again later may succeed without a change of
	// configuration.
	Retry bool `json:"retry"`
	// RequestID is AWS's id of the request, for AWS support. May be empty.
	RequestID string `json:"request_id,omitempty"`
}

// Duration is a time.Duration written in JSON as Go writes it ("45s").
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: like 30s", b)
	}
	*d = Duration(v)
	return nil
}

// Bounds of the program's input and output.
const (
	// MaxRequest bounds the request the program reads.
	MaxRequest = 64 << 10
	// maxResult bounds the result the agent reads.
	maxResult = 16 << 10
	// maxMessage bounds a Result's message.
	maxMessage = 1 << 10
	// MaxTimeout bounds a request's Timeout.
	MaxTimeout = 10 * time.Minute
)

// ReadRequest decodes and checks a request, strictly (the program's
// side). Its errors never contain the secret.
func ReadRequest(r io.Reader) (Request, error) {
	var req Request
	if err := child.DecodeRequest(r, MaxRequest, "try --help", &req); err != nil {
		// json's syntax errors quote what they read: say where only.
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return Request{}, fmt.Errorf("request on stdin: not JSON (at byte %d)", se.Offset)
		}
		return Request{}, err
	}
	if req.V != ProgramProtocol {
		return Request{}, fmt.Errorf("request version %d, this %s (%s) reads version %d: restart lifeline-agent after an upgrade", req.V, ProgramName, version.Version, ProgramProtocol)
	}
	errs := validateTarget(req.Region, req.InstanceID, req.AccessKeyID, req.SecretAccessKey, req.SessionToken, req.Endpoint, jsonNames)
	if req.Action != ActionStart && req.Action != ActionStop {
		errs = append(errs, fmt.Errorf("action %q: must be %q or %q", req.Action, ActionStart, ActionStop))
	}
	if t := time.Duration(req.Timeout); t <= 0 || t > MaxTimeout {
		errs = append(errs, fmt.Errorf("timeout %s: must be positive and at most %s", t, MaxTimeout))
	}
	if strings.ContainsAny(req.Interface, "/ \x00") || len(req.Interface) > 15 {
		errs = append(errs, fmt.Errorf("interface %q: not an interface name", req.Interface))
	}
	if err := errors.Join(errs...); err != nil {
		return Request{}, fmt.Errorf("request on stdin: %w", err)
	}
	return req, nil
}

// Clean makes r fit to be written and read: a known code (else
// CodeInternal), OK exactly when the code is CodeOK, a message of bounded
// length with secret (when not empty) replaced.
func (r Result) Clean(secret string) Result {
	if !knownCodes[r.Code] {
		r.Message = strings.TrimSpace(fmt.Sprintf("unknown result code %q; %s", r.Code, r.Message))
		r.Code = CodeInternal
	}
	r.OK = r.Code == CodeOK
	if r.OK {
		r.Retry = false
	}
	r.Message = cleanText(r.Message, secret, maxMessage)
	r.State = cleanText(r.State, secret, 32)
	r.PreviousState = cleanText(r.PreviousState, secret, 32)
	r.RequestID = cleanText(r.RequestID, secret, 128)
	return r
}

// cleanText is s as one valid UTF-8 line of at most n bytes, secret
// replaced.
func cleanText(s, secret string, n int) string {
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "(secret)")
	}
	s = strings.ToValidUTF8(s, "?")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + " …"
	}
	return s
}

// programDirs are the directories FindProgram looks in, in order.
var programDirs = child.Dirs

// FindProgram returns the jump start program's path: ProgramName next to
// this process's executable, else in ProgramDir. The error names every
// path tried and why each would not do.
func FindProgram() (string, error) { return findProgram(programDirs()) }

func findProgram(dirs []string) (string, error) {
	return child.Find("jump start program", ProgramName, dirs)
}

// Starter runs the jump start program, one call per Call. The zero value
// finds the program with FindProgram at each call and logs nowhere.
type Starter struct {
	// Program is the program's path. Empty: FindProgram's.
	Program string
	// Log gets the program's log lines (at most maxLogLines a call) and
	// the Starter's own. nil: discarded.
	Log *slog.Logger

	// stopGrace: past the request's timeout, the program is told to stop
	// (SIGTERM); killGrace later it is killed. Zero: the defaults.
	stopGrace, killGrace time.Duration
}

const (
	defaultStopGrace = 5 * time.Second
	defaultKillGrace = 5 * time.Second
	maxLogLines      = 32
	maxLogLine       = 2 << 10
)

// Call runs the program with req (V and a zero Timeout are filled in:
// DefaultCallTimeout, or less when ctx ends sooner) and returns its
// Result. It returns within the request's timeout plus the stop and kill
// graces, or soon after ctx ends (the program is told to stop, then
// killed). It never fails without a Result: see Result.Code.
func (s *Starter) Call(ctx context.Context, req Request) Result {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	req.V = ProgramProtocol
	if req.Timeout <= 0 {
		req.Timeout = Duration(DefaultCallTimeout)
	}
	if d, ok := ctx.Deadline(); ok {
		req.Timeout = Duration(max(min(time.Duration(req.Timeout), time.Until(d)), time.Millisecond))
	}
	if req.LogLevel == 0 {
		req.LogLevel = child.LowestLevel(ctx, log)
	}
	path := s.Program
	if path == "" {
		p, err := FindProgram()
		if err != nil {
			return Result{Code: CodeInternal, Message: err.Error()}.Clean(req.SecretAccessKey)
		}
		path = p
	}
	in, err := json.Marshal(req)
	if err != nil {
		return Result{Code: CodeInternal, Message: fmt.Sprintf("jump start request: %v", err)}
	}
	stopGrace, killGrace := s.stopGrace, s.killGrace
	if stopGrace <= 0 {
		stopGrace = defaultStopGrace
	}
	if killGrace <= 0 {
		killGrace = defaultKillGrace
	}
	timeout := time.Duration(req.Timeout)
	rctx, cancel := context.WithTimeout(ctx, timeout+stopGrace)
	defer cancel()
	stdout := &child.CappedBuffer{Max: maxResult}
	stderr := &child.Log{Ctx: ctx, Logger: log, Label: "jump start program", MaxLines: maxLogLines, MaxLine: maxLogLine,
		Clean: func(line string) string { return cleanText(line, req.SecretAccessKey, maxLogLine) }}
	cmd := exec.CommandContext(rctx, path)
	cmd.Env = programEnv(os.Environ())
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = killGrace // then SIGKILL, and the pipes are closed
	start := time.Now()
	err = cmd.Run()
	stderr.Flush()
	res := s.result(ctx, rctx, path, timeout, time.Since(start), cmd, err, stdout, stderr)
	return res.Clean(req.SecretAccessKey)
}

// result is the Result of one run of the program.
func (s *Starter) result(ctx, rctx context.Context, path string, timeout, took time.Duration, cmd *exec.Cmd, err error, stdout *child.CappedBuffer, stderr *child.Log) Result {
	hint := ""
	if h := stderr.Problem(); h != "" {
		hint = ": " + h
	}
	if cmd.Process == nil {
		retry := !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrPermission)
		return Result{Code: CodeInternal, Retry: retry, Message: fmt.Sprintf("jump start program %s could not be started: %v", path, err)}
	}
	if err == nil && !stdout.Over() {
		if r, ok := decodeResult(stdout.Bytes()); ok {
			return r // even when ctx ended meanwhile: the call was made
		}
	}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return Result{Code: CodeTimeout, Retry: true, Message: fmt.Sprintf("jump start program %s stopped at the caller's deadline, after %s%s", path, took.Round(100*time.Millisecond), hint)}
	case ctx.Err() != nil:
		return Result{Code: CodeInternal, Retry: true, Message: fmt.Sprintf("jump start program %s stopped: %v", path, ctx.Err())}
	case rctx.Err() != nil:
		return Result{Code: CodeTimeout, Retry: true, Message: fmt.Sprintf("jump start program %s gave no result within %s (its deadline was %s)%s", path, took.Round(100*time.Millisecond), timeout, hint)}
	case errors.As(err, &exit) && exit.ExitCode() == ExitUsage:
		return Result{Code: CodeInternal, Message: fmt.Sprintf("jump start program %s refused the request%s", path, hint)}
	case err != nil:
		return Result{Code: CodeInternal, Retry: true, Message: fmt.Sprintf("jump start program %s failed (%v)%s", path, err, hint)}
	case stdout.Over():
		return Result{Code: CodeInternal, Retry: true, Message: fmt.Sprintf("jump start program %s wrote more than %d bytes: not a result%s", path, maxResult, hint)}
	case len(bytes.TrimSpace(stdout.Bytes())) == 0:
		return Result{Code: CodeInternal, Retry: true, Message: fmt.Sprintf("jump start program %s wrote no result%s", path, hint)}
	}
	return Result{Code: CodeInternal, Retry: true, Message: fmt.Sprintf("jump start program %s wrote no valid result%s", path, hint)}
}

// decodeResult reads the program's output: exactly one Result.
func decodeResult(out []byte) (Result, bool) {
	var r Result
	d := json.NewDecoder(bytes.NewReader(bytes.TrimSpace(out)))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil || d.More() || r.Code == "" {
		return Result{}, false
	}
	return r, true
}

// programEnv keeps of the agent's environment only what the program may
// use: the search path, locale and time zone, proxies and CA files. The
// agent's own variables (LIFELINE_OUTAGE_SECRET_ACCESS_KEY among them),
// AWS_* (which would not be read, but need not be there) and systemd's
// are left out.
func programEnv(env []string) []string {
	return child.Env(env, func(k string) bool { return programEnvKeep[k] })
}

// programEnvKeep are the variables programEnv keeps.
var programEnvKeep = map[string]bool{"PATH": true, "TZ": true, "LANG": true, "LC_ALL": true, "GODEBUG": true,
	"HTTPS_PROXY": true, "https_proxy": true, "HTTP_PROXY": true, "http_proxy": true, "NO_PROXY": true, "no_proxy": true,
	"SSL_CERT_FILE": true, "SSL_CERT_DIR": true}
