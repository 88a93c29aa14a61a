package linkcheck

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/report"
)

// Exit codes of CheckMain.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// CheckMain is `lifeline-agent check [--json]`: one check now, printed as a
// readable line (or, with --json, as the JSON line checks.jsonl holds) on
// stdout; warnings go to stderr. args are the arguments after "check". The
// configuration comes from the environment (envconf.Process). It returns
// ExitOK when the verdict is ok, ExitFailed when it failed, ExitUsage on a
// usage or configuration error. The result is not added to the history (a
// manual run may not be the service's user).
func CheckMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, "print the result as one JSON line")
	fs.Usage = func() {
		fmt.Fprint(stdout, "usage: lifeline-agent check [--json]\n\n"+
			"Checks the backup link now (ISP, latency, download speed) and prints the result.\n"+
			"Exit status: 0 ok, 1 failed, 2 usage or configuration error.\n\nEnvironment:\n")
		_ = envconf.Usage(stdout, &Config{})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lifeline-agent check: unexpected argument %q (usage: lifeline-agent check [--json])\n", fs.Arg(0))
		return ExitUsage
	}
	var cfg Config
	if err := envconf.Process(&cfg); err != nil {
		fmt.Fprintf(stderr, "lifeline-agent check: %v\n", err)
		return ExitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-agent check: %v\n", err)
		return ExitUsage
	}
	r := c.Check(ctx)
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
