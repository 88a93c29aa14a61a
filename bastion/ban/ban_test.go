package ban

import (
	"net/netip"
	"testing"
	"time"
)

func TestBanAfterFailuresWithinWindow(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	l := New(3, time.Minute, 10*time.Minute, func() time.Time { return now })
	a := netip.MustParseAddr("198.51.100.20")
	other := netip.MustParseAddr("198.51.100.21")
	if l.Fail(a) || l.Fail(a) {
		t.Fatal("banned before the third failure")
	}
	if b, _ := l.Banned(a); b {
		t.Fatal("banned after two failures")
	}
	if !l.Fail(a) {
		t.Fatal("third failure did not ban")
	}
	if b, until := l.Banned(a); !b || !until.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("banned = %v until %v", b, until)
	}
	if b, _ := l.Banned(other); b {
		t.Fatal("another source is banned")
	}
	now = now.Add(10*time.Minute + time.Second)
	if b, _ := l.Banned(a); b {
		t.Fatal("ban did not expire")
	}
}

func TestFailuresOutsideWindowDoNotAccumulate(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	l := New(3, time.Minute, time.Hour, func() time.Time { return now })
	a := netip.MustParseAddr("203.0.113.5")
	for range 10 {
		if l.Fail(a) {
			t.Fatal("slow failures were banned")
		}
		now = now.Add(31 * time.Second)
		l.Fail(a)
		now = now.Add(31 * time.Second)
	}
}

func TestIPv6CountedPer64(t *testing.T) {
	t.Parallel()
	l := New(2, time.Minute, time.Hour, nil)
	l.Fail(netip.MustParseAddr("2001:db8:1:2::1"))
	if !l.Fail(netip.MustParseAddr("2001:db8:1:2::ffff")) {
		t.Fatal("two addresses of one /64 were not counted together")
	}
	if b, _ := l.Banned(netip.MustParseAddr("2001:db8:1:3::1")); b {
		t.Fatal("neighbouring /64 banned")
	}
	if b, _ := l.Banned(netip.MustParseAddr("::ffff:1.2.3.4")); b {
		t.Fatal("unrelated v4-mapped address banned")
	}
}

func TestDisabled(t *testing.T) {
	t.Parallel()
	l := New(0, time.Minute, time.Hour, nil)
	a := netip.MustParseAddr("192.0.2.1")
	for range 100 {
		if l.Fail(a) {
			t.Fatal("disabled list banned")
		}
	}
}
