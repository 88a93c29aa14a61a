package hostkeys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

type syncBuffer = sshtest.Buffer

func edKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCheck(t *testing.T) {
	t.Parallel()
	const addr = "bastion.example:2222"
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2222}
	pinned, other := edKey(t), edKey(t)
	tests := []struct {
		name     string
		file     *string // nil: no file
		trustNew bool
		key      ssh.PublicKey
		wantErr  error
		recorded bool // the key is pinned afterwards
		loud     string
	}{
		{name: "pinned", file: ptr(keyfile.KnownHostsLine([]string{addr}, pinned)), key: pinned},
		{name: "mismatch", file: ptr(keyfile.KnownHostsLine([]string{addr}, pinned)), key: other, wantErr: ErrMismatch},
		{name: "mismatch even with trust", file: ptr(keyfile.KnownHostsLine([]string{addr}, pinned)), trustNew: true, key: other, wantErr: ErrMismatch},
		{name: "other host pinned, unknown", file: ptr(keyfile.KnownHostsLine([]string{"elsewhere:22"}, pinned)), key: pinned, wantErr: ErrUnknown},
		{name: "no file, no trust", key: pinned, wantErr: ErrUnknown},
		{name: "no file, trust", trustNew: true, key: pinned, recorded: true, loud: "TRUSTED A NEW BASTION HOST KEY"},
		{name: "empty file, trust", file: ptr(""), trustNew: true, key: pinned, recorded: true, loud: "TRUSTED A NEW BASTION HOST KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "etc", "known_hosts")
			if tt.file != nil {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(*tt.file+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var logs syncBuffer
			p := New(path, tt.trustNew, slog.New(slog.NewTextHandler(&logs, nil)))
			err := p.HostKeyCallback(addr)(addr, remote, tt.key)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("check = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), keyfile.Fingerprint(tt.key)) {
				t.Errorf("error %q does not name the presented fingerprint", err)
			}
			if tt.loud != "" && !strings.Contains(logs.String(), tt.loud) {
				t.Errorf("log %q lacks %q", logs.String(), tt.loud)
			}
			// A second check with a fresh Pinner without trust sees the file.
			again := New(path, false, slog.New(slog.DiscardHandler)).HostKeyCallback(addr)(addr, remote, tt.key)
			if tt.recorded && again != nil {
				t.Errorf("key was not recorded: %v", again)
			}
			if tt.wantErr != nil && again == nil {
				t.Errorf("a refused key ended up pinned")
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestAlgorithms(t *testing.T) {
	t.Parallel()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPub, err := ssh.NewPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(path, []byte(keyfile.KnownHostsLine([]string{"ec:22"}, ecPub)+"\n"+keyfile.KnownHostsLine([]string{"ed:22"}, edKey(t))+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := New(path, false, slog.New(slog.DiscardHandler))
	if got := p.Algorithms("ec:22"); !slices.Equal(got, []string{ssh.KeyAlgoECDSA256}) {
		t.Errorf("Algorithms(ec) = %v", got)
	}
	if got := p.Algorithms("ed:22"); !slices.Equal(got, []string{ssh.KeyAlgoED25519}) {
		t.Errorf("Algorithms(ed) = %v", got)
	}
	if got := p.Algorithms("unknown:22"); len(got) < 3 {
		t.Errorf("Algorithms(unknown) = %v, want the full list", got)
	}
}
