package envfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := "# lifeline-agent\n\n; also a comment\nLIFELINE_BASTION=b.example.org:2222\n  LIFELINE_FORWARDS = pi:22=127.0.0.1:22,nuc:3389=192.168.1.100:3389  \n" +
		"A='single $x \\n'\nB=\"double \\\"q\\\" \\\\ \\$HOME\"\nC=one\\\ntwo\nLIFELINE_BASTION=later.example.org:2222\nEMPTY=\n"
	vars, err := Parse(strings.NewReader(in), "agent.env")
	if err != nil {
		t.Fatal(err)
	}
	want := []Var{
		{"LIFELINE_BASTION", "b.example.org:2222", 4},
		{"LIFELINE_FORWARDS", "pi:22=127.0.0.1:22,nuc:3389=192.168.1.100:3389", 5},
		{"A", `single $x \n`, 6},
		{"B", `double "q" \ $HOME`, 7},
		{"C", "onetwo", 8},
		{"LIFELINE_BASTION", "later.example.org:2222", 10},
		{"EMPTY", "", 11},
	}
	if len(vars) != len(want) {
		t.Fatalf("got %d vars %+v, want %d", len(vars), vars, len(want))
	}
	for i := range want {
		if vars[i] != want[i] {
			t.Errorf("var %d = %+v, want %+v", i, vars[i], want[i])
		}
	}
}

func TestParseErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"LIFELINE_BASTION b:22\n", "agent.env:1"},
		{"ok=1\n1BAD=x\n", "agent.env:2"},
		{"X=\"open\n", `agent.env:1: X: a quote is not closed`},
		{"X=\"a\\qb\"\n", `unknown escape \q`},
		{"export X=1\n", "agent.env:1"},
	} {
		_, err := Parse(strings.NewReader(tc.in), "agent.env")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	big := strings.Repeat("# filler line for the size bound\n", MaxSize/30)
	if _, err := Parse(strings.NewReader(big), "huge.env"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("a file over MaxSize: %v", err)
	}
}

func TestApplyKeepsTheEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.env")
	os.WriteFile(path, []byte("LIFELINE_ENVFILE_TEST_A=file\nLIFELINE_ENVFILE_TEST_B=file\nLIFELINE_ENVFILE_TEST_B=last\n"), 0o600)
	t.Setenv("LIFELINE_ENVFILE_TEST_A", "command line")
	os.Unsetenv("LIFELINE_ENVFILE_TEST_B")
	t.Cleanup(func() { os.Unsetenv("LIFELINE_ENVFILE_TEST_B") })
	vars, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	set, err := Apply(vars)
	if err != nil {
		t.Fatal(err)
	}
	if got := os.Getenv("LIFELINE_ENVFILE_TEST_A"); got != "command line" {
		t.Errorf("the environment lost to the file: %q", got)
	}
	if got := os.Getenv("LIFELINE_ENVFILE_TEST_B"); got != "last" {
		t.Errorf("B = %q, want the file's last assignment", got)
	}
	if len(set) != 1 || set[0] != "LIFELINE_ENVFILE_TEST_B" {
		t.Errorf("set = %v", set)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing.env")); !os.IsNotExist(err) {
		t.Errorf("a missing file: %v, want not-exist", err)
	}
}
