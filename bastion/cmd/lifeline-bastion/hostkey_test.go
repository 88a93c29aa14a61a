package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

func TestKnownHostsAddr(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, port, want, err string }{
		{"bastion.example.org", "2222", "bastion.example.org:2222", ""},
		{"Bastion.Example.ORG", "2222", "bastion.example.org:2222", ""},
		{"bastion.example.org:22", "2222", "bastion.example.org:22", ""},
		{"203.0.113.10", "2222", "203.0.113.10:2222", ""},
		{"203.0.113.10:2200", "2222", "203.0.113.10:2200", ""},
		{"2001:db8::1", "2222", "[2001:db8::1]:2222", ""},
		{"[2001:db8::1]:22", "2222", "[2001:db8::1]:22", ""},
		{"[2001:db8::1]", "2222", "[2001:db8::1]:2222", ""},
		{"bastion", "", "", "no port"},
		{"bastion:0", "2222", "", "not 1..65535"},
		{"bastion:022", "2222", "", "not 1..65535"},
		{"bastion:ssh", "2222", "", "not 1..65535"},
		{"bad host", "2222", "", "not a host name"},
		{"*.example.org", "2222", "", "not a host name"},
		{"-x.example.org", "2222", "", "not a host name"},
		{"1.2.3", "2222", "", "last part is a number"},
		{"[bastion]:2222", "2222", "", "not an IPv6 address"},
		{"fe80::1%eth0", "2222", "", "not an IPv6 address"},
	}
	for _, tc := range tests {
		got, err := knownHostsAddr(tc.in, tc.port)
		if tc.err == "" && (err != nil || got != tc.want) {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: %q, %v; want an error with %q", tc.in, got, err, tc.err)
		}
	}
	var h hostList
	if err := h.Set("a.example.org, 203.0.113.10"); err != nil || h.Set("b.example.org:22") != nil || h.String() != "a.example.org,203.0.113.10,b.example.org:22" {
		t.Errorf("--host a,b --host c: %v %q", err, h.String())
	}
	if err := h.Set("a,,b"); err == nil {
		t.Error("an empty name in --host was accepted")
	}
}

// runSplit runs the binary and returns stdout and stderr apart.
func runSplit(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestHostkeyHost: one known_hosts line per --host, in OpenSSH's form for
// the port, defaulting to LIFELINE_LISTEN's; without --host the old line
// and, on stderr, what to give.
func TestHostkeyHost(t *testing.T) {
	t.Parallel()
	f := newFiles(t)
	env := f.env("LIFELINE_LISTEN=:2345", "LIFELINE_ENV_FILE=/dev/null")
	out, errs, code := runSplit(t, env, "hostkey", "--host", "Bastion.Example.org,203.0.113.10", "--host", "b.example.org:22", "-host", "[2001:db8::1]:22")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	signer, err := ssh.ParsePrivateKey([]byte(readFile(t, filepath.Join(f.dir, "state", "host_key"))))
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	wantOut := fmt.Sprintf("[bastion.example.org]:2345 %s\n[203.0.113.10]:2345 %s\nb.example.org %s\n2001:db8::1 %s\n# fingerprint %s\n",
		key, key, key, key, ssh.FingerprintSHA256(signer.PublicKey()))
	if out != wantOut {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, wantOut)
	}
	if strings.Contains(errs, "--host") {
		t.Errorf("stderr with --host given: %s", errs)
	}

	out, errs, code = runSplit(t, env, "hostkey")
	if code != 0 || out != fmt.Sprintf("[test]:2345 %s\n# fingerprint %s\n", key, ssh.FingerprintSHA256(signer.PublicKey())) {
		t.Errorf("without --host: exit %d, stdout:\n%s", code, out)
	}
	for _, w := range []string{`"test" (LIFELINE_NAME)`, "--host bastion.example.org", "the port is 2345, from LIFELINE_LISTEN", "public_ip", "known_hosts_line"} {
		if !strings.Contains(errs, w) {
			t.Errorf("stderr without --host lacks %q:\n%s", w, errs)
		}
	}

	// A bad --host is a usage error that creates nothing.
	g := newFiles(t)
	_, errs, code = runSplit(t, g.env("LIFELINE_ENV_FILE=/dev/null"), "hostkey", "--host", "not a name")
	if code != 2 || !strings.Contains(errs, `"not a name"`) {
		t.Errorf("bad --host: exit %d, %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(g.dir, "state", "host_key")); err == nil {
		t.Error("a usage error created the host key")
	}
}

// TestHostkeyEnvFile: run by hand, hostkey reads the service's
// environment file and finds the key the service uses.
func TestHostkeyEnvFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "custom_host_key")
	envFile := filepath.Join(dir, "bastion.env")
	os.WriteFile(envFile, []byte("LIFELINE_HOST_KEY="+key+"\nLIFELINE_LISTEN=\":2400\"\n"), 0o600)
	env := []string{"LIFELINE_ENV_FILE=" + envFile, "LIFELINE_NAME=x", "LIFELINE_STATE_DIR=" + dir}
	// The test's own environment must not say otherwise.
	if os.Getenv("LIFELINE_HOST_KEY") != "" || os.Getenv("LIFELINE_LISTEN") != "" {
		t.Skip("LIFELINE_HOST_KEY or LIFELINE_LISTEN is set in the test's environment")
	}
	out, errs, code := runSplit(t, env, "hostkey", "--host", "203.0.113.10")
	if code != 0 || !strings.HasPrefix(out, "[203.0.113.10]:2400 ssh-ed25519 ") {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	if _, err := os.Stat(key); err != nil {
		t.Fatalf("the key of the environment file was not used: %v", err)
	}
	os.WriteFile(envFile, []byte("not an assignment\n"), 0o600)
	if _, errs, code := runSplit(t, env, "hostkey"); code != 2 || !strings.Contains(errs, envFile+":1") {
		t.Errorf("broken environment file: exit %d, %s", code, errs)
	}
}

// TestHostkeyLinesWorkWithOpenSSH: the lines printed with --host are what
// stock ssh needs with StrictHostKeyChecking=yes, by address and by name.
func TestHostkeyLinesWorkWithOpenSSH(t *testing.T) {
	t.Parallel()
	sshtest.Need(t, "ssh")
	f := newFiles(t)
	port := sshtest.FreePort(t)
	env := f.env(fmt.Sprintf("LIFELINE_LISTEN=127.0.0.1:%d", port), "LIFELINE_ENV_FILE=/dev/null")
	out, errs, code := runSplit(t, env, "hostkey", "--host", "127.0.0.1,localhost")
	if code != 0 {
		t.Fatalf("hostkey: exit %d %s", code, errs)
	}
	knownHosts := filepath.Join(f.dir, "known_hosts")
	os.WriteFile(knownHosts, []byte(out), 0o600)
	p := sshtest.Start(t, env, binary)
	sshtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(p.Output(), "bastion listening") }, "not listening:\n%s", p.Output)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		got, err := sshtest.Run(t.Context(), 15*time.Second, nil, "ssh", "-F", "/dev/null", "-i", f.operator.Path, "-p", fmt.Sprint(port),
			"-o", "UserKnownHostsFile="+knownHosts, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
			"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "CheckHostIP=no", "alice@"+host, "status")
		if err != nil {
			t.Errorf("ssh %s with the printed known_hosts: %v\n%s", host, err, got)
		}
	}
}
