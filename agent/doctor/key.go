package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// keyState is what the key checks found, for the login checks.
type keyState struct {
	// pub is the key's public half (nil: unusable), for the agents line.
	pub ssh.PublicKey
	// auth is what the agent presents (the certificate when there is a
	// valid one); nil when the agent would not start with these files.
	auth ssh.Signer
	// why says why auth is nil.
	why string
	// cert is the agent's valid certificate, if any.
	cert *ssh.Certificate
}

func (d *Doctor) pairFix() string {
	return fmt.Sprintf("sudo lifeline-agent pair (creates it as %s and prints its line for the bastion)", d.cfg.User.Name)
}

func (d *Doctor) checkKey(context.Context) Result {
	path := d.cfg.Agent.Key
	what := "key " + path
	d.key.why = "the key is not usable (above)"
	svc := d.cfg.User.Name
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Failed(what, "missing: this Pi is not paired yet", d.pairFix())
	case errors.Is(err, fs.ErrPermission):
		dir := filepath.Dir(path)
		return Failed(what, fmt.Sprintf("%s cannot reach it: %v", svc, err), fmt.Sprintf("sudo chown %s %s && sudo chmod 700 %s", d.cfg.User.Owner(), dir, dir))
	case err != nil:
		return Failed(what, err.Error(), d.pairFix())
	case !st.Mode().IsRegular():
		return Failed(what, "not a regular file", "move it away and run "+d.pairFix())
	}
	var problems, fixes []string
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		problems = append(problems, fmt.Sprintf("mode %04o lets others read it (the agent refuses it)", perm))
		fixes = append(fixes, "sudo chmod 600 "+path)
	}
	uid := -1
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		uid = int(sys.Uid)
	}
	if d.cfg.User.Err == nil && uid >= 0 && uid != d.cfg.User.UID {
		problems = append(problems, fmt.Sprintf("owned by %s, not by %s (the service cannot read it)", userName(uid), svc))
		fixes = append(fixes, fmt.Sprintf("sudo chown %s %s", d.cfg.User.Owner(), path))
	}
	data, err := os.ReadFile(path)
	var signer ssh.Signer
	switch {
	case err != nil && len(fixes) == 0:
		problems = append(problems, fmt.Sprintf("cannot be read as %s: %v", whoami(), err))
		fixes = append(fixes, fmt.Sprintf("sudo chown %s %s", d.cfg.User.Owner(), path))
	case err != nil:
		// The owner or mode above explains it.
	default:
		signer, err = keyfile.Parse(path, data)
		if err != nil {
			problems = append(problems, err.Error())
			fixes = append(fixes, fmt.Sprintf("move it away (sudo mv %s %s.broken), run sudo lifeline-agent pair for a new key and put its line on the bastion", path, path))
		}
	}
	if signer != nil {
		d.key.pub = signer.PublicKey()
	}
	if len(problems) > 0 {
		return Failed(what, strings.Join(problems, "; "), strings.Join(fixes, " && "))
	}
	d.key.auth, d.key.why = signer, ""
	return Passed(fmt.Sprintf("%s: %s %s, mode %04o, owned by %s", what, signer.PublicKey().Type(), keyfile.Fingerprint(signer.PublicKey()), st.Mode().Perm(), userName(uid)))
}

// userName is the account name of uid, or "uid N".
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return fmt.Sprintf("uid %d", uid)
}

// checkCert checks KEY-cert.pub as the agent does at start: a site paired
// by certificate presents it, and one that is expired, not yet valid or
// for another key stops the agent.
func (d *Doctor) checkCert(context.Context) Result {
	path := keyfile.CertPath(d.cfg.Agent.Key)
	what := "certificate " + path
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return Skipped(what, "none: the key logs in by its own line in the bastion's agents file")
	}
	if d.key.auth == nil {
		return Skipped(what, "not checked: "+d.key.why)
	}
	principals := make([]string, 0)
	for _, f := range d.forwards() {
		principals = append(principals, f.Listen())
	}
	sign := fmt.Sprintf("ssh-keygen -s SITE_CA -I %s -n %s -V +52w %s.pub", hostPart(d.cfg.KeyComment), strings.Join(principals, ","), d.cfg.Agent.Key)
	s, cert, err := keyfile.WithCertificate(d.key.auth, d.cfg.Agent.Key, d.cfg.Clock.Now())
	if err != nil {
		d.key.auth, d.key.why = nil, "the agent does not start with that certificate (above)"
		return Failed(what, err.Error()+" (the agent refuses to start with it)",
			fmt.Sprintf("sign the key again (%s, then sudo systemctl restart lifeline-agent), or remove the certificate to log in with the bare key, whose line must then be in the agents file", sign))
	}
	var missing []string
	for _, p := range principals {
		if !slices.Contains(cert.ValidPrincipals, p) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return Failed(what, fmt.Sprintf("it certifies %s but not %s, which LIFELINE_FORWARDS registers", strings.Join(cert.ValidPrincipals, ","), strings.Join(missing, ",")),
			"sign the key again with every forward: "+sign)
	}
	d.key.auth, d.key.cert = s, cert
	until := "forever"
	if cert.ValidBefore != ssh.CertTimeInfinity {
		t := time.Unix(int64(cert.ValidBefore), 0)
		until = fmt.Sprintf("until %s (%s from now)", t.UTC().Format("2006-01-02 15:04 UTC"), roughly(t.Sub(d.cfg.Clock.Now())))
	}
	return Passed(fmt.Sprintf("%s: id %q, principals %s, valid %s", what, cert.KeyId, strings.Join(cert.ValidPrincipals, ","), until))
}

// hostPart is HOST of lifeline-agent@HOST.
func hostPart(comment string) string {
	if _, h, ok := strings.Cut(comment, "@"); ok && h != "" {
		return h
	}
	return "SITE"
}

// roughly prints a duration for people: 3 days, 5 hours, 12 minutes.
func roughly(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d/time.Hour))
	case d >= 2*time.Minute:
		return fmt.Sprintf("%d minutes", int(d/time.Minute))
	default:
		return fmt.Sprintf("%d seconds", int(d/time.Second))
	}
}

// knownHostsFix says how to pin the bastions' keys.
func (d *Doctor) knownHostsFix(addrs []string) string {
	if len(addrs) == 0 {
		return fmt.Sprintf("get the bastion's line (terraform output -raw known_hosts_line, or on the jump host: lifeline-bastion hostkey --host ADDRESS:PORT, as LIFELINE_BASTION names it) and add it: echo '<line>' | sudo tee -a %s",
			d.cfg.Agent.KnownHosts)
	}
	names := make([]string, 0, len(addrs))
	for _, a := range addrs {
		names = append(names, knownhosts.Normalize(a))
	}
	return fmt.Sprintf("get the bastion's line (terraform output -raw known_hosts_line, or on the jump host: lifeline-bastion hostkey --host %s) and add it: echo '<line>' | sudo tee -a %s; it starts with %s",
		strings.Join(addrs, ","), d.cfg.Agent.KnownHosts, strings.Join(names, " / "))
}

func (d *Doctor) checkKnownHosts(context.Context) Result {
	path := d.cfg.Agent.KnownHosts
	what := "known_hosts " + path
	bastions := d.bastions()
	if _, err := os.ReadFile(path); err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return Failed(what, "missing: the agent cannot tell the real bastion from an impostor", d.knownHostsFix(bastions))
		case errors.Is(err, fs.ErrPermission):
			return Failed(what, fmt.Sprintf("%s cannot read it: %v", d.cfg.User.Name, err), "sudo chmod 644 "+path)
		default:
			return Failed(what, err.Error(), d.knownHostsFix(bastions))
		}
	}
	cb, err := knownhosts.New(path)
	if err != nil {
		return Failed(what, "does not parse: "+err.Error(), "correct that line: each is `[host]:port ssh-ed25519 AAAA…`, as terraform output -raw known_hosts_line prints it")
	}
	var pinned, missing []string
	for _, b := range bastions {
		keys := pinnedKeys(cb, b)
		if len(keys) == 0 {
			missing = append(missing, b)
			continue
		}
		d.pinned[b] = true
		fps := make([]string, 0, len(keys))
		for _, k := range keys {
			fps = append(fps, k.Type()+" "+keyfile.Fingerprint(k))
		}
		pinned = append(pinned, fmt.Sprintf("%s (%s)", b, strings.Join(fps, ", ")))
	}
	if len(missing) > 0 {
		why := "no line for " + strings.Join(missing, ", ")
		if d.cfg.Agent.TrustNewBastion {
			return Skipped(what, why+": with LIFELINE_TRUST_NEW_BASTION=true the agent records the key it is shown first; pinning it is safer: "+d.knownHostsFix(missing))
		}
		return Failed(what, why+": the agent refuses a bastion whose key is not pinned", d.knownHostsFix(missing))
	}
	if len(bastions) == 0 {
		return Skipped(what, "not checked: LIFELINE_BASTION is not valid (above)")
	}
	return Passed(what + ": pins " + strings.Join(pinned, "; "))
}

// pinnedKeys lists the keys cb pins for addr, by checking a key no line
// can hold (the KeyError lists the pinned ones).
func pinnedKeys(cb ssh.HostKeyCallback, addr string) []ssh.PublicKey {
	var ke *knownhosts.KeyError
	if err := cb(addr, &net.TCPAddr{IP: net.IPv4zero}, noKey{}); !errors.As(err, &ke) {
		return nil
	}
	keys := make([]ssh.PublicKey, 0, len(ke.Want))
	for _, w := range ke.Want {
		keys = append(keys, w.Key)
	}
	return keys
}

// noKey is a public key no known_hosts line can hold.
type noKey struct{}

func (noKey) Type() string                        { return "lifeline-doctor-probe@invalid" }
func (noKey) Marshal() []byte                     { return []byte("lifeline-doctor-probe@invalid") }
func (noKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key verifies nothing") }
