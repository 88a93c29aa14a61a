// Package keyfile loads and creates the long-lived ed25519 keys of lifeline
// (the bastion's host key, the agent's client key) and formats public keys
// the way OpenSSH prints them.
package keyfile

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/lifeline-dev/lifeline/shared/atomicfile"
	"golang.org/x/crypto/ssh"
)

// LoadOrCreate reads the OpenSSH private key at path. When the file does not
// exist it generates an ed25519 key, writes it with mode 0600 (creating the
// parent directory with 0700 if needed) and reports created=true. Any other
// problem (unreadable, wrong format, passphrase-protected, group- or
// world-readable) is an error naming the path: a key is never thrown away and
// replaced silently.
func LoadOrCreate(path, comment string) (signer ssh.Signer, created bool, err error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		s, err := Parse(path, data)
		if err != nil {
			return nil, false, err
		}
		if err := checkMode(path); err != nil {
			return nil, false, err
		}
		return s, false, nil
	case errors.Is(err, fs.ErrNotExist):
		s, err := create(path, comment)
		return s, err == nil, err
	default:
		return nil, false, fmt.Errorf("read key %s: %w", path, err)
	}
}

// Parse parses an OpenSSH/PEM private key; name is used in errors.
func Parse(name string, data []byte) (ssh.Signer, error) {
	s, err := ssh.ParsePrivateKey(data)
	if err != nil {
		var pp *ssh.PassphraseMissingError
		if errors.As(err, &pp) {
			return nil, fmt.Errorf("key %s is protected by a passphrase: lifeline needs an unencrypted key readable only by its user", name)
		}
		return nil, fmt.Errorf("parse key %s: %w", name, err)
	}
	return s, nil
}

func checkMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat key %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("key %s has mode %04o: it must be readable only by its owner (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	return nil
}

func create(path, comment string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key for %s: %w", path, err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("encode key for %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create directory for key %s: %w", path, err)
	}
	// Atomically and only if absent: a crash never leaves half a key, and
	// if another process created the key meanwhile, theirs is kept.
	created, err := atomicfile.Create(path, pem.EncodeToMemory(block), 0o600)
	if err != nil {
		return nil, fmt.Errorf("install key %s: %w", path, err)
	}
	if !created {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", path, err)
		}
		return Parse(path, data)
	}
	return ssh.NewSignerFromKey(priv)
}

// AuthorizedLine formats pub as one authorized_keys / .pub line with an
// optional comment.
func AuthorizedLine(pub ssh.PublicKey, comment string) string {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return line
}

// KnownHostsLine formats pub as a known_hosts line for host:port addresses,
// with OpenSSH's [host]:port form for non-22 ports.
func KnownHostsLine(addrs []string, pub ssh.PublicKey) string {
	return strings.TrimSpace(knownHostsLine(addrs, pub))
}

// Fingerprint is OpenSSH's SHA256:… fingerprint of pub.
func Fingerprint(pub ssh.PublicKey) string { return ssh.FingerprintSHA256(pub) }
