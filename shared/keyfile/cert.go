package keyfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/crypto/ssh"
)

// CertPath is where OpenSSH keeps the certificate of the key at keyPath
// (ssh-keygen -s writes it there): keyPath + "-cert.pub".
func CertPath(keyPath string) string { return keyPath + "-cert.pub" }

// WithCertificate returns signer presenting the certificate at
// CertPath(keyPath) when that file exists, and the certificate; without the
// file it returns signer unchanged and a nil certificate. A certificate that
// does not parse, is not a user certificate, certifies another key, or is
// outside its validity window at now is an error naming the file: an agent
// paired by certificate must not fall back to its bare key silently.
func WithCertificate(signer ssh.Signer, keyPath string, now time.Time) (ssh.Signer, *ssh.Certificate, error) {
	path := CertPath(keyPath)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return signer, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read certificate %s: %w", path, err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", path, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, nil, fmt.Errorf("certificate %s: a plain %s key, not a certificate", path, pub.Type())
	}
	if cert.CertType != ssh.UserCert {
		return nil, nil, fmt.Errorf("certificate %s: a host certificate; sign the agent's key with ssh-keygen -s CA -I ID -n NAME:PORT (no -h)", path)
	}
	if !bytes.Equal(cert.Key.Marshal(), signer.PublicKey().Marshal()) {
		return nil, nil, fmt.Errorf("certificate %s certifies key %s, not this agent's key %s", path, Fingerprint(cert.Key), Fingerprint(signer.PublicKey()))
	}
	unix := uint64(now.Unix())
	if unix < cert.ValidAfter {
		return nil, nil, fmt.Errorf("certificate %s is valid only from %s", path, time.Unix(int64(cert.ValidAfter), 0).UTC().Format(time.RFC3339))
	}
	if cert.ValidBefore != ssh.CertTimeInfinity && unix >= cert.ValidBefore {
		return nil, nil, fmt.Errorf("certificate %s expired at %s: sign the key again", path, time.Unix(int64(cert.ValidBefore), 0).UTC().Format(time.RFC3339))
	}
	cs, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", path, err)
	}
	return cs, cert, nil
}
