package authz

import (
	"strings"
	"time"
)

// load is LoadFiles of the two authorized_keys files, without a revocation
// list, reading expiry times in loc.
func load(agentsPath, operatorsPath string, loc *time.Location) (*Policy, error) {
	return loadFiles(Files{Agents: agentsPath, Operators: operatorsPath}, loc)
}

// quoteOption formats o as it would be written in a file (the inverse of
// parseOptions for one option).
func quoteOption(o option) string {
	if !o.hasValue {
		return o.name
	}
	return o.name + `="` + strings.ReplaceAll(o.value, `"`, `\"`) + `"`
}
