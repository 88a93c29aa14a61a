package terraform_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
	"github.com/lifeline-dev/lifeline/shared/sshalgo"
)

// fakeSSM speaks the SSM API's JSON protocol (POST /, X-Amz-Target:
// AmazonSSM.<Operation>, application/x-amz-json-1.1) for the operations the
// instance scripts use, on 127.0.0.1. It checks that requests are signed
// (SigV4) and records what was asked.
type fakeSSM struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	params map[string]*ssmParam
	calls  []string
}

type ssmParam struct {
	Type, Value string
	Version     int
}

func newFakeSSM(t *testing.T) *fakeSSM {
	f := &fakeSSM{t: t, params: map[string]*ssmParam{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSSM) put(name, typ, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.params[name]
	if p == nil {
		p = &ssmParam{}
		f.params[name] = p
	}
	p.Type, p.Value = typ, value
	p.Version++
}

func (f *fakeSSM) get(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.params[name]; p != nil {
		return p.Value
	}
	return ""
}

func (f *fakeSSM) callsOf(op string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, op+" ") {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeSSM) apiError(w http.ResponseWriter, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
}

func (f *fakeSSM) item(name string, p *ssmParam, decrypt bool) map[string]any {
	v := p.Value
	if p.Type == "SecureString" && !decrypt {
		v = base64.StdEncoding.EncodeToString([]byte("encrypted:" + v))
	}
	return map[string]any{"Name": name, "Type": p.Type, "Value": v, "Version": p.Version,
		"LastModifiedDate": 1767225600.0, "DataType": "text",
		"ARN": "arn:aws:ssm:" + testRegion + ":123456789012:parameter" + name}
}

func (f *fakeSSM) serve(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	auth := r.Header.Get("Authorization")
	if r.Method != http.MethodPost || !strings.HasPrefix(target, "AmazonSSM.") || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-amz-json-1.1") {
		http.Error(w, "not the SSM JSON protocol", http.StatusBadRequest)
		return
	}
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential=AKIDLIFELINETEST/") || !strings.Contains(auth, "/"+testRegion+"/ssm/aws4_request") {
		f.apiError(w, "UnrecognizedClientException", "unsigned or wrongly scoped request: "+auth)
		return
	}
	var req map[string]any
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		f.apiError(w, "SerializationException", err.Error())
		return
	}
	op := strings.TrimPrefix(target, "AmazonSSM.")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op+" "+string(body))
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	decrypt, _ := req["WithDecryption"].(bool)
	switch op {
	case "GetParameter":
		name, _ := req["Name"].(string)
		p := f.params[name]
		if p == nil {
			f.apiError(w, "ParameterNotFound", "")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"Parameter": f.item(name, p, decrypt)})
	case "GetParametersByPath":
		path, _ := req["Path"].(string)
		var names []string
		for n := range f.params {
			if rest, ok := strings.CutPrefix(n, path+"/"); ok && !strings.Contains(rest, "/") {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		// Pages of two, so the CLI has to follow NextToken.
		start := 0
		if tok, _ := req["NextToken"].(string); tok != "" {
			fmt.Sscan(tok, &start)
		}
		end := min(start+2, len(names))
		var items []map[string]any
		for _, n := range names[start:end] {
			items = append(items, f.item(n, f.params[n], decrypt))
		}
		resp := map[string]any{"Parameters": items}
		if end < len(names) {
			resp["NextToken"] = fmt.Sprint(end)
		}
		if items == nil {
			resp["Parameters"] = []any{}
		}
		json.NewEncoder(w).Encode(resp)
	case "PutParameter":
		name, _ := req["Name"].(string)
		value, _ := req["Value"].(string)
		p := f.params[name]
		if p == nil {
			p = &ssmParam{Type: "String"}
			f.params[name] = p
		} else if ow, _ := req["Overwrite"].(bool); !ow {
			f.apiError(w, "ParameterAlreadyExists", "")
			return
		}
		p.Value = value
		p.Version++
		json.NewEncoder(w).Encode(map[string]any{"Version": p.Version, "Tier": "Standard"})
	default:
		f.apiError(w, "InvalidAction", op)
	}
}

// awsCLI is Debian's AWS CLI (package awscli), or another on PATH.
func awsCLI(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/aws"); err == nil {
		return "/usr/bin/aws"
	}
	p, err := exec.LookPath("aws")
	if err != nil {
		t.Skip("the AWS CLI is not installed (apt-get install awscli)")
	}
	return p
}

// buildBastion builds lifeline-bastion into dir.
func buildBastion(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "lifeline-bastion")
	out, err := exec.Command("go", "build", "-o", bin, "../bastion/cmd/lifeline-bastion").CombinedOutput()
	require.NoError(t, err, "go build lifeline-bastion:\n%s", out)
	return bin
}

// scriptEnv is the environment the instance scripts run in, pointed at temp
// directories, the fake SSM and dummy credentials; PATH starts with dir
// (for the fake systemctl) and the directory of the AWS CLI.
func scriptEnv(t *testing.T, f *fakeSSM, aws, dir string, extra ...string) []string {
	t.Helper()
	cfg := filepath.Join(dir, "aws-config")
	require.NoError(t, os.WriteFile(cfg, []byte("[default]\n"), 0o600))
	return append([]string{
		"PATH=" + dir + ":" + filepath.Dir(aws) + ":/usr/bin:/bin",
		"HOME=" + dir,
		"AWS_ACCESS_KEY_ID=AKIDLIFELINETEST", "AWS_SECRET_ACCESS_KEY=dummy-secret-for-the-fake",
		"AWS_CONFIG_FILE=" + cfg, "AWS_SHARED_CREDENTIALS_FILE=" + cfg,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=", "AWS_MAX_ATTEMPTS=1",
		"LIFELINE_SSM_ENDPOINT=" + f.srv.URL,
	}, extra...)
}

func runScript(t *testing.T, env []string, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestKeysSyncAgainstSSM runs the rendered keys-sync script, with Debian's
// AWS CLI, against a stand-in for the SSM API, and a real lifeline-bastion
// process. Adding an operator through the module's variables changes only
// the parameter; the script applies it within one run: the new operator
// logs in, and the agent tunnel that was up stays up (same connection, its
// name still served). Bad content is refused before it reaches the bastion;
// a KRL in its parameter closes the revoked operator's session.
func TestKeysSyncAgainstSSM(t *testing.T) {
	needTerraform(t)
	aws := awsCLI(t)
	sshtest.Need(t, "python3")
	t.Parallel()
	dir := t.TempDir()
	bin := buildBastion(t, dir)
	agent := sshtest.NewKey(t, dir, "agent")
	alice := sshtest.NewKey(t, dir, "alice")
	bob := sshtest.NewKey(t, dir, "bob")

	vars := baseVars()
	vars["operators"] = []string{alice.AuthorizedLine("", "alice")}
	vars["agents"] = []string{agent.AuthorizedLine(`permitlisten="pi:22"`, "site-pi")}
	before := render(t, vars)
	vars["operators"] = []string{alice.AuthorizedLine("", "alice"), bob.AuthorizedLine(`permitopen="pi:22"`, "bob")}
	after := render(t, vars)
	require.Equal(t, before.str["user_data"], after.str["user_data"])

	f := newFakeSSM(t)
	keys := before.ssm["keys_path"]
	f.put(keys+"/operators", "String", before.str["operators_file"])
	f.put(keys+"/agents", "String", before.str["agents_file"])
	f.put(keys+"/revoked-keys", "String", before.str["revoked_keys_b64"])
	// Something else under the path's parent is not read.
	f.put(before.ssm["host_key"], "SecureString", testHostKey)

	etc, run, state := filepath.Join(dir, "etc"), filepath.Join(dir, "run"), filepath.Join(dir, "state")
	for _, d := range []string{etc, run, state} {
		require.NoError(t, os.MkdirAll(d, 0o700))
	}
	g, err := user.LookupGroupId(fmt.Sprint(os.Getgid()))
	require.NoError(t, err)
	port := sshtest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	bastionEnv := []string{
		"LIFELINE_AGENTS=" + etc + "/agents", "LIFELINE_OPERATORS=" + etc + "/operators", "LIFELINE_REVOKED_KEYS=" + etc + "/revoked_keys",
		"LIFELINE_STATE_DIR=" + state, "LIFELINE_HOST_KEY=" + state + "/host_key", "LIFELINE_LISTEN=" + addr, "LIFELINE_NAME=test",
	}
	// A stand-in for systemctl: is-active and reload of the real process,
	// with the unit's ExecReload (check-keys first, then SIGHUP).
	pidFile := filepath.Join(dir, "bastion.pid")
	envFile := filepath.Join(dir, "bastion.env")
	require.NoError(t, os.WriteFile(envFile, []byte("export "+strings.Join(bastionEnv, "\nexport ")+"\n"), 0o600))
	systemctl := fmt.Sprintf(`#!/bin/bash
set -eu
pid=$(cat %[1]q 2>/dev/null || true)
case "$1" in
is-active) [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null ;;
reload) . %[2]q; %[3]q check-keys && kill -HUP "$pid"; echo reloads >>%[4]q ;;
*) echo "fake systemctl: $*" >&2; exit 1 ;;
esac
`, pidFile, envFile, bin, filepath.Join(dir, "reloads"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "systemctl"), []byte(systemctl), 0o755))
	env := scriptEnv(t, f, aws, dir, "LIFELINE_ETC="+etc, "LIFELINE_RUN="+run, "LIFELINE_BASTION_BIN="+bin, "LIFELINE_GROUP="+g.Name)
	sync := after.str["keys_sync"] // the same script before and after: it is in the user data

	// First run, as at boot: the bastion is not running yet.
	out, err := runScript(t, env, sync)
	require.NoError(t, err, "keys-sync:\n%s", out)
	assert.Contains(t, out, "installed operators v1, agents v1, revoked-keys v1")
	for _, name := range []string{"operators", "agents"} {
		got, err := os.ReadFile(filepath.Join(etc, name))
		require.NoError(t, err)
		assert.Equal(t, before.str[name+"_file"], string(got))
		fi, _ := os.Stat(filepath.Join(etc, name))
		assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	}
	assert.True(t, strings.HasPrefix(f.get(before.ssm["status_path"]+"/keys"), "applied at "), f.get(before.ssm["status_path"]+"/keys"))
	assert.NotEmpty(t, f.callsOf("GetParametersByPath"))
	assert.Empty(t, f.callsOf("GetParameter"), "keys-sync reads the keys path only, never a secret")

	p := sshtest.Start(t, bastionEnv, bin)
	require.NoError(t, os.WriteFile(pidFile, []byte(fmt.Sprint(p.Cmd.Process.Pid)), 0o600))
	sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(p.Output(), "bastion listening") }, "not listening:\n%s", p.Output)
	dial := func(k sshtest.Key) (*ssh.Client, error) {
		return ssh.Dial("tcp", addr, &ssh.ClientConfig{Config: sshalgo.Config(), User: "x", Auth: []ssh.AuthMethod{ssh.PublicKeys(k.Signer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
	}
	// The agent: registers pi:22 and echoes what comes through it.
	ag, err := dial(agent)
	require.NoError(t, err, p.Output())
	t.Cleanup(func() { ag.Close() })
	ln, err := ag.Listen("tcp", "pi:22")
	require.NoError(t, err, "register pi:22:\n%s", p.Output())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	jump := func(c *ssh.Client) error {
		conn, err := c.Dial("tcp", "pi:22")
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("hello\n")); err != nil {
			return err
		}
		_, err = io.ReadFull(conn, make([]byte, 6))
		return err
	}
	op, err := dial(alice)
	require.NoError(t, err)
	t.Cleanup(func() { op.Close() })
	require.NoError(t, jump(op))
	if c, err := dial(bob); err == nil {
		c.Close()
		t.Fatal("bob logged in before he was added")
	}

	// terraform apply adds bob: only the operators parameter changes.
	f.put(keys+"/operators", "String", after.str["operators_file"])
	start := time.Now()
	out, err = runScript(t, env, sync)
	require.NoError(t, err, "keys-sync:\n%s", out)
	assert.Contains(t, out, "applied operators v2, agents v1, revoked-keys v1")
	var bobClient *ssh.Client
	sshtest.Eventually(t, 10*time.Second, func() bool {
		bobClient, err = dial(bob)
		return err == nil
	}, "bob cannot log in after the sync:\n%s", p.Output)
	t.Logf("new operator in after %s (one keys-sync run: GetParametersByPath, check-keys, rename, reload)", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { bobClient.Close() })
	require.NoError(t, jump(bobClient), "bob jumps through the tunnel that was up before the change")
	require.NoError(t, jump(op), "alice's session from before the change still works")
	_, _, err = ag.SendRequest("keepalive@openssh.com", true, nil)
	require.NoError(t, err, "the agent's connection from before the change dropped")

	// Unchanged parameters: no reload.
	reloads := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "reloads"))
		return strings.Count(string(b), "reloads")
	}
	require.Equal(t, 1, reloads())
	out, err = runScript(t, env, sync)
	require.NoError(t, err, out)
	assert.Equal(t, 1, reloads(), "nothing changed, nothing reloaded")
	assert.True(t, strings.HasPrefix(f.get(before.ssm["status_path"]+"/keys"), "in force since "))

	// Bad content never reaches the bastion.
	good, _ := os.ReadFile(filepath.Join(etc, "operators"))
	f.put(keys+"/operators", "String", after.str["operators_file"]+`command="/bin/sh" `+alice.AuthorizedLine("", "again")+"\n")
	out, err = runScript(t, env, sync)
	require.Error(t, err, "a refused file must fail the service:\n%s", out)
	assert.Contains(t, out, "refused operators v3")
	assert.Contains(t, out, "operators:4: option command")
	now, _ := os.ReadFile(filepath.Join(etc, "operators"))
	assert.Equal(t, string(good), string(now), "the files in force stay")
	assert.Equal(t, 1, reloads())
	status := f.get(before.ssm["status_path"] + "/keys")
	assert.Contains(t, status, "refused at ")
	assert.Contains(t, status, "option command")
	f.put(keys+"/revoked-keys", "String", "not base64 at all!")
	out, err = runScript(t, env, sync)
	require.Error(t, err, out)
	assert.Contains(t, out, "unusable")

	// Revocation through the KRL parameter closes bob's live session.
	if _, err := exec.LookPath("ssh-keygen"); err == nil {
		f.put(keys+"/operators", "String", after.str["operators_file"])
		os.WriteFile(filepath.Join(dir, "bob.pub"), []byte(bob.AuthorizedLine("", "bob")+"\n"), 0o600)
		krl := filepath.Join(dir, "revoked.krl")
		kg := exec.Command("ssh-keygen", "-k", "-f", krl, "-z", "7", filepath.Join(dir, "bob.pub"))
		out, err := kg.CombinedOutput()
		require.NoError(t, err, "%s", out)
		data, _ := os.ReadFile(krl)
		f.put(keys+"/revoked-keys", "String", base64.StdEncoding.EncodeToString(data))
		out2, err := runScript(t, env, sync)
		require.NoError(t, err, out2)
		done := make(chan error, 1)
		go func() { done <- bobClient.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("bob's session stayed open after his key was revoked")
		}
		require.NoError(t, jump(op), "alice is not revoked")
	}

	audit, _ := os.ReadFile(filepath.Join(state, "audit.jsonl"))
	assert.Contains(t, string(audit), `added operator key \"bob\"`, "the reload's audit event lists the change")
	assert.Contains(t, string(audit), `"event":"reload"`)
	assert.Contains(t, string(audit), "KRL version 7")
}

// TestFetchSecretsAgainstSSM runs the rendered fetch-secrets script with
// Debian's AWS CLI against the SSM stand-in: the host key and the Twilio
// credentials are read decrypted and written 0600; when SSM cannot give them
// the copies in place stay; with none in place it fails.
func TestFetchSecretsAgainstSSM(t *testing.T) {
	needTerraform(t)
	aws := awsCLI(t)
	t.Parallel()
	dir := t.TempDir()
	vars := baseVars()
	for k, v := range map[string]any{"twilio_account_sid": testSID, "twilio_auth_token": testToken, "sms_from": "+15005550006", "sms_to": []string{"+447700900123"}} {
		vars[k] = v
	}
	r := render(t, vars)
	f := newFakeSSM(t)
	f.put(r.ssm["host_key"], "SecureString", strings.TrimSuffix(testHostKey, "\n"))
	f.put(r.ssm["twilio_account_sid"], "SecureString", testSID)
	f.put(r.ssm["twilio_auth_token"], "SecureString", testToken)
	etc, state := filepath.Join(dir, "etc"), filepath.Join(dir, "state")
	require.NoError(t, os.MkdirAll(etc, 0o700))
	require.NoError(t, os.MkdirAll(state, 0o700))
	u, err := user.Current()
	require.NoError(t, err)
	env := scriptEnv(t, f, aws, dir, "LIFELINE_ETC="+etc, "LIFELINE_STATE="+state, "LIFELINE_OWNER="+u.Username,
		"LIFELINE_ROOT_OWNER="+u.Username, "LIFELINE_TRIES=1")
	out, err := runScript(t, env, r.str["fetch_secrets"])
	require.NoError(t, err, out)
	key, _ := os.ReadFile(filepath.Join(state, "ssh_host_ed25519_key"))
	assert.Equal(t, testHostKey, string(key))
	secrets, _ := os.ReadFile(filepath.Join(etc, "secrets.env"))
	assert.Equal(t, `TWILIO_ACCOUNT_SID="`+testSID+`"`+"\n"+`TWILIO_AUTH_TOKEN="`+testToken+`"`+"\n", string(secrets))
	for _, p := range []string{filepath.Join(state, "ssh_host_ed25519_key"), filepath.Join(etc, "secrets.env")} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), p)
	}
	gets := f.callsOf("GetParameter")
	require.Len(t, gets, 3)
	for _, c := range gets {
		assert.Contains(t, c, `"WithDecryption": true`)
	}

	// SSM unreachable: what is in place stays, and the bastion can start.
	env2 := append(env, "LIFELINE_SSM_ENDPOINT=http://127.0.0.1:1")
	out, err = runScript(t, env2, r.str["fetch_secrets"])
	require.NoError(t, err, out)
	assert.Contains(t, out, "keeping the host key in place")
	// Nothing in place: a loud failure.
	os.Remove(filepath.Join(state, "ssh_host_ed25519_key"))
	out, err = runScript(t, env2, r.str["fetch_secrets"])
	require.Error(t, err, out)
	assert.Contains(t, out, "the bastion cannot start")
	// A value that is not what it should be is not written.
	f.put(r.ssm["twilio_auth_token"], "SecureString", `x" LIFELINE_LISTEN="0.0.0.0:22`)
	out, err = runScript(t, env, r.str["fetch_secrets"])
	require.Error(t, err, out)
	secrets2, _ := os.ReadFile(filepath.Join(etc, "secrets.env"))
	assert.Equal(t, string(secrets), string(secrets2), "a malformed token must not reach the env file")

}
