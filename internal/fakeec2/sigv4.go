package fakeec2

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Key is the credential the fake accepts, and the region it serves.
type Key struct {
	AccessKeyID, SecretAccessKey string
	// SessionToken, when set, must come as X-Amz-Security-Token, signed.
	SessionToken string
	Region       string
}

const (
	sigAlgorithm = "AWS4-HMAC-SHA256"
	amzDateForm  = "20060102T150405Z"
	service      = "ec2"
)

// authError is a refused signature: Code and Message as AWS would answer.
type authError struct{ code, msg string }

func (e *authError) Error() string { return e.code + ": " + e.msg }

// verify checks r's Signature Version 4 (header form) against key, body
// being r's body, at now: it recomputes the canonical request, the string
// to sign and the signature from the secret, as AWS does, and compares.
// It returns the access key id the request named.
func verify(r *http.Request, body []byte, key Key, now time.Time) (string, error) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "", &authError{"MissingAuthenticationToken", "Request is missing Authentication Token"}
	}
	alg, rest, _ := strings.Cut(auth, " ")
	if alg != sigAlgorithm {
		return "", &authError{"IncompleteSignature", "unsupported signature algorithm " + alg}
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return "", &authError{"IncompleteSignature", "malformed Authorization header"}
		}
		fields[k] = v
	}
	cred, signed, sig := fields["Credential"], fields["SignedHeaders"], fields["Signature"]
	if cred == "" || signed == "" || sig == "" {
		return "", &authError{"IncompleteSignature", "Authorization header lacks Credential, SignedHeaders or Signature"}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 {
		return "", &authError{"IncompleteSignature", "malformed credential scope " + cred}
	}
	keyID, date, region, svc, term := scope[0], scope[1], scope[2], scope[3], scope[4]
	if keyID != key.AccessKeyID {
		return keyID, &authError{"AuthFailure", "AWS was not able to validate the provided access credentials"}
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateForm, amzDate)
	if err != nil {
		return keyID, &authError{"IncompleteSignature", "missing or malformed X-Amz-Date"}
	}
	if d := now.Sub(t); d > 15*time.Minute || d < -15*time.Minute {
		return keyID, &authError{"RequestExpired", fmt.Sprintf("Request has expired: signed at %s, now %s", amzDate, now.UTC().Format(amzDateForm))}
	}
	if date != amzDate[:8] || region != key.Region || svc != service || term != "aws4_request" {
		return keyID, &authError{"AuthFailure", fmt.Sprintf("credential scope %s/%s/%s/%s does not match %s/%s/%s/aws4_request", date, region, svc, term, amzDate[:8], key.Region, service)}
	}
	names := strings.Split(signed, ";")
	if !sort.StringsAreSorted(names) || !contains(names, "host") || !contains(names, "x-amz-date") {
		return keyID, &authError{"IncompleteSignature", "SignedHeaders must be sorted and include host and x-amz-date: " + signed}
	}
	if key.SessionToken != "" && (r.Header.Get("X-Amz-Security-Token") != key.SessionToken || !contains(names, "x-amz-security-token")) {
		return keyID, &authError{"AuthFailure", "missing, wrong or unsigned security token"}
	}
	sum := sha256.Sum256(body)
	payload := hex.EncodeToString(sum[:])
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != payload {
		return keyID, &authError{"AuthFailure", "X-Amz-Content-Sha256 does not match the body"}
	}
	creq := canonicalRequest(r, names, payload)
	h := sha256.Sum256([]byte(creq))
	sts := strings.Join([]string{sigAlgorithm, amzDate, strings.Join(scope[1:], "/"), hex.EncodeToString(h[:])}, "\n")
	want := hex.EncodeToString(hmacSHA256(signingKey(key.SecretAccessKey, date, region), sts))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return keyID, &authError{"AuthFailure", "AWS was not able to validate the provided access credentials"}
	}
	return keyID, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// canonicalRequest is Signature Version 4's canonical request of r.
func canonicalRequest(r *http.Request, signed []string, payload string) string {
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	var hdrs strings.Builder
	for _, name := range signed {
		var v string
		switch name {
		case "host":
			v = r.Host
		case "content-length":
			v = r.Header.Get("Content-Length")
			if v == "" {
				v = strconv.FormatInt(r.ContentLength, 10)
			}
		default:
			vals := r.Header.Values(name)
			for i, x := range vals {
				vals[i] = strings.Join(strings.Fields(x), " ")
			}
			v = strings.Join(vals, ",")
		}
		hdrs.WriteString(name + ":" + v + "\n")
	}
	return strings.Join([]string{r.Method, path, canonicalQuery(r.URL.RawQuery), hdrs.String(), strings.Join(signed, ";"), payload}, "\n")
}

// canonicalQuery sorts the query's parameters by name, then value, each
// URI-encoded as SigV4 wants (RFC 3986 unreserved characters kept).
func canonicalQuery(raw string) string {
	if raw == "" {
		return ""
	}
	vals, _ := url.ParseQuery(raw)
	var pairs []string
	for k, vs := range vals {
		for _, v := range vs {
			pairs = append(pairs, uriEncode(k)+"="+uriEncode(v))
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// signingKey derives SigV4's key from the secret: date, region, service,
// "aws4_request".
func signingKey(secret, date, region string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
