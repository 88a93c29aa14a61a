package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/lifeline-dev/lifeline/bastion/doctor"
)

// doctorCmd is `lifeline-bastion doctor`: read the environment files (as
// root, as systemd does), become the service user, then check the
// configuration and everything it names. Exit 0 when every check passed,
// 1 when one failed, 2 on a usage error.
func doctorCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lifeline-bastion doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sendTest := fs.Bool("send-test", false, "send one test message through every configured alert channel (a text to every LIFELINE_SMS_TO number, a mail to LIFELINE_SMTP_TO, a post to LIFELINE_WEBHOOK_URL) and report each")
	as := fs.String("user", doctor.ServiceUser, "started as root, check as this user (the unit's User=)")
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lifeline-bastion doctor: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	r := doctor.NewReport(stdout)
	total := 0
	add := func(cs ...doctor.Check) { total += len(cs); r.Add(cs...) }
	checks, where := doctor.LoadEnv(os.Getenv("LIFELINE_ENV_FILE"), doctor.DefaultEnvFiles)
	add(checks...)
	who, owner := doctor.BecomeUser(*as)
	add(who)
	cfg, decoded, checks := doctor.Configuration(where)
	add(checks...)
	if decoded {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		d := doctor.Doctor{Config: cfg, EnvFile: where, Owner: owner, User: *as, SendTest: *sendTest}
		d.Run(ctx, func(c doctor.Check) { add(c) })
	}
	if n := r.Failed(); n > 0 {
		fmt.Fprintf(stderr, "lifeline-bastion doctor: %d of %d checks failed\n", n, total)
		return 1
	}
	return 0
}
