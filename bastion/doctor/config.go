package doctor

import (
	"strings"

	"github.com/lifeline-dev/lifeline/bastion/config"
)

// Configuration decodes the environment and validates it: one line when
// it is good, one per problem otherwise, each naming its variable. ok is
// false when it did not even decode; then cfg is empty and the other
// checks cannot run. Otherwise cfg is usable by them even when it failed
// validation. where names the file the settings live in ("" = none).
func Configuration(where string) (cfg config.Config, ok bool, checks []Check) {
	place := where
	if place == "" {
		place = "the bastion's environment"
	}
	fix := "correct it in " + place + " (lifeline-bastion --help lists every variable and its default), then systemctl restart lifeline-bastion"
	env, err := config.Decode()
	if err != nil {
		return config.Config{}, false, []Check{fail("configuration", err.Error(), fix+"; the other checks need a configuration that decodes")}
	}
	cfg, err = env.Check()
	if err != nil {
		for _, e := range flatten(err) {
			checks = append(checks, fail("configuration", strings.TrimPrefix(e.Error(), "configuration: "), fix))
		}
		return cfg, true, checks
	}
	return cfg, true, []Check{pass("configuration: valid (LIFELINE_LISTEN %s, LIFELINE_NAME %s)", cfg.Listen, cfg.Name)}
}
