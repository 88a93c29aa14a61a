package terraform_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const testHostKey = `-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZgAAAIhtZXN0bWVz
-----END OPENSSH PRIVATE KEY-----
`

const (
	testRegion   = "eu-west-1"
	testVolumeID = "vol-0123456789abcdef0"
	testSID      = "AC0123456789abcdef0123456789abcdef"
	testToken    = "TokenTokenTokenTokenTokenToken42"
)

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

// renderedLocals are the locals of templates.tf the tests read back.
var renderedLocals = []string{
	"user_data", "bootstrap", "keys_sync", "fetch_secrets", "bastion_env", "operators_file", "agents_file",
	"revoked_keys_b64", "rsyslog_forward", "upgrade_timer", "unattended_upgrades", "ssm",
}

// renderRoot builds a provider-less Terraform root in a temporary directory
// from the module's own variables.tf, templates.tf and templates/, plus a
// stand-in for local.instance_facts (the only AWS facts the templates use),
// so terraform itself runs the validations and templatefile(). `terraform
// init` needs no download there. Outputs are not marked sensitive: terraform
// refuses that for a value derived from a sensitive variable, so a secret
// reaching user_data fails the render.
func renderRoot(t *testing.T, vars map[string]any) string {
	t.Helper()
	m := parseModule(t, ".")
	dir := t.TempDir()
	copyFile(t, "variables.tf", filepath.Join(dir, "variables.tf"))
	copyFile(t, "templates.tf", filepath.Join(dir, "templates.tf"))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "templates"), 0o755))
	tmpls, err := filepath.Glob("templates/*")
	require.NoError(t, err)
	for _, p := range tmpls {
		copyFile(t, p, filepath.Join(dir, p))
	}
	// templates.tf must use nothing of AWS but local.instance_facts.
	for _, b := range m.files["templates.tf"].Blocks {
		for _, a := range b.Body.Attributes {
			for _, tr := range a.Expr.Variables() {
				root := tr.RootName()
				require.Contains(t, []string{"var", "local", "path"}, root, "templates.tf refers to %s (%s): the offline render cannot stand in for it", root, m.text(tr.SourceRange()))
				if root == "local" {
					name := tr[1].(hcl.TraverseAttr).Name
					if name == "instance_facts" {
						continue
					}
					found := false
					for _, lb := range m.files["templates.tf"].Blocks {
						if _, ok := lb.Body.Attributes[name]; ok {
							found = true
						}
					}
					require.True(t, found, "templates.tf uses local.%s, defined elsewhere", name)
				}
			}
		}
	}
	var extra strings.Builder
	extra.WriteString(`locals {
  # stands in for main.tf's facts from data.aws_region and aws_ebs_volume.state
  instance_facts = { region = "` + testRegion + `", state_volume_id = "` + testVolumeID + `" }
}
`)
	for _, name := range renderedLocals {
		extra.WriteString("output \"" + name + "\" {\n  value = local." + name + "\n}\n")
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "render.tf"), []byte(extra.String()), 0o644))

	data, err := json.Marshal(vars)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "terraform.tfvars.json"), data, 0o600))

	_, stderr, err := tf(t, dir, "init", "-input=false", "-no-color", "-backend=false")
	require.NoError(t, err, "terraform init (must need no download):\n%s", stderr)
	return dir
}

// rendered holds the outputs of one render.
type rendered struct {
	str   map[string]string
	ssm   map[string]string
	files map[string]string // user data file path -> decoded content
	perms map[string]string
	cc    cloudConfig
}

// render renders the templates with vars and decodes the user data.
func render(t *testing.T, vars map[string]any) *rendered {
	t.Helper()
	dir := renderRoot(t, vars)
	_, stderr, err := tf(t, dir, "apply", "-auto-approve", "-input=false", "-no-color", "-lock=false")
	require.NoError(t, err, "terraform apply (outputs only):\n%s", stderr)
	stdout, stderr, err := tf(t, dir, "output", "-json")
	require.NoError(t, err, "terraform output:\n%s", stderr)
	var outs map[string]struct {
		Sensitive bool            `json:"sensitive"`
		Value     json.RawMessage `json:"value"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &outs))
	r := &rendered{str: map[string]string{}, files: map[string]string{}, perms: map[string]string{}}
	for name, o := range outs {
		assert.False(t, o.Sensitive, "output %s is sensitive", name)
		if name == "ssm" {
			require.NoError(t, json.Unmarshal(o.Value, &r.ssm))
			continue
		}
		var s string
		require.NoError(t, json.Unmarshal(o.Value, &s), "output %s", name)
		r.str[name] = s
	}
	ud := r.str["user_data"]
	require.True(t, strings.HasPrefix(ud, "#cloud-config\n"), "cloud-init needs the #cloud-config header")
	require.NoError(t, yaml.Unmarshal([]byte(ud), &r.cc), "user data is not YAML")
	for _, f := range r.cc.WriteFiles {
		content := f.Content
		if f.Encoding == "b64" {
			b, err := base64.StdEncoding.DecodeString(f.Content)
			require.NoError(t, err, "%s: bad base64", f.Path)
			content = string(b)
		}
		r.files[f.Path] = content
		r.perms[f.Path] = f.Permissions
	}
	return r
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
		{"presigned url", map[string]any{"bastion_package_url": "https://b.s3.eu-west-1.amazonaws.com/lifeline-bastion_1.0.0_arm64.deb?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20260101&X-Amz-Signature=ab12"}, ""},
		{"query before .deb refused", map[string]any{"bastion_package_url": "https://example.com/get?f=lifeline-bastion_1.0.0_arm64.deb"}, "bastion_package_url"},
		{"s3 object", map[string]any{"bastion_package_url": nil, "bastion_package_s3_uri": "s3://my-releases/lifeline/lifeline-bastion_1.0.0_arm64.deb"}, ""},
		{"s3 not a deb refused", map[string]any{"bastion_package_s3_uri": "s3://my-releases/lifeline.tar.gz"}, "bastion_package_s3_uri"},
		{"short sha refused", map[string]any{"bastion_package_sha256": "abc"}, "bastion_package_sha256"},
		{"no operators refused", map[string]any{"operators": []string{}}, "operators"},
		{"not a key refused", map[string]any{"operators": []string{"alice"}}, "operators"},
		{"two keys in one line refused", map[string]any{"operators": []string{"ssh-ed25519 AAAAC3Nz a\nssh-ed25519 AAAAC3Nz b"}}, "operators"},
		{"too many operators refused", map[string]any{"operators": slices.Repeat([]string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyOperatorKeyOperatorKeyOperatorKe x"}, 120)}, "operators"},
		{"cert-authority operator", map[string]any{"operators": []string{`cert-authority,principals="alice" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICa ca`}}, ""},
		{"agent without permitlisten refused", map[string]any{"agents": []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAg pi"}}, "agents"},
		{"agent site CA", map[string]any{"agents": []string{`cert-authority ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICa site CA`, `cert-authority,permitlisten="pi:22" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICb other`}}, ""},
		{"no agents yet", map[string]any{"agents": []string{}}, ""},
		{"KRL", map[string]any{"revoked_keys_krl_base64": "U1NIS1JMCgAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}, ""},
		{"not a KRL refused", map[string]any{"revoked_keys_krl_base64": base64.StdEncoding.EncodeToString([]byte("ssh-ed25519 AAAA"))}, "revoked_keys_krl_base64"},
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
		{"state volume too big refused", map[string]any{"state_volume_size": 100}, "state_volume_size"},
		{"maintenance window", map[string]any{"maintenance_window": "21:30"}, ""},
		{"maintenance window 24:00 refused", map[string]any{"maintenance_window": "24:00"}, "maintenance_window"},
		{"maintenance window with zone refused", map[string]any{"maintenance_window": "04:00 CET"}, "maintenance_window"},
		{"syslog forwarding", map[string]any{"syslog_forwarding": map[string]any{"host": "logs.example.com"}}, ""},
		{"syslog bad port refused", map[string]any{"syslog_forwarding": map[string]any{"host": "logs.example.com", "port": 0}}, "syslog_forwarding"},
		{"syslog host with space refused", map[string]any{"syslog_forwarding": map[string]any{"host": "logs example"}}, "syslog_forwarding"},
		{"syslog CA not PEM refused", map[string]any{"syslog_forwarding": map[string]any{"host": "l.example", "ca_pem": "MIIB"}}, "syslog_forwarding"},
		{"sites", map[string]any{"sites": map[string]string{"pi": "pi:22", "nuc": "nuc:3389"}}, ""},
		{"site target without port refused", map[string]any{"sites": map[string]string{"pi": "pi"}}, "sites"},
		{"kms key refused", map[string]any{"kms_key_arn": "alias/mine"}, "kms_key_arn"},
		{"outage mode", map[string]any{"outage_mode": true, "outage_idle": "1h30m"}, ""},
		{"outage mode not a bool refused", map[string]any{"outage_mode": "sometimes"}, "outage_mode"},
		{"outage idle in words refused", map[string]any{"outage_mode": true, "outage_idle": "30 minutes"}, "outage_idle"},
		{"outage idle zero refused", map[string]any{"outage_mode": true, "outage_idle": "0m"}, "outage_idle"},
		{"outage idle in ms refused", map[string]any{"outage_mode": true, "outage_idle": "500ms"}, "outage_idle"},
		{"outage pgp keybase", map[string]any{"outage_mode": true, "outage_pgp_key": "keybase:alice"}, ""},
		{"outage pgp base64", map[string]any{"outage_mode": true, "outage_pgp_key": base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\x99\x01\x0d\x04", 40)))}, ""},
		{"outage pgp armored refused", map[string]any{"outage_mode": true, "outage_pgp_key": "-----BEGIN PGP PUBLIC KEY BLOCK-----\nmQENBF\n"}, "outage_pgp_key"},
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
			// A failed validation, or (bool, number) a value of the wrong type.
			assert.Regexp(t, "Invalid value for (input )?variable", stderr)
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
// and checks it as cloud-init and the instance would see it: valid YAML
// (and cloud-init's own schema, see TestCloudInitSchema), every file decodes,
// the scripts are pinned to the package and its SHA-256, the env file holds
// what the variables say and no secret, and user data fits EC2's 16 KiB.
func TestCloudInitRendered(t *testing.T) {
	needTerraform(t)
	t.Parallel()
	tests := []struct {
		name     string
		override map[string]any
		wantEnv  []string
		noEnv    []string
		files    []string
		noFiles  []string
	}{
		{
			name:    "journal only",
			wantEnv: []string{`LIFELINE_LISTEN=":2222"`, `LIFELINE_NAME="lifeline"`, `LIFELINE_AGENT_DOWN_AFTER="5m"`, `LIFELINE_HOST_KEY="/var/lib/lifeline/ssh_host_ed25519_key"`, `LIFELINE_REVOKED_KEYS="/etc/lifeline/revoked_keys"`},
			noEnv:   []string{"TWILIO_", "LIFELINE_SMS_", "LIFELINE_QUIET_FROM"},
			noFiles: []string{"/etc/rsyslog.d/60-lifeline-forward.conf", "/etc/systemd/system/lifeline-audit-tail.service"},
		},
		{
			name: "sms alerts and log forwarding",
			override: map[string]any{
				"name": "site-a", "port": 4422,
				"twilio_account_sid": testSID, "twilio_auth_token": testToken,
				"sms_from": "+15005550006", "sms_to": []string{"+447700900123", "+447700900124"},
				"quiet_from":        []string{"198.51.100.0/24", "2001:db8::/32"},
				"syslog_forwarding": map[string]any{"host": "logs.example.com", "port": 6514, "ca_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
			},
			wantEnv: []string{
				`LIFELINE_LISTEN=":4422"`, `LIFELINE_NAME="site-a"`,
				`LIFELINE_SMS_FROM="+15005550006"`, `LIFELINE_SMS_TO="+447700900123,+447700900124"`,
				`LIFELINE_QUIET_FROM="198.51.100.0/24,2001:db8::/32"`,
			},
			noEnv: []string{"TWILIO_"},
			files: []string{"/etc/rsyslog.d/60-lifeline-forward.conf", "/etc/systemd/system/lifeline-audit-tail.service", "/etc/systemd/journald.conf.d/lifeline.conf", "/etc/ssl/lifeline/syslog-ca.pem"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vars := baseVars()
			maps.Copy(vars, tt.override)
			r := render(t, vars)
			const stage = "/run/lifeline-bootstrap/"
			assert.Equal(t, "0600", r.perms[stage+"bastion.env"], "bastion.env staged readable by root only")
			assert.Equal(t, "0700", r.perms[stage+"bootstrap.sh"])
			for _, p := range []string{"/usr/local/lib/lifeline/keys-sync", "/usr/local/lib/lifeline/fetch-secrets"} {
				assert.Equal(t, "0755", r.perms[p], p)
			}
			for _, f := range tt.files {
				assert.Contains(t, r.files, f)
			}
			for _, f := range tt.noFiles {
				assert.NotContains(t, r.files, f)
			}
			assert.Contains(t, r.files["/etc/apt/apt.conf.d/20auto-upgrades"], `APT::Periodic::Unattended-Upgrade "1";`)
			assert.Empty(t, r.cc.Packages, "package work belongs in the bootstrap, which waits for the apt lock")

			env := r.files[stage+"bastion.env"]
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

			// No secret and no member anywhere in the user data.
			all := r.str["user_data"] + strings.Join(slices.Collect(maps.Values(r.files)), "\n")
			for _, secret := range []string{testSID, testToken, "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ", "OperatorKeyOperatorKey", "AgentKeyAgentKey"} {
				assert.NotContains(t, all, secret, "user data must hold no secret and no member")
			}

			require.Equal(t, [][]string{{"/bin/bash", stage + "bootstrap.sh"}}, r.cc.RunCmd)
			script := r.files[stage+"bootstrap.sh"]
			assert.Equal(t, r.str["bootstrap"], script)
			assert.Contains(t, script, "pkg_url='"+vars["bastion_package_url"].(string)+"'")
			assert.Contains(t, script, "pkg_sha256='"+vars["bastion_package_sha256"].(string)+"'")
			assert.Contains(t, script, "sha256sum --check --strict")
			assert.Contains(t, script, "DPkg::Lock::Timeout")
			assert.Contains(t, script, "state_volume='"+testVolumeID+"'")
			assert.Contains(t, script, "systemctl enable --now lifeline-secrets.service lifeline-bastion.service lifeline-keys-sync.timer")

			var gz bytes.Buffer
			w := gzip.NewWriter(&gz)
			w.Write([]byte(r.str["user_data"]))
			w.Close()
			t.Logf("user data: %d bytes, %d gzipped (EC2 limit 16384)", len(r.str["user_data"]), gz.Len())
			assert.Less(t, gz.Len(), 14<<10, "user data (gzipped) nears EC2's 16 KiB limit")
		})
	}
}

// TestUserDataIndependentOfMembers: changing operators, agents or revoked
// keys leaves the user data byte for byte the same (so the instance is not
// replaced), while the parameters the instance polls change.
func TestUserDataIndependentOfMembers(t *testing.T) {
	needTerraform(t)
	t.Parallel()
	a := baseVars()
	b := baseVars()
	b["operators"] = []string{
		`ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyOperatorKeyOperatorKeyOperatorKe alice`,
		`cert-authority,principals="ops" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINewCANewCANewCANewCANewCANewCANewCANewCANe corp`,
	}
	b["agents"] = []string{`cert-authority,permitlisten="pi:22,nuc:3389" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISiteCASiteCASiteCASiteCASiteCASiteCASiteCAS sites`}
	b["revoked_keys_krl_base64"] = "U1NIS1JMCgAAAAABAAAAAAAAAAcAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	ra, rb := render(t, a), render(t, b)
	assert.Equal(t, ra.str["user_data"], rb.str["user_data"], "user data changed with the members: the instance would be replaced")
	assert.NotEqual(t, ra.str["operators_file"], rb.str["operators_file"])
	assert.NotEqual(t, ra.str["agents_file"], rb.str["agents_file"])
	assert.NotEqual(t, ra.str["revoked_keys_b64"], rb.str["revoked_keys_b64"])
	assert.Equal(t, "U1NIS1JMCgAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", ra.str["revoked_keys_b64"], "no KRL given: the empty KRL")
	for _, f := range []string{"operators_file", "agents_file"} {
		assert.True(t, strings.HasPrefix(rb.str[f], "# Managed by Terraform"), "%s starts with the managed-by comment, so it is never empty", f)
	}
	// So does a change of the Twilio secrets (not the SMS numbers, which are
	// in bastion.env).
	c := baseVars()
	maps.Copy(c, map[string]any{"twilio_account_sid": testSID, "twilio_auth_token": testToken, "sms_from": "+15005550006", "sms_to": []string{"+447700900123"}})
	d := maps.Clone(c)
	d["twilio_auth_token"] = strings.Repeat("Z", 32)
	assert.Equal(t, render(t, c).str["user_data"], render(t, d).str["user_data"], "rotating the Twilio token must not replace the instance")
}

// TestSecretStorePaths: the secrets are SecureString parameters with the
// names the scripts read, the role may read exactly those, and the key lists
// live under the one path keys-sync reads.
func TestSecretStorePaths(t *testing.T) {
	needTerraform(t)
	t.Parallel()
	vars := baseVars()
	maps.Copy(vars, map[string]any{"name": "eu", "twilio_account_sid": testSID, "twilio_auth_token": testToken, "sms_from": "+15005550006", "sms_to": []string{"+447700900123"}})
	r := render(t, vars)
	assert.Equal(t, map[string]string{
		"host_key":           "/lifeline/eu/host-key",
		"twilio_account_sid": "/lifeline/eu/twilio-account-sid",
		"twilio_auth_token":  "/lifeline/eu/twilio-auth-token",
		"keys_path":          "/lifeline/eu/keys",
		"status_path":        "/lifeline/eu/status",
	}, r.ssm)
	fetch := r.str["fetch_secrets"]
	assert.Contains(t, fetch, "host_key_param='/lifeline/eu/host-key'")
	assert.Contains(t, fetch, "sid_param='/lifeline/eu/twilio-account-sid'")
	assert.Contains(t, fetch, "token_param='/lifeline/eu/twilio-auth-token'")
	assert.Contains(t, fetch, "--with-decryption")
	assert.Contains(t, r.str["keys_sync"], "keys_path='/lifeline/eu/keys'")
	assert.Contains(t, r.str["keys_sync"], "status_param='/lifeline/eu/status/keys'")

	m := parseModule(t, ".")
	for _, name := range []string{"host_key", "twilio_account_sid", "twilio_auth_token"} {
		p := m.one(t, "resource", "aws_ssm_parameter", name)
		assert.Equal(t, "SecureString", literal(t, p, "type").AsString(), "%s must be a SecureString", name)
		assert.Equal(t, "local.ssm."+name, m.text(p.Body.Attributes["name"].Expr.Range()))
	}
	keys := m.one(t, "resource", "aws_ssm_parameter", "keys")
	assert.Equal(t, "String", literal(t, keys, "type").AsString())
	assert.Contains(t, keys.Body.Attributes, "insecure_value", "public keys are not secret: a plan must show the change")
	assert.Equal(t, `"${local.ssm.keys_path}/${each.key}"`, m.text(keys.Body.Attributes["name"].Expr.Range()))

	// The role: GetParameter on exactly the secret ARNs, GetParametersByPath
	// on the keys path, PutParameter on the status parameters, no wildcard.
	doc := m.one(t, "data", "aws_iam_policy_document", "instance")
	actions := map[string]string{}
	for _, st := range nested(doc, "statement") {
		acts := literal(t, st, "actions").AsValueSlice()
		require.Len(t, acts, 1)
		actions[acts[0].AsString()] = m.text(st.Body.Attributes["resources"].Expr.Range())
	}
	assert.Equal(t, "local.secret_arns", actions["ssm:GetParameter"])
	assert.Equal(t, "[local.keys_path_arn]", actions["ssm:GetParametersByPath"])
	assert.Equal(t, "[for p in aws_ssm_parameter.status : p.arn]", actions["ssm:PutParameter"])
	locals := m.blocks("locals")
	var secretArns, pathArn string
	for _, l := range locals {
		if a, ok := l.Body.Attributes["secret_arns"]; ok {
			secretArns = m.text(a.Expr.Range())
		}
		if a, ok := l.Body.Attributes["keys_path_arn"]; ok {
			pathArn = m.text(a.Expr.Range())
		}
	}
	assert.Equal(t, "concat([aws_ssm_parameter.host_key.arn], aws_ssm_parameter.twilio_account_sid[*].arn, aws_ssm_parameter.twilio_auth_token[*].arn)", secretArns)
	assert.Contains(t, pathArn, "local.ssm.keys_path")
	for name, src := range m.src {
		assert.NotRegexp(t, regexp.MustCompile(`parameter/\*|"ssm:\*"|ssm:GetParameter\*`), string(src), "%s: no wildcard on parameters", name)
	}
}

// TestRenderedScriptsShellcheck: every script the instance runs passes bash
// -n and shellcheck (style level) as rendered.
func TestRenderedScriptsShellcheck(t *testing.T) {
	needTerraform(t)
	t.Parallel()
	vars := baseVars()
	vars["syslog_forwarding"] = map[string]any{"host": "logs.example.com"}
	r := render(t, vars)
	dir := t.TempDir()
	for _, name := range []string{"bootstrap", "keys_sync", "fetch_secrets"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name+".sh")
			require.NoError(t, os.WriteFile(p, []byte(r.str[name]), 0o600))
			out, err := exec.Command("bash", "-n", p).CombinedOutput()
			require.NoError(t, err, "bash -n:\n%s", out)
			if _, err := exec.LookPath("shellcheck"); err != nil {
				t.Skipf("shellcheck not installed (apt-get install shellcheck): checked with bash -n only")
			}
			out, err = exec.Command("shellcheck", "-s", "bash", "-S", "style", p).CombinedOutput()
			assert.NoError(t, err, "shellcheck of the rendered %s:\n%s", name, out)
		})
	}
}

// TestRenderedUnits: the units and drop-ins the instance gets pass
// `systemd-analyze verify` (with the lifeline package's own bastion unit
// beside them), and the maintenance window is a valid calendar time an hour
// after the upgrades.
func TestRenderedUnits(t *testing.T) {
	needTerraform(t)
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	t.Parallel()
	vars := baseVars()
	vars["maintenance_window"] = "00:30"
	vars["syslog_forwarding"] = map[string]any{"host": "logs.example.com"}
	r := render(t, vars)
	assert.Contains(t, r.str["unattended_upgrades"], `Unattended-Upgrade::Automatic-Reboot-Time "00:30";`)
	assert.Contains(t, r.str["upgrade_timer"], "OnCalendar=*-*-* 23:30:00 UTC", "upgrades an hour before the window, across midnight")
	out, err := exec.Command(sa, "calendar", "*-*-* 23:30:00 UTC").CombinedOutput()
	assert.NoError(t, err, "systemd-analyze calendar:\n%s", out)

	dir := t.TempDir()
	bin := t.TempDir()
	for _, exe := range []string{"keys-sync", "fetch-secrets", "lifeline-bastion"} {
		require.NoError(t, os.WriteFile(filepath.Join(bin, exe), []byte("#!/bin/sh\n"), 0o755))
	}
	fix := strings.NewReplacer("/usr/local/lib/lifeline/", bin+"/", "/usr/bin/lifeline-bastion", bin+"/lifeline-bastion")
	var units []string
	for path, content := range r.files {
		if !strings.HasPrefix(path, "/etc/systemd/system/") || strings.Contains(path, ".d/") {
			continue
		}
		p := filepath.Join(dir, filepath.Base(path))
		require.NoError(t, os.WriteFile(p, []byte(fix.Replace(content)), 0o644))
		units = append(units, p)
	}
	bastionUnit, err := os.ReadFile("../systemd/lifeline-bastion.service")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "lifeline-bastion.service"), []byte(fix.Replace(string(bastionUnit))), 0o644))
	dropIn := filepath.Join(dir, "lifeline-bastion.service.d")
	require.NoError(t, os.MkdirAll(dropIn, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dropIn, "lifeline-aws.conf"), []byte(r.files["/etc/systemd/system/lifeline-bastion.service.d/lifeline-aws.conf"]), 0o644))
	units = append(units, filepath.Join(dir, "lifeline-bastion.service"))
	slices.Sort(units)
	require.Len(t, units, 5, "keys-sync service+timer, secrets, audit tail, bastion: %v", units)
	cmd := exec.Command(sa, append([]string{"verify"}, units...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "systemd-analyze verify:\n%s", out)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// The verifier runs outside a booted system: units it cannot find
		// (network-online.target's providers) are not ours to fix.
		if line != "" && !strings.Contains(line, "not found") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}

// TestCloudInitSchema runs cloud-init's own `schema` check over the
// rendered user data. cloud-init is used from a tree unpacked with dpkg-deb
// (never installed: its units must not be enabled on this machine); point
// LIFELINE_CLOUD_INIT_ROOT at it, or unpack it into /var/tmp/lifeline-cloud-init
// (terraform/testdata/unpack-cloud-init.sh does either), or have cloud-init
// on PATH.
func TestCloudInitSchema(t *testing.T) {
	needTerraform(t)
	t.Parallel()
	cmd, env := cloudInit(t)
	for _, fwd := range []bool{false, true} {
		vars := baseVars()
		if fwd {
			vars["syslog_forwarding"] = map[string]any{"host": "logs.example.com"}
		}
		r := render(t, vars)
		p := filepath.Join(t.TempDir(), "user-data")
		require.NoError(t, os.WriteFile(p, []byte(r.str["user_data"]), 0o600))
		c := exec.Command(cmd[0], append(cmd[1:], "schema", "--config-file", p)...)
		c.Env = env
		out, err := c.CombinedOutput()
		require.NoError(t, err, "cloud-init schema (forwarding %v):\n%s", fwd, out)
		assert.Regexp(t, "Valid (schema|cloud-config)", string(out), "cloud-init schema")
		t.Logf("cloud-init schema, forwarding %v: %s", fwd, strings.TrimSpace(string(out)))
	}
	// The check is not vacuous: a broken cloud-config fails it.
	p := filepath.Join(t.TempDir(), "bad")
	require.NoError(t, os.WriteFile(p, []byte("#cloud-config\nwrite_files:\n  - path: /x\n    permissions: 644\nruncmd: 5\n"), 0o600))
	c := exec.Command(cmd[0], append(cmd[1:], "schema", "--config-file", p)...)
	c.Env = env
	out, err := c.CombinedOutput()
	assert.Error(t, err, "cloud-init schema accepted a broken config:\n%s", out)
}

// defaultCloudInitRoot is where unpack-cloud-init.sh is suggested to put it.
const defaultCloudInitRoot = "/var/tmp/lifeline-cloud-init"

// cloudInit finds a cloud-init to run: the unpacked tree, or the program.
func cloudInit(t *testing.T) ([]string, []string) {
	t.Helper()
	root := os.Getenv("LIFELINE_CLOUD_INIT_ROOT")
	if root == "" {
		if _, err := os.Stat(defaultCloudInitRoot + "/usr/bin/cloud-init"); err == nil {
			root = defaultCloudInitRoot
		}
	}
	if root != "" {
		bin := filepath.Join(root, "usr/bin/cloud-init")
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("LIFELINE_CLOUD_INIT_ROOT=%s has no usr/bin/cloud-init", root)
		}
		py, err := exec.LookPath("/usr/bin/python3")
		if err != nil {
			t.Skip("no /usr/bin/python3 for cloud-init")
		}
		pyPath, _ := filepath.Glob(filepath.Join(root, "usr/lib/python3/dist-packages"))
		return []string{py, bin}, append(os.Environ(), "PYTHONPATH="+strings.Join(pyPath, ":"))
	}
	if p, err := exec.LookPath("cloud-init"); err == nil {
		return []string{p}, os.Environ()
	}
	t.Skip("cloud-init not available: run terraform/testdata/unpack-cloud-init.sh " + defaultCloudInitRoot + " (apt-get download + dpkg-deb -x, nothing installed)")
	return nil, nil
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
