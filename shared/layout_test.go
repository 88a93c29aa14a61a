package shared_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/lifeline-dev/lifeline/"

// TestImportRules checks the layout's promises: bastion and agent never
// import each other, shared imports neither, only netsetup touches the
// firewall, and no production package imports test helpers or fakes.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \",\"}}", "../...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, "|")
		rel := strings.TrimPrefix(pkg, module)
		for _, imp := range strings.Split(imports, ",") {
			if imp == "" {
				continue
			}
			irel := strings.TrimPrefix(imp, module)
			switch {
			case strings.HasPrefix(rel, "bastion/") && strings.HasPrefix(irel, "agent/"):
				t.Errorf("%s imports %s: the bastion never imports the agent", rel, irel)
			case strings.HasPrefix(rel, "agent/") && strings.HasPrefix(irel, "bastion/"):
				t.Errorf("%s imports %s: the agent never imports the bastion", rel, irel)
			case strings.HasPrefix(rel, "shared/") && (strings.HasPrefix(irel, "agent/") || strings.HasPrefix(irel, "bastion/")):
				t.Errorf("%s imports %s: shared code depends on neither binary", rel, irel)
			case imp == "github.com/google/nftables" && rel != "agent/netsetup":
				t.Errorf("%s imports nftables: only agent/netsetup touches the firewall", rel)
			case imp == "testing" && !strings.HasPrefix(rel, "integration/") && !strings.HasPrefix(rel, "internal/"):
				t.Errorf("%s imports %s: test helpers are for tests only", rel, irel)
			case strings.HasPrefix(irel, "internal/") && !strings.HasPrefix(rel, "integration/") && !strings.HasPrefix(rel, "internal/"):
				t.Errorf("%s imports %s: internal/ holds test helpers, imported by tests only", rel, irel)
			case strings.HasPrefix(irel, "integration/fake/") && !strings.HasPrefix(rel, "integration/"):
				t.Errorf("%s imports %s: fakes are for tests and the demo only", rel, irel)
			}
			checked++
		}
	}
	if checked < 50 {
		t.Fatalf("only %d imports checked: go list output looks wrong:\n%s", checked, out)
	}
}
