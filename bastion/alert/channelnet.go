package alert

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
)

// What the network channels (e-mail, webhook) share.

// LoopbackIP reports whether host is a loopback IP literal (a name, even
// "localhost", is not: the channels allow plaintext only to an address
// that cannot leave the machine whatever the resolver says).
func LoopbackIP(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// CertPool reads the PEM certificates in path as the roots a channel
// trusts instead of the system's.
func CertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
