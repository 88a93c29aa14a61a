package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/alert"
	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/internal/clocktest"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
	"github.com/lifeline-dev/lifeline/shared/wire"
)

func sendRole(t *testing.T, c *ssh.Client, reporter bool) bool {
	t.Helper()
	ok, reply, err := c.SendRequest(wire.SiteRoleRequest, true, wire.SiteRole{Reporter: reporter}.Marshal())
	if err != nil {
		t.Fatalf("site role: %v", err)
	}
	if len(reply) != 0 {
		t.Errorf("site role reply payload %q, want none", reply)
	}
	return ok
}

func (r *recorder) count(kind string, match func(audit.Event) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == kind && (match == nil || match(e)) {
			n++
		}
	}
	return n
}

func (w *world) onlineStatus(target string) TargetStatus {
	w.t.Helper()
	for _, ts := range w.srv.Snapshot(nil).Targets {
		if ts.Target == target {
			return ts
		}
	}
	w.t.Fatalf("%s not online", target)
	return TargetStatus{}
}

// The site role: taken from agent keys only, answered with an empty
// success, kept by key across reconnects, audited when it changes, passed
// to Events and shown in status; a malformed one is refused.
func TestSiteRole(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	agent := w.mustDial(w.agent)
	if !sendRole(t, agent, false) {
		t.Fatal("site role refused")
	}
	if ok, _ := register(agent, "pi", 22); !ok {
		t.Fatal("register pi:22")
	}
	if w.onlineStatus("pi:22").Reporter {
		t.Error("status shows the agent as reporting here after it said not")
	}
	if w.rec.alertsWith("role site-agent reporter=false") != 1 {
		t.Errorf("role not passed to Events:\n%s", w.rec.dump())
	}
	sendRole(t, agent, false) // the same word: not audited again
	roleEvents := func(reason string) int {
		return w.rec.count(audit.KindSiteRole, func(e audit.Event) bool { return e.Reason == reason && e.Key == "site-agent" })
	}
	if n := roleEvents("not reporter"); n != 1 {
		t.Errorf("%d site_role audit events, want 1:\n%s", n, w.rec.dump())
	}
	// Malformed: refused, nothing changes.
	if ok, _, _ := agent.SendRequest(wire.SiteRoleRequest, true, []byte{1, 2}); ok {
		t.Error("malformed site role accepted")
	}
	if ok, _, _ := agent.SendRequest(wire.SiteRoleRequest, true, nil); ok {
		t.Error("empty site role accepted")
	}
	if w.onlineStatus("pi:22").Reporter {
		t.Error("a malformed request changed the role")
	}
	// An operator is refused.
	op := w.mustDial(w.operator)
	if ok, _, _ := op.SendRequest(wire.SiteRoleRequest, true, wire.SiteRole{Reporter: true}.Marshal()); ok {
		t.Error("operator site role accepted")
	}
	if !w.rec.has(audit.KindRefused, "site roles come from agents only") {
		t.Errorf("operator's site role not refused in the audit log:\n%s", w.rec.dump())
	}
	// The role outlives the connection: offline, and on the next one until
	// the agent says otherwise.
	agent.Close()
	sshtest.Eventually(t, 10*time.Second, func() bool { return len(w.srv.Snapshot(nil).Targets) == 0 }, "agent never left")
	for _, o := range w.srv.Snapshot(nil).Offline {
		if want := o.Agent != "site-agent"; o.Reporter != want {
			t.Errorf("offline %s (%s): reporter %v, want %v", o.Target, o.Agent, o.Reporter, want)
		}
	}
	again := w.mustDial(w.agent)
	register(again, "pi", 22)
	if w.onlineStatus("pi:22").Reporter {
		t.Error("the role did not survive the reconnect")
	}
	sendRole(t, again, true)
	if !w.onlineStatus("pi:22").Reporter || roleEvents("reporter") != 1 {
		t.Errorf("role true not taken or not audited:\n%s", w.rec.dump())
	}
	// Text and JSON status show it.
	sendRole(t, again, false)
	text := statusOf(t, op, "")
	if !strings.Contains(text, "site events texted by another bastion") {
		t.Errorf("status text does not show the role:\n%s", text)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(statusOf(t, op, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	targets, _ := st["targets"].([]any)
	if len(targets) != 1 || targets[0].(map[string]any)["reporter"] != false {
		t.Errorf("status --json targets %v, want reporter false", targets)
	}
}

func encode(t *testing.T, r report.LinkReport) []byte {
	t.Helper()
	b, err := report.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Main-link reports are taken (version 2), kept apart from the backup
// link's and shown in status; they never change the backup link's state,
// which an older agent's version 1 report still drives. A version 1 report
// about the main link is refused.
func TestMainLinkReports(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{limits: Limits{ReportEvery: time.Millisecond}})
	agent := w.mustDial(w.agent)
	send := func(payload []byte) bool {
		t.Helper()
		ok, _, err := agent.SendRequest(report.RequestType, true, payload)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	since := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Minute)
	down := report.LinkReport{Link: report.LinkMain, Time: since.Add(3 * time.Minute), Since: since, Verdict: report.VerdictFailed,
		Reasons: []string{"dns://192.168.1.1:53: DNS answer SERVFAIL", "tcp://192.0.2.80:443: no answer within 3s"},
		Codes:   []string{report.CodeMainDNSServfail, report.CodeMainUnreachable}}
	// Before any name: the names are the key's permitlisten ones.
	if !send(encode(t, down)) {
		t.Fatal("main-link report refused")
	}
	if w.rec.alertsWith("main site-agent failed [pi:22 nuc:3389]") != 1 {
		t.Errorf("main report not passed to Events with the key's names:\n%s", w.rec.dump())
	}
	register(agent, "pi", 22)
	// An older agent's backup-link report, as it wrote it: no link, no codes.
	old := `{"v":1,"time":"2026-11-22T10:00:00Z","isp":"T-Mobile","ip":"203.0.113.1","server":"fake","latency_ms":420,"jitter_ms":3,"download_bps":2500000,"bytes":31457280,"verdict":"failed","reasons":["high latency 420ms, maximum 100ms"],"duration_s":12}`
	if !send([]byte(old)) {
		t.Fatal("an older agent's report refused")
	}
	if w.rec.alertsWith("report site-agent failed prev=") != 1 {
		t.Errorf("the older agent's report not judged as the first backup report:\n%s", w.rec.dump())
	}
	if !send(encode(t, down)) {
		t.Fatal("main-link report refused")
	}
	ts := w.onlineStatus("pi:22")
	if ts.Link == nil || ts.Link.ISP != "T-Mobile" || ts.Link.Verdict != report.VerdictFailed || ts.Link.LinkKind() != report.LinkBackup {
		t.Errorf("backup link in status %+v", ts.Link)
	}
	if ts.MainLink == nil || ts.MainLink.Verdict != report.VerdictFailed || !ts.MainLink.Since.Equal(since) {
		t.Errorf("main link in status %+v", ts.MainLink)
	}
	// The next backup report is judged against the backup one, not the main.
	ok := report.LinkReport{Time: time.Now(), ISP: "T-Mobile", DownloadBps: 40e6, LatencyMS: 40, Verdict: report.VerdictOK}
	if !send(encode(t, ok)) {
		t.Fatal("backup report refused")
	}
	if w.rec.alertsWith("report site-agent ok prev=failed") != 1 {
		t.Errorf("the backup verdict was not judged against the previous backup report:\n%s", w.rec.dump())
	}
	if ts := w.onlineStatus("pi:22"); ts.MainLink == nil || ts.MainLink.Verdict != report.VerdictFailed || ts.Link.Verdict != report.VerdictOK {
		t.Errorf("a backup report changed the main link: %+v / %+v", ts.Link, ts.MainLink)
	}
	op := w.mustDial(w.operator)
	text := statusOf(t, op, "")
	if want := "site events texted here; main internet: down since " + since.Format("15:04Z") + " (main_dns_servfail, main_unreachable)"; !strings.Contains(text, want) {
		t.Errorf("status text lacks %q:\n%s", want, text)
	}
	// A version 1 report about the main link is refused: it changes nothing.
	v1main := `{"v":1,"time":"2026-11-22T10:00:00Z","verdict":"ok","link":"main"}`
	if send([]byte(v1main)) {
		t.Error("a version 1 main-link report was accepted")
	}
	if !w.rec.has(audit.KindRefused, "version 1 is not supported for the main link") {
		t.Errorf("refusal not audited:\n%s", w.rec.dump())
	}
	// Back.
	up := report.LinkReport{Link: report.LinkMain, Time: since.Add(5 * time.Minute), Since: since, Verdict: report.VerdictOK}
	if !send(encode(t, up)) {
		t.Fatal("main-link up report refused")
	}
	if ts := w.onlineStatus("pi:22"); ts.MainLink == nil || !ts.MainLink.OK() || ts.Link.Verdict != report.VerdictOK {
		t.Errorf("after the main link came back: %+v / %+v", ts.Link, ts.MainLink)
	}
	text = statusOf(t, op, "")
	if !strings.Contains(text, "main internet: up (back at "+since.Add(5*time.Minute).Format("15:04Z")+" after 5m down)") {
		t.Errorf("status text:\n%s", text)
	}
	var st struct {
		Targets []struct {
			MainLink *report.LinkReport `json:"main_link"`
			Link     *report.LinkReport `json:"link"`
			Reporter *bool              `json:"reporter"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(statusOf(t, op, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Targets) != 1 || st.Targets[0].MainLink == nil || st.Targets[0].MainLink.Link != report.LinkMain ||
		st.Targets[0].Link == nil || st.Targets[0].Reporter == nil || !*st.Targets[0].Reporter {
		t.Errorf("status --json: %+v", st)
	}
	if n := w.rec.alertsWith("main site-agent"); n != 3 {
		t.Errorf("%d main reports passed to Events, want 3:\n%s", n, w.rec.dump())
	}
}

// alertEvents wires the server to a real Alerter, as bastion/daemon does.
type alertEvents struct{ a *alert.Alerter }

func alertAgent(id *authz.Identity, names []string) alert.Agent {
	return alert.Agent{Name: id.Name, Fingerprint: id.Fingerprint, Names: names}
}

func (e alertEvents) OperatorLogin(id *authz.Identity, user string, src netip.AddrPort) {
	e.a.Login(alert.Login{Operator: id.Name, Fingerprint: id.Fingerprint, User: user, Source: src})
}
func (e alertEvents) AuthFailed(src netip.Addr, user string) { e.a.AuthFailed(src, user) }
func (e alertEvents) AgentUp(id *authz.Identity, names []string) {
	e.a.AgentUp(alertAgent(id, names))
}
func (e alertEvents) AgentDown(id *authz.Identity, names []string) {
	e.a.AgentDown(alertAgent(id, names))
}
func (e alertEvents) LinkReport(id *authz.Identity, names []string, prev, r report.LinkReport) {
	e.a.LinkReport(alertAgent(id, names), prev, r)
}
func (e alertEvents) MainLink(id *authz.Identity, names []string, r report.LinkReport) {
	e.a.MainLink(alertAgent(id, names), r)
}
func (e alertEvents) SiteRole(id *authz.Identity, reporter bool) {
	e.a.SiteRole(alertAgent(id, nil), reporter)
}
func (e alertEvents) NameMoved(target string, to, from *authz.Identity, takeover bool) {
	e.a.NameMoved(target, alertAgent(to, nil), alertAgent(from, nil), takeover)
}

// texts is a hand-written alert.Sender that keeps the texts.
type texts struct {
	mu  sync.Mutex
	all []string
}

func (*texts) Name() string { return "texts" }
func (s *texts) Send(ctx context.Context, m alert.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, m.Text)
	return nil
}
func (s *texts) with(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.all {
		if strings.Contains(t, sub) {
			n++
		}
	}
	return n
}

// alertWorld is a world whose events go to a real Alerter on a fake clock.
func alertWorld(t *testing.T) (*world, *alert.Alerter, *clocktest.Fake, *recorder, *texts) {
	t.Helper()
	clk := clocktest.New(time.Date(2026, 11, 22, 14, 0, 0, 0, time.UTC))
	sent := &texts{}
	rec := &recorder{}
	a, err := alert.New(alert.Config{Dir: t.TempDir(), Sender: sent, Clock: clk, Log: slog.New(slog.DiscardHandler), Audit: rec, BastionName: "test-bastion"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	w := newWorld(t, worldOpts{limits: Limits{ReportEvery: time.Millisecond}, events: alertEvents{a}})
	return w, a, clk, rec, sent
}

// Over SSH, end to end: the role an agent sent decides whether its site's
// down is texted (role true, false, never sent), the last word outlives a
// reconnect, and a main-link down is texted once however often it is
// resent, with the exact text.
func TestSiteRoleTexts(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		role *bool
		text bool
	}{
		"reporter":     {ptr(true), true},
		"not reporter": {ptr(false), false},
		"never said":   {nil, true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w, a, clk, alerts, sent := alertWorld(t)
			agent := w.mustDial(w.agent)
			if tc.role != nil && !sendRole(t, agent, *tc.role) {
				t.Fatal("site role refused")
			}
			register(agent, "pi", 22)
			since := clk.Now().Add(-3 * time.Minute)
			down := report.LinkReport{Link: report.LinkMain, Time: clk.Now(), Since: since, Verdict: report.VerdictFailed,
				Reasons: []string{"tcp://192.0.2.80:443: no answer within 3s"}, Codes: []string{report.CodeMainUnreachable}}
			for range 2 { // the second one as an agent resends it
				if ok, _, _ := agent.SendRequest(report.RequestType, true, encode(t, down)); !ok {
					t.Fatal("main report refused")
				}
			}
			agent.Close()
			sshtest.Eventually(t, 10*time.Second, func() bool { return w.rec.has(audit.KindDisconnect, "site-agent") }, "the agent never left")
			clk.Advance(alert.DefaultDownAfter)
			sshtest.Eventually(t, 10*time.Second, func() bool {
				return alerts.has(audit.KindAlert, "SITE DOWN") && a.Status().Pending == 0
			}, "the site's down never decided")
			// The agent comes back, saying nothing this time: its last word stands.
			again := w.mustDial(w.agent)
			register(again, "pi", 22)
			a.Login(alert.Login{Operator: "barrier"})
			sshtest.Eventually(t, 10*time.Second, func() bool { return sent.with("barrier") == 1 && a.Status().Pending == 0 }, "the barrier")
			want := 0
			if tc.text {
				want = 1
			}
			for _, s := range []string{"site-agent: MAIN INTERNET DOWN since 13:57Z (backup up; ssh -J test-bastion pi)", "SITE DOWN", "site back"} {
				if n := sent.with(s); n != want {
					t.Errorf("%d texts with %q, want %d; texts:\n%s", n, s, want, alerts.dump())
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
