package netsetup

import (
	"context"
	"fmt"
	"io"

	"github.com/lifeline-dev/lifeline/shared/envconf"
	"github.com/lifeline-dev/lifeline/shared/logging"
)

const usageText = `usage: lifeline-agent netsetup apply | remove | status

  apply   enable forwarding, install lifeline's firewall table and uplink routes
  remove  take out exactly what apply added and restore net.ipv4.ip_forward
  status  show what is applied, what differs and what defeats it
          (exit 0 when applied as configured, 1 otherwise)

Needs CAP_NET_ADMIN. Configuration (environment):
`

// Main runs `lifeline-agent netsetup <args>` on the real system, reading its
// configuration from the environment. args are what follows "netsetup".
// It returns the process exit code: 0 done (status: applied as
// configured), 1 the operation failed (status: something differs), 2 usage
// or configuration error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, stdout, stderr, Options{})
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, o Options) int {
	if len(args) == 1 && (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
		fmt.Fprint(stdout, usageText)
		if err := envconf.Usage(stdout, &Config{}); err != nil {
			fmt.Fprintln(stderr, "netsetup:", err)
			return 1
		}
		return 0
	}
	if len(args) != 1 || (args[0] != "apply" && args[0] != "remove" && args[0] != "status") {
		fmt.Fprint(stderr, usageText)
		_ = envconf.Usage(stderr, &Config{})
		return 2
	}
	var cfg Config
	if err := envconf.Process(&cfg); err != nil {
		fmt.Fprintf(stderr, "netsetup: configuration:\n%v\n", err)
		return 2
	}
	if o.Logger == nil {
		o.Logger, _ = logging.New(stderr, "info")
	}
	s, err := New(cfg, o)
	if err != nil {
		fmt.Fprintf(stderr, "netsetup: configuration:\n%v\n", err)
		return 2
	}
	switch args[0] {
	case "apply":
		if err := s.Apply(ctx); err != nil {
			fmt.Fprintf(stderr, "netsetup: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, "netsetup: applied")
	case "remove":
		if err := s.Remove(ctx); err != nil {
			fmt.Fprintf(stderr, "netsetup: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, "netsetup: removed")
	case "status":
		rep, err := s.Status(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "netsetup: %v\n", err)
			return 1
		}
		fmt.Fprint(stdout, rep.String())
		if !rep.OK() {
			return 1
		}
	}
	return 0
}
