package terraform_test

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// Stand-ins for what AWS knows after an apply.
const (
	testInstanceID  = "i-0123456789abcdef0"
	testInstanceARN = "arn:aws:ec2:" + testRegion + ":123456789012:instance/" + testInstanceID
	testKMSKey      = "arn:aws:kms:" + testRegion + ":123456789012:key/01234567-89ab-cdef-0123-456789abcdef"
	testAccessKeyID = "AKIAOUTAGEOUTAGE0001"
	testSecretKey   = "OutageSecretOutageSecretOutageSecret0001"
)

// outageResources are the resources outage mode adds, each counted on the flag.
var outageResources = [][2]string{
	{"aws_ec2_instance_state", "bastion"},
	{"aws_ssm_association", "bootstrapped"},
	{"aws_iam_user", "site_outage"},
	{"aws_iam_access_key", "site_outage"},
	{"aws_iam_user_policy", "site_outage"},
}

// localExpr is the expression of local.name, wherever it is defined.
func localExpr(t *testing.T, m *module, name string) hclsyntax.Expression {
	t.Helper()
	var found []hclsyntax.Expression
	for _, l := range m.blocks("locals") {
		if a, ok := l.Body.Attributes[name]; ok {
			found = append(found, a.Expr)
		}
	}
	require.Len(t, found, 1, "local.%s", name)
	return found[0]
}

// outageCtx evaluates outage mode's expressions with known AWS values.
func outageCtx(vars map[string]cty.Value, locals map[string]cty.Value) *hcl.EvalContext {
	v := map[string]cty.Value{
		"outage_mode":    cty.True,
		"outage_pgp_key": cty.NullVal(cty.String),
		"kms_key_arn":    cty.NullVal(cty.String),
		"name":           cty.StringVal("lifeline-eu"),
	}
	maps.Copy(v, vars)
	if locals == nil {
		locals = map[string]cty.Value{}
	}
	return &hcl.EvalContext{
		Functions: map[string]function.Function{
			"concat": stdlib.ConcatFunc, "jsonencode": stdlib.JSONEncodeFunc, "join": stdlib.JoinFunc,
		},
		Variables: map[string]cty.Value{
			"var":   cty.ObjectVal(v),
			"local": cty.ObjectVal(locals),
			"aws_instance": cty.ObjectVal(map[string]cty.Value{"bastion": cty.ObjectVal(map[string]cty.Value{
				"id": cty.StringVal(testInstanceID), "arn": cty.StringVal(testInstanceARN),
			})}),
			"aws_iam_access_key": cty.ObjectVal(map[string]cty.Value{"site_outage": cty.TupleVal([]cty.Value{cty.ObjectVal(map[string]cty.Value{
				"id": cty.StringVal(testAccessKeyID), "secret": cty.StringVal(testSecretKey), "encrypted_secret": cty.StringVal("wcBMA0PGPCIPHERTEXT"),
			})})}),
			"data": cty.ObjectVal(map[string]cty.Value{"aws_region": cty.ObjectVal(map[string]cty.Value{
				"current": cty.ObjectVal(map[string]cty.Value{"region": cty.StringVal(testRegion)}),
			})}),
		},
	}
}

type iamStatement struct {
	Sid         string
	Effect      string
	Action      []string
	Resource    []string
	NotAction   any
	NotResource any
	Principal   any
	Condition   map[string]map[string]string
}

// renderOutagePolicy evaluates local.outage_policy and the user policy's own
// policy expression (jsonencode of it), as terraform would.
func renderOutagePolicy(t *testing.T, m *module, vars map[string]cty.Value) (string, []iamStatement) {
	t.Helper()
	pol, diags := localExpr(t, m, "outage_policy").Value(outageCtx(vars, nil))
	require.False(t, diags.HasErrors(), "local.outage_policy: %s", diags)
	up := m.one(t, "resource", "aws_iam_user_policy", "site_outage")
	js, diags := up.Body.Attributes["policy"].Expr.Value(outageCtx(vars, map[string]cty.Value{"outage_policy": pol}))
	require.False(t, diags.HasErrors(), "aws_iam_user_policy policy: %s", diags)
	var doc struct {
		Version   string
		Statement []iamStatement
	}
	dec := json.NewDecoder(strings.NewReader(js.AsString()))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&doc), "policy JSON:\n%s", js.AsString())
	assert.Equal(t, "2012-10-17", doc.Version)
	return js.AsString(), doc.Statement
}

// TestOutagePolicy: the site credential may start and stop this one
// instance, by its ARN, and nothing else; with a customer managed KMS key,
// also let EC2 (and only EC2, for an AWS resource) decrypt the volumes on
// start. No wildcard, no Deny, no NotAction.
func TestOutagePolicy(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")

	js, sts := renderOutagePolicy(t, m, nil)
	t.Logf("site policy: %s", js)
	require.Len(t, sts, 1, "one statement without a customer managed key")
	st := sts[0]
	assert.Equal(t, "Allow", st.Effect)
	assert.Equal(t, []string{"ec2:StartInstances", "ec2:StopInstances"}, st.Action)
	assert.Equal(t, []string{testInstanceARN}, st.Resource)
	assert.Nil(t, st.Condition)
	assert.Nil(t, st.NotAction)
	assert.Nil(t, st.NotResource)
	assert.Nil(t, st.Principal)
	assert.NotContains(t, js, "*", "no wildcard action or resource")

	js, sts = renderOutagePolicy(t, m, map[string]cty.Value{"kms_key_arn": cty.StringVal(testKMSKey)})
	t.Logf("site policy with kms_key_arn: %s", js)
	require.Len(t, sts, 2)
	assert.Equal(t, []string{"ec2:StartInstances", "ec2:StopInstances"}, sts[0].Action)
	assert.Equal(t, []string{testInstanceARN}, sts[0].Resource)
	kms := sts[1]
	assert.Equal(t, "Allow", kms.Effect)
	assert.Equal(t, []string{"kms:CreateGrant"}, kms.Action)
	assert.Equal(t, []string{testKMSKey}, kms.Resource)
	assert.Equal(t, map[string]map[string]string{
		"StringEquals": {"kms:ViaService": "ec2." + testRegion + ".amazonaws.com"},
		"Bool":         {"kms:GrantIsForAWSResource": "true"},
	}, kms.Condition)
	assert.NotContains(t, js, "*")

	// The policy is the user's only one: inline, on the one user, and the
	// user has no console password or other policy anywhere in the module.
	up := m.one(t, "resource", "aws_iam_user_policy", "site_outage")
	assert.Equal(t, "aws_iam_user.site_outage[0].name", m.text(up.Body.Attributes["user"].Expr.Range()))
	for _, typ := range []string{"aws_iam_user_login_profile", "aws_iam_user_policy_attachment", "aws_iam_user_group_membership", "aws_iam_policy_attachment"} {
		assert.Empty(t, m.blocks("resource", typ), "%s: the site user has its one inline policy only", typ)
	}
}

// TestOutageOnlyWithFlag: every resource of outage mode is counted on
// local.outage (var.outage_mode ? 1 : 0), and nothing else of the module
// depends on the flag except the instance's shutdown behavior (null when
// off: today's plan), the bastion.env line and the bootstrap's enabling of
// lifeline-poweroff.path, so outage_mode = false plans exactly what it did
// before.
func TestOutageOnlyWithFlag(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	assert.Equal(t, "var.outage_mode ? 1 : 0", m.text(localExpr(t, m, "outage").Range()))
	for _, r := range outageResources {
		b := m.one(t, "resource", r[0], r[1])
		a, ok := b.Body.Attributes["count"]
		if assert.True(t, ok, "%v has no count", r) {
			assert.Equal(t, "local.outage", m.text(a.Expr.Range()), "%v", r)
		}
	}
	// No other resource of these types.
	for _, typ := range []string{"aws_ec2_instance_state", "aws_ssm_association", "aws_iam_user", "aws_iam_access_key", "aws_iam_user_policy"} {
		assert.Len(t, m.blocks("resource", typ), 1, typ)
	}

	// Who reads the flag.
	var users []string
	for _, name := range sortedKeys(m.files) {
		for _, b := range m.files[name].Blocks {
			var walk func(body *hclsyntax.Body, where string)
			walk = func(body *hclsyntax.Body, where string) {
				for an, a := range body.Attributes {
					for _, tr := range a.Expr.Variables() {
						if len(tr) < 2 {
							continue
						}
						attr, _ := tr[1].(hcl.TraverseAttr)
						if (tr.RootName() == "var" && attr.Name == "outage_mode") || (tr.RootName() == "local" && attr.Name == "outage") {
							users = append(users, where+"."+an)
						}
					}
				}
				for _, nb := range body.Blocks {
					walk(nb.Body, where+"."+nb.Type)
				}
			}
			walk(b.Body, strings.Join(append([]string{b.Type}, b.Labels...), "."))
		}
	}
	users = slices.Compact(slices.Sorted(slices.Values(users)))
	want := []string{
		"locals.bastion_env", "locals.outage", "locals.script_settings",
		"output.outage_credentials.value", "output.outage_env.value", "output.start_command.value", "output.stop_command.value",
		"resource.aws_instance.bastion.instance_initiated_shutdown_behavior",
	}
	for _, r := range outageResources {
		want = append(want, "resource."+r[0]+"."+r[1]+".count")
	}
	slices.Sort(want)
	assert.Equal(t, want, users, "what outage_mode changes")

	inst := m.one(t, "resource", "aws_instance", "bastion")
	sb := inst.Body.Attributes["instance_initiated_shutdown_behavior"].Expr
	for on, want := range map[bool]cty.Value{true: cty.StringVal("stop"), false: cty.NullVal(cty.String)} {
		v, diags := sb.Value(outageCtx(map[string]cty.Value{"outage_mode": cty.BoolVal(on)}, nil))
		require.False(t, diags.HasErrors(), "%s", diags)
		assert.True(t, want.RawEquals(v), "outage_mode %v: instance_initiated_shutdown_behavior %#v", on, v)
	}
}

// TestOutageInstanceState: stopped once, after the bootstrap is over, and
// never again by Terraform (ignore_changes = [state]).
func TestOutageInstanceState(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	st := m.one(t, "resource", "aws_ec2_instance_state", "bastion")
	assert.Equal(t, "stopped", literal(t, st, "state").AsString())
	assert.Equal(t, "aws_instance.bastion.id", m.text(st.Body.Attributes["instance_id"].Expr.Range()))
	assert.NotContains(t, st.Body.Attributes, "force", "a forced stop skips the filesystem flush")
	lc := nested(st, "lifecycle")
	require.Len(t, lc, 1)
	assert.Equal(t, "[state]", m.text(lc[0].Body.Attributes["ignore_changes"].Expr.Range()))
	assert.Contains(t, m.text(st.Body.Attributes["depends_on"].Expr.Range()), "aws_ssm_association.bootstrapped",
		"stopped only once the bootstrap is over")

	as := m.one(t, "resource", "aws_ssm_association", "bootstrapped")
	assert.Equal(t, "AWS-RunShellScript", literal(t, as, "name").AsString())
	params, diags := as.Body.Attributes["parameters"].Expr.Value(nil)
	require.False(t, diags.HasErrors(), "%s", diags)
	cmd := params.GetAttr("commands").AsString()
	assert.Contains(t, cmd, "cloud-init status --wait")
	assert.True(t, strings.HasSuffix(cmd, "systemctl is-active --quiet lifeline-bastion.service"), "the bastion's state decides: %s", cmd)
	timeout, _ := literal(t, as, "wait_for_success_timeout_seconds").AsBigFloat().Int64()
	assert.GreaterOrEqual(t, timeout, int64(30*60), "the bootstrap may wait 20 minutes for apt and 10 for the volume")
	targets := nested(as, "targets")
	require.Len(t, targets, 1)
	assert.Equal(t, "InstanceIds", literal(t, targets[0], "key").AsString())
	assert.Equal(t, "[aws_instance.bastion.id]", m.text(targets[0].Body.Attributes["values"].Expr.Range()))
	pre := nested(nested(as, "lifecycle")[0], "precondition")
	require.Len(t, pre, 1)
	assert.Equal(t, "var.enable_ssm", m.text(pre[0].Body.Attributes["condition"].Expr.Range()))
}

// TestOutageOutputs: the credential outputs are sensitive and hold exactly
// the agent's variables; the start and stop commands are the CLI's; all are
// null without outage mode.
func TestOutageOutputs(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	eval := func(name string, vars map[string]cty.Value) cty.Value {
		t.Helper()
		o := m.one(t, "output", name)
		v, diags := o.Body.Attributes["value"].Expr.Value(outageCtx(vars, nil))
		require.False(t, diags.HasErrors(), "output %s: %s", name, diags)
		return v
	}
	for _, name := range []string{"outage_credentials", "outage_env"} {
		assert.True(t, literal(t, m.one(t, "output", name), "sensitive").True(), "output %s must be sensitive", name)
	}
	for _, name := range []string{"start_command", "stop_command"} {
		assert.NotContains(t, m.one(t, "output", name).Body.Attributes, "sensitive", "%s holds no secret", name)
	}

	assert.Equal(t, "LIFELINE_OUTAGE_REGION="+testRegion+"\nLIFELINE_OUTAGE_INSTANCE="+testInstanceID+
		"\nLIFELINE_OUTAGE_ACCESS_KEY_ID="+testAccessKeyID+"\nLIFELINE_OUTAGE_SECRET_ACCESS_KEY="+testSecretKey+"\n",
		withoutComments(eval("outage_env", nil).AsString()))
	pgp := map[string]cty.Value{"outage_pgp_key": cty.StringVal("keybase:alice")}
	env := eval("outage_env", pgp).AsString()
	assert.NotContains(t, env, testSecretKey)
	assert.NotContains(t, withoutComments(env), "LIFELINE_OUTAGE_SECRET_ACCESS_KEY", "with a PGP key the secret is decrypted by hand")
	assert.Contains(t, env, "gpg --decrypt")

	creds := eval("outage_credentials", nil)
	assert.Equal(t, testAccessKeyID, creds.GetAttr("access_key_id").AsString())
	assert.Equal(t, testSecretKey, creds.GetAttr("secret_access_key").AsString())
	assert.True(t, creds.GetAttr("encrypted_secret_access_key").IsNull())
	assert.Equal(t, testRegion, creds.GetAttr("region").AsString())
	assert.Equal(t, testInstanceID, creds.GetAttr("instance_id").AsString())
	creds = eval("outage_credentials", pgp)
	assert.True(t, creds.GetAttr("secret_access_key").IsNull(), "with a PGP key only the ciphertext")
	assert.Equal(t, "wcBMA0PGPCIPHERTEXT", creds.GetAttr("encrypted_secret_access_key").AsString())

	assert.Equal(t, "aws ec2 start-instances --region "+testRegion+" --instance-ids "+testInstanceID, eval("start_command", nil).AsString())
	assert.Equal(t, "aws ec2 stop-instances --region "+testRegion+" --instance-ids "+testInstanceID, eval("stop_command", nil).AsString())

	off := map[string]cty.Value{"outage_mode": cty.False}
	for _, name := range []string{"outage_credentials", "outage_env", "start_command", "stop_command"} {
		assert.True(t, eval(name, off).IsNull(), "output %s without outage_mode", name)
	}
}

func withoutComments(s string) string {
	var out strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if !strings.HasPrefix(line, "#") {
			out.WriteString(line)
		}
	}
	return out.String()
}

// TestOutageSecretStaysOffTheInstance: the access key is read by outputs
// only: no template, user data, SSM parameter, policy or other resource
// refers to it. (templates.tf cannot: the offline render allows it nothing
// of AWS but local.instance_facts.)
func TestOutageSecretStaysOffTheInstance(t *testing.T) {
	t.Parallel()
	m := parseModule(t, ".")
	for _, name := range sortedKeys(m.files) {
		for _, b := range m.files[name].Blocks {
			var walk func(body *hclsyntax.Body)
			walk = func(body *hclsyntax.Body) {
				for an, a := range body.Attributes {
					for _, tr := range a.Expr.Variables() {
						if tr.RootName() == "aws_iam_access_key" {
							assert.True(t, b.Type == "output" && an == "value", "%s: %s %v.%s refers to the site's access key", name, b.Type, b.Labels, an)
							assert.True(t, b.Type != "output" || literal(t, b, "sensitive").True(), "output %v", b.Labels)
						}
					}
				}
				for _, nb := range body.Blocks {
					walk(nb.Body)
				}
			}
			walk(b.Body)
		}
	}
	// The instance role may not read anything of IAM users.
	assert.NotContains(t, m.text(m.one(t, "data", "aws_iam_policy_document", "instance").Range()), "iam:")
}

// TestOutageUserData: outage_mode = false leaves the user data byte for
// byte as it was; outage_mode = true adds exactly LIFELINE_OUTAGE_IDLE to
// bastion.env and the enabling of lifeline-poweroff.path to the bootstrap,
// and no credential.
func TestOutageUserData(t *testing.T) {
	needTerraform(t)
	t.Parallel()
	base := baseVars()
	off := baseVars()
	off["outage_mode"] = false
	off["outage_idle"] = "2h" // ignored without outage mode
	on := baseVars()
	on["outage_mode"] = true
	onIdle := maps.Clone(on)
	onIdle["outage_idle"] = "1h30m"
	rb, roff, ron, ridle := render(t, base), render(t, off), render(t, on), render(t, onIdle)
	assert.Equal(t, rb.str["user_data"], roff.str["user_data"], "outage_mode = false must not change the user data (the instance would be replaced)")
	assert.NotContains(t, rb.str["bastion_env"], "LIFELINE_OUTAGE")

	const envPath = "/run/lifeline-bootstrap/bastion.env"
	assert.Equal(t, rb.files[envPath]+"LIFELINE_OUTAGE_IDLE=\"30m\"\n", ron.files[envPath])
	assert.Equal(t, rb.files[envPath]+"LIFELINE_OUTAGE_IDLE=\"1h30m\"\n", ridle.files[envPath])
	const bootstrapPath = "/run/lifeline-bootstrap/bootstrap.sh"
	const started = "systemctl enable --now lifeline-secrets.service lifeline-bastion.service lifeline-keys-sync.timer\n"
	require.Contains(t, rb.files[bootstrapPath], started)
	assert.NotContains(t, rb.files[bootstrapPath], "lifeline-poweroff")
	assert.Equal(t, strings.Replace(rb.files[bootstrapPath], started, started+
		"# Outage mode: the bastion powers the host off when nothing needs it (it\n"+
		"# writes /run/lifeline/poweroff; this root path unit acts on it).\n"+
		"systemctl enable --now lifeline-poweroff.path\n", 1), ron.files[bootstrapPath],
		"outage mode enables lifeline-poweroff.path after the bastion, and changes nothing else of the bootstrap")
	for p, content := range ron.files {
		if p != envPath && p != bootstrapPath {
			assert.Equal(t, rb.files[p], content, "%s changes with outage mode", p)
		}
	}
	assert.Len(t, ron.files, len(rb.files))
	for _, r := range []*rendered{ron, ridle} {
		assert.NotContains(t, r.str["user_data"]+strings.Join(slices.Collect(maps.Values(r.files)), "\n"), "LIFELINE_OUTAGE_ACCESS_KEY", "no credential on the instance")
	}
}
