package systemd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var units = []string{"lifeline-bastion.service", "lifeline-agent.service", "lifeline-netsetup.service"}

// TestUnitsVerify runs `systemd-analyze verify` on the three units with their
// ExecStart/ExecStop pointing at freshly built binaries (verify checks that
// every command exists and is executable). Any message is a failure.
func TestUnitsVerify(t *testing.T) {
	sa := need(t, "systemd-analyze")
	bin := binaries(t)
	dir := t.TempDir()
	var paths []string
	for _, u := range units {
		data, err := os.ReadFile(u)
		require.NoError(t, err)
		text := strings.ReplaceAll(string(data), "/usr/bin/lifeline-", bin+"/lifeline-")
		require.NotEqual(t, string(data), text, "%s runs no /usr/bin/lifeline-* program", u)
		p := filepath.Join(dir, u)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
		paths = append(paths, p)
	}
	out, err := exec.Command(sa, append([]string{"verify"}, paths...)...).CombinedOutput()
	require.NoError(t, err, "systemd-analyze verify:\n%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify printed warnings")
}

var overallRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+\.[0-9]+)`)

// exposure runs `systemd-analyze security --offline=true` on a unit file and
// returns its overall exposure (0 = locked down, 10 = fully exposed).
func exposure(t testing.TB, sa, unit string) (float64, string) {
	t.Helper()
	out, err := exec.Command(sa, "security", "--offline=true", "--no-pager", "./"+unit).CombinedOutput()
	require.NoError(t, err, "systemd-analyze security %s:\n%s", unit, out)
	m := overallRE.FindSubmatch(out)
	require.NotNil(t, m, "no overall exposure in:\n%s", out)
	v, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	return v, string(out)
}

// TestUnitsSecurityExposure holds each unit to its exposure budget, as
// systemd 252 computes it offline (the unit file alone, no running service).
// The netsetup budget is its measured figure: it must run as root with
// CAP_NET_ADMIN and write /proc/sys, so it cannot reach the others' level.
func TestUnitsSecurityExposure(t *testing.T) {
	sa := need(t, "systemd-analyze")
	tests := []struct {
		unit string
		max  float64
	}{
		{"lifeline-bastion.service", 1.5},
		{"lifeline-agent.service", 2.0},
		{"lifeline-netsetup.service", 2.0},
	}
	for _, tt := range tests {
		t.Run(tt.unit, func(t *testing.T) {
			t.Parallel()
			got, report := exposure(t, sa, tt.unit)
			t.Logf("%s: exposure %.1f (budget %.1f)", tt.unit, got, tt.max)
			assert.LessOrEqual(t, got, tt.max, "exposure of %s over budget:\n%s", tt.unit, report)
		})
	}
}

// BenchmarkUnitExposure prints each unit's exposure as a metric so the
// figures land in benchmark output next to the other measurements.
func BenchmarkUnitExposure(b *testing.B) {
	sa := need(b, "systemd-analyze")
	for _, u := range units {
		b.Run(u, func(b *testing.B) {
			var v float64
			for b.Loop() {
				v, _ = exposure(b, sa, u)
			}
			b.ReportMetric(v, "exposure")
		})
	}
}

// TestUnitsSettings checks the settings the design relies on, one by one, so
// that a change that keeps the score but drops an obligation (no watchdog, a
// capability too many, a service that starts unconfigured) is caught.
func TestUnitsSettings(t *testing.T) {
	t.Parallel()
	common := map[string]string{
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelModules":    "yes",
		"ProtectControlGroups":    "yes",
		"RestrictNamespaces":      "yes",
		"RestrictSUIDSGID":        "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"UMask":                   "0077",
	}
	tests := []struct {
		unit     string
		envFile  string
		service  map[string]string
		unitSect map[string]string
		after    []string
		notAfter []string // neither ordered after nor wanted
		unset    []string
	}{
		{
			unit:    "lifeline-bastion.service",
			envFile: "/etc/lifeline/bastion.env",
			service: map[string]string{
				"User": "lifeline", "Group": "lifeline", "Restart": "always",
				"CapabilityBoundingSet": "", "AmbientCapabilities": "",
				"StateDirectory": "lifeline",
				"ExecStart":      "/usr/bin/lifeline-bastion", "ExecReload": "/bin/kill -HUP $MAINPID",
				"ProtectKernelTunables": "yes", "PrivateUsers": "yes",
				"RestrictAddressFamilies": "AF_INET AF_INET6",
			},
			after: []string{"network-online.target"},
		},
		{
			unit:    "lifeline-agent.service",
			envFile: "/etc/lifeline/agent.env",
			service: map[string]string{
				"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60s",
				// Started means running, not connected: READY=1 does not
				// wait for the link, so a slow start is a fault.
				"TimeoutStartSec": "30s",
				"User":            "lifeline", "Group": "lifeline", "Restart": "always",
				"CapabilityBoundingSet": "", "AmbientCapabilities": "",
				"StateDirectory":        "lifeline",
				"ExecStart":             "/usr/bin/lifeline-agent",
				"ProtectKernelTunables": "yes", "PrivateUsers": "yes",
				"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
			},
			unitSect: map[string]string{"StartLimitIntervalSec": "0"},
			after:    []string{"network.target", "lifeline-netsetup.service"},
			// Boot never waits on the link.
			notAfter: []string{"network-online.target"},
		},
		{
			unit:    "lifeline-netsetup.service",
			envFile: "/etc/lifeline/agent.env",
			service: map[string]string{
				"Type": "oneshot", "RemainAfterExit": "yes",
				"CapabilityBoundingSet": "CAP_NET_ADMIN",
				// Its own root-owned state directory, not the agent user's.
				"StateDirectory":        "lifeline-netsetup",
				"ExecStart":             "/usr/bin/env LIFELINE_STATE_DIR=/var/lib/lifeline-netsetup /usr/bin/lifeline-agent netsetup apply",
				"ExecStop":              "/usr/bin/env LIFELINE_STATE_DIR=/var/lib/lifeline-netsetup /usr/bin/lifeline-agent netsetup remove",
				"ReadWritePaths":        "/etc/sysctl.d",
				"ProtectKernelTunables": "no",
			},
			unitSect: map[string]string{"Before": "lifeline-agent.service"},
			after:    []string{"network-online.target"},
			// Root keeps CAP_NET_ADMIN through the bounding set; no user, no ambient set.
			// ProcSubset=pid would hide /proc/sys.
			unset: []string{"AmbientCapabilities", "User", "DynamicUser", "ProcSubset"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.unit, func(t *testing.T) {
			t.Parallel()
			u := parseUnit(t, tt.unit)
			want := map[string]string{"EnvironmentFile": tt.envFile}
			for k, v := range common {
				want[k] = v
			}
			for k, v := range tt.service {
				want[k] = v
			}
			for k, v := range want {
				got, ok := u.get("Service", k)
				if assert.True(t, ok, "[Service] %s is not set", k) {
					assert.Equal(t, v, got, "[Service] %s", k)
				}
			}
			for _, k := range tt.unset {
				_, ok := u.get("Service", k)
				assert.False(t, ok, "[Service] %s must not be set", k)
			}
			assert.Contains(t, u["Service"]["SystemCallFilter"], "@system-service")

			cond, _ := u.get("Unit", "ConditionPathExists")
			assert.Equal(t, tt.envFile, cond, "the unit must not start before it is configured")
			for k, v := range tt.unitSect {
				got, _ := u.get("Unit", k)
				assert.Equal(t, v, got, "[Unit] %s", k)
			}
			after := strings.Fields(strings.Join(u["Unit"]["After"], " "))
			for _, a := range tt.after {
				assert.Contains(t, after, a, "[Unit] After=")
			}
			wants := strings.Fields(strings.Join(u["Unit"]["Wants"], " "))
			for _, a := range tt.notAfter {
				assert.NotContains(t, after, a, "[Unit] After=")
				assert.NotContains(t, wants, a, "[Unit] Wants=")
			}
			wanted, _ := u.get("Install", "WantedBy")
			assert.Equal(t, "multi-user.target", wanted)
		})
	}
}

var helpVarRE = regexp.MustCompile(`(?m)^((?:LIFELINE|TWILIO)_[A-Z0-9_]+)\s`)

// TestEnvTemplatesDocumentEveryVariable compares each env template with the
// variables the built binary lists in --help: a variable a user cannot find
// in /etc/lifeline/*.env is a variable nobody sets.
func TestEnvTemplatesDocumentEveryVariable(t *testing.T) {
	bin := binaries(t)
	tests := []struct {
		program, template string
		args              [][]string
	}{
		{"lifeline-bastion", "bastion.env", [][]string{{"--help"}}},
		{"lifeline-agent", "agent.env", [][]string{{"--help"}, {"netsetup", "--help"}}},
	}
	for _, tt := range tests {
		t.Run(tt.program, func(t *testing.T) {
			t.Parallel()
			tmpl, err := os.ReadFile(tt.template)
			require.NoError(t, err)
			seen := 0
			for _, args := range tt.args {
				// --help may exit non-zero; what it prints is what counts.
				out, _ := exec.Command(filepath.Join(bin, tt.program), args...).CombinedOutput()
				for _, m := range helpVarRE.FindAllStringSubmatch(string(out), -1) {
					seen++
					// envconfig also reads a tag's own name without the prefix
					// (TWILIO_AUTH_TOKEN for LIFELINE_TWILIO_AUTH_TOKEN).
					short := strings.TrimPrefix(m[1], "LIFELINE_")
					assert.Regexp(t, `(?m)^#?(LIFELINE_)?`+short+`=`, string(tmpl), "%s %v lists %s; %s does not", tt.program, args, m[1], tt.template)
				}
			}
			require.NotZero(t, seen, "%s --help listed no variables", tt.program)
		})
	}
}
