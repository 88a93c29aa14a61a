// Command lifeline-linkcheck measures the backup link once for
// lifeline-agent, which runs it for every link check so that the agent
// itself never loads speedtest-go, net/http or TLS. See
// `lifeline-linkcheck --help` and agent/linkcheck (ProgramMain).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	"github.com/lifeline-dev/lifeline/agent/linkcheck/measure"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := linkcheck.ProgramMain(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, measure.New)
	stop()
	os.Exit(code)
}
