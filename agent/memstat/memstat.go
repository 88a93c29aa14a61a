// Package memstat measures the agent's own memory, as the kernel counts it
// (/proc/self/status) and as the Go runtime holds it (runtime/metrics),
// logs it on request (SIGUSR1: `systemctl kill -s USR1 lifeline-agent`),
// and keeps the idle agent's heap from holding pages it no longer uses.
package memstat

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"syscall"
	"time"

	"github.com/lifeline-dev/lifeline/shared/clock"
)

// Stats is one reading. A figure that could not be read is 0.
type Stats struct {
	// RSS is resident memory (VmRSS): RSSAnon (heap, stacks, written
	// data) plus RSSFile (pages of the binary itself, clean and shared
	// with the page cache: the kernel may drop them whenever it needs the
	// memory).
	RSS, RSSAnon, RSSFile int64
	// HeapLive is the Go heap that was live at the last GC
	// (/gc/heap/live:bytes); HeapObjects is the heap now, garbage not yet
	// collected included (/memory/classes/heap/objects:bytes).
	HeapLive, HeapObjects int64
	// GoTotal is all the memory the Go runtime has mapped
	// (/memory/classes/total:bytes); GoReleased is the part of it returned
	// to the OS (/memory/classes/heap/released:bytes).
	GoTotal, GoReleased int64
	Goroutines          int64
	// GCCycles counts completed GC cycles (/gc/cycles/total:gc-cycles).
	GCCycles int64
}

var samples = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/sched/goroutines:goroutines",
	"/gc/cycles/total:gc-cycles",
}

// Read takes a reading of this process.
func Read() Stats {
	var s Stats
	ms := make([]metrics.Sample, len(samples))
	for i, name := range samples {
		ms[i].Name = name
	}
	metrics.Read(ms)
	dst := []*int64{&s.HeapLive, &s.HeapObjects, &s.GoTotal, &s.GoReleased, &s.Goroutines, &s.GCCycles}
	for i, m := range ms {
		if m.Value.Kind() == metrics.KindUint64 {
			*dst[i] = int64(m.Value.Uint64())
		}
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		s.RSS, s.RSSAnon, s.RSSFile = ProcStatus(b, "VmRSS"), ProcStatus(b, "RssAnon"), ProcStatus(b, "RssFile")
	}
	return s
}

// ProcStatus returns the field of a /proc/PID/status text in bytes (the
// file gives kB), 0 when it is missing.
func ProcStatus(status []byte, field string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok || string(name) != field {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0
		}
		return kb << 10
	}
	return 0
}

// Attrs are s as log attributes, in KiB.
func (s Stats) Attrs() []any {
	kib := func(b int64) string { return fmt.Sprintf("%dKiB", b>>10) }
	return []any{"rss", kib(s.RSS), "rss_anon", kib(s.RSSAnon), "rss_file", kib(s.RSSFile),
		"heap_live", kib(s.HeapLive), "heap_objects", kib(s.HeapObjects), "go_total", kib(s.GoTotal),
		"go_released", kib(s.GoReleased), "goroutines", s.Goroutines, "gc_cycles", s.GCCycles}
}

// OnSignal starts catching SIGUSR1 at once and returns the loop that logs
// a reading ("memory") for each one until ctx ends; the caller must run it
// (signals caught meanwhile wait for it).
func OnSignal(log *slog.Logger) func(ctx context.Context) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	return func(ctx context.Context) {
		defer signal.Stop(c)
		for {
			select {
			case <-ctx.Done():
				return
			case <-c:
				log.Info("memory", Read().Attrs()...)
			}
		}
	}
}

// Scavenge looks at the heap every `every` until ctx ends and, when it
// holds more than slack bytes it does not need (garbage not yet collected
// plus free pages not yet returned), collects and returns them to the OS
// (debug.FreeOSMemory). An idle agent allocates so little (keepalives)
// that the runtime would wait hours to reach its first GC goal (4 MiB) and
// then keep those pages resident; a forced cycle on a heap of a few hundred
// KiB costs well under a millisecond. Below slack nothing is done, so a
// fresh agent does not pay for a GC it does not need.
func Scavenge(ctx context.Context, clk clock.Clock, every time.Duration, slack int64) {
	ms := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/free:bytes"}, {Name: "/gc/heap/live:bytes"}}
	for {
		t := clk.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		metrics.Read(ms)
		var unneeded int64
		for i, m := range ms {
			if m.Value.Kind() != metrics.KindUint64 {
				continue
			}
			v := int64(m.Value.Uint64())
			if i == 2 {
				v = -v // live at the last GC is needed
			}
			unneeded += v
		}
		if unneeded > slack {
			debug.FreeOSMemory()
		}
	}
}
