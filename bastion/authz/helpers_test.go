package authz

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// testNow is the reference time of the tests that do not talk to ssh-keygen.
var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// newSigner makes a fresh key of kind "ed25519", "ecdsa", "ecdsa384",
// "rsa" (2048 bits, cached: generating RSA keys is slow) or "rsa1024".
func newSigner(t testing.TB, kind string) ssh.Signer {
	t.Helper()
	var key any
	var err error
	switch kind {
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa384":
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa":
		key, err = rsaKey2048()
	case "rsa1024":
		key, err = rsaKey1024()
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatalf("generate %s key: %v", kind, err)
	}
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatalf("signer for %s key: %v", kind, err)
	}
	return s
}

var (
	rsaKey2048 = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })
	rsaKey1024 = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 1024) })
)

// keyText is "type base64" of pub, as in an authorized_keys line.
func keyText(pub ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

// writeFiles writes the agents and operators files into a fresh directory
// and returns their paths.
func writeFiles(t testing.TB, agents, operators string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	a, o := filepath.Join(dir, "agents"), filepath.Join(dir, "operators")
	if err := os.WriteFile(a, []byte(agents), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o, []byte(operators), 0o600); err != nil {
		t.Fatal(err)
	}
	return a, o
}

// mustLoad loads a policy from the given file contents, with expiry-time
// read in UTC so tests do not depend on TZ.
func mustLoad(t testing.TB, agents, operators string) *Policy {
	t.Helper()
	a, o := writeFiles(t, agents, operators)
	p, err := load(a, o, time.UTC)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return p
}

// certOpts describes a test certificate; zero fields take defaults.
type certOpts struct {
	keyID       string
	principals  []string // nil: {"alice"}; empty non-nil: none
	certType    uint32
	validAfter  time.Time
	validBefore time.Time // zero: testNow+1h
	forever     bool
	critical    map[string]string
	extensions  map[string]string // nil: permit-port-forwarding and permit-pty
}

// signCert certifies pub with ca using x/crypto's Certificate and SignCert.
func signCert(t testing.TB, ca ssh.Signer, pub ssh.PublicKey, o certOpts) *ssh.Certificate {
	t.Helper()
	c := &ssh.Certificate{
		Key:             pub,
		Serial:          1,
		CertType:        ssh.UserCert,
		KeyId:           "alice@laptop",
		ValidPrincipals: []string{"alice"},
		ValidAfter:      uint64(testNow.Add(-time.Hour).Unix()),
		ValidBefore:     uint64(testNow.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{
			CriticalOptions: o.critical,
			Extensions:      map[string]string{"permit-port-forwarding": "", "permit-pty": ""},
		},
	}
	if o.keyID != "" {
		c.KeyId = o.keyID
	}
	if o.principals != nil {
		c.ValidPrincipals = o.principals
	}
	if o.certType != 0 {
		c.CertType = o.certType
	}
	if !o.validAfter.IsZero() {
		c.ValidAfter = uint64(o.validAfter.Unix())
	}
	if !o.validBefore.IsZero() {
		c.ValidBefore = uint64(o.validBefore.Unix())
	}
	if o.forever {
		c.ValidBefore = ssh.CertTimeInfinity
	}
	if o.extensions != nil {
		c.Extensions = o.extensions
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatalf("sign certificate: %v", err)
	}
	return c
}
