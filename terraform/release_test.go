package terraform_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// latestRelease is the version of the first released section of
// CHANGELOG.md (`## X.Y.Z - YYYY-MM-DD`).
func latestRelease(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../CHANGELOG.md")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^## ([0-9]+\.[0-9]+\.[0-9]+) - [0-9]{4}-[0-9]{2}-[0-9]{2}$`).FindSubmatch(data)
	require.NotNil(t, m, "CHANGELOG.md has no released section (## X.Y.Z - YYYY-MM-DD)")
	return string(m[1])
}

// stringAttr is the constant string value of attribute name in body.
func stringAttr(t *testing.T, where string, body *hclsyntax.Body, name string) string {
	t.Helper()
	a, ok := body.Attributes[name]
	require.True(t, ok, "%s sets no %s", where, name)
	v, diags := a.Expr.Value(nil)
	require.False(t, diags.HasErrors(), "%s: %s is not a constant: %s", where, name, diags)
	return v.AsString()
}

// TestExamplePackageIsTheRelease: the examples' default package is the
// arm64 lifeline-bastion .deb of the latest release in CHANGELOG.md, at its
// GitHub release URL, in terraform.tfvars.example and as the default of both
// examples' variables, with one checksum. Once the release is tagged
// (vX.Y.Z in this clone), the checksum must be the one a reproducible
// `make release-unsigned` of that tag produces (not with -short: it builds
// the arm64 packages); until then only its format is checked.
func TestExamplePackageIsTheRelease(t *testing.T) {
	t.Parallel()
	v := latestRelease(t)
	file := "lifeline-bastion_" + v + "_arm64.deb"
	wantURL := "https://github.com/lifeline-dev/lifeline/releases/download/v" + v + "/" + file

	src, err := os.ReadFile("examples/basic/terraform.tfvars.example")
	require.NoError(t, err)
	f, diags := hclsyntax.ParseConfig(src, "terraform.tfvars.example", hcl.InitialPos)
	require.False(t, diags.HasErrors(), "%s", diags)
	body := f.Body.(*hclsyntax.Body)
	url := stringAttr(t, "terraform.tfvars.example", body, "bastion_package_url")
	sum := stringAttr(t, "terraform.tfvars.example", body, "bastion_package_sha256")
	assert.Equal(t, wantURL, url, "terraform.tfvars.example: the package of the latest release in CHANGELOG.md")
	assert.Regexp(t, `^[0-9a-f]{64}$`, sum)
	assert.NotEqual(t, strings.Repeat("0", 64), sum, "a placeholder checksum")

	for _, dir := range []string{"examples/basic", "examples/two-regions"} {
		m := parseModule(t, dir)
		for name, want := range map[string]string{"bastion_package_url": url, "bastion_package_sha256": sum} {
			a, ok := m.one(t, "variable", name).Body.Attributes["default"]
			if assert.True(t, ok, "%s: variable %s has no default", dir, name) {
				got, diags := a.Expr.Value(nil)
				require.False(t, diags.HasErrors(), "%s", diags)
				assert.Equal(t, want, got.AsString(), "%s: default of %s, as in terraform.tfvars.example", dir, name)
			}
		}
	}

	t.Run("checksum of the tagged release", func(t *testing.T) {
		if testing.Short() {
			t.Skip("builds the release's arm64 packages: not in -short")
		}
		tag := "v" + v
		if err := exec.Command("git", "-C", "..", "rev-parse", "-q", "--verify", "refs/tags/"+tag+"^{commit}").Run(); err != nil {
			t.Skipf("no tag %s in this clone yet: the checksum is checked for its format only", tag)
		}
		for _, p := range []string{"make", "go", "tar", "help2man"} {
			if _, err := exec.LookPath(p); err != nil {
				t.Skipf("%s not installed: %v", p, err)
			}
		}
		epoch, err := exec.Command("git", "-C", "..", "log", "-1", "--format=%ct", tag).Output()
		require.NoError(t, err)
		tree := t.TempDir()
		archive := exec.Command("sh", "-c", `git -C .. archive "$1" | tar -x -C "$2"`, "sh", tag, tree)
		out, err := archive.CombinedOutput()
		require.NoError(t, err, "git archive %s:\n%s", tag, out)

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		mk := exec.CommandContext(ctx, "make", "-s", "release-unsigned", "VERSION="+v,
			"RELEASE_PLATFORMS=arm64:arm64", "RELEASE_DIR=out")
		mk.Dir = tree
		for _, kv := range os.Environ() {
			k, _, _ := strings.Cut(kv, "=")
			if k != "SOURCE_DATE_EPOCH" && k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
				mk.Env = append(mk.Env, kv)
			}
		}
		mk.Env = append(mk.Env, "SOURCE_DATE_EPOCH="+strings.TrimSpace(string(epoch)))
		var stderr bytes.Buffer
		mk.Stderr = &stderr
		_, err = mk.Output()
		require.NoError(t, err, "make release-unsigned of %s:\n%s", tag, stderr.String())
		sums, err := os.ReadFile(filepath.Join(tree, "out", "SHA256SUMS"))
		require.NoError(t, err)
		m := regexp.MustCompile(`(?m)^([0-9a-f]{64})  ` + regexp.QuoteMeta(file) + `$`).FindSubmatch(sums)
		require.NotNil(t, m, "SHA256SUMS of %s has no %s:\n%s", tag, file, sums)
		assert.Equal(t, string(m[1]), sum, fmt.Sprintf(
			"the examples' bastion_package_sha256 is not that of %s's %s: set it to %s "+
				"(terraform.tfvars.example and both examples' variables.tf)", tag, file, m[1]))
	})
}
