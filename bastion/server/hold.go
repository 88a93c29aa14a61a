package server

import (
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/authz"
	"github.com/lifeline-dev/lifeline/bastion/outage"
)

// OutageStatus is outage mode in `status --json` (absent when it is off).
type OutageStatus struct {
	// Mode is "outage": the jump host powers itself off when idle.
	Mode string `json:"mode"`
	// Idle is how long nothing must keep the host up before it powers
	// off (LIFELINE_OUTAGE_IDLE), as a Go duration.
	Idle string `json:"idle"`
	// Started is when this run of the keeper began.
	Started time.Time `json:"started,omitzero"`
	// IdleSince and PowerOffAt are set while nothing keeps the host up:
	// when the idle period began and when it runs out.
	IdleSince  time.Time `json:"idle_since,omitzero"`
	PowerOffAt time.Time `json:"power_off_at,omitzero"`
	// HoldUntil is the end of an operator's hold (`hold 2h`); HoldBy who
	// set it (shown to viewers who see all only).
	HoldUntil time.Time `json:"hold_until,omitzero"`
	HoldBy    string    `json:"hold_by,omitempty"`
	// KeptUpBy says in English what keeps the host up now (empty:
	// nothing); shown to viewers who see all only, as it names sites and
	// operators.
	KeptUpBy []string `json:"kept_up_by,omitempty"`
	// PowerOffRequested is when the power-off request was written (the
	// host should be going down); PowerOffFailing whether writing it fails.
	PowerOffRequested time.Time `json:"power_off_requested,omitzero"`
	PowerOffFailing   bool      `json:"power_off_failing,omitempty"`
	// LastStopped and LastStopReason are when and why the previous run
	// powered the host off (zero: it did not, or this is the first run).
	LastStopped    time.Time `json:"last_stopped,omitzero"`
	LastStopReason string    `json:"last_stop_reason,omitempty"`
}

// outageStatus is the outage section as viewer may see it; nil when outage
// mode is off or there is no keeper.
func (s *Server) outageStatus(viewer *authz.Identity) *OutageStatus {
	if s.cfg.Outage == nil {
		return nil
	}
	k := s.cfg.Outage.Status()
	if !k.On {
		return nil
	}
	o := &OutageStatus{
		Mode: "outage", Idle: k.Idle.String(), Started: k.Started.UTC(),
		IdleSince: k.IdleSince.UTC(), PowerOffAt: k.PowerOffAt.UTC(), HoldUntil: k.HoldUntil.UTC(),
		PowerOffRequested: k.Requested.UTC(), PowerOffFailing: k.Failing,
	}
	if k.PrevStop != nil {
		o.LastStopped = k.PrevStop.Time.UTC()
	}
	if seesAll(viewer) {
		o.HoldBy, o.KeptUpBy = k.HoldBy, k.KeptUpBy()
		if k.PrevStop != nil {
			o.LastStopReason = k.PrevStop.Reason
		}
	}
	return o
}

// writeOutage writes the outage section of the text status.
func writeOutage(w io.Writer, o *OutageStatus, now time.Time) {
	var b strings.Builder
	idle, _ := time.ParseDuration(o.Idle)
	fmt.Fprintf(&b, "outage mode: the jump host powers itself off after %s with nothing keeping it up\n", outageDuration(idle))
	switch {
	case !o.PowerOffRequested.IsZero():
		b.WriteString("  power-off requested at " + shortTime(o.PowerOffRequested, now) + "\n")
	case o.PowerOffFailing:
		b.WriteString("  power-off request cannot be written (retrying): see the journal\n")
	case !o.IdleSince.IsZero():
		fmt.Fprintf(&b, "  idle since %s: powers off at %s\n", shortTime(o.IdleSince, now), shortTime(o.PowerOffAt, now))
	case len(o.KeptUpBy) > 0:
		b.WriteString("  kept up by: " + strings.Join(o.KeptUpBy, "; ") + "\n")
	default:
		b.WriteString("  kept up\n")
	}
	if !o.HoldUntil.IsZero() {
		line := "  held until " + shortTime(o.HoldUntil, now)
		if o.HoldBy != "" {
			line += " by " + o.HoldBy
		}
		b.WriteString(line + " (hold 0 releases)\n")
	}
	if !o.LastStopped.IsZero() {
		line := "  last powered itself off at " + shortTime(o.LastStopped, now)
		if o.LastStopReason != "" {
			line += ": " + o.LastStopReason
		}
		b.WriteString(line + "\n")
	}
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if l != "" {
			io.WriteString(w, clip(strings.TrimSuffix(l, "\n"), statusWidth)+"\n")
		}
	}
}

// outageDuration is d as the configuration says it: 30m, 1h30m.
func outageDuration(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// hold runs `hold [DURATION]`: without an argument it prints the outage
// section; with one it sets (or, with 0/off, releases) the hold. Only an
// operator key without permitopen may change the hold: it may reach every
// site anyway, and a hold keeps the host (and its bill) running. Every
// call is audited; the reply is the new end of the hold or the error.
func (c *conn) hold(ch ssh.Channel, req *ssh.Request, args []string, out io.Writer) {
	req.Reply(true, nil)
	s := c.s
	id := c.identity()
	fail := func(code uint32, why string) {
		c.audit(audit.KindHold, "refused: "+why)
		fmt.Fprintf(ch.Stderr(), "lifeline: hold: %s\n", why)
		exit(ch, code)
	}
	if len(args) > 1 {
		fail(2, "say one duration: hold 2h, or hold 0 to release")
		return
	}
	if s.outageStatus(nil) == nil {
		fail(1, outage.ErrOff.Error())
		return
	}
	if len(args) == 0 {
		c.audit(audit.KindHold, "shown")
		writeOutage(out, s.outageStatus(id), s.cfg.Clock.Now())
		exit(ch, 0)
		return
	}
	if !seesAll(id) {
		fail(1, "this key is restricted to some sites (permitopen): only an operator key without permitopen may hold the jump host up")
		return
	}
	d, err := outage.ParseHold(args[0])
	if err != nil {
		fail(2, strings.TrimPrefix(err.Error(), "hold: "))
		return
	}
	by := id.Name
	if by == "" {
		by = id.Fingerprint
	}
	until, err := s.cfg.Outage.Hold(d, by)
	switch {
	case err != nil: // outage.ErrOff (turned off since), above the maximum
		fail(1, err.Error())
		return
	case until.IsZero():
		c.audit(audit.KindHold, "released")
		idle := s.cfg.Outage.Status().Idle
		fmt.Fprintf(out, "hold released: the jump host powers itself off after %s with nothing keeping it up\n", outageDuration(idle))
	default:
		c.audit(audit.KindHold, fmt.Sprintf("held until %s (%s)", until.UTC().Format(time.RFC3339), d))
		fmt.Fprintf(out, "jump host held up until %s (%s); hold 0 releases it\n", until.UTC().Format("2006-01-02 15:04Z"), d)
	}
	exit(ch, 0)
}
