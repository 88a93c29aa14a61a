// Package outage decides when a jump host run in outage mode powers itself
// off.
//
// # Outage mode
//
// A jump host that is needed only on the day a site's main internet is down
// need not run (and cost) every day. In outage mode it is normally stopped:
//
//  1. Start. The site's agent sees its main link go down and starts the
//     instance itself (EC2 StartInstances, over the backup link). An owner
//     can also start it by hand (the CLI one-liner in terraform/README.md).
//     Either way the bastion boots and Run begins the first idle period.
//  2. Up. The agent connects (AgentSeen: the Ready event) and reports its
//     main link down (MainLink): while any connected agent reports its main
//     link down, while any operator connection is open (Sessions), and while
//     an operator's hold is in force (Hold: `ssh bastion hold 2h`), the host
//     stays up.
//  3. Stop. Once none of these has been true for Config.Idle without a
//     break, the Keeper records the stop in Config.StateDir/outage.json,
//     emits Stopping and writes the power-off request file
//     (Config.RequestPath, /run/lifeline/poweroff). The bastion stays
//     unprivileged: a root systemd path unit (lifeline-poweroff.path) sees
//     the file and lifeline-poweroff.service logs its content to the journal
//     and runs `systemctl poweroff`. The instance's shutdown behaviour is
//     "stop" (Terraform sets it), so powering off stops the instance.
//  4. Next start. Run reads outage.json and its Started event says when and
//     why the host last stopped itself. A host that is off cannot text
//     "stopped": the Stopping event, sent just before the request, is the
//     last word of a run, and Started is the first of the next.
//
// With Config.Idle zero outage mode is off: the Keeper does nothing (Run
// waits for its context, no file is read or written, Hold is refused) and
// the jump host runs for ever, as it always did.
//
// # Rules and limits
//
//   - An open operator connection always keeps the host up, whatever else;
//     only logged-in operator connections count (the server closes those
//     idle for LIFELINE_IDLE_TIMEOUT), never unauthenticated ones, so
//     internet noise does not keep the host running.
//   - Only agents that are connected count: an agent that is gone
//     (AgentGone) no longer keeps the host up, even if its last report said
//     the main link was down. An agent that never reports its main link
//     (an older agent) never keeps it up. After a reconnection the agent
//     must report its main link again.
//   - The idle period starts at Run (the bastion's start, so a restart starts
//     a new one) and again whenever the last thing keeping the host up ends:
//     the last operator connection closing, the last site's main link coming
//     back or its agent leaving, a hold running out or released (`hold 0`).
//   - A hold lasts at most Config.MaxHold (24h by default); a new hold
//     replaces the old one, longer or shorter. A hold is lost when the
//     bastion restarts.
//   - Config.Idle is at least MinIdle (5m): a host must live long enough for
//     the agent that started it to connect.
//   - A failed request write is logged, notified once (RequestFailed), and
//     retried with exponential backoff from RetryMin to RetryMax.
//   - If the host is still up NotStoppedAfter after its request (the path
//     unit is not enabled, or systemd refused), NotStopped is notified once
//     and the request is written again at that interval.
//   - There is a window of milliseconds between the last check and the
//     shutdown itself: an operator who logs in inside it is cut off by the
//     shutdown. Something that keeps the host up after the request was
//     written withdraws it (the file is removed, the stop record undone), so
//     a power-off systemd has not acted on yet does not happen.
//
// # Wiring
//
// New takes a Config; Run(ctx) runs the decision loop and must be running
// for anything to happen. The inputs (AgentSeen, MainLink, AgentGone,
// Sessions, Hold) are cheap and never block: call them from the server's hot
// paths. Notify is called from Run's goroutine, one Event at a time, in
// order; it must not block for long (hand the event to the alert queue).
package outage
