package netsetup

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	good := Config{LANInterface: "eth0", MSS: "1452", SysctlDir: "/etc/sysctl.d", StateDir: "/var/lib/lifeline"}
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string // each must appear in the error; none = valid
	}{
		{"minimal", func(c *Config) {}, nil},
		{"everything", func(c *Config) {
			c.TunnelInterface, c.MSS, c.UplinkGateway, c.Bastion = "zt+", "pmtu", "100.64.0.1", "bastion.example:22,203.0.113.10:2222"
		}, nil},
		{"LAN missing", func(c *Config) { c.LANInterface = "" }, []string{"LIFELINE_LAN_INTERFACE: required"}},
		{"LAN wildcard", func(c *Config) { c.LANInterface = "eth+" }, []string{`LIFELINE_LAN_INTERFACE="eth+"`}},
		{"LAN too long", func(c *Config) { c.LANInterface = "abcdefghijklmnop" }, []string{"LIFELINE_LAN_INTERFACE", "15 bytes"}},
		{"tunnel bad", func(c *Config) { c.TunnelInterface = "tun 0" }, []string{`LIFELINE_TUNNEL_INTERFACE="tun 0"`}},
		{"tunnel matches LAN", func(c *Config) { c.TunnelInterface = "et+" }, []string{"LIFELINE_TUNNEL_INTERFACE", "matches the LAN interface"}},
		{"MSS words", func(c *Config) { c.MSS = "big" }, []string{`LIFELINE_MSS="big"`, "pmtu"}},
		{"MSS too small", func(c *Config) { c.MSS = "100" }, []string{`LIFELINE_MSS="100"`}},
		{"gateway IPv6", func(c *Config) { c.UplinkGateway, c.Bastion = "fe80::1", "b:22" }, []string{`LIFELINE_UPLINK_GATEWAY="fe80::1"`, "IPv4"}},
		{"gateway without bastion", func(c *Config) { c.UplinkGateway = "100.64.0.1" }, []string{"LIFELINE_BASTION: required when LIFELINE_UPLINK_GATEWAY"}},
		{"bastion without port", func(c *Config) { c.Bastion = "bastion.example" }, []string{`LIFELINE_BASTION="bastion.example"`, "host:port"}},
		{"relative dirs", func(c *Config) { c.SysctlDir, c.StateDir = "sysctl.d", "" }, []string{"LIFELINE_SYSCTL_DIR", "LIFELINE_STATE_DIR"}},
		{"every problem at once", func(c *Config) {
			c.LANInterface, c.MSS, c.UplinkGateway, c.StateDir = "", "x", "nope", "rel"
		}, []string{"LIFELINE_LAN_INTERFACE", "LIFELINE_MSS", "LIFELINE_UPLINK_GATEWAY", "LIFELINE_BASTION", "LIFELINE_STATE_DIR"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := good
			tc.change(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors naming %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestParseMSS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"1452", 1452, true}, {"pmtu", 0, true}, {"PMTU", 0, true}, {"536", 536, true}, {"65495", 65495, true},
		{"535", 0, false}, {"65496", 0, false}, {"", 0, false}, {"-1452", 0, false}, {"+1452", 0, false},
		{"1452 ", 0, false}, {"0x5ac", 0, false}, {"14520000000000000000000", 0, false}, {"pmtu1", 0, false},
	}
	for _, tc := range tests {
		got, err := ParseMSS(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseMSS(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestIfaceMatches(t *testing.T) {
	t.Parallel()
	for _, m := range []struct {
		pattern, name string
		want          bool
	}{{"zt+", "zt0", true}, {"zt+", "zt", true}, {"zt+", "z", false}, {"tun0", "tun0", true}, {"tun0", "tun01", false}} {
		if got := ifaceMatches(m.pattern, m.name); got != m.want {
			t.Errorf("ifaceMatches(%q, %q) = %v, want %v", m.pattern, m.name, got, m.want)
		}
	}
}

// Main reads the process environment, so these tests are not parallel.
func TestMainUsageAndConfigErrors(t *testing.T) {
	ctx := context.Background()
	t.Setenv("LIFELINE_LAN_INTERFACE", "eth0")
	t.Setenv("LIFELINE_SYSCTL_DIR", t.TempDir())
	t.Setenv("LIFELINE_STATE_DIR", t.TempDir())

	var out, errb bytes.Buffer
	if code := Main(ctx, []string{"--help"}, &out, &errb); code != 0 {
		t.Errorf("--help: exit %d", code)
	}
	for _, v := range []string{"LIFELINE_LAN_INTERFACE", "LIFELINE_TUNNEL_INTERFACE", "LIFELINE_MSS", "1452", "LIFELINE_UPLINK_GATEWAY", "LIFELINE_BASTION", "LIFELINE_SYSCTL_DIR", "/etc/sysctl.d", "LIFELINE_STATE_DIR", "/var/lib/lifeline"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("--help lacks %s:\n%s", v, out.String())
		}
	}

	for _, args := range [][]string{nil, {"apply", "now"}, {"frobnicate"}} {
		out.Reset()
		errb.Reset()
		if code := Main(ctx, args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage:") {
			t.Errorf("Main(%q) = %d, want 2 with usage; stderr:\n%s", args, code, errb.String())
		}
	}

	t.Setenv("LIFELINE_MSS", "huge")
	t.Setenv("LIFELINE_UPLINK_GATEWAY", "100.64.0.1")
	errb.Reset()
	if code := Main(ctx, []string{"apply"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "LIFELINE_MSS") || !strings.Contains(errb.String(), "LIFELINE_BASTION") {
		t.Errorf("apply with a bad config: exit %d, want 2 naming LIFELINE_MSS and LIFELINE_BASTION; stderr:\n%s", code, errb.String())
	}
}

func TestMainExitCodes(t *testing.T) {
	ctx := context.Background()
	t.Setenv("LIFELINE_LAN_INTERFACE", "eth0")
	t.Setenv("LIFELINE_TUNNEL_INTERFACE", "tun0")
	t.Setenv("LIFELINE_UPLINK_GATEWAY", "100.64.0.1")
	t.Setenv("LIFELINE_BASTION", "bastion.example:22")
	t.Setenv("LIFELINE_SYSCTL_DIR", t.TempDir())
	t.Setenv("LIFELINE_STATE_DIR", t.TempDir())
	w := newWorld()
	o := w.options()
	steps := []struct {
		args []string
		want int
	}{
		{[]string{"status"}, 1},
		{[]string{"apply"}, 0},
		{[]string{"status"}, 0},
		{[]string{"remove"}, 0},
		{[]string{"status"}, 1},
	}
	for _, st := range steps {
		var out, errb bytes.Buffer
		if code := run(ctx, st.args, &out, &errb, o); code != st.want {
			t.Errorf("%v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", st.args, code, st.want, out.String(), errb.String())
		}
	}
	w.fw.failApply = errTest
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"apply"}, &out, &errb, o); code != 1 || !strings.Contains(errb.String(), "install firewall table ip lifeline") {
		t.Errorf("failing apply: exit %d, want 1 naming the step\n%s", code, errb.String())
	}
}

var errTest = testError("injected failure")

type testError string

func (e testError) Error() string { return string(e) }
