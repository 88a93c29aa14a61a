// Package envconf reads lifeline's configuration from the environment with
// github.com/kelseyhightower/envconfig and prints it for --help. Every error
// names the variable that caused it.
package envconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
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
func Process(spec any) error { return ProcessPrefix(Prefix, spec) }

// ProcessPrefix is Process with another prefix ("" for none: Twilio's own
// TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN).
func ProcessPrefix(prefix string, spec any) error {
	if err := envconfig.Process(prefix, spec); err != nil {
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
func Usage(w io.Writer, spec any) error { return UsageSpecs(w, Spec{Prefix, spec}) }

// Spec is a configuration struct and the prefix of its variables.
type Spec struct {
	Prefix string
	Spec   any
}

// UsageSpecs prints several configuration structs as one table. A variable
// that several parts read (LIFELINE_INTERFACE, LIFELINE_STATE_DIR) is listed
// once, with the first part's text.
func UsageSpecs(w io.Writer, specs ...Spec) error {
	var rows bytes.Buffer
	for _, s := range specs {
		if err := envconfig.Usagef(s.Prefix, s.Spec, &rows, usageFormat); err != nil {
			return fmt.Errorf("print configuration help: %w", err)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	seen := map[string]bool{}
	for _, line := range strings.SplitAfter(rows.String(), "\n") {
		name, _, _ := strings.Cut(line, "\t")
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		io.WriteString(tw, line)
	}
	return tw.Flush()
}
