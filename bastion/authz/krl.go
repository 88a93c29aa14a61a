package authz

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"time"

	"golang.org/x/crypto/ssh"
)

// KRL format constants, from OpenSSH's PROTOCOL.krl.
const (
	krlMagic         = "SSHKRL\n\x00"
	krlFormatVersion = 1

	krlSectionCertificates = 1
	krlSectionExplicitKey  = 2
	krlSectionSHA1         = 3
	krlSectionSignature    = 4
	krlSectionSHA256       = 5
	krlSectionExtension    = 255

	krlCertSerialList   = 0x20
	krlCertSerialRange  = 0x21
	krlCertSerialBitmap = 0x22
	krlCertKeyID        = 0x23
	krlCertExtension    = 0x39

	// krlMaxBitmapBytes is the largest serial bitmap OpenSSH accepts
	// (SSHBUF_MAX_BIGNUM plus a leading zero byte).
	krlMaxBitmapBytes = 16384/8 + 1
	// krlMaxFileSize bounds what LoadRevocationList reads.
	krlMaxFileSize = 16 << 20
)

// RevocationList is an OpenSSH key revocation list (KRL), the binary format
// `ssh-keygen -k` writes and sshd reads as RevokedKeys. It revokes plain
// keys (by SHA-1 or SHA-256 hash of their wire form, or by the key itself)
// and certificates (by serial number or key ID, per CA or for every CA).
// It is immutable after parsing and safe for concurrent use. A nil
// *RevocationList revokes nothing.
//
// Revoked reports what sshd's ssh_krl_check_key would: a plain key listed by
// hash or explicitly; for a certificate, its certified key listed the same
// way, a serial (never 0) or key ID revoked for its CA or for every CA, or
// its CA key listed by hash or explicitly.
type RevocationList struct {
	Version   uint64    // krl_version: increases with every change (ssh-keygen -z)
	Generated time.Time // generated_date
	Comment   string

	sha1s   map[[sha1.Size]byte]bool
	sha256s map[[sha256.Size]byte]bool
	blobs   map[string]bool          // explicit plain key blobs
	certs   map[string]*revokedCerts // by CA key blob; "" = every CA
}

// revokedCerts are the certificate revocations of one CA (or of every CA).
type revokedCerts struct {
	serials []serialRange // sorted by lo, not overlapping
	keyIDs  map[string]bool
}

type serialRange struct{ lo, hi uint64 }

// LoadRevocationList reads a KRL file. An empty file is an empty list
// (revokes nothing), as `touch revoked_keys` is for sshd. Anything else that
// is not a well-formed KRL is an error naming the file.
func LoadRevocationList(path string) (*RevocationList, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read revoked keys: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, krlMaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read revoked keys %s: %w", path, err)
	}
	if len(data) > krlMaxFileSize {
		return nil, fmt.Errorf("revoked keys %s: larger than %d MiB", path, krlMaxFileSize>>20)
	}
	if len(data) == 0 {
		return &RevocationList{}, nil
	}
	r, err := ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("revoked keys %s: %w", path, err)
	}
	return r, nil
}

// ParseRevocationList parses a KRL. It accepts every section `ssh-keygen -k`
// writes and refuses, as sshd does, unknown section types, critical
// extensions, serial 0, inverted serial ranges, bitmaps that wrap, oversized
// numbers and trailing bytes inside a section. KRL signature sections are
// refused too (OpenSSH 9.4 and later no longer accept them).
func ParseRevocationList(data []byte) (*RevocationList, error) {
	if !bytes.HasPrefix(data, []byte(krlMagic)) {
		return nil, errors.New(`not an OpenSSH KRL (no "SSHKRL" magic): make one with ssh-keygen -k`)
	}
	r := &krlReader{b: data[len(krlMagic):], what: "header"}
	version := r.u32()
	if r.err == nil && version != krlFormatVersion {
		return nil, fmt.Errorf("KRL format version %d is not supported (want %d)", version, krlFormatVersion)
	}
	l := &RevocationList{
		sha1s:   map[[sha1.Size]byte]bool{},
		sha256s: map[[sha256.Size]byte]bool{},
		blobs:   map[string]bool{},
		certs:   map[string]*revokedCerts{},
	}
	l.Version = r.u64()
	generated := r.u64()
	_ = r.u64()   // flags: none are defined
	_ = r.bytes() // reserved
	l.Comment = r.cstring()
	if r.err != nil {
		return nil, r.err
	}
	if generated <= 1<<62 {
		l.Generated = time.Unix(int64(generated), 0).UTC()
	}
	for n := 1; len(r.b) > 0; n++ {
		typ := r.u8()
		r.what = fmt.Sprintf("section %d (type %d)", n, typ)
		if typ == krlSectionSignature {
			return nil, fmt.Errorf("%s: KRL signatures are not supported (nor by OpenSSH 9.4 and later): sign the file with ssh-keygen -Y sign and check it before installing", r.what)
		}
		body := r.bytes()
		if r.err != nil {
			return nil, r.err
		}
		s := &krlReader{b: body, what: r.what}
		switch typ {
		case krlSectionCertificates:
			l.parseCerts(s)
		case krlSectionExplicitKey:
			for len(s.b) > 0 && s.err == nil {
				blob := s.bytes()
				if s.err == nil {
					l.blobs[string(blob)] = true
				}
			}
		case krlSectionSHA1:
			for len(s.b) > 0 && s.err == nil {
				h := s.bytes()
				if s.err == nil && len(h) != sha1.Size {
					s.fail(fmt.Sprintf("SHA-1 hash of %d bytes (want %d)", len(h), sha1.Size))
				}
				if s.err == nil {
					l.sha1s[[sha1.Size]byte(h)] = true
				}
			}
		case krlSectionSHA256:
			for len(s.b) > 0 && s.err == nil {
				h := s.bytes()
				if s.err == nil && len(h) != sha256.Size {
					s.fail(fmt.Sprintf("SHA-256 hash of %d bytes (want %d)", len(h), sha256.Size))
				}
				if s.err == nil {
					l.sha256s[[sha256.Size]byte(h)] = true
				}
			}
		case krlSectionExtension:
			s.extension()
		default:
			return nil, fmt.Errorf("%s: unknown section type: this KRL needs a newer lifeline", r.what)
		}
		if s.err != nil {
			return nil, s.err
		}
	}
	for _, rc := range l.certs {
		rc.serials = mergeRanges(rc.serials)
	}
	return l, nil
}

// parseCerts reads a certificate section: the CA key (empty: every CA), a
// reserved string, then subsections.
func (l *RevocationList) parseCerts(s *krlReader) {
	ca := s.bytes()
	_ = s.bytes() // reserved
	if s.err != nil {
		return
	}
	if len(ca) > 0 {
		key, err := ssh.ParsePublicKey(ca)
		if err != nil {
			s.fail("CA key: " + err.Error())
			return
		}
		if _, isCert := key.(*ssh.Certificate); isCert {
			s.fail("CA key is a certificate")
			return
		}
	}
	rc := l.certs[string(ca)]
	if rc == nil {
		rc = &revokedCerts{keyIDs: map[string]bool{}}
		l.certs[string(ca)] = rc
	}
	for len(s.b) > 0 && s.err == nil {
		typ := s.u8()
		body := s.bytes()
		if s.err != nil {
			return
		}
		sub := &krlReader{b: body, what: fmt.Sprintf("%s, subsection type %#x", s.what, typ)}
		switch typ {
		case krlCertSerialList:
			for len(sub.b) > 0 && sub.err == nil {
				serial := sub.u64()
				if sub.err == nil {
					rc.addRange(sub, serial, serial)
				}
			}
		case krlCertSerialRange:
			lo, hi := sub.u64(), sub.u64()
			if sub.err == nil {
				rc.addRange(sub, lo, hi)
			}
		case krlCertSerialBitmap:
			offset := sub.u64()
			bitmap := sub.mpint()
			if sub.err == nil {
				rc.addBitmap(sub, offset, bitmap)
			}
		case krlCertKeyID:
			for len(sub.b) > 0 && sub.err == nil {
				id := sub.cstring()
				if sub.err == nil {
					rc.keyIDs[id] = true
				}
			}
		case krlCertExtension:
			sub.extension()
		default:
			sub.fail("unknown certificate subsection type")
		}
		if sub.err == nil && len(sub.b) > 0 {
			sub.fail("unparsed data at the end")
		}
		if sub.err != nil {
			s.err = sub.err
		}
	}
}

// addRange records lo..hi, refusing what sshd refuses: serial 0 and lo > hi.
func (rc *revokedCerts) addRange(r *krlReader, lo, hi uint64) {
	switch {
	case lo == 0:
		r.fail("serial 0 cannot be revoked (it means no serial)")
	case lo > hi:
		r.fail(fmt.Sprintf("serial range %d-%d is inverted", lo, hi))
	default:
		rc.serials = append(rc.serials, serialRange{lo, hi})
	}
}

// addBitmap records the serials offset+N for every bit N set in the
// big-endian bitmap.
func (rc *revokedCerts) addBitmap(r *krlReader, offset uint64, bitmap []byte) {
	nbits := uint64(len(bitmap)) * 8
	if len(bitmap) > 0 {
		nbits -= uint64(leadingZeros8(bitmap[0]))
	}
	if nbits > 1 && offset+(nbits-1) < offset {
		r.fail("serial bitmap wraps past 2^64")
		return
	}
	inRun := false
	var start uint64
	for n := uint64(0); n <= nbits; n++ {
		set := n < nbits && bitmap[len(bitmap)-1-int(n/8)]&(1<<(n%8)) != 0
		switch {
		case set && !inRun:
			inRun, start = true, n
		case !set && inRun:
			inRun = false
			rc.addRange(r, offset+start, offset+n-1)
			if r.err != nil {
				return
			}
		}
	}
}

func leadingZeros8(b byte) int {
	n := 0
	for i := 7; i >= 0 && b&(1<<i) == 0; i-- {
		n++
	}
	return n
}

// mergeRanges sorts ranges and joins the overlapping and adjacent ones, so
// a lookup is one binary search.
func mergeRanges(rs []serialRange) []serialRange {
	if len(rs) < 2 {
		return rs
	}
	slices.SortFunc(rs, func(a, b serialRange) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.lo <= last.hi || r.lo == last.hi+1 {
			if r.hi > last.hi {
				last.hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

func (rc *revokedCerts) hasSerial(serial uint64) bool {
	i := sort.Search(len(rc.serials), func(i int) bool { return rc.serials[i].hi >= serial })
	return i < len(rc.serials) && rc.serials[i].lo <= serial
}

// Revoked reports whether key (a plain key or an *ssh.Certificate) is
// revoked, and why, in words fit for the audit log.
func (l *RevocationList) Revoked(key ssh.PublicKey) (string, bool) {
	if l == nil || key == nil {
		return "", false
	}
	cert, isCert := key.(*ssh.Certificate)
	plain := key
	if isCert {
		plain = cert.Key
	}
	if why, ok := l.plainRevoked(plain); ok {
		return why, true
	}
	if !isCert {
		return "", false
	}
	for _, ca := range []string{string(cert.SignatureKey.Marshal()), ""} {
		rc := l.certs[ca]
		if rc == nil {
			continue
		}
		scope := "its CA"
		if ca == "" {
			scope = "every CA"
		}
		if rc.keyIDs[cert.KeyId] {
			return fmt.Sprintf("certificate key ID %q is revoked for %s", sanitizeName(cert.KeyId), scope), true
		}
		if cert.Serial != 0 && rc.hasSerial(cert.Serial) {
			return fmt.Sprintf("certificate serial %d is revoked for %s", cert.Serial, scope), true
		}
	}
	if why, ok := l.plainRevoked(cert.SignatureKey); ok {
		return "its CA " + ssh.FingerprintSHA256(cert.SignatureKey) + ": " + why, true
	}
	return "", false
}

// plainRevoked checks a plain key against the hash and explicit sections.
func (l *RevocationList) plainRevoked(key ssh.PublicKey) (string, bool) {
	blob := key.Marshal()
	fp := ssh.FingerprintSHA256(key)
	if l.sha256s[sha256.Sum256(blob)] {
		return "key " + fp + " is revoked by its SHA-256 hash", true
	}
	if l.sha1s[sha1.Sum(blob)] {
		return "key " + fp + " is revoked by its SHA-1 hash", true
	}
	if l.blobs[string(blob)] {
		return "key " + fp + " is revoked", true
	}
	return "", false
}

// String summarises the list for logs: version and entry counts.
func (l *RevocationList) String() string {
	if l == nil {
		return "no revocation list"
	}
	ids, ranges := 0, 0
	for _, rc := range l.certs {
		ids += len(rc.keyIDs)
		ranges += len(rc.serials)
	}
	return fmt.Sprintf("KRL version %d: %d keys, %d certificate serial ranges, %d certificate key IDs",
		l.Version, len(l.sha1s)+len(l.sha256s)+len(l.blobs), ranges, ids)
}

// krlReader reads SSH wire types from b; the first error sticks and names
// the part being read.
type krlReader struct {
	b    []byte
	what string
	err  error
}

func (r *krlReader) fail(msg string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: %s", r.what, msg)
	}
}

func (r *krlReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.fail("truncated")
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *krlReader) u8() byte {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *krlReader) u32() uint32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *krlReader) u64() uint64 {
	b := r.take(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (r *krlReader) bytes() []byte {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.b)) {
		r.fail("truncated string")
		return nil
	}
	return r.take(int(n))
}

// cstring is a string that must not contain NUL (sshbuf_get_cstring).
func (r *krlReader) cstring() string {
	b := r.bytes()
	if r.err == nil && bytes.IndexByte(b, 0) >= 0 {
		r.fail("string contains a NUL byte")
	}
	return string(b)
}

// mpint returns the magnitude of a non-negative mpint, without leading
// zeros, refusing negative and oversized values as sshd does.
func (r *krlReader) mpint() []byte {
	b := r.bytes()
	if r.err != nil {
		return nil
	}
	if len(b) > 0 && b[0]&0x80 != 0 {
		r.fail("negative bitmap")
		return nil
	}
	if len(b) > krlMaxBitmapBytes || len(b) == krlMaxBitmapBytes && b[0] != 0 {
		r.fail(fmt.Sprintf("bitmap of %d bytes is too large", len(b)))
		return nil
	}
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// extension reads an extension (section or certificate subsection): name,
// critical flag, contents. A critical one is refused: none are supported.
func (r *krlReader) extension() {
	name := r.cstring()
	critical := r.u8()
	_ = r.bytes()
	if r.err != nil {
		return
	}
	if len(r.b) > 0 {
		r.fail("extension " + fmt.Sprintf("%q", sanitizeName(name)) + ": trailing data")
		return
	}
	if critical != 0 {
		r.fail(fmt.Sprintf("unsupported critical extension %q", sanitizeName(name)))
	}
}
