package linkcheck

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/logging"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// Exit codes of CheckMain.
const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitUsage   = 2
	ExitRefused = 3 // not checked: over the monthly budget, another check running, or no access to the history
)

const checkUsage = "usage: lifeline-agent check [--json] [--force]"

// CheckMain is `lifeline-agent check [--json] [--force]`: one check now,
// printed as a readable line and the month's use (or, with --json, as the
// JSON line checks.jsonl holds) on stdout; warnings go to stderr. args are
// the arguments after "check". The configuration comes from the
// environment (envconf.Process). The check is recorded in the history and
// counts against the monthly budget like the agent's own (CheckNow);
// --force checks even when that budget is used up or the history cannot be
// used. It returns ExitOK when the verdict is ok, ExitFailed when it
// failed, ExitUsage on a usage or configuration error, ExitRefused when it
// did not check.
func CheckMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, "print the result as one JSON line")
	force := fs.Bool("force", false, "check and measure speed even when the monthly budget is used up or the history cannot be recorded")
	fs.Usage = func() {
		fmt.Fprint(stdout, checkUsage+"\n\n"+
			"Checks the backup link now (ISP, latency, download speed) and prints the result.\n"+
			"The check is recorded in LIFELINE_STATE_DIR and counts against LIFELINE_CHECK_MONTHLY_BUDGET\n"+
			"like the agent's own, so the agent's next check moves to LIFELINE_CHECK_EVERY after it, and\n"+
			"its next speed measurement is paced from this one. Speed is measured unless what is left of\n"+
			"the month is held for the agent's light checks (then the result says so).\n"+
			"Run it as root or as the agent's user. --force measures over the monthly budget.\n"+
			"Exit status: 0 ok, 1 failed, 2 usage or configuration error, 3 refused (budget used up,\n"+
			"another check running, history not usable).\n\nEnvironment:\n")
		_ = envconf.Usage(stdout, &Config{})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lifeline-agent check: unexpected argument %q (%s)\n", fs.Arg(0), checkUsage)
		return ExitUsage
	}
	var cfg Config
	if err := envconf.Process(&cfg); err != nil {
		fmt.Fprintf(stderr, "lifeline-agent check: %v\n", err)
		return ExitUsage
	}
	log, err := logging.New(stderr, "warn")
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-agent check: %v\n", err)
		return ExitUsage
	}
	c, err := New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-agent check: %v\n", err)
		return ExitUsage
	}
	r, err := c.CheckNow(ctx, *force)
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-agent check: not checked: %v\n", err)
		return ExitRefused
	}
	if *jsonOut {
		b, err := report.Encode(r)
		if err != nil {
			fmt.Fprintf(stderr, "lifeline-agent check: %v\n", err)
			return ExitFailed
		}
		fmt.Fprintln(stdout, string(b))
	} else {
		fmt.Fprintf(stdout, "%s; ip %s, server %s, jitter %.0f ms, %.1f MB used, took %s\n",
			r.Summary(), orNone(r.IP), orNone(r.Server), r.JitterMS, float64(r.Bytes)/1e6,
			time.Duration(r.DurationSecs*float64(time.Second)).Round(100*time.Millisecond))
		month := r.Time.UTC().Format("2006-01")
		if r.MonthBudget > 0 {
			fmt.Fprintf(stdout, "link checks in %s (UTC): %s of %s (LIFELINE_CHECK_MONTHLY_BUDGET) used, this one included\n", month, mb(r.MonthBytes), mb(r.MonthBudget))
		} else {
			fmt.Fprintf(stdout, "link checks in %s (UTC): %s used, this one included (no monthly budget)\n", month, mb(r.MonthBytes))
		}
	}
	if r.OK() {
		return ExitOK
	}
	return ExitFailed
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
