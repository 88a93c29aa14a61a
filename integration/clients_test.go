//go:build integration

package integration

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// TestClients runs every SSH client an operator or a site may use, each a
// Debian package nobody here wrote, against the real bastion on loopback:
//
//	client (operator) --SSH--> lifeline-bastion <--SSH-- lifeline-agent --> sshd ("pi")
//	                                           <--SSH-- client -R NAME:22 (agent role) --> the same sshd
//
// As operator each one reaches the Pi's sshd through the jump (and runs
// `status` where it runs commands); where it can hold a remote forward it
// also plays the agent: it registers NAME:22 and stock ssh jumps to it.
// Every client pins the host keys (the bastion's, and the Pi's as "pi"):
// none of them accepts an unknown key. The cipher each one negotiated is
// read from the bastion's login line and logged.
func TestClients(t *testing.T) {
	sshtest.NeedRoot(t)
	dir := t.TempDir()
	agentKey := sshtest.NewKey(t, dir, "clients-agent")
	names := []string{"openssh", "autossh", "dropbear", "plink", "paramiko", "asyncssh", "gosite"}
	var permits []string
	for _, n := range names {
		permits = append(permits, fmt.Sprintf(`permitlisten="%s:22"`, n))
	}
	l := startLoopback(t, loopbackOpts{extraAgents: agentKey.AuthorizedLine(strings.Join(permits, ","), "clients-agent")})
	c := &clients{t: t, l: l, dir: dir, agentKey: agentKey}
	piFwd := fmt.Sprintf("127.0.0.1:%d", l.pi.Port)
	bastionAddr := fmt.Sprintf("127.0.0.1:%d", l.bastionPort)

	// The results, one row per client and role, logged at the end.
	var rows []string
	row := func(client, role, software, result string) {
		_, cipher := negotiated(l.bastion.Output(), software)
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s |", client, role, cipher, result))
	}
	t.Cleanup(func() {
		t.Logf("\n| client | role | cipher negotiated with the bastion | result |\n|---|---|---|---|\n%s", strings.Join(rows, "\n"))
	})

	t.Run("OpenSSH", func(t *testing.T) {
		out, err := l.ssh("pi", "echo", "hello-from-the-pi")
		if err != nil || !strings.Contains(out, "hello-from-the-pi") {
			t.Fatalf("ssh -J bastion pi: %v\n%s", err, out)
		}
		out, err = l.ssh("-o", "ProxyCommand=ssh -F "+l.sshConfig+" -W %h:%p bastion", "-o", "ProxyJump=none", "pi", "echo", "via-W")
		if err != nil || !strings.Contains(out, "via-W") {
			t.Fatalf("ssh -W: %v\n%s", err, out)
		}
		row("OpenSSH ssh -J / -W", "operator", "OpenSSH", "ok")
		c.agentRole(t, "openssh", "OpenSSH", func(name string) *sshtest.Process {
			return sshtest.Start(t, nil, "ssh", "-N", "-R", name+":22:"+piFwd, "-p", fmt.Sprint(l.bastionPort),
				"-i", agentKey.Path, "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile="+l.opKnown,
				"-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
				"-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5", "lifeline-agent@127.0.0.1")
		})
		row("OpenSSH ssh -N -R", "agent", "OpenSSH", "ok")
	})

	t.Run("autossh", func(t *testing.T) {
		sshtest.Need(t, "autossh")
		c.agentRole(t, "autossh", "OpenSSH", func(name string) *sshtest.Process {
			return sshtest.Start(t, []string{"AUTOSSH_GATETIME=0"}, "autossh", "-M", "0", "-N", "-R", name+":22:"+piFwd,
				"-p", fmt.Sprint(l.bastionPort), "-i", agentKey.Path, "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile="+l.opKnown,
				"-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
				"-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5", "lifeline-agent@127.0.0.1")
		})
		row("autossh -M 0 -N -R", "agent", "OpenSSH", "ok")
	})

	t.Run("Dropbear", func(t *testing.T) {
		sshtest.Need(t, "dbclient", "dropbearconvert")
		key := dropbearKey(t, l.operator.Path)
		home := dropbearHome(t, t.TempDir(), map[string]ssh.PublicKey{"127.0.0.1": l.hostKey, "pi": l.pi.HostKey})
		out, err := runIn(t, home, 30*time.Second, "dbclient", "-i", key, "-p", fmt.Sprint(l.bastionPort), "operator@127.0.0.1", "status")
		if err != nil || !strings.Contains(out, "pi:22") {
			t.Fatalf("dbclient op@bastion status: %v\n%s", err, out)
		}
		// Multi-hop: dbclient runs itself (by the path it was started
		// with) with -B for the first hop.
		dbclient, _ := exec.LookPath("dbclient")
		out, err = runIn(t, home, 30*time.Second, dbclient, "-i", key,
			fmt.Sprintf("operator@127.0.0.1/%d,root@pi/22", l.bastionPort), "echo", "hello-from-the-pi")
		if err != nil || !strings.Contains(out, "hello-from-the-pi") {
			t.Fatalf("dbclient multi-hop: %v\n%s", err, out)
		}
		// As ProxyCommand of stock ssh: dbclient -B is netcat mode.
		out, err = l.ssh("-o", fmt.Sprintf("ProxyCommand=env HOME=%s dbclient -i %s -p %d -B %%h:%%p operator@127.0.0.1", home, key, l.bastionPort),
			"-o", "ProxyJump=none", "pi", "echo", "via-dbclient")
		if err != nil || !strings.Contains(out, "via-dbclient") {
			t.Fatalf("ssh via dbclient -B: %v\n%s", err, out)
		}
		row("Dropbear dbclient (status, multi-hop, -B)", "operator", "dropbear", "ok")
		agent := dropbearKey(t, agentKey.Path)
		c.agentRole(t, "dropbear", "dropbear", func(name string) *sshtest.Process {
			return sshtest.Start(t, []string{"HOME=" + home}, "dbclient", "-N", "-i", agent, "-p", fmt.Sprint(l.bastionPort),
				"-R", name+":22:"+piFwd, "-K", "5", "lifeline-agent@127.0.0.1")
		})
		row("Dropbear dbclient -N -R", "agent", "dropbear", "ok")
	})

	t.Run("PuTTY", func(t *testing.T) {
		sshtest.Need(t, "plink", "puttygen")
		key := puttyKey(t, l.operator.Path)
		home := t.TempDir()
		out, err := runIn(t, home, 30*time.Second, "plink", append(plinkArgs(key, "operator", "127.0.0.1", l.bastionPort, l.hostKey), "status")...)
		if err != nil || !strings.Contains(out, "pi:22") {
			t.Fatalf("plink status: %v\n%s", err, out)
		}
		proxy := "plink " + strings.Join(append(plinkArgs(key, "operator", "127.0.0.1", l.bastionPort, l.hostKey), "-nc", "%h:%p"), " ")
		out, err = l.ssh("-o", "ProxyCommand=env HOME="+home+" "+proxy, "-o", "ProxyJump=none", "pi", "echo", "via-plink")
		if err != nil || !strings.Contains(out, "via-plink") {
			t.Fatalf("ssh via plink -nc: %v\n%s", err, out)
		}
		row("PuTTY plink (status, -nc as proxy)", "operator", "PuTTY", "ok")
		agent := puttyKey(t, agentKey.Path)
		c.agentRole(t, "plink", "PuTTY", func(name string) *sshtest.Process {
			return sshtest.Start(t, []string{"HOME=" + home}, "plink", append([]string{"-N", "-R", name + ":22:" + piFwd},
				plinkArgs(agent, "lifeline-agent", "127.0.0.1", l.bastionPort, l.hostKey)...)...)
		})
		row("PuTTY plink -N -R", "agent", "PuTTY", "ok")
	})

	t.Run("Paramiko", func(t *testing.T) {
		needPython(t, "paramiko")
		script := c.script("paramiko_operator.py", paramikoOperator)
		out, err := runIn(t, dir, 60*time.Second, python, script, "127.0.0.1", fmt.Sprint(l.bastionPort), l.operator.Path, l.opKnown)
		if err != nil || !strings.Contains(out, "pi:22") || !strings.Contains(out, "hello-from-the-pi") {
			t.Fatalf("paramiko: %v\n%s", err, out)
		}
		row("Paramiko (exec status, direct-tcpip + SSHClient to the Pi)", "operator", "paramiko", "ok")
		agent := c.script("paramiko_agent.py", paramikoAgent)
		c.agentRole(t, "paramiko", "paramiko", func(name string) *sshtest.Process {
			return sshtest.Start(t, []string{"PYTHONWARNINGS=ignore"}, python, agent, "127.0.0.1", fmt.Sprint(l.bastionPort),
				agentKey.Path, l.opKnown, name, fmt.Sprint(l.pi.Port))
		})
		row("Paramiko request_port_forward", "agent", "paramiko", "ok")
	})

	t.Run("asyncssh", func(t *testing.T) {
		needPython(t, "asyncssh")
		script := c.script("asyncssh_operator.py", asyncsshOperator)
		out, err := runIn(t, dir, 60*time.Second, python, script, "127.0.0.1", fmt.Sprint(l.bastionPort), l.operator.Path, l.opKnown)
		if err != nil || !strings.Contains(out, "pi:22") || !strings.Contains(out, "hello-from-the-pi") {
			t.Fatalf("asyncssh: %v\n%s", err, out)
		}
		row("asyncssh (run status, tunnel= to the Pi)", "operator", "AsyncSSH", "ok")
		agent := c.script("asyncssh_agent.py", asyncsshAgent)
		c.agentRole(t, "asyncssh", "AsyncSSH", func(name string) *sshtest.Process {
			return sshtest.Start(t, []string{"PYTHONWARNINGS=ignore"}, python, agent, "127.0.0.1", fmt.Sprint(l.bastionPort),
				agentKey.Path, l.opKnown, name, fmt.Sprint(l.pi.Port))
		})
		row("asyncssh forward_remote_port", "agent", "AsyncSSH", "ok")
	})

	t.Run("Go x/crypto", func(t *testing.T) {
		cfg := func(user string, key sshtest.Key, hostKey ssh.PublicKey) *ssh.ClientConfig {
			return &ssh.ClientConfig{Config: sshalgo.Config(), User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(key.Signer)},
				HostKeyCallback: ssh.FixedHostKey(hostKey), HostKeyAlgorithms: []string{ssh.KeyAlgoED25519}, Timeout: 10 * time.Second}
		}
		op, err := ssh.Dial("tcp", bastionAddr, cfg("operator", l.operator, l.hostKey))
		if err != nil {
			t.Fatal(err)
		}
		defer op.Close()
		hop, err := op.Dial("tcp", "pi:22")
		if err != nil {
			t.Fatalf("direct-tcpip pi:22: %v", err)
		}
		pc, chans, reqs, err := ssh.NewClientConn(hop, "pi:22", cfg("root", l.operator, l.pi.HostKey))
		if err != nil {
			t.Fatalf("ssh to the Pi through the jump: %v", err)
		}
		pi := ssh.NewClient(pc, chans, reqs)
		sess, _ := pi.NewSession()
		out, err := sess.Output("echo hello-from-the-pi")
		pi.Close()
		if err != nil || !strings.Contains(string(out), "hello-from-the-pi") {
			t.Fatalf("Go through the jump: %v %s", err, out)
		}
		row("Go x/crypto (Dial through, then ssh to the Pi)", "operator", "Go", "ok")

		site, err := ssh.Dial("tcp", bastionAddr, cfg("lifeline-agent", agentKey, l.hostKey))
		if err != nil {
			t.Fatal(err)
		}
		defer site.Close()
		ln, err := site.Listen("tcp", "gosite:22")
		if err != nil {
			t.Fatalf("Listen gosite:22: %v", err)
		}
		sshtest.ServeConns(t, ln, func(conn net.Conn) { pipeTo(conn, fmt.Sprintf("127.0.0.1:%d", l.pi.Port)) })
		c.jumpTo(t, "gosite", "Go listener")
		row("Go x/crypto Client.Listen", "agent", "Go", "ok")
	})
}

// clients holds what the client tests share.
type clients struct {
	t        *testing.T
	l        *loopback
	dir      string
	agentKey sshtest.Key
}

// agentRole starts a client holding name:22 towards the Pi's sshd, waits
// for the bastion to list it online, and jumps to it with stock ssh.
func (c *clients) agentRole(t *testing.T, name, software string, start func(name string) *sshtest.Process) {
	t.Helper()
	p := start(name)
	sshtest.Eventually(t, 30*time.Second, func() bool { return online(c.l.status(), name+":22") != nil },
		"%s:22 never online; the client said:\n%s\nbastion:\n%s", name, p.Output, c.l.bastion.Output)
	c.jumpTo(t, name, p.Output())
	p.Stop()
	sshtest.Eventually(t, 30*time.Second, func() bool {
		st := c.l.status()
		return online(st, name+":22") == nil && strings.Contains(st, name+":22")
	}, "%s:22 not listed offline after the client left:\n%s", name, c.l.status)
}

// jumpTo runs a command on the Pi's sshd through name:22, with the Pi's
// host key checked under its alias "pi".
func (c *clients) jumpTo(t *testing.T, name, clientOutput string) {
	t.Helper()
	out, err := c.l.ssh("-o", "HostKeyAlias=pi", "-o", "ProxyJump=bastion", "-l", "root", name, "echo", "hello-via-"+name)
	if err != nil || !strings.Contains(out, "hello-via-"+name) {
		t.Fatalf("ssh -J bastion %s: %v\n%s\nthe %s side said:\n%s", name, err, out, name, clientOutput)
	}
}

func (c *clients) script(name, text string) string {
	c.t.Helper()
	path := filepath.Join(c.dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return path
}

// pipeTo connects conn to addr both ways until both are done.
func pipeTo(conn net.Conn, addr string) {
	defer conn.Close()
	up, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, conn); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(conn, up); done <- struct{}{} }()
	<-done
	<-done
}

const paramikoOperator = `
import sys, paramiko
host, port, keyfile, known = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
key = paramiko.Ed25519Key.from_private_key_file(keyfile)
def client():
    c = paramiko.SSHClient()
    c.load_host_keys(known)
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    return c
bastion = client()
bastion.connect(host, port=port, username="operator", pkey=key, allow_agent=False, look_for_keys=False, timeout=20)
t = bastion.get_transport()
print("cipher", t.remote_cipher, t.remote_mac)
_, out, _ = bastion.exec_command("status")
print(out.read().decode())
chan = t.open_channel("direct-tcpip", ("pi", 22), ("127.0.0.1", 0))
pi = client()
pi.connect("pi", port=22, username="root", pkey=key, sock=chan, allow_agent=False, look_for_keys=False, timeout=20)
_, out, _ = pi.exec_command("echo hello-from-the-pi")
print(out.read().decode())
pi.close()
bastion.close()
`

const paramikoAgent = `
import sys, socket, threading, time, select, paramiko
host, port, keyfile, known, name, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
key = paramiko.Ed25519Key.from_private_key_file(keyfile)
c = paramiko.SSHClient()
c.load_host_keys(known)
c.set_missing_host_key_policy(paramiko.RejectPolicy())
c.connect(host, port=port, username="lifeline-agent", pkey=key, allow_agent=False, look_for_keys=False, timeout=20)
t = c.get_transport()
def serve(chan):
    s = socket.create_connection(("127.0.0.1", target))
    while True:
        r, _, _ = select.select([chan, s], [], [], 60)
        if chan in r:
            d = chan.recv(32768)
            if not d:
                break
            s.sendall(d)
        if s in r:
            d = s.recv(32768)
            if not d:
                break
            chan.sendall(d)
    chan.close()
    s.close()
def handler(chan, origin, server):
    threading.Thread(target=serve, args=(chan,), daemon=True).start()
t.request_port_forward(name, 22, handler)
print("registered", name, flush=True)
while t.is_active():
    time.sleep(0.2)
`

const asyncsshOperator = `
import sys, asyncio, asyncssh
host, port, keyfile, known = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
async def main():
    async with asyncssh.connect(host, port, username="operator", client_keys=[keyfile], known_hosts=known, agent_path=None) as conn:
        print("cipher", conn.get_extra_info("recv_cipher"))
        r = await conn.run("status")
        print(r.stdout)
        async with asyncssh.connect("pi", 22, tunnel=conn, username="root", client_keys=[keyfile], known_hosts=known, agent_path=None) as pi:
            r = await pi.run("echo hello-from-the-pi")
            print(r.stdout)
asyncio.run(main())
`

const asyncsshAgent = `
import sys, asyncio, asyncssh
host, port, keyfile, known, name, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
async def main():
    async with asyncssh.connect(host, port, username="lifeline-agent", client_keys=[keyfile], known_hosts=known, agent_path=None) as conn:
        listener = await conn.forward_remote_port(name, 22, "127.0.0.1", target)
        print("registered", name, flush=True)
        await listener.wait_closed()
asyncio.run(main())
`
