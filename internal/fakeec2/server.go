// Package fakeec2 is a local stand-in for the EC2 Query API, for tests:
// StartInstances and StopInstances on 127.0.0.1, answered as AWS answers
// (XML, AWS's error document and HTTP statuses), each request's Signature
// Version 4 verified against the test's key (a bad one is refused with
// AuthFailure), responses scriptable (errors, delays, a hung server), an
// instance state machine (stopped -> pending -> running), and every call
// recorded. Tests only.
package fakeec2

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// APIVersion is the EC2 API version the fake speaks.
const APIVersion = "2016-11-15"

// Instance states, as EC2 names them, and their codes.
const (
	Pending      = "pending"
	Running      = "running"
	ShuttingDown = "shutting-down"
	Terminated   = "terminated"
	Stopping     = "stopping"
	Stopped      = "stopped"
)

var stateCodes = map[string]int{Pending: 0, Running: 16, ShuttingDown: 32, Terminated: 48, Stopping: 64, Stopped: 80}

// Response is a scripted answer to one call, in place of the state
// machine's.
type Response struct {
	// Code and Message: an AWS error (e.g. "InsufficientInstanceCapacity").
	// Empty Code: the state machine answers (after Delay).
	Code, Message string
	// Status is the HTTP status; 0: AWS's for Code (StatusFor).
	Status int
	// Delay holds the answer back this long (or until the client gives up).
	Delay time.Duration
	// Hang never answers: the handler waits until the client gives up or
	// the server closes.
	Hang bool
}

// Call is one request the fake received.
type Call struct {
	At     time.Time
	Action string
	// InstanceIDs are InstanceId.1, InstanceId.2, ... in order.
	InstanceIDs []string
	// AccessKeyID is the key the request's credential named.
	AccessKeyID string
	// SignatureOK: the signature verified against the fake's key.
	SignatureOK bool
	// Answer is the error code answered, "" for a success.
	Answer string
	// Form is the whole request body, decoded.
	Form url.Values
	// UserAgent is the client's.
	UserAgent string
}

// Server is the fake. Make it with New.
type Server struct {
	key    Key
	srv    *httptest.Server
	closed chan struct{}

	mu        sync.Mutex
	instances map[string]string
	scripts   map[string][]Response
	calls     []Call
	seq       int
}

// New starts a fake on 127.0.0.1 that accepts key (key.Region is the
// region it serves) and closes it when the test ends.
func New(t testing.TB, key Key) *Server {
	t.Helper()
	s := &Server{key: key, closed: make(chan struct{}), instances: map[string]string{}, scripts: map[string][]Response{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fakeec2: listen: %v", err)
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Listener.Close()
	s.srv.Listener = l
	s.srv.Start()
	t.Cleanup(s.Close)
	return s
}

// URL is the endpoint: http://127.0.0.1:PORT.
func (s *Server) URL() string { return s.srv.URL }

// Close ends hung handlers and stops the server. It may be called more
// than once.
func (s *Server) Close() {
	s.mu.Lock()
	select {
	case <-s.closed:
		s.mu.Unlock()
		return
	default:
		close(s.closed)
	}
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// AddInstance adds (or sets) an instance in state.
func (s *Server) AddInstance(id, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.instances[id] = state
}

// State is the instance's state ("" when there is no such instance).
func (s *Server) State(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.instances[id]
}

// Settle ends the instance's transition: pending becomes running,
// stopping becomes stopped, shutting-down terminated (the boot or the
// shutdown has finished).
func (s *Server) Settle(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.instances[id] {
	case Pending:
		s.instances[id] = Running
	case Stopping:
		s.instances[id] = Stopped
	case ShuttingDown:
		s.instances[id] = Terminated
	}
}

// Script queues responses for the next calls of action ("StartInstances",
// "StopInstances"), one per call, before the state machine answers again.
// Scripts apply only to calls whose signature verified.
func (s *Server) Script(action string, rs ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[action] = append(s.scripts[action], rs...)
}

// Calls are the requests received so far, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// StatusFor is the HTTP status AWS answers with code.
func StatusFor(code string) int {
	switch {
	case code == "AuthFailure" || code == "MissingAuthenticationToken":
		return http.StatusUnauthorized
	case code == "UnauthorizedOperation" || code == "RequestExpired" || code == "OptInRequired" || code == "Blocked":
		return http.StatusForbidden
	case code == "RequestLimitExceeded" || code == "Unavailable":
		return http.StatusServiceUnavailable
	case code == "InternalError" || strings.HasPrefix(code, "Insufficient"):
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, "", "InternalError", "cannot read the request", 0)
		return
	}
	s.mu.Lock()
	s.seq++
	reqID := fmt.Sprintf("fake-%08d-0000-4000-8000-000000000000", s.seq)
	s.mu.Unlock()
	form, _ := url.ParseQuery(string(body))
	c := Call{At: time.Now(), Action: form.Get("Action"), Form: form, UserAgent: r.UserAgent()}
	for i := 1; ; i++ {
		id := form.Get(fmt.Sprintf("InstanceId.%d", i))
		if id == "" {
			break
		}
		c.InstanceIDs = append(c.InstanceIDs, id)
	}
	keyID, verr := verify(r, body, s.key, time.Now())
	c.AccessKeyID, c.SignatureOK = keyID, verr == nil
	record := func(answer string) {
		c.Answer = answer
		s.mu.Lock()
		s.calls = append(s.calls, c)
		s.mu.Unlock()
	}
	if verr != nil {
		ae := verr.(*authError)
		record(ae.code)
		writeError(w, reqID, ae.code, ae.msg, 0)
		return
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		record("InvalidRequest")
		writeError(w, reqID, "InvalidRequest", "the Query API wants a form POST", 0)
		return
	}
	if v := form.Get("Version"); v != APIVersion {
		record("InvalidParameterValue")
		writeError(w, reqID, "InvalidParameterValue", fmt.Sprintf("Version %q: this fake speaks %s", v, APIVersion), 0)
		return
	}
	if c.Action != "StartInstances" && c.Action != "StopInstances" {
		record("InvalidAction")
		writeError(w, reqID, "InvalidAction", fmt.Sprintf("The action %s is not valid for this web service.", c.Action), 0)
		return
	}
	if len(c.InstanceIDs) == 0 {
		record("MissingParameter")
		writeError(w, reqID, "MissingParameter", "The request must contain the parameter InstanceId", 0)
		return
	}
	s.mu.Lock()
	var sc Response
	if q := s.scripts[c.Action]; len(q) > 0 {
		sc, s.scripts[c.Action] = q[0], q[1:]
	}
	s.mu.Unlock()
	if sc.Hang || sc.Delay > 0 {
		var wait <-chan time.Time
		if !sc.Hang {
			t := time.NewTimer(sc.Delay)
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-wait:
		case <-r.Context().Done():
			record("(client gone)")
			return
		case <-s.closed:
			record("(server closed)")
			return
		}
	}
	if sc.Code != "" {
		record(sc.Code)
		writeError(w, reqID, sc.Code, sc.Message, sc.Status)
		return
	}
	changes, code, msg := s.transition(c.Action, c.InstanceIDs)
	if code != "" {
		record(code)
		writeError(w, reqID, code, msg, 0)
		return
	}
	record("")
	writeChanges(w, reqID, c.Action, changes)
}

type change struct{ id, prev, cur string }

// transition applies action to ids, all or none, as EC2 does.
func (s *Server) transition(action string, ids []string) ([]change, string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []change
	for _, id := range ids {
		if !validID(id) {
			return nil, "InvalidInstanceID.Malformed", fmt.Sprintf("Invalid id: %q", id)
		}
		st, ok := s.instances[id]
		if !ok {
			return nil, "InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", id)
		}
		next := st
		switch {
		case action == "StartInstances" && st == Stopped:
			next = Pending
		case action == "StartInstances" && (st == Pending || st == Running):
		case action == "StopInstances" && (st == Running || st == Pending):
			next = Stopping
		case action == "StopInstances" && (st == Stopping || st == Stopped):
		default:
			return nil, "IncorrectInstanceState", fmt.Sprintf("The instance '%s' is not in a state from which it can be %s.", id,
				map[string]string{"StartInstances": "started", "StopInstances": "stopped"}[action])
		}
		out = append(out, change{id, st, next})
	}
	for _, c := range out {
		s.instances[c.id] = c.cur
	}
	return out, "", ""
}

func validID(id string) bool {
	h, ok := strings.CutPrefix(id, "i-")
	if !ok || (len(h) != 8 && len(h) != 17) {
		return false
	}
	return strings.Trim(h, "0123456789abcdef") == ""
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func writeChanges(w http.ResponseWriter, reqID, action string, changes []change) {
	set := map[string]string{"StartInstances": "instancesSet", "StopInstances": "instancesSet"}[action]
	var b strings.Builder
	fmt.Fprintf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<%sResponse xmlns=\"http://ec2.amazonaws.com/doc/%s/\">\n", action, APIVersion)
	fmt.Fprintf(&b, "    <requestId>%s</requestId>\n    <%s>\n", esc(reqID), set)
	for _, c := range changes {
		fmt.Fprintf(&b, "        <item>\n            <instanceId>%s</instanceId>\n", esc(c.id))
		fmt.Fprintf(&b, "            <currentState>\n                <code>%d</code>\n                <name>%s</name>\n            </currentState>\n", stateCodes[c.cur], c.cur)
		fmt.Fprintf(&b, "            <previousState>\n                <code>%d</code>\n                <name>%s</name>\n            </previousState>\n", stateCodes[c.prev], c.prev)
		b.WriteString("        </item>\n")
	}
	fmt.Fprintf(&b, "    </%s>\n</%sResponse>\n", set, action)
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("X-Amzn-Requestid", reqID)
	_, _ = io.WriteString(w, b.String())
}

func writeError(w http.ResponseWriter, reqID, code, msg string, status int) {
	if status == 0 {
		status = StatusFor(code)
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	if reqID != "" {
		w.Header().Set("X-Amzn-Requestid", reqID)
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>\n",
		esc(code), esc(msg), esc(reqID))
}

// WaitCalls waits until the fake has received n calls or ctx ends, and
// returns the calls.
func (s *Server) WaitCalls(ctx context.Context, n int) []Call {
	for {
		if c := s.Calls(); len(c) >= n || ctx.Err() != nil {
			return c
		}
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}
