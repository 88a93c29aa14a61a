package server

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// Status is what `ssh bastion status --json` prints.
type Status struct {
	Bastion   string         `json:"bastion"`
	Time      time.Time      `json:"time"`
	Targets   []TargetStatus `json:"targets"`
	Operators int            `json:"operators_connected"`
	Alerts    any            `json:"alerts,omitempty"`
}

// TargetStatus describes one registered name.
type TargetStatus struct {
	Target          string             `json:"target"`
	Agent           string             `json:"agent"`
	Fingerprint     string             `json:"fingerprint"`
	Address         string             `json:"address"`
	ConnectedSince  time.Time          `json:"connected_since"`
	RegisteredSince time.Time          `json:"registered_since"`
	KeepaliveRTTms  *float64           `json:"keepalive_rtt_ms,omitempty"`
	LastKeepalive   *time.Time         `json:"last_keepalive,omitempty"`
	Link            *report.LinkReport `json:"link,omitempty"`
}

// Snapshot returns the status as seen by viewer: an operator restricted by
// permitopen sees only the targets it may open. nil viewer sees everything.
func (s *Server) Snapshot(viewer *authz.Identity) Status {
	st := Status{Bastion: s.cfg.Name, Time: s.cfg.Now().UTC(), Targets: []TargetStatus{}}
	s.mu.Lock()
	reports := make(map[string]report.LinkReport, len(s.reports))
	for k, v := range s.reports {
		reports[k] = v
	}
	for sess := range s.sessions {
		if !sess.isAgent() {
			st.Operators++
		}
	}
	s.mu.Unlock()
	for _, b := range s.reg.Snapshot() {
		t := authz.Target{Host: b.Name, Port: b.Port}
		if viewer != nil && !viewer.MayOpen(t) {
			continue
		}
		a := b.Session
		aid := a.identity()
		ts := TargetStatus{
			Target: b.Target(), Agent: aid.Name, Fingerprint: aid.Fingerprint,
			Address: a.remote.String(), ConnectedSince: a.start.UTC(), RegisteredSince: b.Since.UTC(),
		}
		if n := a.rttNanos.Load(); n > 0 {
			ms := float64(n) / 1e6
			ts.KeepaliveRTTms = &ms
		}
		if n := a.lastAlive.Load(); n > 0 {
			t := time.Unix(0, n).UTC()
			ts.LastKeepalive = &t
		}
		if r, ok := reports[aid.Fingerprint]; ok {
			ts.Link = &r
		}
		st.Targets = append(st.Targets, ts)
	}
	if s.cfg.StatusExtra != nil && seesAll(viewer) {
		_, st.Alerts = s.cfg.StatusExtra()
	}
	return st
}

// seesAll reports whether viewer may see the whole bastion: other
// operators' logins and the alert settings (numbers, account) in the alert
// section. That is an operator whose key carries no permitopen: it may
// reach every site anyway. A key restricted to some targets sees those
// targets only. nil (the bastion itself) sees everything.
func seesAll(viewer *authz.Identity) bool {
	return viewer == nil || viewer.Open == nil
}

func (s *Server) writeStatus(w io.Writer, viewer *authz.Identity, asJSON bool) error {
	st := s.Snapshot(viewer)
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	now := s.cfg.Now()
	fmt.Fprintf(w, "lifeline bastion %s: %d target(s) registered, %d operator session(s)\n", st.Bastion, len(st.Targets), st.Operators)
	if len(st.Targets) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TARGET\tAGENT\tFINGERPRINT\tADDRESS\tCONNECTED\tRTT\tLINK CHECK")
		for _, t := range st.Targets {
			rtt := "-"
			if t.KeepaliveRTTms != nil {
				rtt = fmt.Sprintf("%.0fms", *t.KeepaliveRTTms)
			}
			link := "no report yet"
			if t.Link != nil {
				link = t.Link.Summary()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s (%s)\t%s\t%s\n", t.Target, t.Agent, t.Fingerprint, t.Address,
				t.ConnectedSince.Format(time.RFC3339), now.Sub(t.ConnectedSince).Round(time.Second), rtt, link)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if s.cfg.StatusExtra != nil && seesAll(viewer) {
		if text, _ := s.cfg.StatusExtra(); strings.TrimSpace(text) != "" {
			fmt.Fprintln(w, strings.TrimRight(text, "\n"))
		}
	}
	return nil
}
