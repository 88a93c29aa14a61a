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
	// The stale session's late cancel must not remove the new binding.
	if r.Unregister("pi", 22, 1) {
		t.Fatal("stale session unregistered the new holder's name")
	}
	if !r.Unregister("PI", 22, 2) {
		t.Fatal("holder could not unregister")
	}
	if r.Len() != 0 {
		t.Fatalf("len = %d after unregister", r.Len())
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
	gone := r.RemoveSession("a")
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
	if r.Len() > 10 {
		t.Fatalf("len = %d", r.Len())
	}
}

func TestIndexFollowsTakeover(t *testing.T) {
	t.Parallel()
	r := New[int]()
	r.Register("pi", 22, 1, time.Time{})
	r.Register("nuc", 3389, 1, time.Time{})
	r.Register("pi", 22, 2, time.Time{})
	if got := r.Of(1); len(got) != 1 || got[0].Target() != "nuc:3389" {
		t.Fatalf("old session still indexed with %+v", got)
	}
	if got := r.Of(2); len(got) != 1 || got[0].Target() != "pi:22" {
		t.Fatalf("new session indexed with %+v", got)
	}
	if gone := r.RemoveSession(1); len(gone) != 1 || r.Len() != 1 || r.Holds(1) != 0 {
		t.Fatalf("remove: %+v, len %d", gone, r.Len())
	}
}
