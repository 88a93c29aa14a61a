// Package envconf reads lifeline's configuration from the environment with
// github.com/kelseyhightower/envconfig and prints it for --help. Every error
// names the variable that caused it.
package envconf

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"
)

// Prefix of every lifeline variable.
const Prefix = "LIFELINE"

// Validator is implemented by configuration structs that check their values
// after decoding. Validate must report every problem at once (errors.Join),
// each naming its variable.
type Validator interface {
	Validate() error
}

// Process decodes the environment into spec (a pointer to a struct with
// envconfig tags) and then calls its Validate method when it has one.
func Process(spec any) error {
	if err := envconfig.Process(Prefix, spec); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("%s=%q: cannot read as %s: %w", pe.KeyName, pe.Value, pe.TypeName, pe.Err)
		}
		return fmt.Errorf("read environment: %w", err)
	}
	if v, ok := spec.(Validator); ok {
		return v.Validate()
	}
	return nil
}

const usageFormat = `{{range .}}{{usage_key .}}	{{usage_default .}}	{{usage_description .}}
{{end}}`

// Usage writes one line per variable: name, default, description.
func Usage(w io.Writer, spec any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	if err := envconfig.Usagef(Prefix, spec, tw, usageFormat); err != nil {
		return fmt.Errorf("print configuration help: %w", err)
	}
	return tw.Flush()
}
