package alert

import (
	"fmt"
	"time"

	"github.com/lifeline-dev/lifeline/bastion/audit"
	"github.com/lifeline-dev/lifeline/bastion/outage"
)

// Alert kinds of outage mode (bastion/outage): the jump host's own starts
// and power-offs, operators' holds, and the power-off's faults; and the
// agent's report that it could not start the stopped jump host.
const (
	KindOutageStarted       = "outage_started"
	KindOutageReady         = "outage_ready"
	KindOutageStopping      = "outage_stopping"
	KindOutageHeld          = "outage_held"
	KindOutageReleased      = "outage_released"
	KindOutageRequestFailed = "outage_request_failed"
	KindOutageNotStopped    = "outage_not_stopped"
	KindJumpStartFailed     = "jump_start_failed"
)

var outageKinds = map[outage.Kind]string{
	outage.Started: KindOutageStarted, outage.Ready: KindOutageReady, outage.Stopping: KindOutageStopping,
	outage.Held: KindOutageHeld, outage.Released: KindOutageReleased,
	outage.RequestFailed: KindOutageRequestFailed, outage.NotStopped: KindOutageNotStopped,
}

// Outage texts an event of the outage-mode keeper, whatever the site roles
// (it is about this jump host, not a site): one alert, audited as such. The
// text is one SMS segment; the detail is e.String(). Ready's e.Site is
// named as given: pass the agent key's name rather than its fingerprint.
// Like every event method it returns at once (after spooling), so it may
// be the keeper's Notify. An event of an unknown kind is ignored.
func (a *Alerter) Outage(e outage.Event) {
	kind, ok := outageKinds[e.Kind]
	if !ok {
		return
	}
	now := a.cfg.Clock.Now()
	if e.Time.IsZero() {
		e.Time = now
	}
	text := outageText(a.cfg.BastionName, e)
	a.enqueue(entry{Message: Message{Kind: kind, Text: text, Detail: clean(a.cfg.BastionName, 24) + ": " + e.String(), Created: e.Time}, Subject: clean(e.By, 32)},
		audit.Event{Time: now, Key: e.By, Agent: e.Site})
}

// outageText is an outage event in one SMS segment.
func outageText(bastion string, e outage.Event) string {
	b := clean(bastion, 24)
	at := func(t time.Time) string { return timeOfDay(t, e.Time) }
	switch e.Kind {
	case outage.Started:
		core := fmt.Sprintf("%s: jump host started %s", b, at(e.Time))
		switch {
		case e.PrevStop != nil:
			return fitFirst(core,
				fmt.Sprintf(" (outage mode; last stopped %s after %s idle)", at(e.PrevStop.Time), outageLength(e.PrevStop.Idle)),
				" (outage mode)")
		case !e.PrevStarted.IsZero():
			return fitFirst(core,
				fmt.Sprintf(" (outage mode; its run from %s did not power itself off)", at(e.PrevStarted)),
				" (outage mode)")
		}
		return fit(core, " (outage mode, first start)")
	case outage.Ready:
		return fit(fmt.Sprintf("%s: jump host ready %s", b, at(e.Time)), ": agent "+clean(e.Site, 64)+" connected")
	case outage.Stopping:
		return fit(fmt.Sprintf("%s: jump host stopping: idle %s, no site's main internet down, nobody connected", b, outageLength(e.Idle)),
			" (since "+at(e.IdleSince)+")")
	case outage.Held:
		return fmt.Sprintf("%s: jump host held up until %s by %s", b, at(e.Until), clean(e.By, 32))
	case outage.Released:
		if e.By == "" {
			return fmt.Sprintf("%s: jump host hold ran out %s", b, at(e.Time))
		}
		return fmt.Sprintf("%s: jump host hold released %s by %s", b, at(e.Time), clean(e.By, 32))
	case outage.RequestFailed:
		core := b + ": jump host cannot power itself off: "
		const tail = " (retrying)"
		return core + clean(fmt.Sprint(e.Err), max(smsLimit-len(core)-len(tail)-2, 20)) + tail
	case outage.NotStopped:
		return fit(fmt.Sprintf("%s: jump host still up %s after its power-off request", b, outageLength(e.Time.Sub(e.Requested).Round(time.Second))),
			": is lifeline-poweroff.path enabled?")
	}
	return b + ": " + clean(e.String(), smsLimit-len(b)-2)
}
