package linkcheck

import (
	"context"
	"time"

	"github.com/lifeline-dev/lifeline/shared/report"
)

// firstCheckDelay is how long Run waits before the first check (less when
// CheckEvery is shorter): long enough for the uplink to come up at boot.
const firstCheckDelay = 30 * time.Second

// Run checks the link every CheckEvery, the first time shortly after it
// starts, until ctx is done; then it returns nil. With CheckEvery 0 it only
// waits for ctx. Checks never overlap: the next one is scheduled
// CheckEvery after the previous one ended.
//
// Each result gets the keepalive figures of rtt (called once per check,
// after it; rtt may be nil, and may return nil when it has nothing), is
// appended to StateDir/checks.jsonl (a failure to write it is logged, not
// fatal: the report still goes out) and is passed to publish (which may be
// nil). publish runs on Run's goroutine and should return promptly; it gets
// ctx. A check cut short by ctx is neither recorded nor published.
func (c *Checker) Run(ctx context.Context, rtt func() *report.RTT, publish func(context.Context, report.LinkReport)) error {
	if c.cfg.CheckEvery <= 0 {
		c.log.Info("link checks disabled (LIFELINE_CHECK_EVERY=0)")
		<-ctx.Done()
		return nil
	}
	delay := min(firstCheckDelay, c.cfg.CheckEvery)
	for {
		t := c.clock.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
		r := c.Check(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if rtt != nil {
			r.KeepaliveMS = rtt()
		}
		if err := c.journal.append(r); err != nil {
			c.log.Warn("link check result not recorded", "err", err)
		}
		if publish != nil {
			publish(ctx, r)
		}
		delay = c.cfg.CheckEvery
	}
}
