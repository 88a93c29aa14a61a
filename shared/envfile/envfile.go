// Package envfile reads the environment files systemd's EnvironmentFile=
// loads (/etc/lifeline/agent.env, bastion.env), so that commands run by
// hand (pair, doctor, check) see the configuration the service runs with.
//
// The syntax is the part of systemd's that lifeline's templates use and
// owners write: one NAME=VALUE per line; blank lines and lines starting
// with # or ; are comments; whitespace around the name and the value is
// dropped; a value wholly in double quotes may use \" \\ \n \t \$ escapes,
// one in single quotes is taken as is; a trailing backslash continues the
// value on the next line. Anything else is an error naming the file and
// line, never a silently different configuration.
package envfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Var is one assignment and where it was made.
type Var struct {
	Name, Value string
	Line        int
}

// MaxSize bounds a file read (the templates are a few KiB).
const MaxSize = 1 << 20

// Read parses an environment file. Later assignments of a name win, as
// with systemd; all are returned in file order.
func Read(path string) ([]Var, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars, err := Parse(io.LimitReader(f, MaxSize+1), path)
	if err != nil {
		return nil, err
	}
	return vars, nil
}

// Parse parses an environment file's content; name is used in errors.
func Parse(r io.Reader, name string) ([]Var, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxSize)
	var vars []Var
	var errs []error
	n, size := 0, 0
	for sc.Scan() {
		n++
		line := sc.Text()
		size += len(line) + 1
		if size > MaxSize {
			return nil, fmt.Errorf("%s: larger than %d bytes: not an environment file", name, MaxSize)
		}
		start := n
		for strings.HasSuffix(line, `\`) && sc.Scan() {
			n++
			size += len(sc.Text()) + 1
			line = strings.TrimSuffix(line, `\`) + sc.Text()
		}
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' || t[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(t, "=")
		key = strings.TrimSpace(key)
		if !ok || !validName(key) {
			errs = append(errs, fmt.Errorf("%s:%d: %q is not NAME=VALUE", name, start, clip(t)))
			continue
		}
		v, err := unquote(strings.TrimSpace(value))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %s: %w", name, start, key, err))
			continue
		}
		vars = append(vars, Var{Name: key, Value: v, Line: start})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return vars, nil
}

// Apply sets every variable of vars that the environment does not already
// hold (an explicit NAME=value on the command line wins over the file) and
// returns the names it set.
func Apply(vars []Var) ([]string, error) {
	final := map[string]string{}
	var order []string
	for _, v := range vars {
		if _, seen := final[v.Name]; !seen {
			order = append(order, v.Name)
		}
		final[v.Name] = v.Value
	}
	var set []string
	for _, name := range order {
		if _, ok := os.LookupEnv(name); ok {
			continue
		}
		if err := os.Setenv(name, final[name]); err != nil {
			return set, fmt.Errorf("set %s: %w", name, err)
		}
		set = append(set, name)
	}
	return set, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r != '_' && (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}

func unquote(v string) (string, error) {
	switch {
	case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
		return v[1 : len(v)-1], nil
	case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
		var b strings.Builder
		in := v[1 : len(v)-1]
		for i := 0; i < len(in); i++ {
			c := in[i]
			if c == '"' {
				return "", errors.New(`unescaped " inside a double-quoted value`)
			}
			if c != '\\' {
				b.WriteByte(c)
				continue
			}
			i++
			if i == len(in) {
				return "", errors.New("a double-quoted value ends in a backslash")
			}
			switch in[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case '"', '\\', '$', '\'':
				b.WriteByte(in[i])
			default:
				return "", fmt.Errorf(`unknown escape \%c in a double-quoted value`, in[i])
			}
		}
		return b.String(), nil
	case strings.HasPrefix(v, `"`) || strings.HasPrefix(v, `'`):
		return "", errors.New("a quote is not closed")
	}
	return v, nil
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
