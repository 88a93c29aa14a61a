// Package sshalgo holds the one list of SSH algorithms lifeline speaks, on both
// sides of the tunnel. Only modern algorithms are listed: no SHA-1, no CBC, no
// ssh-rsa (SHA-1) signatures, no NIST-curve key exchange. ssh-audit must find
// nothing to warn about in what these lists produce.
package sshalgo

import (
	"slices"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"
)

// KeyExchanges in order of preference. mlkem768x25519-sha256 is post-quantum
// hybrid; curve25519-sha256 is what OpenSSH before 9.9 negotiates.
func KeyExchanges() []string {
	return []string{
		ssh.KeyExchangeMLKEM768X25519,
		ssh.KeyExchangeCurve25519,
	}
}

// Ciphers: AEAD first, then CTR (only ever paired with an ETM MAC).
func Ciphers() []string {
	return []string{
		ssh.CipherChaCha20Poly1305,
		ssh.CipherAES256GCM,
		ssh.CipherAES128GCM,
		ssh.CipherAES256CTR,
		ssh.CipherAES192CTR,
		ssh.CipherAES128CTR,
	}
}

// BastionCiphers is what the jump host offers clients known to speak
// AES-GCM (OpenSSH, PuTTY 0.76+, asyncssh, Go): AES-GCM only. The client's
// preference decides the cipher, and stock OpenSSH clients put
// chacha20-poly1305 first, which Go implements without assembly on amd64:
// measured on loopback (make bench), relaying with chacha20 ran at 0.78x
// of stock sshd, with AES-GCM at 1.07x. Every cloud CPU the bastion runs on
// (x86 AES-NI, Graviton ARMv8 crypto) accelerates AES-GCM; the Pi's agent
// pays for software AES (a Pi 3/4 has no AES instructions), expected to
// stay above a cellular uplink's speed but not measured on a Pi.
func BastionCiphers() []string {
	return []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM}
}

// AgentCiphers is the agent's order of preference for its own tunnel,
// from what the bastion offers it (BastionAgentCiphers): AES-GCM first on
// a CPU with AES and carry-less multiply instructions (x86 AES-NI, ARMv8
// crypto: a Pi 5), chacha20-poly1305 first on one without (a Pi Zero to
// Pi 4), where AES runs in constant-time software, several times slower
// than chacha20, which is built for such CPUs (RFC 7539's rationale; not
// measured on a Pi). The rest of Ciphers follows, for a stock sshd.
func AgentCiphers(aesHardware bool) []string {
	first := []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305}
	if !aesHardware {
		first = []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES128GCM, ssh.CipherAES256GCM}
	}
	out := first
	for _, c := range Ciphers() {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// AESHardware reports whether this CPU runs AES-GCM in hardware, judged
// as crypto/tls judges it for its own cipher order.
func AESHardware() bool {
	switch {
	case cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ:
		return true
	case cpu.ARM64.HasAES && cpu.ARM64.HasPMULL:
		return true
	case cpu.ARM.HasAES && cpu.ARM.HasPMULL:
		return true
	case cpu.S390X.HasAES && cpu.S390X.HasAESGCM:
		return true
	}
	return false
}

// BastionAgentCiphers is what the jump host offers lifeline agents:
// AES-GCM and chacha20-poly1305, so that each agent picks the one its CPU
// runs fast (AgentCiphers). A tunnel carries at most a cellular uplink's
// worth of traffic, which the bastion relays in either cipher easily.
func BastionAgentCiphers() []string {
	return []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305}
}

// CompatCiphers is what the jump host offers clients not known to speak
// AES-GCM (Dropbear has chacha20-poly1305 and aes-ctr, Paramiko 2.12
// aes-ctr only): every cipher of Ciphers. CTR is only ever paired with an
// ETM MAC (MACs lists nothing else).
func CompatCiphers() []string {
	return Ciphers()
}

// MACs: encrypt-then-MAC SHA-2 only.
func MACs() []string {
	return []string{
		ssh.HMACSHA512ETM,
		ssh.HMACSHA256ETM,
	}
}

// PublicKeyAuthAlgorithms are the signature algorithms accepted for user
// authentication (ed25519, ECDSA, RSA with SHA-2; never ssh-rsa/SHA-1).
func PublicKeyAuthAlgorithms() []string {
	return []string{
		ssh.KeyAlgoED25519,
		ssh.KeyAlgoSKED25519,
		ssh.KeyAlgoECDSA256,
		ssh.KeyAlgoSKECDSA256,
		ssh.KeyAlgoECDSA384,
		ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoRSASHA512,
		ssh.KeyAlgoRSASHA256,
	}
}

// HostKeyAlgorithms a client accepts from a server. The bastion's host key
// is ed25519; the others let the agent also talk to a stock sshd.
func HostKeyAlgorithms() []string {
	return []string{
		ssh.KeyAlgoED25519,
		ssh.KeyAlgoECDSA256,
		ssh.KeyAlgoECDSA384,
		ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoRSASHA512,
		ssh.KeyAlgoRSASHA256,
	}
}

// Config returns the shared part of a client or server configuration.
func Config() ssh.Config {
	return ssh.Config{
		KeyExchanges: KeyExchanges(),
		Ciphers:      Ciphers(),
		MACs:         MACs(),
	}
}
