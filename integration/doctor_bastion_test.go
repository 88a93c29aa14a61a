//go:build integration

package integration

// `lifeline-bastion doctor`, the real binary, against the fake Twilio.
// Everything is on loopback:
//
//	lifeline-bastion doctor --user nobody      (started as root, it reads the
//	  | LIFELINE_ENV_FILE, then checks as     environment file, then becomes
//	  | the service user would)               nobody, as systemd's User=)
//	  |
//	  |  GET  /2010-04-01/Accounts/{Sid}.json            the account check
//	  |  POST /2010-04-01/Accounts/{Sid}/Messages.json   --send-test only
//	  v
//	fake Twilio (twiliofake, in this test) on 127.0.0.1:<port>

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	twiliofake "github.com/lifeline-dev/lifeline/integration/fake/twilio"
	"github.com/lifeline-dev/lifeline/internal/sshtest"
)

// doctorSite is an installed bastion in a temporary directory: key files,
// state directory, host key, an environment file naming them and a fake
// Twilio. As root, everything the service reads belongs to nobody, the
// user the doctor is told to check as.
type doctorSite struct {
	t                    *testing.T
	dir, env, ops        string
	operator             sshtest.Key
	twilio               *twiliofake.Server
	numbers              []string
	asRoot               bool
	nobodyUID, nobodyGID int
}

func newDoctorSite(t *testing.T) *doctorSite {
	t.Helper()
	dir := t.TempDir()
	// nobody must reach the files: open the test's directories (the
	// files themselves stay 0600).
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fake, err := twiliofake.Start("127.0.0.1:0", twiliofake.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	s := &doctorSite{t: t, dir: dir, env: filepath.Join(dir, "bastion.env"), ops: filepath.Join(dir, "operators"), twilio: fake,
		numbers: []string{"+15551230001", "+15551230002"}, asRoot: os.Geteuid() == 0, nobodyUID: 65534, nobodyGID: 65534}
	agent := sshtest.NewKey(t, dir, "agent_key")
	s.operator = sshtest.NewKey(t, dir, "operator_key")
	os.WriteFile(filepath.Join(dir, "agents"), []byte(agent.AuthorizedLine(`permitlisten="pi:22"`, "radio-pi")+"\n"), 0o600)
	os.WriteFile(s.ops, []byte(s.operator.AuthorizedLine("", "alice")+"\n"), 0o600)
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o700)
	port := sshtest.FreePort(t)
	os.WriteFile(s.env, []byte(strings.Join([]string{
		"# /etc/lifeline/bastion.env of a test",
		fmt.Sprintf("LIFELINE_LISTEN=127.0.0.1:%d", port),
		"LIFELINE_HOST_KEY=" + filepath.Join(state, "ssh_host_ed25519_key"),
		"LIFELINE_AGENTS=" + filepath.Join(dir, "agents"),
		"LIFELINE_OPERATORS=" + s.ops,
		"LIFELINE_STATE_DIR=" + state,
		"LIFELINE_NAME=doctor-test",
		"TWILIO_ACCOUNT_SID=" + fake.AccountSID(),
		"TWILIO_AUTH_TOKEN=" + fake.AuthToken(),
		"LIFELINE_SMS_FROM=+15005550006",
		`LIFELINE_SMS_TO="` + strings.Join(s.numbers, ",") + `"`,
		"LIFELINE_TWILIO_URL=" + fake.URL(),
	}, "\n")+"\n"), 0o600)
	// The host key, made the way the README says: hostkey --host.
	out, err := sshtest.Stdout(context.Background(), 20*time.Second, s.environ(), bin("lifeline-bastion"), "hostkey", "--host", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, fmt.Sprintf("[127.0.0.1]:%d ssh-ed25519 ", port)) {
		t.Fatalf("hostkey --host 127.0.0.1:\n%s", out)
	}
	if s.asRoot {
		for _, p := range []string{filepath.Join(dir, "agents"), s.ops, state, filepath.Join(state, "ssh_host_ed25519_key")} {
			if err := os.Chown(p, s.nobodyUID, s.nobodyGID); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

// environ is the doctor's environment: the file, and nothing of lifeline's
// from the machine (the test's own environment is inherited).
func (s *doctorSite) environ(extra ...string) []string {
	return append([]string{"LIFELINE_ENV_FILE=" + s.env}, extra...)
}

// doctor runs the real binary and returns its stdout lines, stderr and
// exit code.
func (s *doctorSite) doctor(env []string, args ...string) ([]string, string, int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("lifeline-bastion"), append([]string{"doctor", "--user", "nobody"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb sshtest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("doctor: %v", err)
	}
	return sshtest.Lines(out.String()), errb.String(), code
}

func checklist(t *testing.T, lines []string) {
	t.Helper()
	for _, l := range lines {
		if !strings.HasPrefix(l, "✓ ") && !(strings.HasPrefix(l, "✗ ") && strings.Contains(l, " — fix: ")) {
			t.Errorf("not a checklist line: %q", l)
		}
	}
}

func lineWith(lines []string, parts ...string) string {
	for _, l := range lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return l
		}
	}
	return ""
}

func TestDoctorBastionAllPass(t *testing.T) {
	t.Parallel()
	s := newDoctorSite(t)
	lines, errs, code := s.doctor(s.environ())
	all := strings.Join(lines, "\n")
	if code != 0 {
		t.Fatalf("exit %d:\n%s\n%s", code, all, errs)
	}
	checklist(t, lines)
	for _, l := range lines {
		if !strings.HasPrefix(l, "✓ ") {
			t.Errorf("not passed: %s", l)
		}
	}
	wants := []string{"✓ environment file " + s.env, "✓ configuration: valid", "✓ host key ", "✓ agents file ", "✓ operators file ",
		"✓ state directory ", "✓ disk space ", "✓ listen address ", "✓ Twilio account " + s.twilio.AccountSID() + " (lifeline test account): active"}
	if s.asRoot {
		wants = append(wants, "✓ checking as the service user nobody")
	}
	for _, w := range wants {
		if lineWith(lines, w) == "" {
			t.Errorf("no line %q in:\n%s", w, all)
		}
	}
	if s.twilio.AccountFetches() != 1 || s.twilio.Requests() != 0 {
		t.Errorf("fake Twilio saw %d account fetches and %d message requests; want 1 and none (no text without --send-test)",
			s.twilio.AccountFetches(), s.twilio.Requests())
	}
}

func TestDoctorBastionWrongToken(t *testing.T) {
	t.Parallel()
	s := newDoctorSite(t)
	// A token given on the command line wins over the file's.
	lines, _, code := s.doctor(s.environ("TWILIO_AUTH_TOKEN=ffffffffffffffffffffffffffffffff"))
	checklist(t, lines)
	l := lineWith(lines, "✗ Twilio account "+s.twilio.AccountSID())
	if code != 1 || l == "" {
		t.Fatalf("exit %d, no failed Twilio line:\n%s", code, strings.Join(lines, "\n"))
	}
	for _, w := range []string{"refused TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN", "401", "— fix: copy the Account SID and the Auth Token from the Twilio console", s.env} {
		if !strings.Contains(l, w) {
			t.Errorf("%q lacks %q", l, w)
		}
	}
	if lineWith(lines, "1 of them already set in this environment") == "" {
		t.Errorf("the environment's token winning over the file's is not said:\n%s", strings.Join(lines, "\n"))
	}
}

func TestDoctorBastionBrokenOperatorsLine(t *testing.T) {
	t.Parallel()
	s := newDoctorSite(t)
	f, err := os.OpenFile(s.ops, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, `command="/bin/sh" `+s.operator.AuthorizedLine("", "mallory"))
	f.Close()
	lines, _, code := s.doctor(s.environ())
	checklist(t, lines)
	l := lineWith(lines, "✗ operators file "+s.ops+":2: option command")
	if code != 1 || l == "" {
		t.Fatalf("exit %d, no line naming %s:2:\n%s", code, s.ops, strings.Join(lines, "\n"))
	}
	if !strings.Contains(l, "— fix: correct or remove line 2 of "+s.ops) {
		t.Errorf("fix missing: %s", l)
	}
	if lineWith(lines, "✓ agents file ", "loads") == "" {
		t.Errorf("the good agents file is not passed:\n%s", strings.Join(lines, "\n"))
	}
}

func TestDoctorBastionSendTest(t *testing.T) {
	t.Parallel()
	s := newDoctorSite(t)
	lines, errs, code := s.doctor(s.environ(), "--send-test")
	all := strings.Join(lines, "\n")
	if code != 0 {
		t.Fatalf("exit %d:\n%s\n%s", code, all, errs)
	}
	msgs := s.twilio.Messages()
	if len(msgs) != len(s.numbers) {
		t.Fatalf("fake Twilio got %d texts, want one per number (%d):\n%s", len(msgs), len(s.numbers), all)
	}
	for i, n := range s.numbers {
		m := msgs[i]
		if m.To != n || m.From != "+15005550006" || !strings.Contains(m.Body, "doctor-test") {
			t.Errorf("text %d: %+v", i, m)
		}
		if lineWith(lines, "✓ test text to "+n+": accepted by Twilio as "+m.SID) == "" {
			t.Errorf("no line with the SID %s of the text to %s:\n%s", m.SID, n, all)
		}
	}
}

// TestDoctorBastionTwilioHangs: a Twilio that never answers costs the
// doctor its 5 s deadline, and a failed line, never a hang.
func TestDoctorBastionTwilioHangs(t *testing.T) {
	t.Parallel()
	s := newDoctorSite(t)
	s.twilio.Hang()
	start := time.Now()
	lines, _, code := s.doctor(s.environ())
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("doctor took %s against a Twilio that never answers", d)
	}
	if code != 1 || lineWith(lines, "✗ Twilio account", "no answer within 5s") == "" {
		t.Errorf("exit %d:\n%s", code, strings.Join(lines, "\n"))
	}
}
