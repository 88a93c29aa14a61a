package doctor

import (
	"github.com/lifeline-dev/lifeline/shared/wire"

	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/lifeline-dev/lifeline/agent/forward"
	"github.com/lifeline-dev/lifeline/agent/hostkeys"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
	"github.com/lifeline-dev/lifeline/shared/netbind"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
	"github.com/lifeline-dev/lifeline/shared/version"
)

// CheckForwardRequest is the bastion's dry-run registration (shared/wire):
// a real tcpip-forward would take the name from the running agent.
const CheckForwardRequest = wire.CheckForwardRequest

// lifelineServer is how lifeline's bastion begins its version line.
const lifelineServer = "SSH-2.0-lifeline"

// probe is one bastion as the checks reach it step by step: each step
// runs only when the one before it worked. Each holds busy while it runs,
// so a step the runner abandoned (see Check.Run) never races the next.
type probe struct {
	addr, host, port string
	busy             chan struct{}

	// Filled by the steps, in order.
	addrs    []string // resolved addresses
	resolved bool
	conn     net.Conn // TCP connection (closed by the handshake on failure)
	remote   string
	version  string // the server's version line
	client   ssh.Conn
	loginErr error  // what the handshake's login said (nil: accepted)
	keyOK    bool   // host key checked (or accepted as new under TOFU)
	loginOK  bool   // authenticated
	notTried string // why the next steps do not run
}

func (d *Doctor) bastionChecks(addr string, fwds []forward.Forward) []Check {
	host, port, _ := net.SplitHostPort(addr)
	p := &probe{addr: addr, host: host, port: port, busy: make(chan struct{}, 1)}
	d.onClose(func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), abandonGrace)
		defer cancel()
		if !p.lock(ctx) {
			return false
		}
		defer p.unlock()
		if p.client != nil {
			p.client.Close()
		} else if p.conn != nil {
			p.conn.Close()
		}
		return true
	})
	step := func(name string, run func(context.Context) Result) Check {
		name = "bastion " + addr + ": " + name
		return Check{Name: name, Run: func(ctx context.Context) Result {
			if !p.lock(ctx) {
				return Failed(name, "not checked: the step before it never finished", "run the doctor again")
			}
			defer p.unlock()
			return run(ctx)
		}}
	}
	cs := []Check{
		step("name", func(ctx context.Context) Result { return d.checkDNS(ctx, p) }),
		step("TCP connection", func(ctx context.Context) Result { return d.checkTCP(ctx, p) }),
		step("host key", func(ctx context.Context) Result { return d.checkHostKey(ctx, p) }),
		step("login with the agent key", func(ctx context.Context) Result { return d.checkLogin(ctx, p) }),
	}
	for _, f := range fwds {
		cs = append(cs, step("may register "+f.Listen(), func(ctx context.Context) Result { return d.checkRegister(ctx, p, f) }))
	}
	return cs
}

func (p *probe) lock(ctx context.Context) bool {
	select {
	case p.busy <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (p *probe) unlock() { <-p.busy }

func (d *Doctor) checkDNS(ctx context.Context, p *probe) Result {
	what := "bastion " + p.addr + ": name " + p.host
	if ip := net.ParseIP(p.host); ip != nil {
		p.addrs, p.resolved = []string{p.host}, true
		return Passed("bastion " + p.addr + ": an address, no name to look up")
	}
	addrs, err := d.cfg.Resolver.LookupHost(ctx, p.host)
	if err == nil && len(addrs) == 0 {
		err = errors.New("no address")
	}
	if err != nil {
		p.notTried = "its name did not resolve (above)"
		why := err.Error()
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			why = fmt.Sprintf("%s does not exist in DNS", p.host)
		} else if ctx.Err() != nil {
			why = fmt.Sprintf("no DNS answer within %s", d.cfg.StepTimeout)
		}
		return Failed(what, why, "check the name in LIFELINE_BASTION (or use the address: terraform output -raw bastion_address) and this Pi's DNS (/etc/resolv.conf, resolvectl status)")
	}
	p.addrs, p.resolved = addrs, true
	return Passed(what + " is " + strings.Join(addrs, ", "))
}

// bastionDialer dials like the tunnel: bound to LIFELINE_INTERFACE.
func (d *Doctor) bastionDialer() *net.Dialer {
	return &net.Dialer{Control: netbind.Control(d.cfg.Agent.Interface, 0)}
}

func (d *Doctor) checkTCP(ctx context.Context, p *probe) Result {
	what := "bastion " + p.addr + ": TCP connection"
	if d.cfg.Agent.Interface != "" {
		what += " via " + d.cfg.Agent.Interface
	}
	if !p.resolved {
		return Skipped(what, "not tried: "+p.notTried)
	}
	dialer := d.bastionDialer()
	var errs []string
	var last error
	for _, a := range p.addrs {
		c, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(a, p.port))
		if err == nil {
			p.conn, p.remote = c, c.RemoteAddr().String()
			return Passed(fmt.Sprintf("%s to %s", what, p.remote))
		}
		last = err
		errs = append(errs, err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	p.notTried = "no TCP connection (above)"
	why, fix := strings.Join(errs, "; "), ""
	switch {
	case strings.Contains(why, "bind socket to interface"):
		fix = fmt.Sprintf("LIFELINE_INTERFACE=%s must name this Pi's backup uplink as `ip link` lists it; empty: any", d.cfg.Agent.Interface)
	case errors.Is(last, syscall.ECONNREFUSED):
		why = "refused: nothing listens on " + p.addr
		fix = "check the port in LIFELINE_BASTION (terraform output -raw bastion_address) and that lifeline-bastion runs on the jump host"
	case errors.Is(last, syscall.ENETUNREACH), errors.Is(last, syscall.EHOSTUNREACH):
		fix = "this Pi has no route to the bastion: is the uplink up (ip addr, ip route)?"
		if d.cfg.Agent.Interface != "" {
			fix = fmt.Sprintf("%s has no route to the bastion: is it up and connected (ip addr show %s)?", d.cfg.Agent.Interface, d.cfg.Agent.Interface)
		}
	case ctx.Err() != nil || isTimeout(last):
		why = fmt.Sprintf("no answer within %s", d.cfg.StepTimeout)
		fix = "the link may be down, or a firewall drops the port: check the uplink (ip addr), and that the jump host's security group allows it"
	default:
		fix = "check the uplink (ip addr, ip route) and LIFELINE_BASTION"
	}
	return Failed(what, why, fix)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// versionConn remembers the server's version line as it is read.
type versionConn struct {
	net.Conn
	mu   sync.Mutex
	buf  []byte
	done bool
}

func (c *versionConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	if !c.done && n > 0 {
		c.buf = append(c.buf, b[:n]...)
		// The line starting with "SSH-" (a server may send others first).
		for {
			i := bytes.IndexByte(c.buf, '\n')
			if i < 0 {
				break
			}
			line := c.buf[:i]
			if bytes.HasPrefix(line, []byte("SSH-")) {
				c.buf, c.done = bytes.TrimRight(line, "\r"), true
				break
			}
			c.buf = c.buf[i+1:]
		}
		if len(c.buf) > 512 && !c.done {
			c.buf, c.done = nil, true
		}
	}
	c.mu.Unlock()
	return n, err
}

func (c *versionConn) version() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		return ""
	}
	return clean(string(c.buf), 120)
}

// hostKeyOutcome is what the host key callback saw.
type hostKeyOutcome struct {
	presented ssh.PublicKey
	err       error
	unpinned  bool // accepted as new (trust on first use), not pinned
}

// handshake runs the SSH handshake and login on p.conn, as the agent does:
// the host key against known_hosts (never recording one: the doctor uses
// a pinner without trust on first use, and accepts an unknown key itself
// when the agent would), the agent's key or certificate.
func (d *Doctor) handshake(ctx context.Context, p *probe) (hostKeyOutcome, error) {
	var hk hostKeyOutcome
	pin := hostkeys.New(d.cfg.Agent.KnownHosts, false, slog.New(slog.DiscardHandler))
	check := pin.HostKeyCallback(p.addr)
	algo := sshalgo.Config()
	algo.Ciphers = sshalgo.AgentCiphers(sshalgo.AESHardware())
	auth := []ssh.AuthMethod{}
	if d.key.auth != nil {
		auth = append(auth, ssh.PublicKeys(d.key.auth))
	}
	var banner strings.Builder
	cfg := &ssh.ClientConfig{
		Config: algo,
		User:   d.cfg.Agent.User,
		Auth:   auth,
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			hk.presented = key
			err := check(host, remote, key)
			if errors.Is(err, hostkeys.ErrUnknown) && d.cfg.Agent.TrustNewBastion {
				hk.unpinned = true
				return nil
			}
			hk.err = err
			return err
		},
		HostKeyAlgorithms: pin.Algorithms(p.addr),
		ClientVersion: "SSH-2.0-lifeline_doctor_" + strings.Map(func(r rune) rune {
			if r <= ' ' || r > '~' || r == '-' {
				return '.'
			}
			return r
		}, version.Version),
		BannerCallback: func(msg string) error {
			if banner.Len() < 1024 {
				banner.WriteString(msg)
			}
			return nil
		},
	}
	vc := &versionConn{Conn: p.conn}
	if dl, ok := ctx.Deadline(); ok {
		p.conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { p.conn.Close() })
	defer stop()
	c, chans, reqs, err := ssh.NewClientConn(vc, p.addr, cfg)
	p.version = vc.version()
	if err != nil {
		p.conn.Close()
		if b := clean(banner.String(), 300); b != "" {
			err = fmt.Errorf("%w (its banner said: %s)", err, b)
		}
		return hk, err
	}
	p.conn.SetDeadline(time.Time{})
	p.client = c
	p.version = string(c.ServerVersion())
	// Both end when the connection closes (at the latest when Run ends).
	d.wg.Go(func() { ssh.DiscardRequests(reqs) })
	d.wg.Go(func() {
		for nc := range chans {
			nc.Reject(ssh.Prohibited, "the doctor serves no channels")
		}
	})
	return hk, nil
}

func (d *Doctor) checkHostKey(ctx context.Context, p *probe) Result {
	what := "bastion " + p.addr + ": host key"
	if p.conn == nil {
		return Skipped(what, "not tried: "+p.notTried)
	}
	hk, err := d.handshake(ctx, p)
	p.loginErr = err
	server := ""
	if p.version != "" {
		server = " (" + clean(p.version, 80) + ")"
	}
	switch {
	case hk.presented == nil && err != nil:
		p.notTried = "no SSH handshake (above)"
		why := "no SSH handshake: " + err.Error()
		if ctx.Err() != nil || isTimeout(err) {
			why = fmt.Sprintf("no SSH answer within %s%s", d.cfg.StepTimeout, server)
		} else if errors.Is(err, io.EOF) || strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "reset by peer") {
			why = "the bastion closed the connection before showing its key" + server
		}
		return Failed(what, why, "make sure LIFELINE_BASTION is lifeline's bastion (or an sshd); a bastion that bans this address after failed logins (LIFELINE_BAN_AFTER) lets it in again after LIFELINE_BAN_FOR (30m)")
	case hk.err != nil && errors.Is(hk.err, hostkeys.ErrMismatch):
		p.notTried = "the host key does not match (above)"
		return Failed(what, fmt.Sprintf("MISMATCH: it presented %s %s%s, but %s pins %s: someone may be in the middle, or the jump host got a new key", hk.presented.Type(), keyfile.Fingerprint(hk.presented), server, d.cfg.Agent.KnownHosts, d.pinnedFingerprints(p.addr)),
			fmt.Sprintf("compare with terraform output host_key_fingerprint; only if it is really the bastion's new key, replace its line in %s with terraform output -raw known_hosts_line", d.cfg.Agent.KnownHosts))
	case hk.err != nil && errors.Is(hk.err, hostkeys.ErrUnknown):
		p.notTried = "the host key is not pinned (above)"
		return Failed(what, fmt.Sprintf("not pinned: it presented %s %s%s and %s has no line for %s", hk.presented.Type(), keyfile.Fingerprint(hk.presented), server, d.cfg.Agent.KnownHosts, p.addr),
			d.knownHostsFix([]string{p.addr}))
	case hk.err != nil:
		p.notTried = "the host key could not be checked (above)"
		return Failed(what, hk.err.Error(), d.knownHostsFix([]string{p.addr}))
	}
	p.keyOK = true
	if hk.unpinned {
		return Skipped(what, fmt.Sprintf("%s %s%s is not pinned: the agent will record it on first use (LIFELINE_TRUST_NEW_BASTION=true); compare it with terraform output host_key_fingerprint",
			hk.presented.Type(), keyfile.Fingerprint(hk.presented), server))
	}
	return Passed(fmt.Sprintf("%s %s %s matches %s%s", what, hk.presented.Type(), keyfile.Fingerprint(hk.presented), d.cfg.Agent.KnownHosts, server))
}

// pinnedFingerprints lists the keys known_hosts pins for addr.
func (d *Doctor) pinnedFingerprints(addr string) string {
	cb, err := knownhosts.New(d.cfg.Agent.KnownHosts)
	if err != nil {
		return "another key"
	}
	var fps []string
	for _, k := range pinnedKeys(cb, addr) {
		fps = append(fps, k.Type()+" "+keyfile.Fingerprint(k))
	}
	if len(fps) == 0 {
		return "another key"
	}
	return strings.Join(fps, ", ")
}

func (d *Doctor) isLifeline(p *probe) bool { return strings.HasPrefix(p.version, lifelineServer) }

func (d *Doctor) checkLogin(ctx context.Context, p *probe) Result {
	what := "bastion " + p.addr + ": login with the agent key"
	if d.key.pub != nil {
		what += " " + keyfile.Fingerprint(d.key.pub)
	}
	if !p.keyOK {
		reason := p.notTried
		if reason == "" {
			reason = "the host key check did not pass (above)"
		}
		return Skipped(what, "not tried: "+reason)
	}
	if d.key.auth == nil {
		p.notTried = d.key.why
		if p.client != nil {
			p.client.Close()
			p.client = nil
		}
		return Skipped(what, "not tried: "+d.key.why)
	}
	err := p.loginErr
	if err == nil {
		p.loginOK = true
		as := ""
		if d.key.cert != nil {
			as = fmt.Sprintf(" (certificate %q)", d.key.cert.KeyId)
		}
		return Passed(what + as + ": accepted")
	}
	p.notTried = "the login failed (above)"
	said := strings.TrimPrefix(err.Error(), "ssh: handshake failed: ")
	if !strings.Contains(err.Error(), "unable to authenticate") {
		return Failed(what, "the connection ended during login: "+said, "run the doctor again; if it persists, the jump host's journal (journalctl -u lifeline-bastion) says why")
	}
	if !d.isLifeline(p) {
		return Failed(what, fmt.Sprintf("refused by %s as user %q: %s", clean(p.version, 80), d.cfg.Agent.User, said),
			fmt.Sprintf("on a stock sshd, LIFELINE_USER must be the account whose ~/.ssh/authorized_keys holds this line: %s", d.pairLine()))
	}
	if d.key.cert != nil {
		return Failed(what, "the bastion refused the agent's certificate: "+said,
			fmt.Sprintf("the bastion's agents file needs a cert-authority line for the CA that signed %s (the Terraform variable agents), or pair by key with this line: %s", keyfile.CertPath(d.cfg.Agent.Key), d.pairLine()))
	}
	return Failed(what, "the bastion refused it: "+said+": the key is not in its agents file (or was revoked)",
		"put this line in the bastion's agents file (the Terraform variable agents, then terraform apply; by hand: /etc/lifeline/agents and sudo systemctl reload lifeline-bastion), wait a minute and run the doctor again: "+d.pairLine())
}

// checkRegister asks the bastion whether the key may register f, with
// CheckForwardRequest (never tcpip-forward, which would take the name
// from the running agent).
func (d *Doctor) checkRegister(ctx context.Context, p *probe, f forward.Forward) Result {
	what := "bastion " + p.addr + ": may register " + f.Listen()
	if !p.loginOK || p.client == nil {
		return Skipped(what, "not tried: "+p.notTried)
	}
	if !d.isLifeline(p) {
		return Skipped(what, fmt.Sprintf("not tested: %s is not lifeline's bastion, and only a real tcpip-forward would tell, which would take the name from the running agent; the agent's journal says whether it registered (journalctl -u lifeline-agent)", clean(p.version, 80)))
	}
	type result struct {
		ok      bool
		payload []byte
		err     error
	}
	done := make(chan result, 1)
	payload := ssh.Marshal(&struct {
		Addr string
		Port uint32
	}{f.Name, uint32(f.Port)})
	go func() {
		ok, reply, err := p.client.SendRequest(CheckForwardRequest, true, payload)
		done <- result{ok, reply, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		// SendRequest has no deadline: closing the connection ends it.
		p.client.Close()
		<-done
		p.client, p.loginOK, p.notTried = nil, false, "the bastion did not answer (above)"
		return Failed(what, fmt.Sprintf("no answer within %s", d.cfg.StepTimeout), "the link or the bastion is stalling: run the doctor again; the jump host's journal (journalctl -u lifeline-bastion) may say why")
	}
	if r.err != nil {
		p.client, p.loginOK, p.notTried = nil, false, "the connection ended (above)"
		return Failed(what, "the connection ended: "+r.err.Error(), "run the doctor again; the jump host's journal (journalctl -u lifeline-bastion) may say why")
	}
	if r.ok {
		return Passed(fmt.Sprintf("%s: yes (target %s on this side)", what, f.Target()))
	}
	if len(r.payload) == 0 {
		return Skipped(what, fmt.Sprintf("not tested: this bastion (%s) does not know %s yet (an older lifeline-bastion); the agent's journal says whether it registered (journalctl -u lifeline-agent)", clean(p.version, 80), CheckForwardRequest))
	}
	var reason struct{ Reason string }
	why := ""
	if err := ssh.Unmarshal(r.payload, &reason); err == nil {
		why = reason.Reason
	} else {
		why = string(r.payload)
	}
	why = clean(why, 300)
	if why == "" {
		why = "refused"
	}
	return Failed(what, "the bastion says: "+why,
		fmt.Sprintf("the key's line in the bastion's agents file needs permitlisten=%q; replace it with (the Terraform variable agents): %s", f.Listen(), d.pairLine()))
}
