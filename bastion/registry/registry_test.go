package registry

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestRegisterReplaceUnregister(t *testing.T) {
	t.Parallel()
	r := New[int]()
	now := time.Unix(1000, 0)
	if _, replaced := r.Register("Pi", 22, 1, now); replaced {
		t.Fatal("first registration reported a replacement")
	}
	b, ok := r.Lookup("pi", 22)
	if !ok || b.Session != 1 || b.Name != "Pi" {
		t.Fatalf("lookup = %+v, %v; want session 1 with the agent's spelling", b, ok)
	}
	if _, ok := r.Lookup("pi", 23); ok {
		t.Fatal("other port matched")
	}
	// Same session registering again is not a takeover.
	if _, replaced := r.Register("pi", 22, 1, now); replaced {
		t.Fatal("re-registration by the holder reported a replacement")
	}
	prev, replaced := r.Register("pi", 22, 2, now)
	if !replaced || prev != 1 {
		t.Fatalf("takeover = %v, %v; want 1, true", prev, replaced)
	}
	// The standing-by session's cancel removes only its own registration.
	if ok, mv := r.Unregister("pi", 22, 1); !ok || mv != nil {
		t.Fatalf("standby cancel = %v, %+v; want true, no move", ok, mv)
	}
	if b, _ := r.Lookup("pi", 22); b.Session != 2 {
		t.Fatalf("active holder = %d after the standby left, want 2", b.Session)
	}
	if ok, _ := r.Unregister("pi", 22, 1); ok {
		t.Fatal("second cancel by a session holding nothing succeeded")
	}
	if ok, _ := r.Unregister("PI", 22, 2); !ok {
		t.Fatal("holder could not unregister")
	}
	if len(r.Snapshot()) != 0 {
		t.Fatalf("len = %d after unregister", len(r.Snapshot()))
	}
}

func TestNameReturnsToEarlierHolder(t *testing.T) {
	t.Parallel()
	r := New[string]()
	t0 := time.Unix(0, 0)
	r.Register("pi", 22, "a", t0)
	r.Register("nuc", 3389, "a", t0)
	if prev, replaced := r.Register("pi", 22, "b", t0.Add(time.Minute)); !replaced || prev != "a" {
		t.Fatalf("takeover = %q, %v", prev, replaced)
	}
	if b, _ := r.Lookup("pi", 22); b.Session != "b" {
		t.Fatalf("active = %q, want the newest b", b.Session)
	}
	if r.Holds("a") != 2 {
		t.Fatalf("a holds %d, want 2 (one standing by)", r.Holds("a"))
	}
	gone, moves := r.RemoveSession("b")
	if len(gone) != 0 || len(moves) != 1 || moves[0].From.Session != "b" || moves[0].To.Session != "a" {
		t.Fatalf("remove b: gone %+v moves %+v; want pi:22 back to a", gone, moves)
	}
	if b, ok := r.Lookup("pi", 22); !ok || b.Session != "a" || !b.Since.Equal(t0) {
		t.Fatalf("after b left: %+v, %v", b, ok)
	}
	// An explicit cancel by the active holder hands over too.
	r.Register("pi", 22, "c", t0)
	if ok, mv := r.Unregister("pi", 22, "c"); !ok || mv == nil || mv.To.Session != "a" {
		t.Fatalf("cancel by c = %v, %+v", ok, mv)
	}
	gone, moves = r.RemoveSession("a")
	if len(gone) != 2 || len(moves) != 0 || len(r.Snapshot()) != 0 {
		t.Fatalf("last holder left: gone %+v moves %+v len %d", gone, moves, len(r.Snapshot()))
	}
}

func TestASCIIFoldingOnly(t *testing.T) {
	t.Parallel()
	r := New[int]()
	r.Register("spare", 22, 1, time.Time{})
	if _, ok := r.Lookup("\u017fpare", 22); ok {
		t.Fatal("long s matched s: Unicode folding")
	}
	if _, ok := r.Lookup("SPARE", 22); !ok {
		t.Fatal("ASCII case folding lost")
	}
}

func TestRemoveSessionAndSnapshot(t *testing.T) {
	t.Parallel()
	r := New[string]()
	now := time.Unix(0, 0)
	r.Register("nuc", 3389, "a", now)
	r.Register("pi", 22, "a", now)
	r.Register("cam", 80, "b", now)
	if got := r.Holds("a"); got != 2 {
		t.Fatalf("holds = %d", got)
	}
	gone, _ := r.RemoveSession("a")
	if len(gone) != 2 || gone[0].Target() != "nuc:3389" || gone[1].Target() != "pi:22" {
		t.Fatalf("removed %+v", gone)
	}
	snap := r.Snapshot()
	if len(snap) != 1 || snap[0].Target() != "cam:80" {
		t.Fatalf("snapshot %+v", snap)
	}
}

func TestConcurrent(t *testing.T) {
	t.Parallel()
	r := New[int]()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				name := fmt.Sprintf("n%d", j%10)
				r.Register(name, 22, i, time.Time{})
				r.Lookup(name, 22)
				r.Unregister(name, 22, i)
			}
		}()
	}
	wg.Wait()
	if len(r.Snapshot()) > 10 {
		t.Fatalf("len = %d", len(r.Snapshot()))
	}
}

func TestIndexFollowsTakeover(t *testing.T) {
	t.Parallel()
	r := New[int]()
	r.Register("pi", 22, 1, time.Time{})
	r.Register("nuc", 3389, 1, time.Time{})
	r.Register("pi", 22, 2, time.Time{})
	if got := r.Of(1); len(got) != 2 {
		t.Fatalf("old session indexed with %+v; want both, pi:22 standing by", got)
	}
	if got := r.Of(2); len(got) != 1 || got[0].Target() != "pi:22" {
		t.Fatalf("new session indexed with %+v", got)
	}
	if gone, _ := r.RemoveSession(1); len(gone) != 1 || len(r.Snapshot()) != 1 || r.Holds(1) != 0 {
		t.Fatalf("remove: %+v, len %d", gone, len(r.Snapshot()))
	}
}

func TestRegistered(t *testing.T) {
	t.Parallel()
	r := New[int]()
	r.Register("pi", 22, 1, time.Time{})
	r.Register("pi", 22, 2, time.Time{}) // 1 stands by
	for _, tc := range []struct {
		name string
		port uint32
		s    int
		want bool
	}{{"pi", 22, 1, true}, {"PI", 22, 2, true}, {"pi", 23, 1, false}, {"nuc", 22, 1, false}, {"pi", 22, 3, false}} {
		if got := r.Registered(tc.name, tc.port, tc.s); got != tc.want {
			t.Errorf("Registered(%q, %d, %d) = %v, want %v", tc.name, tc.port, tc.s, got, tc.want)
		}
	}
}
