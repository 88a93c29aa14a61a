package memstat

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
)

func TestProcStatus(t *testing.T) {
	t.Parallel()
	status := []byte("Name:\tlifeline-agent\nVmHWM:\t   10144 kB\nVmRSS:\t    9864 kB\nRssAnon:\t    1512 kB\nRssFile:\t8352 kB\nThreads:\t5\nBad:\tx kB\n")
	for _, tt := range []struct {
		field string
		want  int64
	}{{"VmRSS", 9864 << 10}, {"RssAnon", 1512 << 10}, {"RssFile", 8352 << 10}, {"Missing", 0}, {"Bad", 0}, {"Name", 0}} {
		if got := ProcStatus(status, tt.field); got != tt.want {
			t.Errorf("%s = %d, want %d", tt.field, got, tt.want)
		}
	}
}

func TestRead(t *testing.T) {
	t.Parallel()
	s := Read()
	if s.RSS <= 0 || s.RSS < s.RSSAnon+s.RSSFile || s.RSSAnon <= 0 || s.GoTotal <= 0 || s.Goroutines < 1 || s.HeapObjects <= 0 {
		t.Errorf("implausible reading %+v", s)
	}
}

type buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *buffer) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *buffer) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// Not parallel: it signals the test process.
func TestOnSignal(t *testing.T) {
	var out buffer
	run := OnSignal(slog.New(slog.NewTextHandler(&out, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); run(ctx) }()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "msg=memory") {
		if time.Now().After(deadline) {
			t.Fatal("no memory line after SIGUSR1")
		}
		tm := time.NewTimer(10 * time.Millisecond)
		<-tm.C
	}
	cancel()
	<-done
	for _, k := range []string{"rss=", "rss_anon=", "rss_file=", "heap_live=", "heap_objects=", "go_total=", "goroutines=", "gc_cycles="} {
		if !strings.Contains(out.String(), k) {
			t.Errorf("memory line lacks %s: %s", k, out.String())
		}
	}
}

var sink []byte

// Scavenge collects when the heap holds more than its slack, and only then;
// it stops with ctx.
func TestScavenge(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	waitPending := func() {
		deadline := time.Now().Add(10 * time.Second)
		for clk.Pending() != 1 {
			if time.Now().After(deadline) {
				t.Fatal("Scavenge is not waiting on its timer")
			}
			tm := time.NewTimer(time.Millisecond)
			<-tm.C
		}
	}
	for _, tt := range []struct {
		name    string
		slack   int64
		collect bool
	}{
		{"over the slack", 1 << 20, true},
		{"within the slack", 1 << 50, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); Scavenge(ctx, clk, time.Minute, tt.slack) }()
			waitPending()
			before := Read().GCCycles
			for range 3 {
				if tt.collect {
					for range 64 {
						sink = make([]byte, 64<<10) // 4 MiB of garbage
					}
					sink = nil
				}
				clk.Advance(time.Minute)
				waitPending()
			}
			after := Read().GCCycles
			if tt.collect && after < before+3 {
				t.Errorf("%d GC cycles in three rounds over the slack, want 3", after-before)
			}
			if !tt.collect && after != before {
				t.Errorf("%d GC cycles within the slack, want none", after-before)
			}
			cancel()
			<-done
			if clk.Pending() != 0 {
				t.Error("timer left behind")
			}
		})
	}
}
