package authz

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// benchPolicy loads n operator keys (each with from= and permitopen=), n/10
// agent keys and one CA, and returns the policy and some of its keys.
func benchPolicy(b *testing.B, n int) (p *Policy, op, agent ssh.PublicKey, cert *ssh.Certificate, agents, operators string) {
	b.Helper()
	var ab, ob strings.Builder
	for i := range n {
		s := newSigner(b, "ed25519")
		fmt.Fprintf(&ob, `from="10.0.0.0/8,127.0.0.0/8,!10.9.9.9",permitopen="pi%d:22" %s op%d`+"\n", i, keyText(s.PublicKey()), i)
		if i == n/2 {
			op = s.PublicKey()
		}
	}
	for i := range n / 10 {
		s := newSigner(b, "ed25519")
		fmt.Fprintf(&ab, `restrict,permitlisten="site%d:22" %s agent%d`+"\n", i, keyText(s.PublicKey()), i)
		if i == n/20 {
			agent = s.PublicKey()
		}
	}
	ca := newSigner(b, "ed25519")
	fmt.Fprintf(&ob, `cert-authority,principals="ops" %s CA`+"\n", keyText(ca.PublicKey()))
	cert = signCert(b, ca, newSigner(b, "ed25519").PublicKey(), certOpts{principals: []string{"ops"}})
	a, o := writeFiles(b, ab.String(), ob.String())
	p, err := load(a, o, time.UTC)
	if err != nil {
		b.Fatal(err)
	}
	return p, op, agent, cert, a, o
}

// BenchmarkAuthenticate measures one login decision with 1,000 operator
// keys and 100 agent keys loaded (it runs on every login attempt), and with
// 10 keys for comparison: lookups are by fingerprint, so the two should
// cost the same.
func BenchmarkAuthenticate(b *testing.B) {
	for _, n := range []int{10, 1000} {
		p, op, agent, cert, _, _ := benchPolicy(b, n)
		stranger := newSigner(b, "ed25519").PublicKey()
		local := netip.MustParseAddr("127.0.0.1")
		for _, bc := range []struct {
			name string
			key  ssh.PublicKey
			ok   bool
		}{
			{"operator", op, true},
			{"agent", agent, true},
			{"unknown", stranger, false},
			{"certificate", cert, true},
		} {
			b.Run(fmt.Sprintf("keys=%d/%s", n, bc.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_, err := p.Authenticate("ops", local, bc.key, testNow)
					if (err == nil) != bc.ok {
						b.Fatalf("Authenticate: %v", err)
					}
				}
			})
		}
	}
}

// BenchmarkLoad measures a (re)load of files holding 1,000 operator keys
// and 100 agent keys.
func BenchmarkLoad(b *testing.B) {
	_, _, _, _, a, o := benchPolicy(b, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := load(a, o, time.Local); err != nil {
			b.Fatal(err)
		}
	}
}
