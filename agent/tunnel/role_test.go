package tunnel

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/report"
)

func (b *fakeBastion) lastRole() (reporter, told bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.roles) == 0 {
		return false, false
	}
	return b.roles[len(b.roles)-1], true
}

func (b *fakeBastion) conn(name string) interface{ Close() error } {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.names[name]
}

// Two bastions: the first of the list that is connected (and registered)
// is the reporter, the other is told not to text; the role moves to the
// second when the first's connection is lost, and back when it returns.
// The role goes before the names on every connection.
func TestSiteRoleFollowsTheBastionList(t *testing.T) {
	t.Parallel()
	agent := sshtest.NewKey(t, t.TempDir(), "agent").Signer
	a := startFakeBastion(t, agent.PublicKey())
	b := startFakeBastion(t, agent.PublicKey())
	for _, fb := range []*fakeBastion{a, b} {
		fb.siteRoles = true
	}
	echo := echoServer(t)
	cfg := fakeAgentConfig(t, agent, a, b)
	cfg.Forwards = []forward.Forward{{Name: "pi", Port: 22, TargetHost: "127.0.0.1", TargetPort: uint16(echo)}}
	startAgent(t, cfg)

	settled := func(wantA, wantB bool) func() bool {
		return func() bool {
			ra, okA := a.lastRole()
			rb, okB := b.lastRole()
			return okA && okB && ra == wantA && rb == wantB && a.Registered("pi:22") && b.Registered("pi:22")
		}
	}
	sshtest.Eventually(t, 10*time.Second, settled(true, false), "A and B up: A reporter, B not")

	// A's connection killed: B is the reporter.
	old := a.conn("pi:22")
	old.Close()
	sshtest.Eventually(t, 10*time.Second, func() bool {
		rb, _ := b.lastRole()
		return rb
	}, "A lost: B reporter")

	// A back: A reporter again, B not.
	sshtest.Eventually(t, 20*time.Second, func() bool {
		return settled(true, false)() && a.conn("pi:22") != old
	}, "A back: A reporter, B not")

	// On every connection the role came before the first tcpip-forward.
	for name, fb := range map[string]*fakeBastion{"A": a, "B": b} {
		fb.mu.Lock()
		reqs := slices.Clone(fb.requests)
		fb.mu.Unlock()
		role, fwd := slices.Index(reqs, "site-role@lifeline"), slices.Index(reqs, "tcpip-forward")
		if role < 0 || fwd < 0 || role > fwd {
			t.Errorf("%s saw %v: want the site role before tcpip-forward", name, reqs)
		}
	}
	a.mu.Lock()
	if a.sessions < 2 || len(a.roles) < 2 {
		t.Errorf("A: %d sessions, roles %v", a.sessions, a.roles)
	}
	a.mu.Unlock()
}

// A main-link report: every connected bastion gets it; one that refuses
// it (too old) is not sent another on that connection, and is logged
// once; the latest main report reaches a bastion that connects later,
// and an Up that follows a Down replaces it.
func TestMainReportsPublishedAndResent(t *testing.T) {
	t.Parallel()
	agent := sshtest.NewKey(t, t.TempDir(), "agent").Signer
	fresh := startFakeBastion(t, agent.PublicKey())
	old := startFakeBastion(t, agent.PublicKey())
	old.v1Only = true
	echo := echoServer(t)
	cfg := fakeAgentConfig(t, agent, fresh, old)
	cfg.Forwards = []forward.Forward{{Name: "pi", Port: 22, TargetHost: "127.0.0.1", TargetPort: uint16(echo)}}
	log, logs := sshtest.Logger(t)
	cfg.Log = log
	tun, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
	down := report.LinkReport{Link: report.LinkMain, Time: since.Add(5 * time.Minute), Since: since, Verdict: report.VerdictFailed,
		Reasons: []string{"dns://192.0.2.53:53: no answer within 3s"}, Codes: []string{report.CodeMainUnreachable}}
	// Down while no bastion is connected: kept for the first to connect.
	tun.Publish(context.Background(), down)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tun.Run(ctx) }()
	defer func() { cancel(); <-done }()

	mains := func(b *fakeBastion) []report.LinkReport {
		b.mu.Lock()
		defer b.mu.Unlock()
		var out []report.LinkReport
		for _, r := range b.reports {
			if r.Link == report.LinkMain {
				out = append(out, r)
			}
		}
		return out
	}
	sshtest.Eventually(t, 10*time.Second, func() bool {
		m := mains(fresh)
		return len(m) == 1 && !m[0].OK() && m[0].Since.Equal(since)
	}, "the Down of before the connection reaches the bastion that connects")
	sshtest.Eventually(t, 10*time.Second, func() bool { return logs.Contains("bastion too old for main-link reports") }, "the old bastion's refusal logged")

	// A backup report still reaches the old bastion; main ones are no
	// longer sent to it.
	tun.Publish(context.Background(), report.LinkReport{Time: time.Now(), ISP: "Carrier", Verdict: report.VerdictOK})
	up := report.LinkReport{Link: report.LinkMain, Time: since.Add(8 * time.Minute), Since: since, Verdict: report.VerdictOK}
	tun.Publish(context.Background(), up)
	if m := mains(fresh); len(m) != 2 || !m[1].OK() {
		t.Errorf("fresh bastion's main reports: %+v", m)
	}
	old.mu.Lock()
	nReports, nRequests := len(old.reports), 0
	for _, r := range old.requests {
		if r == report.RequestType {
			nRequests++
		}
	}
	old.mu.Unlock()
	if nReports != 1 || nRequests != 2 { // the resent Down (refused), the backup report
		t.Errorf("old bastion: %d reports stored, %d report requests, want 1 and 2", nReports, nRequests)
	}
	if n := strings.Count(logs.String(), "bastion too old for main-link reports"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}

	// A new connection gets the latest main report: the Up, not the Down.
	c := fresh.conn("pi:22")
	c.Close()
	sshtest.Eventually(t, 20*time.Second, func() bool {
		m := mains(fresh)
		return len(m) == 3 && m[2].OK() && fresh.conn("pi:22") != c
	}, "the latest main report (Up) resent on the new connection")
}
