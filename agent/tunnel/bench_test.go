package tunnel

// Helpers of the agent's benchmarks (BenchmarkIdleRSS). What a dead link
// costs to detect and to recover from is measured in namespaces, where
// TCP keepalives reach a real peer kernel: integration's
// BenchmarkSiteOutage and BenchmarkKeepaliveTraffic. (A loopback relay
// would answer the agent's TCP keepalives itself.)

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// runAutossh starts autossh with args until the benchmark ends and returns
// the PIDs to measure (autossh and its ssh child). AUTOSSH_GATETIME=0: keep
// retrying even if the first ssh fails fast (what tutorials set for
// boot-time starts).
func runAutossh(b *testing.B, args ...string) func() []int {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "autossh", args...)
	cmd.Env = append(os.Environ(), "AUTOSSH_GATETIME=0")
	out := &sshtest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.Cleanup(func() {
		// autossh's ssh child first (by PID), then autossh.
		for _, pid := range sshtest.ChildPIDs(cmd.Process.Pid) {
			syscall.Kill(pid, syscall.SIGTERM)
		}
		cancel()
		<-done
		if b.Failed() {
			b.Logf("autossh output:\n%s", out.String())
		}
	})
	return func() []int { return append([]int{cmd.Process.Pid}, sshtest.ChildPIDs(cmd.Process.Pid)...) }
}
