package keyfile

import (
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func knownHostsLine(addrs []string, pub ssh.PublicKey) string {
	norm := make([]string, 0, len(addrs))
	for _, a := range addrs {
		norm = append(norm, knownhosts.Normalize(a))
	}
	return knownhosts.Line(norm, pub)
}
