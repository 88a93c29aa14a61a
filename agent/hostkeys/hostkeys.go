// Package hostkeys pins the bastion's SSH host key in an OpenSSH known_hosts
// file. A key that differs from the pinned one is refused, loudly, always.
// An unknown host is refused too, unless trust-on-first-use was asked for
// (LIFELINE_TRUST_NEW_BASTION), in which case its key is recorded and the
// fact is logged at warning level.
package hostkeys

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/lifeline-dev/lifeline/shared/keyfile"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// ErrMismatch is wrapped by the error returned when a server presents a key
// other than the one pinned for it.
var ErrMismatch = errors.New("bastion host key does not match the pinned key")

// ErrUnknown is wrapped by the error returned when no key is pinned for a
// server and trust-on-first-use is off.
var ErrUnknown = errors.New("bastion host key is not pinned")

// Pinner checks and (optionally) records host keys in one known_hosts file.
// The file is read on every check, so edits take effect on the next
// connection. It is safe for concurrent use.
type Pinner struct {
	path     string
	trustNew bool
	log      *slog.Logger
	mu       sync.Mutex // serialises read-check-append
}

// New returns a Pinner for the known_hosts file at path. trustNew enables
// trust-on-first-use. log must not be nil.
func New(path string, trustNew bool, log *slog.Logger) *Pinner {
	return &Pinner{path: path, trustNew: trustNew, log: log}
}

// HostKeyCallback is the ssh.ClientConfig.HostKeyCallback for addr
// (host:port as configured, which is the name the key is pinned under).
// It returns nil only for a pinned key, or for a new key it has just
// recorded with trust-on-first-use; otherwise an error wrapping ErrMismatch
// or ErrUnknown that says what to do.
func (p *Pinner) HostKeyCallback(addr string) ssh.HostKeyCallback {
	return func(_ string, remote net.Addr, key ssh.PublicKey) error {
		return p.check(addr, remote, key)
	}
}

func (p *Pinner) check(addr string, remote net.Addr, key ssh.PublicKey) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cb, err := p.load()
	if err != nil {
		return err
	}
	err = cb(addr, remote, key)
	var ke *knownhosts.KeyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ke) && len(ke.Want) > 0:
		pinned := make([]string, 0, len(ke.Want))
		for _, w := range ke.Want {
			pinned = append(pinned, fmt.Sprintf("%s %s (%s:%d)", w.Key.Type(), keyfile.Fingerprint(w.Key), w.Filename, w.Line))
		}
		return fmt.Errorf("%w: %s (%s) presented %s %s but %s pins %v: possible man-in-the-middle, refusing to connect; if the bastion's key really changed, replace its line in %s",
			ErrMismatch, addr, remote, key.Type(), keyfile.Fingerprint(key), p.path, pinned, p.path)
	case errors.As(err, &ke):
		line := keyfile.KnownHostsLine([]string{addr}, key)
		if !p.trustNew {
			return fmt.Errorf("%w: %s (%s) presented %s %s, which is not in %s; verify it and add the line %q (or set LIFELINE_TRUST_NEW_BASTION=true once)",
				ErrUnknown, addr, remote, key.Type(), keyfile.Fingerprint(key), p.path, line)
		}
		if err := p.appendLine(line); err != nil {
			return err
		}
		p.log.Warn("TRUSTED A NEW BASTION HOST KEY on first use (LIFELINE_TRUST_NEW_BASTION=true): verify this fingerprint out of band",
			"bastion", addr, "remote", remote.String(), "key_type", key.Type(), "fingerprint", keyfile.Fingerprint(key), "known_hosts", p.path)
		return nil
	default:
		return fmt.Errorf("check host key of %s against %s: %w", addr, p.path, err)
	}
}

// load parses the file; a missing file is an empty one.
func (p *Pinner) load() (ssh.HostKeyCallback, error) {
	cb, err := knownhosts.New(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		return knownhosts.New(os.DevNull)
	}
	if err != nil {
		return nil, fmt.Errorf("read known hosts %s: %w", p.path, err)
	}
	return cb, nil
}

func (p *Pinner) appendLine(line string) error {
	if err := os.MkdirAll(filepath.Dir(p.path), 0o755); err != nil {
		return fmt.Errorf("record bastion key: create directory for %s: %w", p.path, err)
	}
	f, err := os.OpenFile(p.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("record bastion key in %s: %w", p.path, err)
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		f.Close()
		return fmt.Errorf("record bastion key in %s: %w", p.path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("record bastion key in %s: %w", p.path, err)
	}
	return nil
}

// Algorithms returns the host key algorithms to offer to addr: those of the
// keys pinned for it (so that a server with several host keys presents the
// pinned one), in sshalgo's order of preference. With nothing pinned it
// returns sshalgo.HostKeyAlgorithms().
func (p *Pinner) Algorithms(addr string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := sshalgo.HostKeyAlgorithms()
	cb, err := p.load()
	if err != nil {
		return all
	}
	// Check with a key that cannot be pinned: the KeyError lists what is.
	probe := noKey{}
	var ke *knownhosts.KeyError
	if err := cb(addr, &net.TCPAddr{IP: net.IPv4zero}, probe); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return all
	}
	var types []string
	for _, w := range ke.Want {
		switch t := w.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			types = append(types, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		default:
			types = append(types, t)
		}
	}
	out := slices.DeleteFunc(all, func(a string) bool { return !slices.Contains(types, a) })
	if len(out) == 0 {
		return sshalgo.HostKeyAlgorithms()
	}
	return out
}

// noKey is a public key no known_hosts line can hold.
type noKey struct{}

func (noKey) Type() string                        { return "lifeline-probe@invalid" }
func (noKey) Marshal() []byte                     { return []byte("lifeline-probe@invalid") }
func (noKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key verifies nothing") }
