package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/lifeline-dev/lifeline/shared/envfile"
)

// The installed configuration, and the service's user (systemd/
// lifeline-agent.service: User=lifeline, EnvironmentFile=agent.env).
// LIFELINE_ENV_FILE and LIFELINE_SERVICE_USER name others (tests, a
// hand-made setup).
const (
	DefaultEnvFile     = "/etc/lifeline/agent.env"
	serviceUserDefault = "lifeline"
)

// LoadEnvFile sets the variables of LIFELINE_ENV_FILE (default
// /etc/lifeline/agent.env) that the environment does not already hold, as
// systemd gives them to the service; the subcommands run by hand call it
// before Load. A missing default file is no error (path ""); a missing
// file given explicitly is. n is how many variables the file set. explicit
// says whether LIFELINE_ENV_FILE named the file.
func LoadEnvFile() (path string, n int, explicit bool, err error) {
	path = os.Getenv("LIFELINE_ENV_FILE")
	explicit = path != ""
	if !explicit {
		path = DefaultEnvFile
	}
	vars, err := envfile.Read(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		return "", 0, false, nil
	case errors.Is(err, fs.ErrNotExist):
		return path, 0, true, fmt.Errorf("LIFELINE_ENV_FILE=%s: %w", path, err)
	case errors.Is(err, fs.ErrPermission):
		return path, 0, explicit, fmt.Errorf("%w: it is readable by root only, run this with sudo", err)
	case err != nil:
		return path, 0, explicit, err // file:line for every bad line
	}
	set, err := envfile.Apply(vars)
	return path, len(set), explicit, err
}

// ServiceUser is the account the service runs as: LIFELINE_SERVICE_USER
// (default lifeline).
func ServiceUser() string {
	if name := os.Getenv("LIFELINE_SERVICE_USER"); name != "" {
		return name
	}
	return serviceUserDefault
}

// Routes reports whether LIFELINE_LAN_INTERFACE is set: the Pi routes for a
// site LAN, so netsetup's configuration applies.
func Routes() bool { return os.Getenv("LIFELINE_LAN_INTERFACE") != "" }
