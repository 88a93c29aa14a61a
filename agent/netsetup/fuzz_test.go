package netsetup

import (
	"strconv"
	"strings"
	"testing"

	"github.com/lifeline-dev/lifeline/agent/config"
)

// Seeds live in testdata/fuzz/<FuzzName>/ too.

func FuzzParseMSS(f *testing.F) {
	for _, s := range []string{"1452", "pmtu", "PmTu", "536", "65495", "0", "-1", "99999", "1e3", " 1452", "０１２"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseMSS(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("ParseMSS(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if n == 0 {
			if !strings.EqualFold(s, "pmtu") {
				t.Fatalf("ParseMSS(%q) = 0 (pmtu) for a non-pmtu value", s)
			}
			return
		}
		if n < minMSS || n > maxMSS {
			t.Fatalf("ParseMSS(%q) = %d, out of range", s, n)
		}
		if back, err := strconv.Atoi(s); err != nil || back != n {
			t.Fatalf("ParseMSS(%q) = %d, which does not read back", s, n)
		}
		// The clamp is written as two big-endian bytes.
		if b := mssRule(n).exprs; len(b) == 0 {
			t.Fatal("no expressions")
		}
	})
}

func FuzzParseInterfaceName(f *testing.F) {
	for _, s := range []string{"eth0", "zt+", "+", "tun0:1", "a/b", "..", "abcdefghijklmno", "abcdefghijklmnop", "wg\x00", "é+"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, name string, wildcard bool) {
		if err := config.ParseInterfaceName(name, wildcard); err != nil {
			return
		}
		if len(name) == 0 || len(name) > 15 {
			t.Fatalf("accepted %q of length %d", name, len(name))
		}
		base, isWild := strings.CutSuffix(name, "+")
		if isWild && !wildcard {
			t.Fatalf("accepted wildcard %q without wildcard", name)
		}
		if base == "" || strings.ContainsAny(base, "/:+ \t\n\x00") {
			t.Fatalf("accepted %q", name)
		}
		data := ifnameData(name)
		if isWild {
			if string(data) != base {
				t.Fatalf("ifnameData(%q) = %q, want the prefix", name, data)
			}
		} else if len(data) != 16 || !strings.HasPrefix(string(data), name+"\x00") {
			t.Fatalf("ifnameData(%q) = %q, want the NUL-padded name", name, data)
		}
		if !ifaceMatches(name, base) || ifaceMatches(name, base+"x") != isWild {
			t.Fatalf("ifaceMatches(%q, ...) inconsistent with the pattern", name)
		}
	})
}
