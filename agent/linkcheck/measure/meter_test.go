package measure

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/clock"
)

// TestMeterAdmission: the admission rules on their own, without a network.
func TestMeterAdmission(t *testing.T) {
	t.Parallel()
	m := newMeter(10_000_000, clock.Real{})
	m.beginPhase(phaseDownload, 1)
	ctx := context.Background()

	// Before any response the size is the 2 MiB estimate: four fit in 10 MB.
	var grants []*grant
	for i := range 4 {
		g, err := m.reserve(ctx, -1)
		if err != nil {
			t.Fatalf("reservation %d: %v", i, err)
		}
		grants = append(grants, g)
	}
	// A fifth waits while sizes are unknown...
	got := make(chan error, 1)
	var fifth *grant
	go func() {
		g, err := m.reserve(ctx, -1)
		fifth = g
		got <- err
	}()
	sshtest.Eventually(t, 20*time.Second, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(got) == 0 && m.unsized == 4
	}, "the fifth to wait")
	// ...and fits once a response says the files are 1 MB.
	if err := m.resize(grants[0], 1_000_000); err != nil {
		t.Fatal(err)
	}
	sshtest.Eventually(t, 20*time.Second, func() bool { return len(got) == 1 }, "the fifth to be admitted")
	if err := <-got; err != nil {
		t.Fatalf("fifth: %v", err)
	}
	// Reading a body lowers pending; closing it early keeps the rest held.
	grants[0].moved(400_000)
	grants[0].finish()
	m.mu.Lock()
	abandoned := m.abandoned
	m.mu.Unlock()
	if abandoned != 600_000 {
		t.Fatalf("abandoned %d, want 600000", abandoned)
	}
	// A request that got no response gives everything back.
	for _, g := range append(grants[1:], fifth) {
		if err := m.resize(g, 1_000_000); err != nil {
			t.Fatal(err)
		}
		g.release()
	}
	// Fill up with known sizes until refused: then the phase is over.
	n := 0
	for {
		_, err := m.reserve(ctx, 1_000_000)
		if errors.Is(err, errBudget) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	res := m.endPhase()
	if !res.budgetHit || res.moved != 400_000 || n == 0 {
		t.Fatalf("result %+v after %d more", res, n)
	}
	m.mu.Lock()
	total := m.spent + m.pending + m.abandoned
	m.mu.Unlock()
	if total > 10_000_000 {
		t.Fatalf("admitted %d bytes of a 10000000 budget", total)
	}

	// After abort nothing is admitted, and waiters are woken.
	m.beginPhase(phaseUpload, 1)
	m.abort(errors.New("stop"))
	if _, err := m.reserve(ctx, 10); err == nil || err.Error() != "stop" {
		t.Fatalf("after abort: %v", err)
	}
}

// TestMeterHardCap: connection reads and writes stop at the budget even
// when admission was not consulted (a body of unknown length).
func TestMeterHardCap(t *testing.T) {
	t.Parallel()
	m := newMeter(1000, clock.Real{})
	if k := m.allow(600); k != 600 {
		t.Fatalf("allow 600 = %d", k)
	}
	if k := m.allow(600); k != 400 {
		t.Fatalf("allow 600 more = %d, want the 400 left", k)
	}
	// Reserved, not yet moved: held against the budget, not spent.
	if s := m.Spent(); s != 0 {
		t.Fatalf("spent %d with nothing moved", s)
	}
	m.settle(600, 600)
	m.settle(400, 300)
	if k := m.allow(1000); k != 100 || m.Spent() != 900 {
		t.Fatalf("allow after settling = %d, spent %d", k, m.Spent())
	}
	if k := m.allow(1); k != 0 {
		t.Fatalf("allowed %d past the budget", k)
	}
	m.settle(100, 100)
	if s := m.Spent(); s != 1000 {
		t.Fatalf("spent %d, want 1000", s)
	}
}
