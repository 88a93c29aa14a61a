package authz

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// krlBuilder writes KRLs by hand, for the shapes ssh-keygen never writes
// (wildcard CA, extensions, malformed input).
type krlBuilder struct{ b bytes.Buffer }

func newKRL(version uint64, comment string) *krlBuilder {
	k := &krlBuilder{}
	k.b.WriteString(krlMagic)
	k.u32(krlFormatVersion)
	k.u64(version)
	k.u64(1767225600) // generated_date
	k.u64(0)          // flags
	k.str(nil)        // reserved
	k.str([]byte(comment))
	return k
}

func (k *krlBuilder) u32(v uint32) { binary.Write(&k.b, binary.BigEndian, v) }
func (k *krlBuilder) u64(v uint64) { binary.Write(&k.b, binary.BigEndian, v) }
func (k *krlBuilder) str(s []byte) { k.u32(uint32(len(s))); k.b.Write(s) }

// section appends a section of the given type whose body is body's bytes.
func (k *krlBuilder) section(typ byte, body *krlBuilder) *krlBuilder {
	k.b.WriteByte(typ)
	k.str(body.b.Bytes())
	return k
}

func (k *krlBuilder) bytes() []byte { return bytes.Clone(k.b.Bytes()) }

// body is a builder with no header, for section contents.
func body() *krlBuilder { return &krlBuilder{} }

// certSection is a certificate section for ca (nil: every CA) holding the
// given subsections (type, body).
func certSection(ca ssh.PublicKey, subs ...any) *krlBuilder {
	s := body()
	if ca != nil {
		s.str(ca.Marshal())
	} else {
		s.str(nil)
	}
	s.str(nil) // reserved
	for i := 0; i < len(subs); i += 2 {
		s.b.WriteByte(subs[i].(byte))
		s.str(subs[i+1].(*krlBuilder).b.Bytes())
	}
	return s
}

func serials(vs ...uint64) *krlBuilder {
	s := body()
	for _, v := range vs {
		s.u64(v)
	}
	return s
}

func strs(vs ...string) *krlBuilder {
	s := body()
	for _, v := range vs {
		s.str([]byte(v))
	}
	return s
}

func ext(name string, critical bool) *krlBuilder {
	s := body()
	s.str([]byte(name))
	if critical {
		s.b.WriteByte(1)
	} else {
		s.b.WriteByte(0)
	}
	s.str([]byte("contents"))
	return s
}

func bitmap(offset uint64, mag []byte) *krlBuilder {
	s := body()
	s.u64(offset)
	s.str(mag)
	return s
}

// TestRevocationListSections builds one KRL of every section type by hand
// and checks what it revokes, including the shapes ssh-keygen cannot write
// (a section for every CA, non-critical extensions).
func TestRevocationListSections(t *testing.T) {
	t.Parallel()
	ca, ca2, revokedCA := newSigner(t, "ed25519"), newSigner(t, "ecdsa"), newSigner(t, "ed25519")
	keys := map[string]ssh.Signer{}
	for _, n := range []string{"sha1", "sha256", "explicit", "plain", "certified-revoked"} {
		keys[n] = newSigner(t, "ed25519")
	}
	h1 := sha1.Sum(keys["sha1"].PublicKey().Marshal())
	h256 := sha256.Sum256(keys["sha256"].PublicKey().Marshal())
	data := newKRL(7, "test list").
		section(krlSectionSHA1, strs(string(h1[:]))).
		section(krlSectionSHA256, strs(string(h256[:]))).
		section(krlSectionExplicitKey, strs(string(keys["explicit"].PublicKey().Marshal()), string(revokedCA.PublicKey().Marshal()))).
		section(krlSectionExtension, ext("ignored@example.org", false)).
		section(krlSectionCertificates, certSection(ca.PublicKey(),
			byte(krlCertSerialList), serials(5, 9),
			byte(krlCertSerialRange), serials(100, 199),
			byte(krlCertSerialBitmap), bitmap(1000, []byte{0x00, 0x81}), // 1000 and 1007
			byte(krlCertKeyID), strs("mallory"),
			byte(krlCertExtension), ext("ignored@example.org", false),
		)).
		section(krlSectionCertificates, certSection(nil, byte(krlCertKeyID), strs("everywhere"))).
		section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialRange), serials(150, 300))). // overlaps 100-199
		bytes()
	l, err := ParseRevocationList(data)
	if err != nil {
		t.Fatal(err)
	}
	if l.Version != 7 || l.Comment != "test list" || l.Generated.Unix() != 1767225600 {
		t.Errorf("header: version %d comment %q generated %s", l.Version, l.Comment, l.Generated)
	}
	if got := l.String(); !strings.Contains(got, "version 7") || !strings.Contains(got, "4 keys") {
		t.Errorf("String() = %q", got)
	}
	cert := func(signer ssh.Signer, key ssh.Signer, serial uint64, id string) *ssh.Certificate {
		return signCert(t, signer, key.PublicKey(), certOpts{keyID: id})
	}
	withSerial := func(c *ssh.Certificate, signer ssh.Signer, serial uint64) *ssh.Certificate {
		c.Serial = serial
		if err := c.SignCert(rand.Reader, signer); err != nil {
			t.Fatal(err)
		}
		return c
	}
	plain := keys["plain"]
	tests := []struct {
		name string
		key  ssh.PublicKey
		want string // "" = not revoked
	}{
		{"sha1 listed", keys["sha1"].PublicKey(), "revoked by its SHA-1 hash"},
		{"sha256 listed", keys["sha256"].PublicKey(), "revoked by its SHA-256 hash"},
		{"explicit", keys["explicit"].PublicKey(), "is revoked"},
		{"unlisted", plain.PublicKey(), ""},
		{"cert of a listed key", withSerial(cert(ca, keys["sha256"], 0, "x"), ca, 42), "SHA-256 hash"},
		{"serial in list", withSerial(cert(ca, plain, 0, "a"), ca, 9), "serial 9 is revoked for its CA"},
		{"serial in range", withSerial(cert(ca, plain, 0, "a"), ca, 199), "serial 199"},
		{"serial in merged range", withSerial(cert(ca, plain, 0, "a"), ca, 250), "serial 250"},
		{"serial after range", withSerial(cert(ca, plain, 0, "a"), ca, 301), ""},
		{"serial in bitmap, low bit", withSerial(cert(ca, plain, 0, "a"), ca, 1000), "serial 1000"},
		{"serial in bitmap, high bit", withSerial(cert(ca, plain, 0, "a"), ca, 1007), "serial 1007"},
		{"serial not in bitmap", withSerial(cert(ca, plain, 0, "a"), ca, 1003), ""},
		{"serial 0 never matches", withSerial(cert(ca, plain, 0, "a"), ca, 0), ""},
		{"same serial, other CA", withSerial(cert(ca2, plain, 0, "a"), ca2, 9), ""},
		{"key ID of its CA", withSerial(cert(ca, plain, 0, "mallory"), ca, 2), `key ID "mallory" is revoked for its CA`},
		{"key ID of another CA", withSerial(cert(ca2, plain, 0, "mallory"), ca2, 2), ""},
		{"key ID for every CA", withSerial(cert(ca2, plain, 0, "everywhere"), ca2, 2), "revoked for every CA"},
		{"revoked CA", withSerial(cert(revokedCA, plain, 0, "a"), revokedCA, 2), "its CA SHA256:"},
		{"the CA key itself", revokedCA.PublicKey(), "is revoked"},
	}
	for _, tc := range tests {
		why, revoked := l.Revoked(tc.key)
		if (tc.want != "") != revoked || !strings.Contains(why, tc.want) {
			t.Errorf("%s: Revoked = %v %q, want %q", tc.name, revoked, why, tc.want)
		}
	}
	var none *RevocationList
	if _, revoked := none.Revoked(plain.PublicKey()); revoked {
		t.Error("a nil list revoked a key")
	}
}

// TestRevocationListRefuses: what sshd refuses is refused, with a reason.
func TestRevocationListRefuses(t *testing.T) {
	t.Parallel()
	ca := newSigner(t, "ed25519")
	header := newKRL(1, "")
	badVersion := &krlBuilder{}
	badVersion.b.WriteString(krlMagic)
	badVersion.u32(2)
	withNUL := newKRL(1, "a\x00b")
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"text key list", []byte("ssh-ed25519 AAAA x\n"), "not an OpenSSH KRL"},
		{"truncated header", header.bytes()[:20], "header: truncated"},
		{"format version 2", badVersion.bytes(), "format version 2"},
		{"NUL in comment", withNUL.bytes(), "NUL"},
		{"unknown section", newKRL(1, "").section(9, body()).bytes(), "unknown section type"},
		{"signature section", newKRL(1, "").section(krlSectionSignature, strs("key")).bytes(), "KRL signatures are not supported"},
		{"critical extension", newKRL(1, "").section(krlSectionExtension, ext("must@example.org", true)).bytes(), `unsupported critical extension "must@example.org"`},
		{"extension trailing data", newKRL(1, "").section(krlSectionExtension, func() *krlBuilder { e := ext("x", false); e.b.WriteByte(0); return e }()).bytes(), "trailing data"},
		{"critical cert extension", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertExtension), ext("must", true))).bytes(), "critical extension"},
		{"unknown cert subsection", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(0x30), body())).bytes(), "unknown certificate subsection"},
		{"serial 0", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialList), serials(0))).bytes(), "serial 0"},
		{"inverted range", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialRange), serials(9, 5))).bytes(), "inverted"},
		{"range from 0", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialRange), serials(0, 5))).bytes(), "serial 0"},
		{"range trailing data", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialRange), serials(1, 5, 7))).bytes(), "unparsed data"},
		{"partial serial", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialList), strs("x"))).bytes(), "truncated"},
		{"bitmap bit 0 at offset 0", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialBitmap), bitmap(0, []byte{1}))).bytes(), "serial 0"},
		{"bitmap wraps", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialBitmap), bitmap(^uint64(0), []byte{3}))).bytes(), "wraps"},
		{"negative bitmap", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialBitmap), bitmap(1, []byte{0x80}))).bytes(), "negative"},
		{"huge bitmap", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialBitmap), bitmap(1, bytes.Repeat([]byte{1}, 2049)))).bytes(), "too large"},
		{"bad CA key", newKRL(1, "").section(krlSectionCertificates, func() *krlBuilder { s := body(); s.str([]byte("junk")); s.str(nil); return s }()).bytes(), "CA key"},
		{"short SHA-1", newKRL(1, "").section(krlSectionSHA1, strs("abc")).bytes(), "SHA-1 hash of 3 bytes"},
		{"short SHA-256", newKRL(1, "").section(krlSectionSHA256, strs(strings.Repeat("a", 20))).bytes(), "SHA-256 hash of 20 bytes"},
		{"section longer than the file", append(newKRL(1, "").bytes(), 2, 0, 0, 1, 0), "truncated"},
		{"key ID with NUL", newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertKeyID), strs("a\x00"))).bytes(), "NUL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, err := ParseRevocationList(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseRevocationList = %v, %v; want an error containing %q", l, err, tc.want)
			}
		})
	}
	// The largest bitmap sshd takes (2048 bytes after a leading zero) is fine.
	big := append([]byte{0}, bytes.Repeat([]byte{0xff}, 2048)...)
	if _, err := ParseRevocationList(newKRL(1, "").section(krlSectionCertificates, certSection(ca.PublicKey(), byte(krlCertSerialBitmap), bitmap(1, big))).bytes()); err != nil {
		t.Errorf("largest bitmap: %v", err)
	}
}

func TestLoadRevocationList(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if l, err := LoadRevocationList(empty); err != nil || l == nil {
		t.Fatalf("an empty file is an empty list: %v %v", l, err)
	}
	if _, err := LoadRevocationList(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("SSHKRL\n\x00\x00"), 0o600)
	if _, err := LoadRevocationList(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: error must name it: %v", err)
	}
}

// keygenKey makes a key with the real ssh-keygen and returns its path.
func keygenKey(t *testing.T, dir, name, typ string) string {
	t.Helper()
	args := []string{"-q", "-t", typ, "-N", "", "-C", name, "-f", name}
	if typ == "rsa" {
		args = append(args, "-b", "3072")
	}
	sshKeygen(t, dir, args...)
	return filepath.Join(dir, name)
}

// TestRevocationListMatchesSSHKeygen revokes keys and certificates with the
// real `ssh-keygen -k` (every spec line it knows, in two updates, two CAs)
// and checks each key's verdict against `ssh-keygen -Q`, OpenSSH's own
// reading of the same file.
func TestRevocationListMatchesSSHKeygen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed (Debian package openssh-client)")
	}
	ca1 := keygenKey(t, dir, "ca1", "ed25519")
	ca2 := keygenKey(t, dir, "ca2", "ecdsa")
	ca3 := keygenKey(t, dir, "ca3", "ed25519") // revoked as a key: its certificates go too
	var files []string
	plain := map[string]string{}
	for i, typ := range []string{"ed25519", "ecdsa", "rsa", "ed25519", "ecdsa", "ed25519", "ed25519"} {
		name := fmt.Sprintf("k%d", i)
		plain[name] = keygenKey(t, dir, name, typ)
		files = append(files, plain[name]+".pub")
	}
	sign := func(ca, key, id string, serial int) string {
		t.Helper()
		sub := filepath.Join(dir, fmt.Sprintf("%s-%s-%d", filepath.Base(ca), id, serial))
		os.MkdirAll(sub, 0o700)
		data, _ := os.ReadFile(key + ".pub")
		os.WriteFile(filepath.Join(sub, "id.pub"), data, 0o600)
		sshKeygen(t, sub, "-q", "-s", ca, "-I", id, "-z", fmt.Sprint(serial), "-n", "ops", filepath.Join(sub, "id.pub"))
		files = append(files, filepath.Join(sub, "id-cert.pub"))
		return filepath.Join(sub, "id-cert.pub")
	}
	for _, serial := range []int{1, 5, 7, 10, 15, 20, 21, 100, 1000} {
		sign(ca1, plain["k5"], fmt.Sprintf("s%d", serial), serial)
		sign(ca2, plain["k5"], fmt.Sprintf("s%d", serial), serial)
	}
	sign(ca1, plain["k6"], "bob", 0)
	sign(ca2, plain["k6"], "bob", 0)
	sign(ca1, plain["k6"], "carol", 0)
	sign(ca3, plain["k6"], "carol", 3)
	sign(ca1, plain["k0"], "of-a-revoked-key", 77)
	fingerprint, err := exec.Command("ssh-keygen", "-lf", plain["k3"]+".pub").Output()
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string { b, _ := os.ReadFile(p); return strings.TrimSpace(string(b)) }
	spec1 := strings.Join([]string{
		"# comments and blank lines are allowed",
		"serial: 5",
		"serial: 10-20",
		"serial: 1000",
		"id: bob",
		"key: " + read(plain["k0"]+".pub"),
		"sha1: " + read(plain["k1"]+".pub"),
		"sha256: " + read(plain["k2"]+".pub"),
		"hash: " + strings.Fields(string(fingerprint))[1],
	}, "\n") + "\n"
	os.WriteFile(filepath.Join(dir, "spec1"), []byte(spec1), 0o600)
	krl := filepath.Join(dir, "revoked_keys")
	sshKeygen(t, dir, "-k", "-f", krl, "-s", ca1+".pub", "-z", "41", "spec1")
	// An update (-u) for the second CA, and a plain public key file.
	os.WriteFile(filepath.Join(dir, "spec2"), []byte("serial: 7\nid: s100\n"), 0o600)
	sshKeygen(t, dir, "-k", "-u", "-f", krl, "-s", ca2+".pub", "-z", "42", "spec2")
	sshKeygen(t, dir, "-k", "-u", "-f", krl, "-z", "43", ca3+".pub")

	l, err := LoadRevocationList(krl)
	if err != nil {
		t.Fatal(err)
	}
	if l.Version != 43 {
		t.Errorf("version %d, want 43 (the last -z)", l.Version)
	}
	revokedCount := 0
	for _, f := range files {
		out, err := exec.Command("ssh-keygen", "-Q", "-f", krl, f).CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("ssh-keygen -Q %s: %v", f, err)
		}
		want := strings.Contains(string(out), "REVOKED")
		if !want && !strings.Contains(string(out), ": ok") {
			t.Fatalf("ssh-keygen -Q %s said %q", f, out)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(read(f)))
		if err != nil {
			t.Fatal(err)
		}
		why, got := l.Revoked(pub)
		if got != want {
			t.Errorf("%s: lifeline says revoked=%v (%s), ssh-keygen -Q says %q", strings.TrimPrefix(f, dir), got, why, strings.TrimSpace(string(out)))
		}
		if got {
			revokedCount++
		}
	}
	t.Logf("%d keys and certificates checked against ssh-keygen -Q, %d revoked", len(files), revokedCount)
	if revokedCount < 10 || revokedCount == len(files) {
		t.Errorf("%d of %d revoked: the test no longer covers both verdicts", revokedCount, len(files))
	}
}
