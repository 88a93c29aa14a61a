//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// descendants returns pid and every process below it.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command may hold spaces: the fields after ")" are fixed.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 2 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// pssKiB sums the proportional set size of processes (shared pages split
// between their users, so forked sshd children are not over-counted).
func pssKiB(pids []int) int64 {
	var total int64
	for _, p := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", p))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
				n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
				total += n
			}
		}
		f.Close()
	}
	return total
}

// BenchmarkOpenSSHIdleAgents measures what one idle `ssh -R` agent costs a
// stock OpenSSH sshd used as the jump host (a privilege-separated process
// pair per connection), for the same row as BenchmarkIdleAgents.
func BenchmarkOpenSSHIdleAgents(b *testing.B) {
	const agents = 200
	dir := b.TempDir()
	key := sshtest.NewKey(b, dir, "agent")
	jump := sshtest.StartSSHD(b, sshtest.SSHDOptions{
		AuthorizedKeys: key.AuthorizedLine("", "agent"),
		Extra:          []string{"AllowTcpForwarding yes", "GatewayPorts no", "MaxStartups 1000", "LogLevel ERROR"},
	})
	master := jump.PID()
	for range b.N {
		base := pssKiB(descendants(master))
		cfg := &ssh.ClientConfig{Config: sshalgo.Config(), User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(key.Signer)},
			HostKeyCallback: ssh.FixedHostKey(jump.HostKey), Timeout: 10 * time.Second}
		var mu sync.Mutex
		var clients []*ssh.Client
		sem := make(chan struct{}, 8)
		var wg sync.WaitGroup
		var failed int
		for range agents {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := ssh.Dial("tcp", jump.Addr, cfg)
				if err == nil {
					// The reverse forward, as ssh -R 127.0.0.1:0:… asks for it.
					if _, err = c.Listen("tcp", "127.0.0.1:0"); err != nil {
						c.Close()
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed++
					return
				}
				clients = append(clients, c)
			}()
		}
		wg.Wait()
		settle := time.NewTimer(5 * time.Second)
		<-settle.C
		pids := descendants(master)
		after := pssKiB(pids)
		n := len(clients)
		for _, c := range clients {
			c.Close()
		}
		if n == 0 {
			b.Fatalf("no agent connected (%d failed); sshd log:\n%s", failed, jump.Log())
		}
		per := float64(after-base) / float64(n)
		b.ReportMetric(per, "KiB/agent")
		b.ReportMetric(float64(n), "agents")
		b.Logf("\n| stock sshd as jump host, %d idle `ssh -R` agents (%d failed) | sshd processes | PSS before | PSS after | per agent | agents in 1 GiB |\n|---|---|---|---|---|---|\n| OpenSSH 9.2 | %d | %d KiB | %d KiB | %.0f KiB | %.0f |",
			n, failed, len(pids), base, after, per, float64(1<<20)/per)
	}
}
