package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"

	"github.com/lifeline-dev/lifeline/bastion/daemon"
)

// KeyFiles loads the agents and operators files and the revocation list
// exactly as a start or reload does (daemon.CheckKeys, the code of
// `lifeline-bastion check-keys`) and gives a line per file that loads and
// one per problem, each with its file:line.
func (d *Doctor) KeyFiles() []Check {
	cfg := d.Config
	p, err := daemon.CheckKeys(cfg)
	files := []struct{ label, path, readPrefix string }{
		{"agents file", cfg.Agents, "read agent file"},
		{"operators file", cfg.Operators, "read operator file"},
	}
	if err == nil {
		agents, operators := p.Counts()
		checks := []Check{
			pass("agents file %s: %s%s", cfg.Agents, plural(agents, "agent line"), nobody(agents, "no site can connect")),
			pass("operators file %s: %s%s", cfg.Operators, plural(operators, "operator line"), nobody(operators, "nobody can log in")),
		}
		if cfg.Revoked != "" {
			checks = append(checks, pass("revoked keys %s: %s", cfg.Revoked, p.RevocationList()))
		}
		return checks
	}
	reload := "then `lifeline-bastion check-keys` and `systemctl reload lifeline-bastion` (on a Terraform jump host: change the SSM parameter; it is applied within a minute)"
	bad := map[string]bool{}
	var problems []Check
	for _, e := range flatten(err) {
		msg := e.Error()
		c := fail("key files", msg, "correct it, "+reload)
		for _, f := range files {
			if loc := fileLine(msg, f.path); loc != "" {
				c = fail(f.label+" "+loc, strings.TrimPrefix(msg, loc+": "),
					fmt.Sprintf("correct or remove line %s of %s (OpenSSH authorized_keys syntax; the README lists the options lifeline honours), %s",
						strings.TrimPrefix(loc, f.path+":"), f.path, reload))
				bad[f.path] = true
				break
			}
			if strings.HasPrefix(msg, f.readPrefix+": ") {
				fix := fmt.Sprintf("create it (an authorized_keys file, may hold only comments) readable by %s, or correct LIFELINE_%s in %s",
					d.ownerName(), strings.ToUpper(strings.Fields(f.label)[0]), d.where())
				if errors.Is(e, fs.ErrPermission) {
					fix = d.permissionFix(f.path)
				}
				c = fail(f.label+" "+f.path, strings.TrimPrefix(msg, f.readPrefix+": "), fix)
				bad[f.path] = true
				break
			}
		}
		if cfg.Revoked != "" && strings.Contains(msg, "revoked keys") {
			c = fail("revoked keys "+cfg.Revoked, msg, "make it again with ssh-keygen -k -f "+cfg.Revoked+
				" (an empty file revokes nothing), or empty LIFELINE_REVOKED_KEYS in "+d.where())
			bad[cfg.Revoked] = true
		}
		problems = append(problems, c)
	}
	var checks []Check
	for _, f := range files {
		if !bad[f.path] {
			checks = append(checks, pass("%s %s: loads", f.label, f.path))
		}
	}
	if cfg.Revoked != "" && !bad[cfg.Revoked] {
		checks = append(checks, pass("revoked keys %s: loads", cfg.Revoked))
	}
	return append(checks, problems...)
}

var lineNumber = regexp.MustCompile(`^:[0-9]+: `)

// fileLine is the "path:N" a problem starts with, or "".
func fileLine(msg, path string) string {
	rest, ok := strings.CutPrefix(msg, path)
	if !ok {
		return ""
	}
	m := lineNumber.FindString(rest)
	if m == "" {
		return ""
	}
	return path + strings.TrimSuffix(m, ": ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func nobody(n int, what string) string {
	if n == 0 {
		return ": " + what + " yet"
	}
	return ""
}
