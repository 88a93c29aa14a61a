// Package sshalgo holds the one list of SSH algorithms lifeline speaks, on both
// sides of the tunnel. Only modern algorithms are listed: no SHA-1, no CBC, no
// ssh-rsa (SHA-1) signatures, no NIST-curve key exchange. ssh-audit must find
// nothing to warn about in what these lists produce.
package sshalgo

import "golang.org/x/crypto/ssh"

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
