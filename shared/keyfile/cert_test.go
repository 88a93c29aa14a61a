package keyfile

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestWithCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "agent_ed25519_key")
	signer, _, err := LoadOrCreate(keyPath, "test")
	if err != nil {
		t.Fatal(err)
	}
	if s, cert, err := WithCertificate(signer, keyPath, time.Now()); err != nil || cert != nil || s != signer {
		t.Fatalf("without a certificate file: %v, %v, %v; want the bare key", s, cert, err)
	}
	_, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caPriv)
	now := time.Now()
	write := func(key ssh.PublicKey, typ uint32, before time.Time) {
		c := &ssh.Certificate{Key: key, CertType: typ, KeyId: "radio-pi", ValidPrincipals: []string{"pi:22"},
			ValidAfter: uint64(now.Add(-time.Hour).Unix()), ValidBefore: uint64(before.Unix())}
		if err := c.SignCert(rand.Reader, ca); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(CertPath(keyPath), ssh.MarshalAuthorizedKey(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(signer.PublicKey(), ssh.UserCert, now.Add(time.Hour))
	s, cert, err := WithCertificate(signer, keyPath, now)
	if err != nil || cert == nil || cert.KeyId != "radio-pi" {
		t.Fatalf("valid certificate: %v, %v", cert, err)
	}
	if _, ok := s.PublicKey().(*ssh.Certificate); !ok {
		t.Fatalf("the signer presents %T, not the certificate", s.PublicKey())
	}
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewSignerFromKey(otherPriv)
	for _, tc := range []struct {
		name string
		key  ssh.PublicKey
		typ  uint32
		till time.Time
		want string
	}{
		{"expired", signer.PublicKey(), ssh.UserCert, now.Add(-time.Minute), "expired"},
		{"another key", other.PublicKey(), ssh.UserCert, now.Add(time.Hour), "not this agent's key"},
		{"host certificate", signer.PublicKey(), ssh.HostCert, now.Add(time.Hour), "host certificate"},
	} {
		write(tc.key, tc.typ, tc.till)
		if _, _, err := WithCertificate(signer, keyPath, now); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), CertPath(keyPath)) {
			t.Errorf("%s: %v; want an error naming the file and %q", tc.name, err, tc.want)
		}
	}
}
