//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// TestAgentCipherFollowsCPU: the real agent on this machine's CPU, then
// the armhf (ARMv6) build under qemu's ARM1176 (a Pi Zero W / Pi 1, no AES
// instructions), each against the real bastion. The agent asks for
// AES-GCM where the CPU has AES instructions and for chacha20-poly1305
// where it has not, the bastion (which offers agents both) agrees, and a
// jump through the tunnel works.
func TestAgentCipherFollowsCPU(t *testing.T) {
	t.Parallel()
	sshtest.Need(t, "qemu-arm-static")
	l := startLoopback(t, loopbackOpts{})
	native := "chacha20-poly1305@openssh.com"
	if sshalgo.AESHardware() {
		native = "aes128-gcm@openssh.com"
	}
	sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(l.agent.Output(), "cipher="+native) },
		"the agent on this CPU (AES instructions: %v) did not connect with %s:\n%s", sshalgo.AESHardware(), native, l.agent.Output)

	arm := filepath.Join(t.TempDir(), "lifeline-agent-armv6")
	build := exec.Command("go", "build", "-trimpath", "-o", arm, "../agent/cmd/lifeline-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm", "GOARM=6")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the ARMv6 agent: %v\n%s", err, out)
	}
	l.agent.Stop()
	logins := strings.Count(l.bastion.Output(), "msg=login")
	pi1 := sshtest.Start(t, l.agentEnv, "qemu-arm-static", "-cpu", "arm1176", arm)
	sshtest.Eventually(t, 60*time.Second, func() bool { return strings.Contains(pi1.Output(), "msg=registered") },
		"the ARMv6 agent never registered:\n%s\nbastion:\n%s", pi1.Output, l.bastion.Output)
	if !strings.Contains(pi1.Output(), "cipher=chacha20-poly1305@openssh.com") {
		t.Errorf("the agent on an ARM1176 (no AES) did not choose chacha20-poly1305:\n%s", pi1.Output())
	}
	var agentLogin string
	for _, line := range strings.Split(l.bastion.Output(), "\n") {
		if strings.Contains(line, "msg=login") && strings.Contains(line, "role=agent") {
			agentLogin = line
		}
	}
	if strings.Count(l.bastion.Output(), "msg=login") <= logins || !strings.Contains(agentLogin, "chacha20-poly1305@openssh.com") {
		t.Errorf("the bastion's last agent login is not chacha20-poly1305: %q\n%s", agentLogin, l.bastion.Output())
	}
	out, err := l.ssh("-J", "bastion", "pi", "echo", "through-chacha")
	if err != nil || !strings.Contains(out, "through-chacha") {
		t.Fatalf("ssh -J bastion pi through the ARMv6 agent: %v\n%s\nagent:\n%s", err, out, pi1.Output())
	}
}
