// Command lifeline-jumpstart makes one EC2 call (StartInstances, or
// StopInstances) for lifeline-agent's outage mode, so that the agent itself
// never links the AWS SDK, net/http or TLS. See `lifeline-jumpstart --help`
// and agent/outage (Request, Result).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
