package doctor

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/lifeline-dev/lifeline/agent/outage"
	"github.com/lifeline-dev/lifeline/shared/version"
)

// The checks of outage mode (LIFELINE_OUTAGE_INSTANCE set). None calls
// AWS: a start call would start the jump host, so the key's rights are
// learnt only from the agent's first real call (its log, STATUS= and the
// report to the bastion say how it went).

func (d *Doctor) outageChecks() []Check {
	if !d.cfg.Agent.Outage.Enabled() {
		return nil
	}
	return []Check{
		{Name: "outage mode", Run: d.checkOutageConfig},
		{Name: "jump start program", Run: d.checkJumpProgram},
	}
}

// checkOutageConfig reports outage mode's settings (the secret never),
// and that it needs the main internet watch.
func (d *Doctor) checkOutageConfig(context.Context) Result {
	c := d.cfg.Agent.Outage
	const what = "outage mode"
	if err := c.Validate(); err != nil {
		return Skipped(what, "not checked: its configuration is not valid (above)")
	}
	if d.cfg.Agent.Main == nil {
		return Skipped(what, "not checked: it needs the main internet watch, LIFELINE_MAIN_GATEWAY (above)")
	}
	daily := c.DailyCalls
	if daily == 0 {
		daily = outage.DefaultDailyCalls
	}
	s := fmt.Sprintf("outage mode: starts %s in %s with key %s", c.InstanceID, c.Region, c.AccessKeyID)
	if c.SessionToken != "" {
		s += " (temporary, with a session token: it expires)"
	}
	if c.Endpoint != "" {
		s += " at " + c.Endpoint
	}
	s += fmt.Sprintf(" when the main internet has been down %s and no bastion connected for %s; at most %d start calls a UTC day, counted by the running agent since it started (systemctl status lifeline-agent shows the last call); not called here, which would start the instance",
		d.cfg.Agent.Main.DownAfter, outage.DefaultNoBastionFor, daily)
	return Passed(s)
}

// checkJumpProgram finds lifeline-jumpstart as the agent will and runs
// its --version (which calls nothing).
func (d *Doctor) checkJumpProgram(ctx context.Context) Result {
	find := d.cfg.JumpProgram
	if find == nil {
		find = outage.FindProgram
	}
	path, err := find()
	if err != nil {
		return Failed("jump start program", err.Error(), "sudo apt install --reinstall lifeline-agent")
	}
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	line := clean(string(out), 120)
	if err != nil {
		return Failed("jump start program "+path, fmt.Sprintf("%s --version: %v", path, err), "sudo apt install --reinstall lifeline-agent (a program for another architecture cannot run)")
	}
	if !strings.HasPrefix(line, outage.ProgramName+" ") {
		return Failed("jump start program "+path, fmt.Sprintf("--version said %q, not %s VERSION", line, outage.ProgramName), "sudo apt install --reinstall lifeline-agent")
	}
	if v := strings.TrimPrefix(line, outage.ProgramName+" "); v != version.Version {
		return Failed("jump start program "+path, fmt.Sprintf("it is version %s, this lifeline-agent %s", v, version.Version),
			"sudo apt install --reinstall lifeline-agent, then sudo systemctl restart lifeline-agent")
	}
	return Passed("jump start program " + path + " (" + line + ")")
}
