package systemd_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-dev/lifeline/internal/nspawn"
)

// poweroffUnits are outage mode's units: the bastion asks (it writes
// /run/lifeline/poweroff), root acts.
var poweroffUnits = []string{"lifeline-poweroff.path", "lifeline-poweroff.service"}

// TestPoweroffUnitsVerify runs `systemd-analyze verify` on the two units
// (together, so the path unit's Unit= resolves). Any message is a failure.
func TestPoweroffUnitsVerify(t *testing.T) {
	t.Parallel()
	sa := need(t, "systemd-analyze")
	args := []string{"verify"}
	for _, u := range poweroffUnits {
		args = append(args, "./"+u)
	}
	out, err := exec.Command(sa, args...).CombinedOutput()
	require.NoError(t, err, "systemd-analyze verify:\n%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify printed warnings")

	// It runs as root (only root powers off), with the two capabilities it
	// needs and the usual sandbox: hold it to the netsetup unit's budget.
	got, report := exposure(t, sa, "lifeline-poweroff.service")
	t.Logf("lifeline-poweroff.service: exposure %.1f (budget 2.0)", got)
	assert.LessOrEqual(t, got, 2.0, "exposure over budget:\n%s", report)
}

// TestPoweroffUnitsSettings checks what the design relies on: the path unit
// watches the file the bastion writes, in the runtime directory the bastion's
// unit makes for its user only; the service is skipped without a request.
func TestPoweroffUnitsSettings(t *testing.T) {
	t.Parallel()
	p := parseUnit(t, "lifeline-poweroff.path")
	exists, _ := p.get("Path", "PathExists")
	assert.Equal(t, "/run/lifeline/poweroff", exists)
	unit, _ := p.get("Path", "Unit")
	assert.Equal(t, "lifeline-poweroff.service", unit)
	wanted, _ := p.get("Install", "WantedBy")
	assert.Equal(t, "multi-user.target", wanted)

	s := parseUnit(t, "lifeline-poweroff.service")
	cond, _ := s.get("Unit", "ConditionPathExists")
	assert.Equal(t, "/run/lifeline/poweroff", cond, "a withdrawn request is not acted on")
	for k, v := range map[string]string{
		"Type": "oneshot", "CapabilityBoundingSet": "CAP_DAC_OVERRIDE",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "-/run/lifeline",
		"PrivateNetwork": "yes", "RestrictAddressFamilies": "AF_UNIX",
	} {
		got, ok := s.get("Service", k)
		if assert.True(t, ok, "[Service] %s is not set", k) {
			assert.Equal(t, v, got, "[Service] %s", k)
		}
	}
	_, ok := s["Install"]
	assert.False(t, ok, "the service is started by the path unit only")
	execStart, _ := s.get("Service", "ExecStart")
	assert.Contains(t, execStart, "/usr/bin/systemctl --no-block --job-mode=replace-irreversibly start poweroff.target")

	b := parseUnit(t, "lifeline-bastion.service")
	for k, v := range map[string]string{"RuntimeDirectory": "lifeline", "RuntimeDirectoryMode": "0700"} {
		got, _ := b.get("Service", k)
		assert.Equal(t, v, got, "lifeline-bastion.service [Service] %s", k)
	}
	_, ok = b.get("Service", "RuntimeDirectoryPreserve")
	assert.False(t, ok, "a request must not outlive the bastion that made it")
}

// fakeBastion stands in for lifeline-bastion under the real unit's sandbox
// and user (a drop-in replaces only ExecStart): it writes the request the
// way atomicfile does (a temporary file renamed into place), then waits.
const fakeBastion = `#!/bin/sh
set -e
if [ -e /etc/lifeline/ask ]; then
	printf '%s\n' '{"time":"2026-03-01T12:30:00Z","reason":"idle for 30m0s (test)","by":"lifeline-bastion","pid":'$$'}' >/run/lifeline/.tmp-poweroff.1
	mv /run/lifeline/.tmp-poweroff.1 /run/lifeline/poweroff
fi
exec sleep 3600
`

// TestPoweroffBooted boots Debian 12 (internal/nspawn) with the units and
// the bastion's unit, and shows the whole path for real:
//   - nothing is enabled by installing; the bastion's sandbox lets its
//     user write /run/lifeline (0700, lifeline), and nothing else there;
//   - lifeline-poweroff.service started without a request is skipped and
//     the machine stays up;
//   - with the path unit enabled, the bastion's request powers the machine
//     off, and the journal (kept on the host) names who asked and why.
func TestPoweroffBooted(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a container: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (systemd-nspawn)")
	}
	tree := nspawn.Tree(t)
	journal := t.TempDir()
	m := nspawn.Boot(t, nspawn.Options{Name: "poweroff", Tree: tree,
		Binds: []nspawn.Bind{{Host: journal, Container: "/var/log/journal"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sh := func(script string) string {
		t.Helper()
		out, err := m.Sh(ctx, script)
		require.NoError(t, err, "%s", script)
		return strings.TrimSpace(out)
	}
	for _, u := range append([]string{"lifeline-bastion.service"}, poweroffUnits...) {
		m.CopyIn(u, "/usr/lib/systemd/system/"+u)
	}
	m.CopyIn("lifeline.sysusers", "/usr/lib/sysusers.d/lifeline.conf")
	m.WriteFile("/usr/local/bin/fake-bastion", []byte(fakeBastion), 0o755)
	m.WriteFile("/etc/systemd/system/lifeline-bastion.service.d/fake.conf",
		[]byte("[Service]\nExecStart=\nExecStart=/usr/local/bin/fake-bastion\nExecReload=\n"), 0o644)
	m.WriteFile("/etc/lifeline/bastion.env", nil, 0o600)
	sh("systemd-sysusers lifeline.conf && systemctl daemon-reload && journalctl --flush")
	assert.Equal(t, "disabled", sh("systemctl is-enabled lifeline-poweroff.path || true"), "installing enables nothing")

	// The bastion's folder, and no request: the service is skipped.
	sh("systemctl start lifeline-bastion")
	assert.Equal(t, "700 lifeline:lifeline", sh("stat -c '%a %U:%G' /run/lifeline"))
	sh("systemctl start lifeline-poweroff.service")
	assert.Equal(t, "inactive", sh("systemctl is-active lifeline-poweroff.service || true"))
	assert.Equal(t, "active", sh("systemctl is-active lifeline-bastion || true"), "still up without a request")

	// Outage mode: the path unit enabled, the bastion asks.
	sh("systemctl enable --now lifeline-poweroff.path 2>&1")
	assert.Equal(t, "active", sh("systemctl is-active lifeline-poweroff.path || true"))
	sh("touch /etc/lifeline/ask && systemctl restart lifeline-bastion")

	deadline := time.Now().Add(time.Minute)
	for {
		_, err := m.Run(ctx, "true")
		if err != nil && strings.Contains(err.Error(), "is not running") {
			break
		}
		require.True(t, time.Now().Before(deadline), "the machine did not power off within a minute")
		time.Sleep(100 * time.Millisecond)
	}

	out, err := exec.Command("journalctl", "-D", journal, "--no-pager", "-o", "cat", "-u", "lifeline-poweroff.service").CombinedOutput()
	require.NoError(t, err, "journalctl -D: %s", out)
	t.Logf("lifeline-poweroff.service's journal:\n%s", out)
	assert.NotContains(t, string(out), "Failed", "the shutdown stopping the unit is no failure")
	assert.Regexp(t, `lifeline-bastion asked to power off: \{"time":"2026-03-01T12:30:00Z","reason":"idle for 30m0s \(test\)","by":"lifeline-bastion","pid":[0-9]+\}`, string(out))
	all, _ := exec.Command("journalctl", "-D", journal, "--no-pager", "-o", "cat").CombinedOutput()
	assert.Contains(t, string(all), "System Power Off", "the machine powered off:\n%s", lastLines(string(all), 40))
	entries, _ := filepath.Glob(filepath.Join(journal, "*"))
	assert.NotEmpty(t, entries, "the journal was kept on the host")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
