package doctor

import (
	"crypto/rand"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// writeCert signs the site's key with ca as a user certificate.
func writeCert(t *testing.T, s *site, ca sshtest.Key, principals []string, before time.Time) {
	t.Helper()
	c := &ssh.Certificate{Key: s.signer.PublicKey(), CertType: ssh.UserCert, KeyId: "radio-pi", ValidPrincipals: principals,
		ValidAfter: uint64(time.Now().Add(-time.Hour).Unix()), ValidBefore: uint64(before.Unix())}
	if err := c.SignCert(rand.Reader, ca.Signer); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyfile.CertPath(s.key), ssh.MarshalAuthorizedKey(c), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestKeyChecks(t *testing.T) {
	t.Parallel()
	s := newSite(t, "127.0.0.1:1", "pi:22=127.0.0.1:22")
	fp := keyfile.Fingerprint(s.signer.PublicKey())
	out, _ := s.run(t)
	want(t, out, "key "+s.key, "✓", "ssh-ed25519 "+fp, "mode 0600")

	os.Chmod(s.key, 0o644)
	out, _ = s.run(t)
	want(t, out, "key "+s.key, "✗", "mode 0644 lets others read it", "fix: sudo chmod 600 "+s.key)
	want(t, out, "login with the agent key", "-")
	os.Chmod(s.key, 0o600)

	// Owned by someone other than the service's user (here: the test
	// runs as that someone, the service's user is another uid).
	s.cfg.User = ServiceUser{Name: "lifeline", UID: os.Geteuid() + 1000, GID: os.Getegid()}
	out, _ = s.run(t)
	want(t, out, "key "+s.key, "✗", "not by lifeline (the service cannot read it)", "fix: sudo chown lifeline:lifeline "+s.key)
	s.cfg.User = ServiceUser{Name: "tester", UID: os.Geteuid(), GID: os.Getegid()}

	os.WriteFile(s.key, []byte("not a key\n"), 0o600)
	out, _ = s.run(t)
	want(t, out, "key "+s.key, "✗", "parse key", "fix: move it away", "sudo lifeline-agent pair for a new key")

	os.Remove(s.key)
	out, _ = s.run(t)
	want(t, out, "key "+s.key, "✗", "missing: this Pi is not paired yet", "fix: sudo lifeline-agent pair (creates it as tester")
	want(t, out, "login with the agent key", "-", "not tried")
	if _, err := os.Stat(s.key); err == nil {
		t.Error("the doctor created the key")
	}
}

func TestKnownHostsUnparsable(t *testing.T) {
	t.Parallel()
	s := newSite(t, "127.0.0.1:2222", "pi:22=127.0.0.1:22")
	os.WriteFile(s.known, []byte("[127.0.0.1]:2222 ssh-ed25519 !!!notbase64\n"), 0o644)
	out, _ := s.run(t)
	want(t, out, "known_hosts", "✗", "does not parse", "fix: correct that line")
	if !strings.Contains(out, "known_hosts "+s.known) {
		t.Errorf("the line does not name the file:\n%s", out)
	}
}
