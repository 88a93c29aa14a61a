package systemd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBastionReloadChecksFirst: `systemctl reload lifeline-bastion` runs
// check-keys before the signal, so a refused file fails the reload (systemd
// stops at the first failing ExecReload) and never reaches the bastion.
// The check itself is exercised against the real binary: good files pass,
// a bad line fails with its file:line.
func TestBastionReloadChecksFirst(t *testing.T) {
	t.Parallel()
	u := parseUnit(t, "lifeline-bastion.service")
	assert.Equal(t, []string{"/usr/bin/lifeline-bastion check-keys", "/bin/kill -HUP $MAINPID"}, u["Service"]["ExecReload"])

	bin := binaries(t)
	dir := t.TempDir()
	agents, operators := filepath.Join(dir, "agents"), filepath.Join(dir, "operators")
	require.NoError(t, os.WriteFile(agents, []byte("# none yet\n"), 0o600))
	require.NoError(t, os.WriteFile(operators, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm2y3Uu0pKVSkUXRGTw3S0b5nvA7dV9uJ0sRhDPiI0n alice\n"), 0o600))
	check := func() (string, error) {
		cmd := exec.Command(filepath.Join(bin, "lifeline-bastion"), "check-keys")
		cmd.Env = []string{"LIFELINE_AGENTS=" + agents, "LIFELINE_OPERATORS=" + operators, "LIFELINE_NAME=test"}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := check()
	require.NoError(t, err, out)
	assert.True(t, strings.HasPrefix(out, "ok: "), out)
	require.NoError(t, os.WriteFile(operators, []byte("ssh-ed25519 not-a-key alice\n"), 0o600))
	out, err = check()
	assert.Error(t, err, "a bad file must fail the reload")
	assert.Contains(t, out, operators+":1")
}
