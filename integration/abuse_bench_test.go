//go:build integration

package integration

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkAbuse runs the attacks of TestAbuse (abuse_test.go) against the
// real bastion and agent in network namespaces and prints, per attack, how
// the legitimate side fared: jumps that worked, jump latency under attack
// against the unloaded median of the same run, how long a restarted agent
// took to register, and the peak RSS of bastion and agent. The table goes to
// standard output (a benchmark's own log is cut after ten lines).
func BenchmarkAbuse(b *testing.B) {
	for range b.N {
		w := startAbuseWorld(b)
		var rows []*abResult
		failed := 0
		for _, a := range abuseAttacks() {
			res := w.run(a)
			rows = append(rows, res)
			if len(res.fails) > 0 {
				failed++
			}
			fmt.Printf("abuse %s\n", res.summary(median(w.unloaded)))
		}
		fmt.Printf("\nAbuse of the bastion, %s (legitimate ssh -J from its own namespace, real sshd as the Pi):\n\n%s\n",
			time.Now().UTC().Format(time.DateOnly), abTable(median(w.unloaded), rows))
		b.ReportMetric(float64(failed), "attacks-with-failed-checks")
	}
}
