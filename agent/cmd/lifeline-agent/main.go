// Command lifeline-agent holds the site's reverse tunnels to its bastions.
// See `lifeline-agent --help`.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	"github.com/lifeline-dev/lifeline/agent/netsetup"
	"github.com/lifeline-dev/lifeline/shared/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2 // bad arguments or configuration
)

// run dispatches a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "", "run":
		return agentMain(ctx, os.Getenv, stderr)
	case "pubkey":
		return pubkeyMain(stdout, stderr)
	case "pair":
		return pairMain(args[1:], stdout, stderr)
	case "doctor":
		return doctorMain(ctx, args[1:], stdout, stderr)
	case "check":
		// Run by hand, it checks with the service's configuration.
		if _, _, _, err := config.LoadEnvFile(); err != nil {
			fmt.Fprintf(stderr, "lifeline-agent check: %v\n", err)
			return exitUsage
		}
		return linkcheck.CheckMain(ctx, args[1:], stdout, stderr)
	case "netsetup":
		return netsetup.Main(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		return helpMain(stdout, stderr)
	case "-v", "--version", "version":
		fmt.Fprintln(stdout, "lifeline-agent", version.Version)
		return exitOK
	default:
		fmt.Fprintf(stderr, "lifeline-agent: unknown command %q (try --help)\n", cmd)
		return exitUsage
	}
}
