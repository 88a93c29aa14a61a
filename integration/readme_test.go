package integration

import (
	"bytes"
	"os"
	"strings"
	"testing"

	agentconfig "github.com/lifeline-dev/lifeline/agent/config"
	"github.com/lifeline-dev/lifeline/agent/linkcheck"
	"github.com/lifeline-dev/lifeline/agent/netsetup"
	bastionconfig "github.com/lifeline-dev/lifeline/bastion/config"
	"github.com/lifeline-dev/lifeline/shared/envconf"
)

// TestReadmeNamesEveryVariable keeps the README's configuration tables true:
// every variable either binary's --help prints is in it.
func TestReadmeNamesEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	specs := append(bastionconfig.Specs(),
		envconf.Spec{Prefix: envconf.Prefix, Spec: &agentconfig.Config{}},
		envconf.Spec{Prefix: envconf.Prefix, Spec: &linkcheck.Config{}},
		envconf.Spec{Prefix: envconf.Prefix, Spec: &netsetup.Config{}})
	var help bytes.Buffer
	if err := envconf.UsageSpecs(&help, specs...); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(help.String(), "\n")[1:] {
		name, _, _ := strings.Cut(line, " ")
		if name == "" {
			continue
		}
		n++
		if !bytes.Contains(readme, []byte("`"+name+"`")) {
			t.Errorf("README.md does not document %s", name)
		}
	}
	if n < 40 {
		t.Fatalf("only %d variables found in the help text:\n%s", n, help.String())
	}
}
