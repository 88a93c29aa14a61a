// Package units reads and prints the two quantities lifeline's link checks
// are configured with: amounts of data (ByteSize: "50MB", "1.5GB", "512KiB")
// and link speeds (BitRate: "10Mbps", "512kbps", "1Gbps").
//
// Both types implement envconfig.Decoder (Decode), flag.Value (Set, String)
// and encoding.TextMarshaler/TextUnmarshaler, so they can be used directly in
// configuration structs, command-line flags and JSON. Parsing is exact: the
// number is read as a decimal fraction, never through a float, and a value
// that is not a whole number of bytes (or bits per second) is refused.
package units

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
)

// ByteSize is an amount of data in bytes. The zero value is 0 bytes.
type ByteSize int64

// Byte size units. Decimal (SI) prefixes are powers of 1000, binary (IEC)
// ones powers of 1024.
const (
	Byte ByteSize = 1
	KB   ByteSize = 1000
	MB   ByteSize = 1000 * KB
	GB   ByteSize = 1000 * MB
	TB   ByteSize = 1000 * GB
	KiB  ByteSize = 1024
	MiB  ByteSize = 1024 * KiB
	GiB  ByteSize = 1024 * MiB
	TiB  ByteSize = 1024 * GiB
)

// BitRate is a speed in bits per second. The zero value is 0 bit/s.
type BitRate int64

// Bit rate units (decimal, as link speeds are always quoted).
const (
	Bps  BitRate = 1
	Kbps BitRate = 1000
	Mbps BitRate = 1000 * Kbps
	Gbps BitRate = 1000 * Mbps
	Tbps BitRate = 1000 * Gbps
)

type unit struct {
	name  string
	value int64
}

// byteUnits are matched case-insensitively; printing uses these spellings.
// Ordered largest first; for equal magnitude the binary unit comes first.
var byteUnits = []unit{
	{"TiB", int64(TiB)}, {"TB", int64(TB)},
	{"GiB", int64(GiB)}, {"GB", int64(GB)},
	{"MiB", int64(MiB)}, {"MB", int64(MB)},
	{"KiB", int64(KiB)}, {"kB", int64(KB)},
	{"B", 1},
}

// byteAliases are further accepted spellings (lowercase) of byteUnits.
var byteAliases = map[string]int64{
	"":  1,
	"k": int64(KB), "m": int64(MB), "g": int64(GB), "t": int64(TB),
	"ki": int64(KiB), "mi": int64(MiB), "gi": int64(GiB), "ti": int64(TiB),
}

var rateUnits = []unit{
	{"Tbps", int64(Tbps)}, {"Gbps", int64(Gbps)}, {"Mbps", int64(Mbps)}, {"kbps", int64(Kbps)}, {"bps", 1},
}

// ParseByteSize reads an amount of data: a non-negative decimal number
// ("50", "1.5") followed by an optional unit: B, kB/KB/K, MB/M, GB/G, TB/T
// (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024). Units are
// case-insensitive and may be separated from the number by one space. A
// bare number is bytes. The result must be a whole number of bytes that
// fits in an int64.
func ParseByteSize(s string) (ByteSize, error) {
	num, suffix, err := split(s)
	if err != nil {
		return 0, fmt.Errorf("byte size %q: %w", s, err)
	}
	mult, ok := byteMultiplier(suffix)
	if !ok {
		return 0, fmt.Errorf("byte size %q: unknown unit %q (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, suffix)
	}
	v, err := scale(num, mult)
	if err != nil {
		return 0, fmt.Errorf("byte size %q: %w", s, err)
	}
	return ByteSize(v), nil
}

func byteMultiplier(suffix string) (int64, bool) {
	l := strings.ToLower(suffix)
	for _, u := range byteUnits {
		if strings.ToLower(u.name) == l {
			return u.value, true
		}
	}
	v, ok := byteAliases[l]
	return v, ok
}

// ParseBitRate reads a speed: a non-negative decimal number followed by an
// optional unit: bps, kbps, Mbps, Gbps, Tbps (also written kbit/s, Mbit/s…).
// The prefix letter is case-insensitive, but the unit must say bits ("bps"
// or "bit/s" in lowercase) so that a byte rate such as "10MBps" or "10MB/s"
// is refused rather than misread eightfold. A bare number is bits per
// second. The result must be a whole number of bits per second.
func ParseBitRate(s string) (BitRate, error) {
	num, suffix, err := split(s)
	if err != nil {
		return 0, fmt.Errorf("bit rate %q: %w", s, err)
	}
	mult, ok := rateMultiplier(suffix)
	if !ok {
		return 0, fmt.Errorf("bit rate %q: unknown unit %q (use bps, kbps, Mbps, Gbps or Tbps)", s, suffix)
	}
	v, err := scale(num, mult)
	if err != nil {
		return 0, fmt.Errorf("bit rate %q: %w", s, err)
	}
	return BitRate(v), nil
}

func rateMultiplier(suffix string) (int64, bool) {
	if suffix == "" {
		return 1, true
	}
	var rest string
	switch {
	case strings.HasSuffix(suffix, "bps"):
		rest = strings.TrimSuffix(suffix, "bps")
	case strings.HasSuffix(suffix, "bit/s"):
		rest = strings.TrimSuffix(suffix, "bit/s")
	default:
		return 0, false
	}
	switch strings.ToLower(rest) {
	case "":
		return 1, true
	case "k":
		return int64(Kbps), true
	case "m":
		return int64(Mbps), true
	case "g":
		return int64(Gbps), true
	case "t":
		return int64(Tbps), true
	}
	return 0, false
}

// split separates "1.5 GB" into "1.5" and "GB" and checks the number's
// syntax: digits, at most one dot, at least one digit, no sign or exponent.
func split(s string) (num, suffix string, err error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return "", "", errors.New("empty value")
	}
	i := 0
	digits, dots := 0, 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		if t[i] == '.' {
			dots++
		} else {
			digits++
		}
		i++
	}
	if digits == 0 {
		return "", "", errors.New("must start with a non-negative number")
	}
	if dots > 1 {
		return "", "", errors.New("number has more than one decimal point")
	}
	num = t[:i]
	suffix = t[i:]
	if strings.HasPrefix(suffix, " ") {
		suffix = suffix[1:]
	}
	return num, suffix, nil
}

var maxInt64 = new(big.Rat).SetInt64(math.MaxInt64)

// scale returns num*mult exactly, refusing fractions and overflow.
func scale(num string, mult int64) (int64, error) {
	if len(num) > 64 {
		return 0, errors.New("number is too long")
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%q is not a number", num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if r.Cmp(maxInt64) > 0 {
		return 0, errors.New("too large")
	}
	if !r.IsInt() {
		return 0, errors.New("not a whole number of the base unit")
	}
	return r.Num().Int64(), nil
}

// format prints v with the largest unit that shows it exactly with at most
// three decimals, so that parsing the result gives v back.
func format(v int64, units []unit) string {
	if v < 0 {
		return fmt.Sprintf("%d%s", v, units[len(units)-1].name)
	}
	for _, u := range units {
		if v < u.value {
			continue
		}
		if u.value == 1 {
			break
		}
		whole, rem := v/u.value, v%u.value
		if rem == 0 {
			return fmt.Sprintf("%d%s", whole, u.name)
		}
		// At most three decimals, exactly: rem*1000 must divide by u.value.
		if rem <= math.MaxInt64/1000 && (rem*1000)%u.value == 0 {
			frac := strings.TrimRight(fmt.Sprintf("%03d", rem*1000/u.value), "0")
			return fmt.Sprintf("%d.%s%s", whole, frac, u.name)
		}
	}
	return fmt.Sprintf("%d%s", v, units[len(units)-1].name)
}

// String prints the size with the largest exact unit, e.g. "50MB",
// "1.5GB", "512KiB", "17B".
func (b ByteSize) String() string { return format(int64(b), byteUnits) }

// Bytes is the size as a plain integer.
func (b ByteSize) Bytes() int64 { return int64(b) }

// Decode implements envconfig.Decoder.
func (b *ByteSize) Decode(value string) error {
	v, err := ParseByteSize(value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// Set implements flag.Value.
func (b *ByteSize) Set(value string) error { return b.Decode(value) }

// MarshalText implements encoding.TextMarshaler.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error { return b.Decode(string(text)) }

// String prints the rate with the largest exact unit, e.g. "10Mbps",
// "1.5Gbps", "512kbps".
func (r BitRate) String() string { return format(int64(r), rateUnits) }

// BitsPerSecond is the rate as a float, for arithmetic with measurements.
func (r BitRate) BitsPerSecond() float64 { return float64(r) }

// Decode implements envconfig.Decoder.
func (r *BitRate) Decode(value string) error {
	v, err := ParseBitRate(value)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Set implements flag.Value.
func (r *BitRate) Set(value string) error { return r.Decode(value) }

// MarshalText implements encoding.TextMarshaler.
func (r BitRate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *BitRate) UnmarshalText(text []byte) error { return r.Decode(string(text)) }
