package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/lifeline-dev/lifeline/shared/envfile"
)

// DefaultEnvFiles are read when LIFELINE_ENV_FILE is not set, in this
// order, as the service reads them: the unit's EnvironmentFile=, then the
// one the Terraform module's drop-in adds for the Twilio credentials. A
// missing one is skipped.
var DefaultEnvFiles = []string{"/etc/lifeline/bastion.env", "/etc/lifeline/secrets.env"}

// envRead is one environment file read, or why it could not be.
type envRead struct {
	path string
	vars []envfile.Var
	err  error
}

// readEnvFiles reads explicit (LIFELINE_ENV_FILE), which must exist, or
// else each of defaults that exists.
func readEnvFiles(explicit string, defaults []string) []envRead {
	if explicit != "" {
		vars, err := envfile.Read(explicit)
		return []envRead{{explicit, vars, err}}
	}
	var out []envRead
	for _, p := range defaults {
		vars, err := envfile.Read(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		out = append(out, envRead{p, vars, err})
	}
	return out
}

// ApplyEnvFiles sets the variables of the bastion's environment files
// that the environment does not already hold, as LoadEnv does, for
// commands run by hand (`lifeline-bastion hostkey`). It returns the files
// read, or every problem.
func ApplyEnvFiles(explicit string, defaults []string) ([]string, error) {
	var read []string
	var all []envfile.Var
	var errs []error
	for _, r := range readEnvFiles(explicit, defaults) {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		read = append(read, r.path)
		all = append(all, r.vars...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if _, err := envfile.Apply(all); err != nil {
		return nil, err
	}
	return read, nil
}

// LoadEnv reads the bastion's environment files the way systemd's
// EnvironmentFile= does and sets each variable the environment does not
// already hold (envfile.Apply: NAME=value given on the command line wins).
// explicit is LIFELINE_ENV_FILE: when set, that one file is read and must
// exist; otherwise the defaults are, each only if it exists. It returns
// the check lines and the file settings are kept in, for fix texts ("" =
// none was found). Call it before BecomeUser: the files are root's.
func LoadEnv(explicit string, defaults []string) ([]Check, string) {
	var checks []Check
	var all []envfile.Var
	where := ""
	for _, r := range readEnvFiles(explicit, defaults) {
		var pe *fs.PathError
		switch {
		case errors.Is(r.err, fs.ErrNotExist):
			checks = append(checks, fail("environment file "+r.path+" (LIFELINE_ENV_FILE)", "does not exist",
				"give the path of the bastion's environment file, or unset LIFELINE_ENV_FILE to read "+strings.Join(defaults, " and ")))
			continue
		case errors.As(r.err, &pe):
			checks = append(checks, fail("environment file "+r.path, r.err.Error(),
				"run the doctor as root, as systemd reads the file (it then checks as the service user)"))
			continue
		case r.err != nil:
			for _, e := range flatten(r.err) {
				checks = append(checks, fail("environment file "+r.path, e.Error(),
					"correct that line (NAME=VALUE, as systemd's EnvironmentFile= reads it): the service does not start until then"))
			}
			continue
		}
		if where == "" {
			where = r.path
		}
		all = append(all, r.vars...)
		checks = append(checks, envFileCheck(r.path, r.vars))
	}
	set, err := envfile.Apply(all)
	if err != nil {
		checks = append(checks, fail("environment", err.Error(), ""))
	}
	if len(checks) == 0 {
		return []Check{pass("environment: no %s: checking the variables of this environment (LIFELINE_ENV_FILE names another file)",
			strings.Join(defaults, " or "))}, ""
	}
	if n := len(distinct(all)) - len(set); n > 0 && err == nil {
		// Say once that some file settings did not apply.
		for i := range checks {
			if checks[i].OK {
				checks[i].What += fmt.Sprintf("; %d of them already set in this environment, which wins", n)
				break
			}
		}
	}
	return checks, where
}

// secretVars are the settings that are credentials.
var secretVars = map[string]bool{"TWILIO_AUTH_TOKEN": true, "LIFELINE_SMTP_PASSWORD": true, "LIFELINE_WEBHOOK_TOKEN": true}

// envFileCheck passes a file that parsed, unless it holds a credential
// and others may read it.
func envFileCheck(path string, vars []envfile.Var) Check {
	secret := ""
	for _, v := range vars {
		if secretVars[v.Name] && v.Value != "" && secret == "" {
			secret = v.Name
		}
	}
	if fi, err := os.Stat(path); err == nil && secret != "" && fi.Mode().Perm()&0o077 != 0 {
		return fail("environment file "+path, fmt.Sprintf("holds %s and has mode %04o: others on this machine can read it", secret, fi.Mode().Perm()),
			"chmod 600 "+path+" (systemd reads it as root)")
	}
	return pass("environment file %s: %d settings read", path, len(distinct(vars)))
}

func distinct(vars []envfile.Var) map[string]bool {
	m := map[string]bool{}
	for _, v := range vars {
		m[v.Name] = true
	}
	return m
}

// flatten undoes errors.Join, recursively, so each problem is its own line.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	// "prefix: %w" around a join: the prefix goes on every part.
	if inner := errors.Unwrap(err); inner != nil {
		if _, ok := inner.(interface{ Unwrap() []error }); ok && strings.HasSuffix(err.Error(), inner.Error()) {
			prefix := strings.TrimSuffix(err.Error(), inner.Error())
			var out []error
			for _, e := range flatten(inner) {
				out = append(out, errors.New(prefix+e.Error()))
			}
			return out
		}
	}
	return []error{err}
}
