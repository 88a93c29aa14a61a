//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// classic is the setup lifeline replaces: stock sshd as the jump host, a
// stock `ssh -R` from the site to a port on it, `ssh -J` from the operator.
type classic struct {
	t        testing.TB
	jump     *sshtest.SSHD
	agent    *sshtest.Process
	config   string
	piPort   int // reverse-forwarded port of the Pi's sshd on the jump host
	bulkPort int // reverse-forwarded port of the bulk source
}

func startClassic(t testing.TB, l *loopback, bulkAddr string, agentArgs ...string) *classic {
	t.Helper()
	dir := t.TempDir()
	agentKey := sshtest.NewKey(t, dir, "agent")
	c := &classic{t: t, piPort: sshtest.FreePort(t), bulkPort: sshtest.FreePort(t)}
	c.jump = sshtest.StartSSHD(t, sshtest.SSHDOptions{
		AuthorizedKeys: agentKey.AuthorizedLine("", "agent") + "\n" + l.operator.AuthorizedLine("", "alice"),
		Extra:          []string{"AllowTcpForwarding yes", "GatewayPorts no", "ClientAliveInterval 30"},
	})
	known := filepath.Join(dir, "known_hosts")
	os.WriteFile(known, []byte(knownHostsFor(c.jump.Addr, c.jump.HostKey)+"\n"+
		knownHostsFor(fmt.Sprintf("127.0.0.1:%d", c.piPort), l.pi.HostKey)+"\n"), 0o600)
	c.config = filepath.Join(dir, "ssh_config")
	os.WriteFile(c.config, []byte(fmt.Sprintf(`Host jump
  HostName 127.0.0.1
  Port %d
  User root
Host pi
  HostName 127.0.0.1
  Port %d
  User root
  ProxyJump jump
Host *
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
`, c.jump.Port, c.piPort, l.operator.Path, known)), 0o600)
	args := []string{"-N", "-F", c.config, "-i", agentKey.Path,
		"-R", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", c.piPort, l.pi.Port),
		"-o", "ExitOnForwardFailure=yes"}
	if bulkAddr != "" {
		args = append(args, "-R", fmt.Sprintf("127.0.0.1:%d:%s", c.bulkPort, bulkAddr))
	}
	args = append(args, agentArgs...)
	c.agent = sshtest.Start(t, nil, "ssh", append(args, "jump")...)
	sshtest.Eventually(t, 15*time.Second, func() bool {
		out, err := sshtest.Run(context.Background(), 10*time.Second, nil, "ssh", "-F", c.config, "pi", "true")
		_ = out
		return err == nil
	}, "classic reverse tunnel never worked; agent:\n%s", c.agent.Output)
	return c
}

// timeRun runs a command n times and returns the sorted durations.
func timeRun(t testing.TB, n int, name string, args ...string) []time.Duration {
	t.Helper()
	var ds []time.Duration
	for range n {
		start := time.Now()
		out, err := sshtest.Run(context.Background(), 30*time.Second, nil, name, args...)
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return ds
}

func median(ds []time.Duration) time.Duration { return ds[len(ds)/2] }

func pct(ds []time.Duration, p float64) time.Duration {
	i := int(float64(len(ds)-1) * p)
	return ds[i]
}

// pull reads everything `ssh -W` delivers and returns MB/s.
func pull(t testing.TB, size int64, args ...string) float64 {
	t.Helper()
	mbps, _ := pullCmd(t, size, size, nil, "ssh", args...)
	return mbps
}

// pullCmd reads everything the command writes on its standard output,
// which must be from least to size bytes, and returns MB/s and what it
// wrote on standard error.
func pullCmd(t testing.TB, least, size int64, env []string, name string, args ...string) (float64, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n, _ := io.CopyBuffer(io.Discard, stdout, make([]byte, 256<<10))
	cmd.Wait()
	d := time.Since(start)
	if n < least || n > size {
		t.Fatalf("%s %v delivered %d of %d bytes: %s", name, args, n, size, stderr.String())
	}
	return float64(n) / d.Seconds() / 1e6, stderr.String()
}

// sshCipher is the cipher `ssh -v` says it negotiated.
func sshCipher(stderr string) string {
	for _, line := range strings.Split(stderr, "\n") {
		if _, rest, ok := strings.Cut(line, "kex: server->client cipher: "); ok {
			f := strings.Fields(rest) // "aes128-gcm@openssh.com MAC: <implicit> compression: none"
			if len(f) >= 3 && f[2] != "<implicit>" {
				return f[0] + " " + f[2]
			}
			if len(f) > 0 {
				return f[0]
			}
		}
	}
	return "?"
}

// dropbearLeast: dbclient -B (2022.83), when the server closes the
// channel, may exit with data not yet written to its standard output: seen
// with sshd as the jump host, up to a few MB of 256 MiB. MB/s counts what
// it delivered.
const dropbearLeast = 230 << 20

func best(fs []float64) float64 { return slices.Max(fs) }

// BenchmarkJumpVsOpenSSH compares jump setup time and bulk throughput of
// lifeline with the classic stock-OpenSSH jump host, in the same run, for
// OpenSSH's ssh and for Dropbear's dbclient as the operator's client (each
// with the cipher it negotiates by default, which is printed).
func BenchmarkJumpVsOpenSSH(b *testing.B) {
	sshtest.NeedRoot(b)
	const size = 256 << 20
	bulk := source(b, size)
	l := startLoopback(b, loopbackOpts{forwards: ",bulk:9000=" + bulk})
	l.waitTarget("bulk:9000")
	c := startClassic(b, l, bulk)
	haveDropbear := true
	if _, err := exec.LookPath("dbclient"); err != nil {
		haveDropbear = false
		b.Logf("dbclient not installed (apt-get install dropbear-bin): no Dropbear row")
	}
	var dbKey, dbLife, dbClassic string
	if haveDropbear {
		dbKey = dropbearKey(b, l.operator.Path)
		dbLife = dropbearHome(b, b.TempDir(), map[string]ssh.PublicKey{"127.0.0.1": l.hostKey})
		dbClassic = dropbearHome(b, b.TempDir(), map[string]ssh.PublicKey{"127.0.0.1": c.jump.HostKey})
	}
	const n = 20
	for range b.N {
		lifeSetup := timeRun(b, n, "ssh", "-F", l.sshConfig, "pi", "true")
		sshSetup := timeRun(b, n, "ssh", "-F", c.config, "pi", "true")
		var lifeTP, sshTP, dbLifeTP, dbSSHTP []float64
		var sshLifeCipher, sshClassicCipher string
		for range 3 {
			mbps, _ := pullCmd(b, size, size, nil, "ssh", "-F", l.sshConfig, "-W", "bulk:9000", "bastion")
			lifeTP = append(lifeTP, mbps)
			mbps, stderr := pullCmd(b, size, size, nil, "ssh", "-v", "-F", c.config, "-W", fmt.Sprintf("127.0.0.1:%d", c.bulkPort), "jump")
			sshTP = append(sshTP, mbps)
			sshClassicCipher = sshCipher(stderr)
			if haveDropbear {
				mbps, _ = pullCmd(b, dropbearLeast, size, []string{"HOME=" + dbLife}, "dbclient", "-i", dbKey, "-p", fmt.Sprint(l.bastionPort),
					"-B", "bulk:9000", "operator@127.0.0.1")
				dbLifeTP = append(dbLifeTP, mbps)
				mbps, _ = pullCmd(b, dropbearLeast, size, []string{"HOME=" + dbClassic}, "dbclient", "-i", dbKey, "-p", fmt.Sprint(c.jump.Port),
					"-B", fmt.Sprintf("127.0.0.1:%d", c.bulkPort), "root@127.0.0.1")
				dbSSHTP = append(dbSSHTP, mbps)
			}
		}
		_, sshLifeCipher = negotiated(l.bastion.Output(), "OpenSSH")
		b.ReportMetric(float64(median(lifeSetup).Milliseconds()), "lifeline-setup-ms")
		b.ReportMetric(float64(median(sshSetup).Milliseconds()), "openssh-setup-ms")
		b.ReportMetric(best(lifeTP), "lifeline-MB/s")
		b.ReportMetric(best(sshTP), "openssh-MB/s")
		table := fmt.Sprintf("\n| loopback, %d runs | lifeline | OpenSSH sshd + ssh -R | ratio |\n|---|---|---|---|\n"+
			"| jump setup `ssh -J … true`, median | %s | %s | %.2f |\n"+
			"| jump setup, p90 | %s | %s | %.2f |\n"+
			"| bulk throughput via `ssh -W`, 256 MiB, best of 3 (cipher: %s / %s) | %.0f MB/s | %.0f MB/s | %.2f |",
			n, median(lifeSetup).Round(time.Millisecond), median(sshSetup).Round(time.Millisecond),
			float64(median(lifeSetup))/float64(median(sshSetup)),
			pct(lifeSetup, 0.9).Round(time.Millisecond), pct(sshSetup, 0.9).Round(time.Millisecond),
			float64(pct(lifeSetup, 0.9))/float64(pct(sshSetup, 0.9)),
			sshLifeCipher, sshClassicCipher, best(lifeTP), best(sshTP), best(lifeTP)/best(sshTP))
		if haveDropbear {
			_, dbCipher := negotiated(l.bastion.Output(), "dropbear")
			b.ReportMetric(best(dbLifeTP), "lifeline-dropbear-MB/s")
			b.ReportMetric(best(dbSSHTP), "openssh-dropbear-MB/s")
			table += fmt.Sprintf("\n| bulk throughput via `dbclient -B`, 256 MiB, best of 3 (cipher: %s / dbclient's default) | %.0f MB/s | %.0f MB/s | %.2f |",
				dbCipher, best(dbLifeTP), best(dbSSHTP), best(dbLifeTP)/best(dbSSHTP))
		}
		b.Log(table)
	}
}
