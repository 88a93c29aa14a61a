package fakeec2

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

var testKey = Key{AccessKeyID: "AKIAIOSFODNN7EXAMPLE", SecretAccessKey: "wJalrXUtnFI/K7MDENG/bPxRfiCYEXAMPLEKEYab", Region: "eu-west-1"}

// signed is a StartInstances request signed by the SDK's own signer with
// creds, mutated by change after signing.
func signed(t *testing.T, url string, creds aws.Credentials, region string, change func(*http.Request, *string)) *http.Request {
	t.Helper()
	body := "Action=StartInstances&InstanceId.1=i-0123456789abcdef0&Version=2016-11-15"
	r, err := http.NewRequest(http.MethodPost, url+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	r.Header.Set("Amz-Sdk-Invocation-Id", "x  y") // spaces collapse in the canonical form
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), "ec2", region, time.Now()); err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(r, &body)
		r.Body, r.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
	}
	return r
}

// TestVerifyAgainstTheSDKSigner: what the SDK's signer signs, the fake's
// own SigV4 verifier accepts; any change to what was signed, or another
// secret, key, region or service, is refused with AWS's code.
func TestVerifyAgainstTheSDKSigner(t *testing.T) {
	t.Parallel()
	good := aws.Credentials{AccessKeyID: testKey.AccessKeyID, SecretAccessKey: testKey.SecretAccessKey}
	cases := []struct {
		name   string
		creds  aws.Credentials
		region string
		change func(*http.Request, *string)
		want   string
	}{
		{name: "good", creds: good, region: "eu-west-1", want: ""},
		{name: "wrong secret", creds: aws.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: strings.Repeat("x", 40)}, region: "eu-west-1", want: "AuthFailure"},
		{name: "unknown key", creds: aws.Credentials{AccessKeyID: "AKIAAAAAAAAAAAAAAAAA", SecretAccessKey: good.SecretAccessKey}, region: "eu-west-1", want: "AuthFailure"},
		{name: "other region", creds: good, region: "us-east-1", want: "AuthFailure"},
		{name: "body changed", creds: good, region: "eu-west-1", change: func(_ *http.Request, b *string) { *b = strings.Replace(*b, "cdef0", "cdef1", 1) }, want: "AuthFailure"},
		{name: "signed header changed", creds: good, region: "eu-west-1", change: func(r *http.Request, _ *string) { r.Header.Set("Amz-Sdk-Invocation-Id", "z") }, want: "AuthFailure"},
		{name: "unsigned header added", creds: good, region: "eu-west-1", change: func(r *http.Request, _ *string) { r.Header.Set("X-Other", "z") }, want: ""},
		{name: "no authorization", creds: good, region: "eu-west-1", change: func(r *http.Request, _ *string) { r.Header.Del("Authorization") }, want: "MissingAuthenticationToken"},
		{name: "old date", creds: good, region: "eu-west-1", change: func(r *http.Request, _ *string) {
			r.Header.Set("X-Amz-Date", time.Now().Add(-time.Hour).UTC().Format(amzDateForm))
		}, want: "RequestExpired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := New(t, testKey)
			s.AddInstance("i-0123456789abcdef0", Stopped)
			resp, err := http.DefaultClient.Do(signed(t, s.URL(), tc.creds, tc.region, tc.change))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			calls := s.Calls()
			if len(calls) != 1 {
				t.Fatalf("%d calls recorded, want 1", len(calls))
			}
			if calls[0].Answer != tc.want || calls[0].SignatureOK != (tc.want == "") {
				t.Errorf("answer %q (signature ok %v), want %q", calls[0].Answer, calls[0].SignatureOK, tc.want)
			}
			if tc.want != "" && resp.StatusCode != StatusFor(tc.want) {
				t.Errorf("HTTP %d, want %d", resp.StatusCode, StatusFor(tc.want))
			}
			if tc.want == "" && s.State("i-0123456789abcdef0") != Pending {
				t.Errorf("state %q after a start, want pending", s.State("i-0123456789abcdef0"))
			}
		})
	}
}

// TestCanonicalQuery: SigV4's ordering and encoding of query parameters.
func TestCanonicalQuery(t *testing.T) {
	t.Parallel()
	if got, want := canonicalQuery("b=2&a=x y&a=1&c=%7E~*"), "a=1&a=x%20y&b=2&c=~~%2A"; got != want {
		t.Errorf("canonicalQuery = %q, want %q", got, want)
	}
}
