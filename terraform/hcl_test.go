package terraform_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// literal evaluates an attribute that must be a constant (no references).
func literal(t *testing.T, b *hclsyntax.Block, name string) cty.Value {
	t.Helper()
	a, ok := b.Body.Attributes[name]
	require.True(t, ok, "%s %v has no %s", b.Type, b.Labels, name)
	v, diags := a.Expr.Value(nil)
	require.False(t, diags.HasErrors(), "%s %v: %s is not a constant: %s", b.Type, b.Labels, name, diags)
	return v
}

// refersTo reports whether expr is exactly the traversal root.attr (var.port).
func refersTo(expr hclsyntax.Expression, root, attr string) bool {
	tr, diags := hcl.AbsTraversalForExpr(expr)
	if diags.HasErrors() || len(tr) != 2 || tr.RootName() != root {
		return false
	}
	a, ok := tr[1].(hcl.TraverseAttr)
	return ok && a.Name == attr
}

// TestSecurityGroupOpensOnlyTheBastionPort: every ingress rule of the module
// is a separate aws_vpc_security_group_ingress_rule on TCP var.port (whose
// validation refuses 22, see TestVariableValidation), nothing inline, no
// legacy aws_security_group_rule, no literal port 22 anywhere.
func TestSecurityGroupOpensOnlyTheBastionPort(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	for _, sg := range m.blocks("resource", "aws_security_group") {
		assert.Empty(t, nested(sg, "ingress"), "%v: inline ingress blocks bypass this test", sg.Labels)
		assert.Empty(t, nested(sg, "egress"), "%v: use aws_vpc_security_group_egress_rule", sg.Labels)
	}
	assert.Empty(t, m.blocks("resource", "aws_security_group_rule"), "use aws_vpc_security_group_ingress_rule")

	rules := m.blocks("resource", "aws_vpc_security_group_ingress_rule")
	require.NotEmpty(t, rules, "no ingress rule: the bastion port would be closed")
	for _, r := range rules {
		assert.Equal(t, "tcp", literal(t, r, "ip_protocol").AsString(), "%v", r.Labels)
		for _, p := range []string{"from_port", "to_port"} {
			a, ok := r.Body.Attributes[p]
			if assert.True(t, ok, "%v has no %s", r.Labels, p) {
				assert.True(t, refersTo(a.Expr, "var", "port"), "%v: %s must be var.port, is %s", r.Labels, p, m.text(a.SrcRange))
			}
		}
		_, v4 := r.Body.Attributes["cidr_ipv4"]
		_, v6 := r.Body.Attributes["cidr_ipv6"]
		assert.True(t, v4 != v6, "%v: exactly one of cidr_ipv4/cidr_ipv6", r.Labels)
		_, ref := r.Body.Attributes["referenced_security_group_id"]
		_, pl := r.Body.Attributes["prefix_list_id"]
		assert.False(t, ref || pl, "%v: sources are allowed_cidrs only", r.Labels)
	}
	for name, src := range m.src {
		for _, lit := range []string{"= 22\n", "port = 22", "\"22\""} {
			assert.NotContains(t, string(src), lit, "%s mentions port 22", name)
		}
	}
}

// TestInstanceHardening: IMDSv2 only, hop limit 1, encrypted root volume, no
// SSH key pair, the host key an ed25519 key.
func TestInstanceHardening(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	inst := m.one(t, "resource", "aws_instance", "bastion")

	md := nested(inst, "metadata_options")
	require.Len(t, md, 1, "metadata_options")
	assert.Equal(t, "required", literal(t, md[0], "http_tokens").AsString(), "IMDSv2 only")
	assert.Equal(t, "enabled", literal(t, md[0], "http_endpoint").AsString())
	hop, _ := literal(t, md[0], "http_put_response_hop_limit").AsBigFloat().Int64()
	assert.Equal(t, int64(1), hop, "no IMDS from containers or forwarded packets")

	root := nested(inst, "root_block_device")
	require.Len(t, root, 1, "root_block_device")
	assert.True(t, literal(t, root[0], "encrypted").True(), "root volume encrypted")

	for _, forbidden := range []string{"key_name", "associate_public_ip_address"} {
		assert.NotContains(t, inst.Body.Attributes, forbidden, "aws_instance must not set %s", forbidden)
	}
	assert.Contains(t, inst.Body.Attributes, "user_data_base64")

	key := m.one(t, "resource", "tls_private_key", "host")
	assert.Equal(t, "ED25519", literal(t, key, "algorithm").AsString())
	m.one(t, "resource", "aws_eip", "bastion")
	m.one(t, "resource", "aws_eip_association", "bastion")
}

// TestProvidersPinned: a minimum Terraform version and a minimum version for
// every provider, without upper bounds (a reusable module sets minimums; the
// root's lock file pins exact builds).
func TestProvidersPinned(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	tfb := m.one(t, "terraform")
	minimum := regexp.MustCompile(`^>= [0-9]+\.[0-9]+\.[0-9]+$`)
	assert.Regexp(t, minimum, literal(t, tfb, "required_version").AsString())
	rp := nested(tfb, "required_providers")
	require.Len(t, rp, 1)
	for _, name := range []string{"aws", "tls"} {
		a, ok := rp[0].Body.Attributes[name]
		require.True(t, ok, "required_providers.%s", name)
		v, diags := a.Expr.Value(nil)
		require.False(t, diags.HasErrors(), "%s", diags)
		assert.Regexp(t, minimum, v.GetAttr("version").AsString(), "%s: a minimum version, no upper bound", name)
		assert.True(t, strings.HasPrefix(v.GetAttr("source").AsString(), "hashicorp/"), "%s source", name)
	}
}

// TestVariablesDocumented: every input has a description and a type; the
// ones that reach the instance have validations; secrets are sensitive.
func TestVariablesDocumented(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	vars := m.blocks("variable")
	require.NotEmpty(t, vars)
	byName := map[string]*hclsyntax.Block{}
	for _, v := range vars {
		name := v.Labels[0]
		byName[name] = v
		assert.GreaterOrEqual(t, len(literal(t, v, "description").AsString()), 20, "variable %s: description too short", name)
		assert.Contains(t, v.Body.Attributes, "type", "variable %s has no type", name)
	}
	validated := []string{
		"name", "instance_type", "subnet_id", "port", "allowed_cidrs", "bastion_package_url",
		"bastion_package_sha256", "operators", "agents", "host_key_openssh", "twilio_account_sid",
		"twilio_auth_token", "sms_from", "sms_to", "quiet_from", "agent_down_after", "root_volume_size",
		"bastion_package_s3_uri", "revoked_keys_krl_base64", "kms_key_arn", "state_volume_size", "maintenance_window",
		"syslog_forwarding", "sites", "ssh_identity_file", "outage_idle", "outage_pgp_key",
	}
	for _, name := range validated {
		v, ok := byName[name]
		if assert.True(t, ok, "variable %s missing", name) {
			assert.NotEmpty(t, nested(v, "validation"), "variable %s has no validation", name)
		}
	}
	for _, name := range []string{"twilio_auth_token", "twilio_account_sid", "host_key_openssh"} {
		if v, ok := byName[name]; ok {
			assert.True(t, literal(t, v, "sensitive").True(), "variable %s must be sensitive", name)
		}
	}
	// The defaults the issue asks for.
	assert.Equal(t, "t4g.nano", literal(t, byName["instance_type"], "default").AsString())
	port, _ := literal(t, byName["port"], "default").AsBigFloat().Int64()
	assert.Equal(t, int64(2222), port)
	var cidrs []string
	for _, c := range literal(t, byName["allowed_cidrs"], "default").AsValueSlice() {
		cidrs = append(cidrs, c.AsString())
	}
	assert.ElementsMatch(t, []string{"0.0.0.0/0", "::/0"}, cidrs)
	assert.False(t, literal(t, byName["outage_mode"], "default").True(), "outage mode is opt-in")
	assert.Equal(t, "30m", literal(t, byName["outage_idle"], "default").AsString())
}

// TestOutputs: the outputs exist and are described; known_hosts_line and
// ssh_config, evaluated with a known address and key, are exactly what
// OpenSSH and lifeline's own keyfile package produce.
func TestOutputs(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	want := []string{
		"public_ip", "port", "bastion_address", "known_hosts_line", "host_key_fingerprint",
		"ssh_config", "instance_id", "ssm_session_command", "security_group_id", "state_volume_id",
		"parameters", "bootstrap_status_command", "keys_status_command", "keys_sync_command",
		"outage_credentials", "outage_env", "start_command", "stop_command",
	}
	outs := map[string]*hclsyntax.Block{}
	for _, o := range m.blocks("output") {
		outs[o.Labels[0]] = o
		assert.NotEmpty(t, literal(t, o, "description").AsString(), "output %s", o.Labels[0])
	}
	for _, name := range want {
		assert.Contains(t, outs, name, "output %s missing", name)
	}

	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	sshPub, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	const ip, port = "203.0.113.10", 2222
	ctx := &hcl.EvalContext{Functions: map[string]function.Function{
		"join": stdlib.JoinFunc, "concat": stdlib.ConcatFunc, "split": stdlib.SplitFunc,
	}, Variables: map[string]cty.Value{
		"var": cty.ObjectVal(map[string]cty.Value{
			"port": cty.NumberIntVal(port), "name": cty.StringVal("lifeline-eu"), "ssh_identity_file": cty.StringVal("~/.ssh/id_ed25519"),
			"sites": cty.MapVal(map[string]cty.Value{"pi": cty.StringVal("pi:22"), "nuc": cty.StringVal("nuc:3389")}),
		}),
		"aws_eip":      cty.ObjectVal(map[string]cty.Value{"bastion": cty.ObjectVal(map[string]cty.Value{"public_ip": cty.StringVal(ip)})}),
		"local":        cty.ObjectVal(map[string]cty.Value{"host_key_public": cty.StringVal(keyfile.AuthorizedLine(sshPub, ""))}),
		"aws_instance": cty.ObjectVal(map[string]cty.Value{"bastion": cty.ObjectVal(map[string]cty.Value{"id": cty.StringVal("i-0123456789abcdef0")})}),
	}}
	eval := func(name string) string {
		t.Helper()
		o, ok := outs[name]
		require.True(t, ok, "output %s", name)
		v, diags := o.Body.Attributes["value"].Expr.Value(ctx)
		require.False(t, diags.HasErrors(), "output %s: %s", name, diags)
		return v.AsString()
	}

	line := eval("known_hosts_line")
	assert.Equal(t, keyfile.KnownHostsLine([]string{"203.0.113.10:2222"}, sshPub), line,
		"known_hosts_line must be the line lifeline-bastion hostkey prints")
	_, hosts, gotKey, _, _, err := ssh.ParseKnownHosts([]byte(line + "\n"))
	require.NoError(t, err, "OpenSSH known_hosts syntax")
	assert.Equal(t, []string{"[203.0.113.10]:2222"}, hosts)
	assert.Equal(t, sshPub.Marshal(), gotKey.Marshal())

	assert.Equal(t, "203.0.113.10:2222", eval("bastion_address"))
	assert.Equal(t, "aws ssm start-session --target i-0123456789abcdef0", eval("ssm_session_command"))

	cfg := eval("ssh_config")
	hostsCfg := parseSSHConfig(cfg)
	assert.Equal(t, map[string]string{
		"hostname": ip, "port": "2222", "stricthostkeychecking": "yes",
		"identitiesonly": "yes", "identityfile": "~/.ssh/id_ed25519",
	}, hostsCfg["lifeline-eu"])
	assert.Equal(t, map[string]string{"hostname": "pi", "port": "22", "proxyjump": "lifeline-eu", "identitiesonly": "yes", "identityfile": "~/.ssh/id_ed25519"}, hostsCfg["lifeline-eu-pi"])
	assert.Equal(t, map[string]string{"hostname": "nuc", "port": "3389", "proxyjump": "lifeline-eu", "identitiesonly": "yes", "identityfile": "~/.ssh/id_ed25519"}, hostsCfg["lifeline-eu-nuc"])
	assert.Len(t, hostsCfg, 3)
	// OpenSSH itself reads the block: ssh -G resolves the site's jump.
	if _, err := exec.LookPath("ssh"); err == nil {
		p := filepath.Join(t.TempDir(), "config")
		require.NoError(t, os.WriteFile(p, []byte(cfg), 0o600))
		out, err := exec.Command("ssh", "-G", "-F", p, "lifeline-eu-nuc").CombinedOutput()
		require.NoError(t, err, "ssh -G:\n%s", out)
		assert.Contains(t, string(out), "proxyjump lifeline-eu\n")
		assert.Contains(t, string(out), "hostname nuc\n")
		assert.Contains(t, string(out), "port 3389\n")
	}
}

// parseSSHConfig reads "Host x" sections of an ssh_config into lowercased
// keyword -> value maps.
func parseSSHConfig(s string) map[string]map[string]string {
	out := map[string]map[string]string{}
	var cur map[string]string
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		k := strings.ToLower(f[0])
		if k == "host" {
			cur = map[string]string{}
			out[f[1]] = cur
			continue
		}
		if cur != nil {
			cur[k] = strings.Join(f[1:], " ")
		}
	}
	return out
}

// TestExampleUsesModule: the example root calls the module with every
// variable that has no default, and pins the same providers.
func TestExampleUsesModule(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	ex := parseModule(t, "examples/basic")
	call := ex.one(t, "module", "bastion")
	assert.Equal(t, "../..", literal(t, call, "source").AsString())
	for _, v := range m.blocks("variable") {
		if _, hasDefault := v.Body.Attributes["default"]; !hasDefault {
			assert.Contains(t, call.Body.Attributes, v.Labels[0], "example does not set required variable %s", v.Labels[0])
		}
	}
	for name := range call.Body.Attributes {
		if name == "source" {
			continue
		}
		assert.NotEmpty(t, m.blocks("variable", name), "example sets %s, which the module does not declare", name)
	}
	for _, o := range ex.blocks("output") {
		a := o.Body.Attributes["value"]
		tr, diags := hcl.AbsTraversalForExpr(a.Expr)
		require.False(t, diags.HasErrors(), "example output %s", o.Labels[0])
		ref := tr[len(tr)-1].(hcl.TraverseAttr).Name
		assert.NotEmpty(t, m.blocks("output", ref), "example output %s refers to missing module output %s", o.Labels[0], ref)
	}
}

// TestTwoRegionsExample: the second example calls the module twice, with a
// provider per region, every required variable set, nothing the module does
// not declare, distinct names and maintenance windows, and outputs for the
// agents' comma-separated LIFELINE_BASTION.
func TestTwoRegionsExample(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	ex := parseModule(t, "examples/two-regions")
	names := map[string]bool{}
	windows := map[string]bool{}
	for _, label := range []string{"eu", "us"} {
		call := ex.one(t, "module", label)
		assert.Equal(t, "../..", literal(t, call, "source").AsString())
		assert.Contains(t, call.Body.Attributes, "providers", "module %s must get its region's provider", label)
		for _, v := range m.blocks("variable") {
			if _, hasDefault := v.Body.Attributes["default"]; !hasDefault && v.Labels[0] != "bastion_package_url" {
				assert.Contains(t, call.Body.Attributes, v.Labels[0], "module %s does not set required variable %s", label, v.Labels[0])
			}
		}
		for name := range call.Body.Attributes {
			if name != "source" && name != "providers" {
				assert.NotEmpty(t, m.blocks("variable", name), "module %s sets %s, which the module does not declare", label, name)
			}
		}
		names[literal(t, call, "name").AsString()] = true
		windows[literal(t, call, "maintenance_window").AsString()] = true
	}
	assert.Len(t, names, 2, "the two jump hosts need different names (resource prefixes, SSM paths, ssh_config hosts)")
	assert.Len(t, windows, 2, "the two jump hosts must not reboot at the same time")
	assert.Len(t, ex.blocks("provider", "aws"), 2)
	ex.one(t, "output", "bastion_addresses")
	ex.one(t, "output", "ssh_config")
}
