package terraform_test

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const testHostKey = `-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZgAAAIhtZXN0bWVz
-----END OPENSSH PRIVATE KEY-----
`

// baseVars is a valid set of inputs; cases override single variables.
func baseVars() map[string]any {
	return map[string]any{
		"bastion_package_url":    "https://example.com/releases/lifeline-bastion_1.0.0_arm64.deb",
		"bastion_package_sha256": strings.Repeat("ab", 32),
		"operators":              []string{`from="198.51.100.0/24" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyOperatorKeyOperatorKeyOperatorKe alice`},
		"agents":                 []string{`permitlisten="pi:22" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAgentKeyAgentKeyAgentKeyAgentKeyAgentKeyAg pi`},
		"host_key_openssh":       testHostKey,
	}
}

// renderRoot builds a provider-less Terraform root in a temporary directory
// from the module's own variables.tf, its templates, and the exact source of
// the locals that render the user data (copied out of main.tf), so terraform
// itself runs the validations and templatefile(). `terraform init` needs no
// download there.
func renderRoot(t *testing.T, vars map[string]any) string {
	t.Helper()
	m := parseModule(t, ".")
	dir := t.TempDir()
	copyFile(t, "variables.tf", filepath.Join(dir, "variables.tf"))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "templates"), 0o755))
	tmpls, err := filepath.Glob("templates/*")
	require.NoError(t, err)
	for _, p := range tmpls {
		copyFile(t, p, filepath.Join(dir, p))
	}

	var locals strings.Builder
	locals.WriteString("locals {\n  # stands in for the key from tls_private_key / var.host_key_openssh\n  host_key_private = var.host_key_openssh\n")
	found := map[string]bool{}
	for _, b := range m.blocks("locals") {
		for _, name := range []string{"bastion_env", "bootstrap", "user_data"} {
			if a, ok := b.Body.Attributes[name]; ok {
				locals.WriteString("  " + m.text(a.SrcRange) + "\n")
				found[name] = true
			}
		}
	}
	for _, name := range []string{"bastion_env", "bootstrap", "user_data"} {
		require.True(t, found[name], "main.tf has no local %s", name)
	}
	locals.WriteString("}\n")
	for _, name := range []string{"bastion_env", "bootstrap", "user_data"} {
		locals.WriteString("output \"" + name + "\" {\n  value     = local." + name + "\n  sensitive = true\n}\n")
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "render.tf"), []byte(locals.String()), 0o644))

	data, err := json.Marshal(vars)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "terraform.tfvars.json"), data, 0o600))

	_, stderr, err := tf(t, dir, "init", "-input=false", "-no-color", "-backend=false")
	require.NoError(t, err, "terraform init (must need no download):\n%s", stderr)
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, data, 0o644))
}

// TestVariableValidation runs the module's validations in terraform itself:
// each bad value is refused naming its variable; the good ones pass.
func TestVariableValidation(t *testing.T) {
	needTerraform(t)
	t.Parallel()
	tests := []struct {
		name     string
		override map[string]any
		badVar   string // "" = must pass
	}{
		{"defaults", nil, ""},
		{"port 22 refused", map[string]any{"port": 22}, "port"},
		{"port 1024 refused", map[string]any{"port": 1024}, "port"},
		{"fractional port refused", map[string]any{"port": 2222.5}, "port"},
		{"port 65535", map[string]any{"port": 65535}, ""},
		{"cidr without mask refused", map[string]any{"allowed_cidrs": []string{"203.0.113.7"}}, "allowed_cidrs"},
		{"no cidr refused", map[string]any{"allowed_cidrs": []string{}}, "allowed_cidrs"},
		{"v4 and v6 cidrs", map[string]any{"allowed_cidrs": []string{"203.0.113.0/24", "2001:db8::/32"}}, ""},
		{"http package refused", map[string]any{"bastion_package_url": "http://example.com/lifeline-bastion_1.0.0_arm64.deb"}, "bastion_package_url"},
		{"tarball refused", map[string]any{"bastion_package_url": "https://example.com/lifeline_1.0.0_linux_arm64.tar.gz"}, "bastion_package_url"},
		{"quote in url refused", map[string]any{"bastion_package_url": "https://example.com/x'y_arm64.deb"}, "bastion_package_url"},
		{"short sha refused", map[string]any{"bastion_package_sha256": "abc"}, "bastion_package_sha256"},
		{"no operators refused", map[string]any{"operators": []string{}}, "operators"},
		{"not a key refused", map[string]any{"operators": []string{"alice"}}, "operators"},
		{"two keys in one line refused", map[string]any{"operators": []string{"ssh-ed25519 AAAAC3Nz a\nssh-ed25519 AAAAC3Nz b"}}, "operators"},
		{"cert-authority operator", map[string]any{"operators": []string{`cert-authority,principals="alice" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICa ca`}}, ""},
		{"agent without permitlisten refused", map[string]any{"agents": []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAg pi"}}, "agents"},
		{"no agents yet", map[string]any{"agents": []string{}}, ""},
		{"sms_from not E.164 refused", map[string]any{"sms_from": "5551234567"}, "sms_from"},
		{"sms_to not E.164 refused", map[string]any{"sms_to": []string{"+0123456"}}, "sms_to"},
		{"twilio sid refused", map[string]any{"twilio_account_sid": "XX0123"}, "twilio_account_sid"},
		{"twilio token with quote refused", map[string]any{"twilio_auth_token": strings.Repeat("a", 31) + `"`}, "twilio_auth_token"},
		{"duration refused", map[string]any{"agent_down_after": "5 minutes"}, "agent_down_after"},
		{"quiet_from refused", map[string]any{"quiet_from": []string{"office"}}, "quiet_from"},
		{"upper-case name refused", map[string]any{"name": "Lifeline"}, "name"},
		{"subnet id refused", map[string]any{"subnet_id": "vpc-0123456789"}, "subnet_id"},
		{"encrypted host key refused", map[string]any{"host_key_openssh": "-----BEGIN RSA PRIVATE KEY-----\n"}, "host_key_openssh"},
		{"root volume too small refused", map[string]any{"root_volume_size": 4}, "root_volume_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vars := baseVars()
			maps.Copy(vars, tt.override)
			dir := renderRoot(t, vars)
			stdout, stderr, err := tf(t, dir, "plan", "-input=false", "-no-color", "-lock=false")
			if tt.badVar == "" {
				assert.NoError(t, err, "terraform plan refused valid input:\n%s%s", stdout, stderr)
				return
			}
			require.Error(t, err, "terraform accepted %v:\n%s", tt.override, stdout)
			assert.Contains(t, stderr, "Invalid value for variable", stderr)
			assert.Contains(t, stderr, "var."+tt.badVar, "the error must name var.%s", tt.badVar)
		})
	}
}

type cloudConfig struct {
	Packages   []string `yaml:"packages"`
	WriteFiles []struct {
		Path        string `yaml:"path"`
		Owner       string `yaml:"owner"`
		Permissions string `yaml:"permissions"`
		Encoding    string `yaml:"encoding"`
		Content     string `yaml:"content"`
	} `yaml:"write_files"`
	RunCmd [][]string `yaml:"runcmd"`
}

// TestCloudInitRendered renders the user data with terraform's templatefile()
// and checks it as cloud-init and the instance would see it: valid YAML,
// every staged file decodes to what the variables say, secrets 0600, the
// bootstrap script pinned to the URL and SHA-256 and clean under shellcheck.
func TestCloudInitRendered(t *testing.T) {
	needTerraform(t)
	t.Parallel()
	tests := []struct {
		name     string
		override map[string]any
		wantEnv  []string
		noEnv    []string
	}{
		{
			name:    "journal only",
			wantEnv: []string{`LIFELINE_LISTEN=":2222"`, `LIFELINE_NAME="lifeline"`, `LIFELINE_AGENT_DOWN_AFTER="5m"`, `LIFELINE_HOST_KEY="/var/lib/lifeline/ssh_host_ed25519_key"`},
			noEnv:   []string{"TWILIO_", "LIFELINE_SMS_", "LIFELINE_QUIET_FROM"},
		},
		{
			name: "sms alerts",
			override: map[string]any{
				"name": "site-a", "port": 4422,
				"twilio_account_sid": "AC" + strings.Repeat("0", 32), "twilio_auth_token": strings.Repeat("f", 32),
				"sms_from": "+15005550006", "sms_to": []string{"+447700900123", "+447700900124"},
				"quiet_from": []string{"198.51.100.0/24", "2001:db8::/32"},
			},
			wantEnv: []string{
				`LIFELINE_LISTEN=":4422"`, `LIFELINE_NAME="site-a"`,
				`TWILIO_ACCOUNT_SID="AC` + strings.Repeat("0", 32) + `"`, `TWILIO_AUTH_TOKEN="` + strings.Repeat("f", 32) + `"`,
				`LIFELINE_SMS_FROM="+15005550006"`, `LIFELINE_SMS_TO="+447700900123,+447700900124"`,
				`LIFELINE_QUIET_FROM="198.51.100.0/24,2001:db8::/32"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vars := baseVars()
			maps.Copy(vars, tt.override)
			dir := renderRoot(t, vars)
			_, stderr, err := tf(t, dir, "apply", "-auto-approve", "-input=false", "-no-color", "-lock=false")
			require.NoError(t, err, "terraform apply (outputs only):\n%s", stderr)
			stdout, stderr, err := tf(t, dir, "output", "-json")
			require.NoError(t, err, "terraform output:\n%s", stderr)
			var outs map[string]struct {
				Value string `json:"value"`
			}
			require.NoError(t, json.Unmarshal([]byte(stdout), &outs))
			userData := outs["user_data"].Value

			require.True(t, strings.HasPrefix(userData, "#cloud-config\n"), "cloud-init needs the #cloud-config header")
			var cc cloudConfig
			require.NoError(t, yaml.Unmarshal([]byte(userData), &cc), "user data is not YAML")
			assert.Contains(t, cc.Packages, "unattended-upgrades")

			files := map[string]string{}
			perms := map[string]string{}
			for _, f := range cc.WriteFiles {
				content := f.Content
				if f.Encoding == "b64" {
					b, err := base64.StdEncoding.DecodeString(f.Content)
					require.NoError(t, err, "%s: bad base64", f.Path)
					content = string(b)
				}
				files[f.Path] = content
				perms[f.Path] = f.Permissions
			}
			const stage = "/run/lifeline-bootstrap/"
			for _, secret := range []string{"bastion.env", "ssh_host_ed25519_key", "operators", "agents"} {
				assert.Equal(t, "0600", perms[stage+secret], "%s staged readable by root only", secret)
			}
			assert.Equal(t, testHostKey, files[stage+"ssh_host_ed25519_key"])
			assert.Equal(t, strings.Join(vars["operators"].([]string), "\n")+"\n", files[stage+"operators"])
			assert.Equal(t, strings.Join(vars["agents"].([]string), "\n")+"\n", files[stage+"agents"])
			assert.Contains(t, files["/etc/apt/apt.conf.d/20auto-upgrades"], `APT::Periodic::Unattended-Upgrade "1";`)

			env := files[stage+"bastion.env"]
			for _, line := range strings.Split(strings.TrimSpace(env), "\n") {
				if strings.HasPrefix(line, "#") {
					continue
				}
				assert.Regexp(t, `^[A-Z][A-Z0-9_]*="[^"\\$`+"`"+`]*"$`, line, "env line systemd reads literally")
			}
			for _, w := range tt.wantEnv {
				assert.Contains(t, strings.Split(env, "\n"), w)
			}
			for _, n := range tt.noEnv {
				assert.NotContains(t, env, n)
			}

			require.Equal(t, [][]string{{"/bin/bash", stage + "bootstrap.sh"}}, cc.RunCmd)
			assert.Equal(t, "0700", perms[stage+"bootstrap.sh"])
			script := files[stage+"bootstrap.sh"]
			assert.Equal(t, outs["bootstrap"].Value, script)
			assert.Contains(t, script, "pkg_url='"+vars["bastion_package_url"].(string)+"'")
			assert.Contains(t, script, "pkg_sha256='"+vars["bastion_package_sha256"].(string)+"'")
			assert.Contains(t, script, "sha256sum --check --strict")
			assert.Contains(t, script, "systemctl enable --now lifeline-bastion.service")
			p := filepath.Join(t.TempDir(), "bootstrap.sh")
			require.NoError(t, os.WriteFile(p, []byte(script), 0o600))
			out, err := exec.Command("bash", "-n", p).CombinedOutput()
			require.NoError(t, err, "bash -n:\n%s", out)
			if _, err := exec.LookPath("shellcheck"); err != nil {
				t.Skipf("shellcheck not installed: rendered script checked with bash -n only")
			}
			out, err = exec.Command("shellcheck", "-s", "bash", "-S", "style", p).CombinedOutput()
			assert.NoError(t, err, "shellcheck of the rendered bootstrap:\n%s", out)
		})
	}
}

// TestTerraformFmt is `terraform fmt -check -recursive` on the module and
// its examples.
func TestTerraformFmt(t *testing.T) {
	needTerraform(t)
	t.Parallel()
	dir, err := filepath.Abs(".")
	require.NoError(t, err)
	stdout, stderr, err := tf(t, t.TempDir(), "fmt", "-check", "-recursive", "-diff", dir)
	assert.NoError(t, err, "terraform fmt would change:\n%s%s", stdout, stderr)
}
