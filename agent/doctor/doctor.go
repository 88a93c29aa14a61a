// Package doctor checks a site's agent setup the way the service will use
// it, and says for every problem what to do: `lifeline-agent doctor`.
//
// A Doctor is a list of Checks run in order, one printed line each:
//
//	✓ what
//	✗ what: why — fix: what to do
//	- what: why it was skipped
//
// Every check runs under a deadline of its own (Config.StepTimeout, 5 s:
// one DNS lookup, one TCP connect, one SSH handshake or one request) and
// all of them under Config.Timeout, so a doctor never hangs on a dead
// link: a step that does not finish in time is a ✗ saying so, and the
// checks that need it are skipped. Nothing is ever changed: no key is
// created, no known_hosts line recorded, no name registered on a bastion.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Outcome is what a check found.
type Outcome int

// Outcomes. Skip is neither a pass nor a failure: the check could not or
// need not run (what it needs failed above, or it does not apply here).
const (
	Pass Outcome = iota
	Fail
	Skip
)

// Mark is the outcome's sign at the start of a line.
func (o Outcome) Mark() string {
	switch o {
	case Pass:
		return "✓"
	case Fail:
		return "✗"
	default:
		return "-"
	}
}

// Result is one check's finding.
type Result struct {
	Outcome Outcome
	// What names what was checked, with what was found when it passed
	// ("key /var/lib/lifeline/agent_ed25519_key: ed25519 SHA256:…").
	What string
	// Why says what is wrong (Fail) or why the check did not run (Skip).
	Why string
	// Fix says what to do about it (Fail).
	Fix string
	// Detail lines are printed indented below the line (every
	// configuration error, netsetup's findings).
	Detail []string
}

// Passed, Failed and Skipped build results.
func Passed(what string) Result { return Result{Outcome: Pass, What: what} }

// Failed is a ✗ with its reason and fix.
func Failed(what, why, fix string) Result {
	return Result{Outcome: Fail, What: what, Why: why, Fix: fix}
}

// Skipped is a check that did not run, and why.
func Skipped(what, why string) Result { return Result{Outcome: Skip, What: what, Why: why} }

// Line is the result as doctor prints it, detail lines included (each
// ends in a newline).
func (r Result) Line() string {
	var b strings.Builder
	b.WriteString(r.Outcome.Mark())
	b.WriteByte(' ')
	b.WriteString(r.What)
	if r.Why != "" {
		b.WriteString(": ")
		b.WriteString(r.Why)
	}
	if r.Outcome == Fail && r.Fix != "" {
		b.WriteString(" — fix: ")
		b.WriteString(r.Fix)
	}
	b.WriteByte('\n')
	for _, d := range r.Detail {
		b.WriteString("    ")
		b.WriteString(d)
		b.WriteByte('\n')
	}
	return b.String()
}

// Check is one line of the checklist.
type Check struct {
	// Name is what the line is about when Run's result does not say.
	Name string
	// Run performs the check. It must return when ctx ends (its step's
	// deadline, or the doctor's); a Run that does not is abandoned a
	// second later and reported as not finished.
	Run func(ctx context.Context) Result
	// Privileged checks run before the doctor becomes the service's user
	// (Config.Drop), because they need root (reading the firewall); their
	// lines are still printed in list order.
	Privileged bool
}

// abandonGrace is how long a check whose deadline passed may take to
// return before it is reported as not finished and left behind.
const abandonGrace = time.Second

// runCheck runs c under a step deadline and never waits more than the
// deadline and abandonGrace for it.
func runCheck(ctx context.Context, c Check, step time.Duration) Result {
	if err := ctx.Err(); err != nil {
		return Failed(c.Name, "not checked: "+stopped(ctx), "run the doctor again; if a step above was slow, fix that first")
	}
	cctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	done := make(chan Result, 1)
	// The goroutine ends when Run returns. One that ignores its context is
	// left behind (the buffered channel lets it finish whenever): a doctor
	// that hangs on one check would be worse than one stray goroutine in a
	// process about to exit.
	go func() { done <- c.Run(cctx) }()
	var r Result
	select {
	case r = <-done:
	case <-cctx.Done():
		t := time.NewTimer(abandonGrace)
		defer t.Stop()
		select {
		case r = <-done:
		case <-t.C:
			why := fmt.Sprintf("did not finish within %s", step)
			if ctx.Err() != nil {
				why = "did not finish: " + stopped(ctx)
			}
			return Failed(c.Name, why, "run the doctor again; if it happens again, the step it hangs on is the problem")
		}
	}
	if r.What == "" {
		r.What = c.Name
	}
	return r
}

// stopped says why the doctor's own context ended.
func stopped(ctx context.Context) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "the doctor's time ran out"
	}
	return "the doctor was interrupted"
}

// clean makes text from the network (a server's version, a refusal's
// reason, a banner) safe to print on one line: control characters become
// spaces and it is cut at n bytes.
func clean(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// summary is the last line: how many checks failed.
func summary(w io.Writer, failed, skipped, total int) {
	switch {
	case failed == 0 && skipped == 0:
		fmt.Fprintf(w, "all %d checks passed\n", total)
	case failed == 0:
		fmt.Fprintf(w, "no problem found (%d checks passed, %d skipped)\n", total-skipped, skipped)
	case failed == 1:
		fmt.Fprintf(w, "1 problem found: fix it and run the doctor again\n")
	default:
		fmt.Fprintf(w, "%d problems found: fix the first one first (it often causes the others), then run the doctor again\n", failed)
	}
}
