package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/lifeline-dev/lifeline/agent/outage"
	"github.com/lifeline-dev/lifeline/shared/netbind"
	"github.com/lifeline-dev/lifeline/shared/version"
)

const usage = "usage: " + outage.ProgramName + " [--version | --help]\n\n" +
	outage.ProgramName + " makes one EC2 API call for lifeline-agent's outage mode: StartInstances\n" +
	"(or StopInstances) on the jump host's instance, with aws-sdk-go-v2, so that the agent never\n" +
	"loads the AWS SDK. The agent runs it when the main link is down and no bastion answers.\n" +
	"It reads one JSON request on stdin (the key's secret travels only there), writes one JSON\n" +
	"result on stdout {ok, state, previous_state, code, message, retry, request_id} and logs\n" +
	"JSON lines on stderr. Codes: ok, auth_failed, denied, not_found, capacity, wrong_state,\n" +
	"throttled, network, timeout, internal; retry says whether calling later can help.\n" +
	"SIGTERM ends the call early. Exit status: 0 result written, 2 usage or request error.\n"

// maxAttempts is the SDK's attempts per call: one retry for a blip; the
// agent's backoff does the rest. maxBackoff bounds the SDK's wait between.
const (
	maxAttempts = 2
	maxBackoff  = 2 * time.Second
	dialTimeout = 15 * time.Second
)

// run is the program: see usage.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "-v", "--version", "version":
			fmt.Fprintln(stdout, outage.ProgramName, version.Version)
			return outage.ExitOK
		case "-h", "--help", "help":
			fmt.Fprint(stdout, usage)
			return outage.ExitOK
		}
		fmt.Fprintf(stderr, "%s: unexpected argument %q: it is run by lifeline-agent (try --help)\n", outage.ProgramName, args[0])
		return outage.ExitUsage
	}
	req, err := outage.ReadRequest(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", outage.ProgramName, err)
		return outage.ExitUsage
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: req.LogLevel}))
	res := call(ctx, req, log).Clean(req.SecretAccessKey)
	log.Debug("call done", "action", req.Action, "instance", req.InstanceID, "code", res.Code, "retry", res.Retry)
	b, err := json.Marshal(res)
	if err != nil {
		log.Error("cannot write the result", "err", err)
		return 1
	}
	if _, err := stdout.Write(append(b, '\n')); err != nil {
		log.Error("cannot write the result", "err", err)
		return 1
	}
	return outage.ExitOK
}

// call makes req's call within its timeout.
func call(ctx context.Context, req outage.Request, log *slog.Logger) outage.Result {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(req.Timeout))
	defer cancel()
	transport := newTransport(req.Interface)
	defer transport.CloseIdleConnections()
	opts := ec2.Options{
		Region:      req.Region,
		Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(req.AccessKeyID, req.SecretAccessKey, req.SessionToken)),
		HTTPClient:  &http.Client{Transport: transport},
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = maxAttempts
			o.MaxBackoff = maxBackoff
		}),
		Logger: logging.Nop{},
		AppID:  "lifeline-jumpstart_" + strings.ReplaceAll(version.Version, " ", "_"),
	}
	if req.Endpoint != "" {
		opts.BaseEndpoint = aws.String(req.Endpoint)
	}
	client := ec2.New(opts)
	ids := []string{req.InstanceID}
	log.Debug("calling EC2", "action", req.Action, "instance", req.InstanceID, "region", req.Region, "endpoint", req.Endpoint)
	var changes []types.InstanceStateChange
	var err error
	var meta middleware.Metadata
	switch req.Action {
	case outage.ActionStart:
		var out *ec2.StartInstancesOutput
		out, err = client.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: ids})
		if err == nil {
			changes, meta = out.StartingInstances, out.ResultMetadata
		}
	case outage.ActionStop:
		var out *ec2.StopInstancesOutput
		out, err = client.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: ids})
		if err == nil {
			changes, meta = out.StoppingInstances, out.ResultMetadata
		}
	}
	if err != nil {
		res := classify(ctx, err)
		log.Warn("EC2 call failed", "action", req.Action, "instance", req.InstanceID, "code", res.Code, "err", outage.Result{Message: err.Error()}.Clean(req.SecretAccessKey).Message)
		return res
	}
	reqID, _ := awsmiddleware.GetRequestIDMetadata(meta)
	for _, c := range changes {
		if aws.ToString(c.InstanceId) != req.InstanceID {
			continue
		}
		res := outage.Result{Code: outage.CodeOK, State: stateName(c.CurrentState), PreviousState: stateName(c.PreviousState), RequestID: reqID}
		res.Message = fmt.Sprintf("%s %s: %s -> %s", req.Action, req.InstanceID, res.PreviousState, res.State)
		return res
	}
	return outage.Result{Code: outage.CodeInternal, Retry: true, RequestID: reqID,
		Message: fmt.Sprintf("EC2 accepted the %s call but its answer does not mention %s", req.Action, req.InstanceID)}
}

func stateName(s *types.InstanceState) string {
	if s == nil {
		return ""
	}
	return string(s.Name)
}

// newTransport is an HTTP transport whose sockets (DNS included) are
// bound to iface when it is set, with proxies from the environment.
func newTransport(iface string) *http.Transport {
	control := netbind.Control(iface, 0)
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, Control: control}
	if iface != "" {
		d.Resolver = &net.Resolver{PreferGo: true, Dial: (&net.Dialer{Timeout: dialTimeout, Control: control}).DialContext}
	}
	return &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         d.DialContext,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: dialTimeout,
		MaxIdleConns:        2,
		IdleConnTimeout:     30 * time.Second,
	}
}

// classify is the Result of a failed call.
func classify(ctx context.Context, err error) outage.Result {
	reqID := ""
	var re *awshttp.ResponseError
	status := 0
	if errors.As(err, &re) {
		reqID = re.ServiceRequestID()
		status = re.HTTPStatusCode()
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code, msg := ae.ErrorCode(), ae.ErrorMessage()
		res := outage.Result{Code: outage.CodeInternal, Retry: true, RequestID: reqID, Message: fmt.Sprintf("EC2 %s: %s", code, msg)}
		switch {
		case code == "AuthFailure" || code == "InvalidClientTokenId" || code == "SignatureDoesNotMatch" ||
			code == "UnrecognizedClientException" || code == "InvalidAccessKeyId" || code == "IncompleteSignature" ||
			code == "MissingAuthenticationToken" || code == "OptInRequired" || code == "PendingVerification" || code == "Blocked":
			res.Code, res.Retry = outage.CodeAuthFailed, false
			res.Message += " (check LIFELINE_OUTAGE_ACCESS_KEY_ID and LIFELINE_OUTAGE_SECRET_ACCESS_KEY, and that the key is active)"
		case code == "UnauthorizedOperation" || code == "AccessDenied" || code == "AccessDeniedException":
			res.Code, res.Retry = outage.CodeDenied, false
			res.Message += " (the key's IAM policy must allow ec2:StartInstances on this instance, and kms:CreateGrant if its volumes are encrypted with a customer key)"
		case strings.HasPrefix(code, "InvalidInstanceID"):
			res.Code, res.Retry = outage.CodeNotFound, false
			res.Message += " (check LIFELINE_OUTAGE_INSTANCE and LIFELINE_OUTAGE_REGION)"
		case strings.HasPrefix(code, "Insufficient") && strings.HasSuffix(code, "Capacity"):
			res.Code = outage.CodeCapacity
		case code == "IncorrectInstanceState" || code == "IncorrectState":
			res.Code = outage.CodeWrongState
		case code == "RequestLimitExceeded" || code == "Throttling" || code == "ThrottlingException" || code == "RequestThrottled":
			res.Code = outage.CodeThrottled
		case code == "RequestExpired" || code == "RequestTimeTooSkewed":
			res.Message += " (is this machine's clock right?)"
		}
		return res
	}
	var se *smithyhttp.RequestSendError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return outage.Result{Code: outage.CodeTimeout, Retry: true, RequestID: reqID, Message: "no answer from EC2 within the deadline: " + err.Error()}
	case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		return outage.Result{Code: outage.CodeTimeout, Retry: true, RequestID: reqID, Message: "call stopped before EC2 answered: " + err.Error()}
	case errors.As(err, &se):
		return outage.Result{Code: outage.CodeNetwork, Retry: true, Message: "EC2 API not reachable: " + err.Error()}
	}
	return outage.Result{Code: outage.CodeInternal, Retry: true, RequestID: reqID, Message: fmt.Sprintf("EC2 call failed (HTTP %d): %v", status, err)}
}
