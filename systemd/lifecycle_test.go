package systemd_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-dev/lifeline/internal/nspawn"
)

// TestDebLifecycle installs both packages (`make deb`, this machine's
// architecture) in a booted Debian 12 (internal/nspawn: systemd as PID 1,
// loopback only) and runs the maintainer scripts for real:
//   - install: the lifeline user and the key files exist; nothing is
//     enabled or started; `dpkg --verify` is clean, and sees a changed
//     binary (md5sums);
//   - upgrade (the same packages again, so postinst gets an old version):
//     the running bastion is restarted, the running agent is not (it
//     restarts itself when idle) and says so; both stay enabled, and the
//     edited agent.env is kept (dpkg --verify names it, as a conffile);
//   - remove: every unit is stopped and disabled, the env files stay;
//   - purge: /etc/lifeline and deb-systemd-helper's records are gone,
//     /var/lib/lifeline (the keys) stays.
func TestDebLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a container: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (systemd-nspawn)")
	}
	tree := nspawn.Tree(t) // skips without debootstrap or systemd-nspawn
	dist, arch := debs(t)
	m := nspawn.Boot(t, nspawn.Options{Name: "debs", Tree: tree})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sh := func(script string) string {
		t.Helper()
		out, err := m.Sh(ctx, script)
		require.NoError(t, err, "%s", script)
		return strings.TrimSpace(out)
	}
	bastion, agent := debFile(dist, "lifeline-bastion", arch), debFile(dist, "lifeline-agent", arch)
	m.CopyIn(bastion, "/root/lifeline-bastion.deb")
	m.CopyIn(agent, "/root/lifeline-agent.deb")
	units := "lifeline-bastion.service lifeline-agent.service lifeline-netsetup.service"

	// Install.
	out := sh("dpkg -i /root/lifeline-bastion.deb /root/lifeline-agent.deb 2>&1")
	t.Logf("dpkg -i:\n%s", out)
	assert.Equal(t, "lifeline", sh("id -un lifeline"), "the system user")
	assert.Equal(t, "750 root:lifeline", sh("stat -c '%a %U:%G' /etc/lifeline"))
	assert.Equal(t, "640 root:lifeline\n640 root:lifeline\n644 root:root",
		sh("stat -c '%a %U:%G' /etc/lifeline/agents /etc/lifeline/operators /etc/lifeline/known_hosts"))
	assert.Equal(t, "disabled\ndisabled\ndisabled", sh("systemctl is-enabled "+units+" || true"), "nothing enabled")
	assert.Equal(t, "inactive\ninactive\ninactive", sh("systemctl is-active "+units+" || true"), "nothing started")
	assert.Empty(t, sh("dpkg --verify lifeline-bastion lifeline-agent"), "dpkg --verify after install")
	sh("cp /usr/bin/lifeline-bastion /root/saved && printf x >> /usr/bin/lifeline-bastion")
	verify, _ := m.Sh(ctx, "dpkg --verify lifeline-bastion")
	assert.Regexp(t, `(?m)^\?\?5\?\?\?\?\?\?\s+/usr/bin/lifeline-bastion$`, verify, "dpkg --verify sees a changed binary")
	sh("cp /root/saved /usr/bin/lifeline-bastion")

	// Configure and start, as an admin does.
	sh(`printf 'LIFELINE_BASTION=127.0.0.1:9\n' >> /etc/lifeline/agent.env`)
	sh("systemctl enable --now lifeline-bastion lifeline-agent 2>&1")
	require.Equal(t, "active\nactive", sh("systemctl is-active lifeline-bastion lifeline-agent || true"),
		"configured services start\n%s", m.Journal(60))
	pid := func(unit string) string { return sh("systemctl show -p MainPID --value " + unit) }
	bastionPID, agentPID := pid("lifeline-bastion"), pid("lifeline-agent")

	// Upgrade.
	out = sh("dpkg -i /root/lifeline-bastion.deb /root/lifeline-agent.deb 2>&1")
	t.Logf("dpkg -i (upgrade):\n%s", out)
	assert.Contains(t, out, "lifeline-agent: the running agent restarts into the new version by itself")
	assert.Equal(t, "active\nactive", sh("systemctl is-active lifeline-bastion lifeline-agent || true"))
	assert.NotEqual(t, bastionPID, pid("lifeline-bastion"), "an upgrade restarts the running bastion")
	assert.Equal(t, agentPID, pid("lifeline-agent"), "an upgrade does not restart the agent")
	assert.Equal(t, "enabled\nenabled\ndisabled", sh("systemctl is-enabled "+units+" || true"), "an upgrade keeps what the admin enabled")
	verify, _ = m.Sh(ctx, "dpkg --verify lifeline-bastion lifeline-agent")
	assert.Equal(t, "??5?????? c /etc/lifeline/agent.env", strings.TrimSpace(verify),
		"dpkg --verify after the upgrade: only the conffile the admin edited")

	// Remove: stopped and disabled, configuration kept.
	out = sh("dpkg -r lifeline-bastion lifeline-agent 2>&1")
	t.Logf("dpkg -r:\n%s", out)
	assert.Equal(t, "inactive\ninactive\ninactive", sh("systemctl is-active "+units+" || true"), "removal stops every unit")
	assert.Empty(t, sh("ls /etc/systemd/system/multi-user.target.wants/ | grep lifeline || true"), "removal disables every unit")
	assert.Equal(t, "/etc/lifeline/agent.env\n/etc/lifeline/bastion.env", sh("ls -d /etc/lifeline/*.env"), "removal keeps the configuration")

	// Purge.
	out = sh("dpkg -P lifeline-bastion lifeline-agent 2>&1")
	t.Logf("dpkg -P:\n%s", out)
	assert.Equal(t, "gone", sh("test -e /etc/lifeline && ls -la /etc/lifeline || echo gone"))
	assert.Empty(t, sh("ls /var/lib/systemd/deb-systemd-helper-enabled/ 2>/dev/null | grep lifeline || true"), "deb-systemd-helper's records are purged")
	assert.Equal(t, "kept", sh("test -d /var/lib/lifeline && echo kept"), "the keys stay")
}
