package systemd_test

import (
	"context"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lintianOverrides are the only lintian tags the packages override, each
// justified in packaging/PKG/lintian-overrides: Go programs are static on
// purpose, and the env files are root-only because they hold secrets.
var lintianOverrides = map[string][]string{
	"lifeline-bastion": {
		"non-standard-file-perm 0600 != 0644 [etc/lifeline/bastion.env]",
		"statically-linked-binary [usr/bin/lifeline-bastion]",
	},
	"lifeline-agent": {
		"non-standard-file-perm 0600 != 0644 [etc/lifeline/agent.env]",
		"statically-linked-binary [usr/bin/lifeline-agent]",
		"statically-linked-binary [usr/lib/lifeline/lifeline-jumpstart]",
		"statically-linked-binary [usr/lib/lifeline/lifeline-linkcheck]",
	},
}

// TestLintian runs Debian's lintian on both packages `make deb` builds: no
// error, no warning, and no override but those of lintianOverrides, each
// still needed (an override that matches nothing is reported too).
// Informational tags are logged.
func TestLintian(t *testing.T) {
	lintian := need(t, "lintian")
	dist, arch := debs(t)
	for _, tt := range debPackages {
		t.Run(tt.pkg, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			deb := debFile(dist, tt.pkg, arch)
			// The verdict: lintian's exit status. (With --show-overrides it
			// fails on overridden tags too, so the overrides are listed by a
			// second run.) stderr says "running with root privileges is not
			// recommended!" under root.
			out, err := exec.CommandContext(ctx, lintian, "--fail-on", "error,warning", "--display-info",
				"--tag-display-limit", "0", deb).Output()
			t.Logf("lintian %s:\n%s", tt.pkg, out)
			assert.NoError(t, err, "lintian --fail-on error,warning %s:\n%s", tt.pkg, out)
			shown, _ := exec.CommandContext(ctx, lintian, "--display-info", "--show-overrides",
				"--tag-display-limit", "0", deb).Output()
			require.NoError(t, ctx.Err())
			var overridden, bad []string
			for _, line := range strings.Split(strings.TrimSpace(string(out)+"\n"+string(shown)), "\n") {
				kind, rest, _ := strings.Cut(line, ": ")
				tag := strings.TrimPrefix(rest, tt.pkg+": ")
				switch kind {
				case "E", "W":
					bad = append(bad, line)
				case "O":
					overridden = append(overridden, tag)
				case "I":
					if strings.HasPrefix(tag, "unused-override") || strings.HasPrefix(tag, "mismatched-override") {
						bad = append(bad, line)
					}
				}
			}
			assert.Empty(t, bad, "lintian errors, warnings and stale overrides")
			sort.Strings(overridden)
			assert.Equal(t, lintianOverrides[tt.pkg], overridden, "overridden lintian tags")
		})
	}
}
