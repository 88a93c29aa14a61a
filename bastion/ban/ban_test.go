package ban

import (
	"net/netip"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/clocktest"
)

func TestBanAfterFailuresWithinWindow(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(time.Unix(0, 0))
	l := New(3, time.Minute, 10*time.Minute, clk)
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
	if b, until := l.Banned(a); !b || !until.Equal(clk.Now().Add(10*time.Minute)) {
		t.Fatalf("banned = %v until %v", b, until)
	}
	if b, _ := l.Banned(other); b {
		t.Fatal("another source is banned")
	}
	clk.Advance(10*time.Minute + time.Second)
	if b, _ := l.Banned(a); b {
		t.Fatal("ban did not expire")
	}
}

func TestFailuresOutsideWindowDoNotAccumulate(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(time.Unix(0, 0))
	l := New(3, time.Minute, time.Hour, clk)
	a := netip.MustParseAddr("203.0.113.5")
	for range 10 {
		if l.Fail(a) {
			t.Fatal("slow failures were banned")
		}
		clk.Advance(31 * time.Second)
		l.Fail(a)
		clk.Advance(31 * time.Second)
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

func TestSource(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ addr, want string }{
		{"198.51.100.7", "198.51.100.7/32"},
		{"::ffff:198.51.100.7", "198.51.100.7/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
	} {
		if got := Source(netip.MustParseAddr(tc.addr)); got.String() != tc.want {
			t.Errorf("Source(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
	if got := Source(netip.Addr{}); got.IsValid() {
		t.Errorf("Source(invalid) = %s, want the zero prefix", got)
	}
}

// TestBoundedUnderFlood: failures from more sources than MaxTracked never
// grow the list beyond it, whether they only count or all ban.
func TestBoundedUnderFlood(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		after int
	}{
		{"counting", 3},
		{"every failure bans", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := clocktest.New(time.Unix(0, 0))
			l := New(tc.after, time.Minute, time.Hour, clk)
			l.max = 1000
			last := netip.MustParseAddr("2001:db8::")
			for i := range 5 * l.max {
				var b [16]byte
				b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
				b[4], b[5], b[6] = byte(i>>16), byte(i>>8), byte(i)
				last = netip.AddrFrom16(b)
				l.Fail(last)
				if n := l.tracked(); n > l.max {
					t.Fatalf("after %d sources the list holds %d > %d", i+1, n, l.max)
				}
				clk.Advance(time.Millisecond)
			}
			if tc.after == 1 {
				if b, _ := l.Banned(last); !b {
					t.Fatal("the newest ban was pruned")
				}
			}
		})
	}
}

func TestBoundedAtMaxTracked(t *testing.T) {
	t.Parallel()
	l := New(1, time.Minute, time.Hour, nil)
	for i := range MaxTracked + 10 {
		l.Fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if n := l.tracked(); n > MaxTracked {
		t.Fatalf("list holds %d > MaxTracked %d", n, MaxTracked)
	}
}
