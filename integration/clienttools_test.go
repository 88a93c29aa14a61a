//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// Helpers to drive SSH clients nobody here wrote (Debian's packages):
// Dropbear's dbclient, PuTTY's plink, Paramiko and asyncssh. Every one pins
// the host keys it is given; none accepts an unknown key.

// python is Debian's interpreter, which has Debian's python3-paramiko and
// python3-asyncssh (a python3 earlier in PATH may not).
const python = "/usr/bin/python3"

// needPython skips unless Debian's python3 imports every module.
func needPython(t testing.TB, modules ...string) {
	t.Helper()
	for _, m := range modules {
		if out, err := exec.Command(python, "-c", "import "+m).CombinedOutput(); err != nil {
			t.Skipf("%s cannot import %s (apt-get install python3-%s): %v %s", python, m, m, err, out)
		}
	}
}

// dropbearKey converts an OpenSSH private key to Dropbear's format.
func dropbearKey(t testing.TB, openssh string) string {
	t.Helper()
	out := openssh + ".dropbear"
	if b, err := exec.Command("dropbearconvert", "openssh", "dropbear", openssh, out).CombinedOutput(); err != nil {
		t.Fatalf("dropbearconvert %s: %v\n%s", openssh, err, b)
	}
	return out
}

// puttyKey converts an OpenSSH private key to PuTTY's .ppk.
func puttyKey(t testing.TB, openssh string) string {
	t.Helper()
	out := openssh + ".ppk"
	if b, err := exec.Command("puttygen", openssh, "-O", "private", "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("puttygen %s: %v\n%s", openssh, err, b)
	}
	return out
}

// dropbearHome makes a HOME whose ~/.ssh/known_hosts pins the given hosts.
// Dropbear 2022.83 looks hosts up by name alone (no [host]:port), and reads
// "host type base64" without a comment.
func dropbearHome(t testing.TB, dir string, hosts map[string]ssh.PublicKey) string {
	t.Helper()
	home := filepath.Join(dir, "dropbear-home")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	var b strings.Builder
	for h, k := range hosts {
		fmt.Fprintf(&b, "%s %s\n", h, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))))
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return home
}

// dbclientCmd is dbclient with HOME set to home (its known_hosts), no
// standard input and the given arguments.
func dbclientCmd(ctx context.Context, home string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "dbclient", args...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.WaitDelay = time.Second
	return cmd
}

// plinkArgs are plink's arguments to reach host:port as user with key,
// pinning the host key by fingerprint, never prompting.
func plinkArgs(key, user, host string, port int, hostKey ssh.PublicKey) []string {
	return []string{"-batch", "-noagent", "-hostkey", ssh.FingerprintSHA256(hostKey), "-i", key, "-P", fmt.Sprint(port), user + "@" + host}
}

// runIn runs a command with HOME=home and returns its combined output.
func runIn(t testing.TB, home string, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	return sshtest.Run(context.Background(), timeout, []string{"HOME=" + home, "PYTHONWARNINGS=ignore"}, name, args...)
}

var loginLine = regexp.MustCompile(`msg=login .*client="?([^"]*?)"? cipher="?([^"\n]*?)"?\s*$`)

// negotiated returns the client software and cipher of the latest bastion
// login whose client line contains software.
func negotiated(bastionLog, software string) (client, cipher string) {
	for _, line := range strings.Split(bastionLog, "\n") {
		if m := loginLine.FindStringSubmatch(line); m != nil && strings.Contains(m[1], software) {
			client, cipher = m[1], m[2]
		}
	}
	return client, cipher
}
