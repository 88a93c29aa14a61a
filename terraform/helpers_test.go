package terraform_test

import (
	"bytes"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// module is a parsed Terraform directory: every *.tf file, by name.
type module struct {
	dir   string
	src   map[string][]byte
	files map[string]*hclsyntax.Body
}

func parseModule(t testing.TB, dir string) *module {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no .tf files in %s (%v)", dir, err)
	}
	m := &module{dir: dir, src: map[string][]byte{}, files: map[string]*hclsyntax.Body{}}
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		f, diags := hclsyntax.ParseConfig(src, p, hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatalf("parse %s: %s", p, diags.Error())
		}
		name := filepath.Base(p)
		m.src[name] = src
		m.files[name] = f.Body.(*hclsyntax.Body)
	}
	return m
}

// blocks returns every top-level block of the given type whose labels start
// with labels.
func (m *module) blocks(typ string, labels ...string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, name := range sortedKeys(m.files) {
		for _, b := range m.files[name].Blocks {
			if b.Type != typ || len(b.Labels) < len(labels) {
				continue
			}
			match := true
			for i, l := range labels {
				if b.Labels[i] != l {
					match = false
				}
			}
			if match {
				out = append(out, b)
			}
		}
	}
	return out
}

// one returns the single block with these labels or fails.
func (m *module) one(t testing.TB, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	bs := m.blocks(typ, labels...)
	if len(bs) != 1 {
		t.Fatalf("want one %s %v block, found %d", typ, labels, len(bs))
	}
	return bs[0]
}

// text is the source text of a range in file name.
func (m *module) text(r hcl.Range) string {
	return string(m.src[filepath.Base(r.Filename)][r.Start.Byte:r.End.Byte])
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// nested returns the nested blocks of b with the given type.
func nested(b *hclsyntax.Block, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, nb := range b.Body.Blocks {
		if nb.Type == typ {
			out = append(out, nb)
		}
	}
	return out
}

// tf runs terraform in dir, isolated from the user's configuration, with no
// network: checkpoint (update check) off, an empty CLI config, no TF_VAR_*.
func tf(t testing.TB, dir string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	rc := filepath.Join(dir, ".terraformrc")
	if _, statErr := os.Stat(rc); statErr != nil {
		if werr := os.WriteFile(rc, nil, 0o600); werr != nil {
			t.Fatalf("write %s: %v", rc, werr)
		}
	}
	cmd := exec.Command("terraform", args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TF_") || strings.HasPrefix(kv, "CHECKPOINT_") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env,
		"CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1", "TF_INPUT=0",
		"TF_CLI_CONFIG_FILE="+rc, "NO_COLOR=1")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func needTerraform(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("terraform"); err != nil {
		t.Skipf("terraform not installed: %v", err)
	}
}
