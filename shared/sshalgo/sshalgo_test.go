package sshalgo

import (
	"slices"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestAgentCiphers: the agent's first choice follows its CPU, both orders
// hold the whole audited list and nothing else, and what the bastion
// offers agents is inside it.
func TestAgentCiphers(t *testing.T) {
	if got := AgentCiphers(false)[0]; got != ssh.CipherChaCha20Poly1305 {
		t.Errorf("without AES instructions the agent prefers %s, want chacha20-poly1305", got)
	}
	if got := AgentCiphers(true)[0]; got != ssh.CipherAES128GCM {
		t.Errorf("with AES instructions the agent prefers %s, want aes128-gcm", got)
	}
	for _, aes := range []bool{false, true} {
		got := slices.Clone(AgentCiphers(aes))
		want := slices.Clone(Ciphers())
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("AgentCiphers(%v) = %v, want the ciphers of Ciphers() %v", aes, AgentCiphers(aes), Ciphers())
		}
	}
	for _, c := range BastionAgentCiphers() {
		if !slices.Contains(Ciphers(), c) {
			t.Errorf("the bastion offers agents %s, not in Ciphers()", c)
		}
	}
	// The first choice of either CPU is offered to agents.
	for _, aes := range []bool{false, true} {
		if !slices.Contains(BastionAgentCiphers(), AgentCiphers(aes)[0]) {
			t.Errorf("the bastion does not offer the agent's first choice %s", AgentCiphers(aes)[0])
		}
	}
	t.Logf("this CPU has AES-GCM instructions: %v", AESHardware())
}
