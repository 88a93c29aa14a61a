package authz

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// option is one authorized_keys option as written: a name (folded to lower
// case, as sshd treats option names) and, for name="value", the unquoted
// value.
type option struct {
	name     string
	value    string
	hasValue bool
}

// keyLine is one parsed authorized_keys line.
type keyLine struct {
	options []option
	key     ssh.PublicKey
	comment string
}

// keyTypes are the key types lifeline accepts in its files.
var keyTypes = map[string]bool{
	ssh.KeyAlgoED25519:    true,
	ssh.KeyAlgoSKED25519:  true,
	ssh.KeyAlgoECDSA256:   true,
	ssh.KeyAlgoSKECDSA256: true,
	ssh.KeyAlgoECDSA384:   true,
	ssh.KeyAlgoECDSA521:   true,
	ssh.KeyAlgoRSA:        true,
}

// refusedTypes are key types that are recognised but refused, with why.
var refusedTypes = map[string]string{
	ssh.InsecureKeyAlgoDSA:     "DSA keys are refused (weak and removed from OpenSSH)",
	ssh.CertAlgoED25519v01:     "a certificate cannot be listed: list its CA with cert-authority",
	ssh.CertAlgoSKED25519v01:   "a certificate cannot be listed: list its CA with cert-authority",
	ssh.CertAlgoECDSA256v01:    "a certificate cannot be listed: list its CA with cert-authority",
	ssh.CertAlgoSKECDSA256v01:  "a certificate cannot be listed: list its CA with cert-authority",
	ssh.CertAlgoECDSA384v01:    "a certificate cannot be listed: list its CA with cert-authority",
	ssh.CertAlgoECDSA521v01:    "a certificate cannot be listed: list its CA with cert-authority",
	ssh.CertAlgoRSAv01:         "a certificate cannot be listed: list its CA with cert-authority",
	ssh.InsecureCertAlgoDSAv01: "a certificate cannot be listed: list its CA with cert-authority",
}

// minRSABits is the smallest RSA modulus accepted.
const minRSABits = 2048

// parseLine parses one non-blank, non-comment authorized_keys line:
// [options] keytype base64 [comment]. The comment may contain spaces.
func parseLine(line string) (keyLine, error) {
	line = strings.Trim(line, " \t\r")
	var kl keyLine
	first := line
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		first = line[:i]
	}
	rest := line
	if !keyTypes[first] && refusedTypes[first] == "" {
		opts, r, err := parseOptions(line)
		if err != nil {
			return keyLine{}, err
		}
		kl.options = opts
		rest = strings.TrimLeft(r, " \t")
		if rest == "" {
			return keyLine{}, errors.New("no key on the line (want [options] keytype base64 [comment])")
		}
	}
	typ, rest := cutField(rest)
	b64, rest := cutField(rest)
	kl.comment = strings.Trim(rest, " \t")
	if why := refusedTypes[typ]; why != "" {
		return keyLine{}, errors.New(why)
	}
	if !keyTypes[typ] {
		return keyLine{}, fmt.Errorf("unknown key type %.40q (want [options] keytype base64 [comment])", typ)
	}
	if b64 == "" {
		return keyLine{}, fmt.Errorf("%s key: missing base64 key data", typ)
	}
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return keyLine{}, fmt.Errorf("%s key: bad base64: %w", typ, err)
	}
	key, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return keyLine{}, fmt.Errorf("%s key: %w", typ, err)
	}
	if key.Type() != typ {
		return keyLine{}, fmt.Errorf("key type %s does not match the key data (%s)", typ, key.Type())
	}
	if err := checkKeyStrength(key); err != nil {
		return keyLine{}, err
	}
	kl.key = key
	return kl, nil
}

// checkKeyStrength refuses RSA keys below minRSABits.
func checkKeyStrength(key ssh.PublicKey) error {
	if key.Type() != ssh.KeyAlgoRSA {
		return nil
	}
	ck, ok := key.(ssh.CryptoPublicKey)
	if !ok {
		return errors.New("rsa key: cannot read its size")
	}
	type sizer interface{ Size() int }
	s, ok := ck.CryptoPublicKey().(sizer)
	if !ok {
		return errors.New("rsa key: cannot read its size")
	}
	if bits := s.Size() * 8; bits < minRSABits {
		return fmt.Errorf("rsa key of %d bits: at least %d are required", bits, minRSABits)
	}
	return nil
}

func cutField(s string) (field, rest string) {
	s = strings.TrimLeft(s, " \t")
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i], s[i:]
	}
	return s, ""
}

// parseOptions parses the options field at the start of s the way sshd does
// (auth-options.c): comma-separated name or name="value" items, no spaces
// outside quotes, \" for a quote inside a value. It returns the options and
// what follows the field.
func parseOptions(s string) ([]option, string, error) {
	var opts []option
	i := 0
	for {
		start := i
		for i < len(s) && isOptionNameByte(s[i]) {
			i++
		}
		if i == start {
			if len(opts) == 0 {
				return nil, "", fmt.Errorf("unknown key type or malformed options at %.40q", s)
			}
			return nil, "", fmt.Errorf("malformed options: expected an option name at %.40q", s[i:])
		}
		o := option{name: strings.ToLower(s[start:i])}
		if i < len(s) && s[i] == '=' {
			i++
			if i >= len(s) || s[i] != '"' {
				return nil, "", fmt.Errorf("option %s: the value must be in double quotes", o.name)
			}
			i++
			var b strings.Builder
			for i < len(s) && s[i] != '"' {
				if s[i] == '\\' && i+1 < len(s) && s[i+1] == '"' {
					i++
				}
				b.WriteByte(s[i])
				i++
			}
			if i >= len(s) {
				return nil, "", fmt.Errorf("option %s: missing closing quote", o.name)
			}
			i++
			o.value, o.hasValue = b.String(), true
		}
		opts = append(opts, o)
		if i >= len(s) || s[i] == ' ' || s[i] == '\t' {
			return opts, s[i:], nil
		}
		if s[i] != ',' {
			return nil, "", fmt.Errorf("option %s: unexpected %q after it (options are separated by commas, without spaces)", o.name, s[i])
		}
		i++
		if i >= len(s) || s[i] == ' ' || s[i] == '\t' {
			return nil, "", errors.New("malformed options: a comma ends the options field")
		}
	}
}

func isOptionNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '@' || c == '.'
}
