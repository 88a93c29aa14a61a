package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/outage"
	"github.com/lifeline-dev/lifeline/internal/fakeec2"
)

const (
	instance = "i-0123456789abcdef0"
	keyID    = "AKIAIOSFODNN7EXAMPLE"
	secret   = "wJalrXUtnFI/K7MDENG/bPxRfiCYEXAMPLEKEYab"
	region   = "eu-west-1"
)

var testKey = fakeec2.Key{AccessKeyID: keyID, SecretAccessKey: secret, Region: region}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
	buildOut  []byte
)

// program is the real lifeline-jumpstart, built once per test run.
func program(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := mkdirTemp()
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, outage.ProgramName)
		buildOut, buildErr = exec.Command("go", "build", "-o", buildPath, ".").CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOut)
	}
	return buildPath
}

func request(endpoint string, change func(*outage.Request)) outage.Request {
	r := outage.Request{V: outage.ProgramProtocol, Action: outage.ActionStart, Region: region, InstanceID: instance,
		AccessKeyID: keyID, SecretAccessKey: secret, Endpoint: endpoint, Timeout: outage.Duration(10 * time.Second)}
	if change != nil {
		change(&r)
	}
	return r
}

type runOut struct {
	res            outage.Result
	exit           int
	stdout, stderr string
	took           time.Duration
}

// runProgram runs the real program with req on stdin and decodes its
// result; it fails the test if the secret shows anywhere in the output.
func runProgram(t *testing.T, req any) runOut {
	t.Helper()
	in, raw := req.([]byte)
	if !raw {
		var err error
		if in, err = json.Marshal(req); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, program(t))
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	o := runOut{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		o.exit = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run: %v", err)
	}
	for name, s := range map[string]string{"stdout": o.stdout, "stderr": o.stderr} {
		if strings.Contains(s, secret) || strings.Contains(s, secret[:20]) {
			t.Errorf("the secret is in the program's %s: %s", name, s)
		}
	}
	if o.exit == 0 {
		d := json.NewDecoder(strings.NewReader(o.stdout))
		d.DisallowUnknownFields()
		if err := d.Decode(&o.res); err != nil || d.More() {
			t.Fatalf("stdout is not one Result (%v): %q", err, o.stdout)
		}
	}
	return o
}

// TestStartAgainstFakeEC2: the real program, the real SDK and the fake
// EC2: the call reaches the fake signed with the key (the fake verifies
// the signature), for the instance, and the result says what EC2 said.
func TestStartAgainstFakeEC2(t *testing.T) {
	t.Parallel()
	f := fakeec2.New(t, testKey)
	f.AddInstance(instance, fakeec2.Stopped)
	o := runProgram(t, request(f.URL(), nil))
	if o.exit != 0 || !o.res.OK || o.res.Code != outage.CodeOK || o.res.State != "pending" || o.res.PreviousState != "stopped" || o.res.Retry {
		t.Fatalf("exit %d, result %+v, want ok pending<-stopped; stderr %s", o.exit, o.res, o.stderr)
	}
	if o.res.RequestID == "" {
		t.Error("no request id in the result")
	}
	calls := f.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want exactly 1", len(calls))
	}
	c := calls[0]
	if !c.SignatureOK || c.AccessKeyID != keyID || c.Action != "StartInstances" || len(c.InstanceIDs) != 1 || c.InstanceIDs[0] != instance {
		t.Errorf("call %+v: want a verified StartInstances of %s by %s", c, instance, keyID)
	}
	if !strings.Contains(c.UserAgent, "lifeline-jumpstart") {
		t.Errorf("user agent %q does not name lifeline-jumpstart", c.UserAgent)
	}
	if got := f.State(instance); got != fakeec2.Pending {
		t.Errorf("instance %s, want pending", got)
	}
	// Again while it boots, then once it runs: still ok, nothing changes.
	if o := runProgram(t, request(f.URL(), nil)); !o.res.OK || o.res.State != "pending" || o.res.PreviousState != "pending" {
		t.Errorf("second start: %+v, want ok pending<-pending", o.res)
	}
	f.Settle(instance)
	if o := runProgram(t, request(f.URL(), nil)); !o.res.OK || o.res.State != "running" || o.res.PreviousState != "running" {
		t.Errorf("start of a running instance: %+v, want ok running<-running", o.res)
	}
	// Stop, which the agent itself never asks for, works the same way.
	o = runProgram(t, request(f.URL(), func(r *outage.Request) { r.Action = outage.ActionStop }))
	if !o.res.OK || o.res.State != "stopping" || o.res.PreviousState != "running" {
		t.Errorf("stop: %+v, want ok stopping<-running", o.res)
	}
}

// TestFailures: each way EC2 refuses becomes its code and retry flag,
// with AWS's code in the message and never the secret.
func TestFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		setup     func(*fakeec2.Server)
		change    func(*outage.Request)
		code      string
		retry     bool
		calls     int    // the fake must have seen exactly this many
		inMessage string // AWS's code, for people
	}{
		{name: "wrong secret", change: func(r *outage.Request) { r.SecretAccessKey = strings.Repeat("Z", 40) },
			code: outage.CodeAuthFailed, calls: 1, inMessage: "AuthFailure"},
		{name: "unknown key", change: func(r *outage.Request) { r.AccessKeyID = "AKIAZZZZZZZZZZZZZZZZ" },
			code: outage.CodeAuthFailed, calls: 1, inMessage: "AuthFailure"},
		{name: "denied", setup: func(f *fakeec2.Server) {
			f.Script("StartInstances", fakeec2.Response{Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation."})
		}, code: outage.CodeDenied, calls: 1, inMessage: "UnauthorizedOperation"},
		{name: "no such instance", change: func(r *outage.Request) { r.InstanceID = "i-0000000000000000f" },
			code: outage.CodeNotFound, calls: 1, inMessage: "InvalidInstanceID.NotFound"},
		{name: "capacity", setup: func(f *fakeec2.Server) {
			c := fakeec2.Response{Code: "InsufficientInstanceCapacity", Message: "We currently do not have sufficient t4g.nano capacity."}
			f.Script("StartInstances", c, c, c)
		}, code: outage.CodeCapacity, retry: true, calls: maxAttempts, inMessage: "InsufficientInstanceCapacity"},
		{name: "capacity once, then started by the SDK's retry", setup: func(f *fakeec2.Server) {
			f.Script("StartInstances", fakeec2.Response{Code: "InsufficientInstanceCapacity", Message: "no capacity"})
		}, code: outage.CodeOK, calls: 2},
		{name: "still stopping", setup: func(f *fakeec2.Server) { f.AddInstance(instance, fakeec2.Stopping) },
			code: outage.CodeWrongState, retry: true, calls: 1, inMessage: "IncorrectInstanceState"},
		{name: "throttled", setup: func(f *fakeec2.Server) {
			th := fakeec2.Response{Code: "RequestLimitExceeded", Message: "Request limit exceeded."}
			f.Script("StartInstances", th, th, th)
		}, code: outage.CodeThrottled, retry: true, calls: maxAttempts, inMessage: "RequestLimitExceeded"},
		{name: "hung server", setup: func(f *fakeec2.Server) { f.Script("StartInstances", fakeec2.Response{Hang: true}) },
			change: func(r *outage.Request) { r.Timeout = outage.Duration(time.Second) }, code: outage.CodeTimeout, retry: true, calls: 1},
		{name: "message echoing the secret", setup: func(f *fakeec2.Server) {
			f.Script("StartInstances", fakeec2.Response{Code: "UnauthorizedOperation", Message: "odd: " + secret})
		}, code: outage.CodeDenied, calls: 1, inMessage: "(secret)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := fakeec2.New(t, testKey)
			f.AddInstance(instance, fakeec2.Stopped)
			if tc.setup != nil {
				tc.setup(f)
			}
			o := runProgram(t, request(f.URL(), tc.change))
			if o.exit != 0 || o.res.Code != tc.code || o.res.Retry != tc.retry || o.res.OK != (tc.code == outage.CodeOK) {
				t.Fatalf("exit %d, result %+v, want code %s retry %v; stderr %s", o.exit, o.res, tc.code, tc.retry, o.stderr)
			}
			if !strings.Contains(o.res.Message, tc.inMessage) {
				t.Errorf("message %q does not say %q", o.res.Message, tc.inMessage)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if calls := f.WaitCalls(ctx, tc.calls); len(calls) != tc.calls {
				t.Errorf("%d calls, want %d: %+v", len(calls), tc.calls, calls)
			}
			if tc.code == outage.CodeTimeout && o.took > 5*time.Second {
				t.Errorf("a hung server took %s with a 1s deadline", o.took)
			}
		})
	}
}

// TestNetworkDown: nothing listens at the endpoint: network, retry.
func TestNetworkDown(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	o := runProgram(t, request("http://"+addr, nil))
	if o.res.Code != outage.CodeNetwork || !o.res.Retry {
		t.Errorf("result %+v, want network, retry", o.res)
	}
}

// TestBadRequests: a malformed request is exit 2, no result, a reason on
// stderr, and never the secret (even one of the wrong shape).
func TestBadRequests(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		req  any
		want string
	}{
		{"empty", nil, "no request"},
		{"not JSON", json.RawMessage(`"` + secret + `"`), "request on stdin"},
		{"unknown field", map[string]any{"v": 1, "secret": secret}, "unknown field"},
		{"old version", request("", func(r *outage.Request) { r.V = 9 }), "version 9"},
		{"bad action", request("", func(r *outage.Request) { r.Action = "reboot" }), `action "reboot"`},
		{"bad instance", request("", func(r *outage.Request) { r.InstanceID = "i-xyz" }), "instance_id"},
		{"bad region", request("", func(r *outage.Request) { r.Region = "Europe" }), "region"},
		{"short secret", request("", func(r *outage.Request) { r.SecretAccessKey = secret[:39] }), "39 characters"},
		{"plain http off loopback", request("http://192.0.2.1", nil), "loopback"},
		{"no timeout", request("", func(r *outage.Request) { r.Timeout = 0 }), "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var o runOut
			if tc.req == nil {
				o = runProgram(t, []byte(" \n"))
			} else {
				o = runProgram(t, tc.req)
			}
			if o.exit != outage.ExitUsage || o.stdout != "" || !strings.Contains(o.stderr, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q: want exit 2, nothing on stdout, %q on stderr", o.exit, o.stdout, o.stderr, tc.want)
			}
		})
	}
}

// TestArgs: --version and --help, and nothing else.
func TestArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		arg  string
		exit int
		want string
	}{{"--version", 0, "lifeline-jumpstart "}, {"--help", 0, "usage: lifeline-jumpstart"}, {secret, 2, "unexpected argument"}} {
		var stdout, stderr bytes.Buffer
		exit := run(context.Background(), []string{tc.arg}, strings.NewReader(""), &stdout, &stderr)
		if exit != tc.exit || !strings.Contains(stdout.String()+stderr.String(), tc.want) {
			t.Errorf("%s: exit %d, output %q, want %d and %q", tc.arg, exit, stdout.String()+stderr.String(), tc.exit, tc.want)
		}
	}
}

// TestAgentLinksNoSDK: lifeline-agent links neither the AWS SDK nor
// agent/cmd/lifeline-jumpstart's code; this program does (so the listing
// is not vacuous). agent/outage, which the agent will import, links
// neither the SDK nor net/http.
func TestAgentLinksNoSDK(t *testing.T) {
	t.Parallel()
	deps := func(pkg string) map[string]bool {
		t.Helper()
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		m := map[string]bool{}
		for _, p := range strings.Fields(string(out)) {
			m[p] = true
		}
		return m
	}
	agent, outagePkg, prog := deps("../lifeline-agent"), deps("../../outage"), deps(".")
	for _, p := range []string{"github.com/aws/aws-sdk-go-v2/service/ec2", "github.com/aws/aws-sdk-go-v2/aws", "github.com/aws/smithy-go"} {
		if agent[p] {
			t.Errorf("lifeline-agent links %s: it belongs in lifeline-jumpstart only", p)
		}
		if outagePkg[p] {
			t.Errorf("agent/outage links %s", p)
		}
		if !prog[p] {
			t.Errorf("lifeline-jumpstart does not link %s: is the call still there?", p)
		}
	}
	for _, p := range []string{"net/http", "crypto/tls"} {
		if outagePkg[p] {
			t.Errorf("agent/outage links %s: the agent must not", p)
		}
	}
}
