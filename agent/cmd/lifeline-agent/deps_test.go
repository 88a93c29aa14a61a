package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentLinksNoHTTP: the long-running agent links neither speedtest-go
// nor net/http nor TLS (their code and package state cost the idle agent
// about 2.5 MB of RSS, BenchmarkIdleRSS) nor the AWS SDK: each link check
// runs in the link check program, lifeline-linkcheck, and each start of
// the jump host in lifeline-jumpstart, which do link them (so the listing
// is not vacuous).
func TestAgentLinksNoHTTP(t *testing.T) {
	t.Parallel()
	deps := func(pkg string) map[string]bool {
		t.Helper()
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		m := map[string]bool{}
		for _, p := range strings.Fields(string(out)) {
			m[p] = true
		}
		return m
	}
	agent, program := deps("."), deps("../lifeline-linkcheck")
	for _, p := range []string{"github.com/showwin/speedtest-go/speedtest", "net/http", "crypto/tls", "github.com/lifeline-dev/lifeline/agent/linkcheck/measure"} {
		if agent[p] {
			t.Errorf("lifeline-agent links %s: it belongs in lifeline-linkcheck only", p)
		}
		if !program[p] {
			t.Errorf("lifeline-linkcheck does not link %s: is the measurement still there?", p)
		}
	}
	if !agent["github.com/lifeline-dev/lifeline/agent/linkcheck"] {
		t.Error("lifeline-agent does not link agent/linkcheck: the listing looks wrong")
	}
	jump := deps("../lifeline-jumpstart")
	for _, p := range []string{"github.com/aws/aws-sdk-go-v2/service/ec2", "github.com/aws/aws-sdk-go-v2/aws", "github.com/aws/smithy-go", "net/http", "crypto/tls"} {
		if !jump[p] {
			t.Errorf("lifeline-jumpstart does not link %s: is the EC2 call still there?", p)
		}
	}
	for p := range agent {
		if strings.HasPrefix(p, "github.com/aws/aws-sdk-go-v2") || strings.HasPrefix(p, "github.com/aws/smithy-go") {
			t.Errorf("lifeline-agent links %s: the AWS SDK belongs in lifeline-jumpstart only", p)
		}
	}
	if !agent["github.com/lifeline-dev/lifeline/agent/outage"] {
		t.Error("lifeline-agent does not link agent/outage: the listing looks wrong")
	}
}
