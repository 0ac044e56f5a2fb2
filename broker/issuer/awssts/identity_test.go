package awssts

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mayflyhq/mayfly/broker/lease"
)

var stsSourceIdentity = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

func TestSourceIdentity(t *testing.T) {
	long := "spiffe://prod.example.org/ns/orders/sa/" + strings.Repeat("api", 30)
	for _, tc := range []struct {
		subject, want string
		hashed        bool
	}{
		{"spiffe://prod.example.org/ns/orders/sa/api", "prod.example.org+ns+orders+sa+api", false},
		{"spiffe://example.org/issuertest/workload", "example.org+issuertest+workload", false},
		{"user:alice@example.org", "user=alice@example.org", false},
		{"user:bob.o_neil-2@example.org", "user=bob.o_neil-2@example.org", false},
		{long, "prod.example.org+ns+orders+sa+apiapiapiapiapiapiapi", true},
		{"user:zoë@example.org", "user=zo__@example.org", true}, // two bytes of ë
		{"user:a+b@example.org", "user=a+b@example.org", true},
		{"a/b", "a+b", true},
		{"x", "x", true},
		{"", "", true},
	} {
		got := SourceIdentity(tc.subject)
		if !stsSourceIdentity.MatchString(got) {
			t.Errorf("SourceIdentity(%q) = %q: not a valid STS SourceIdentity", tc.subject, got)
		}
		if !tc.hashed && got != tc.want {
			t.Errorf("SourceIdentity(%q) = %q; want %q", tc.subject, got, tc.want)
		}
		if tc.hashed {
			if !strings.HasPrefix(got, tc.want+",") || len(got)-len(tc.want)-1 != hashChars {
				t.Errorf("SourceIdentity(%q) = %q; want %q, a comma and %d hex digits", tc.subject, got, tc.want, hashChars)
			}
		}
	}
	// Distinct subjects, distinct identities, even where the readable part
	// is the same.
	seen := map[string]string{}
	for _, s := range []string{"spiffe://a/b", "a/b", "spiffe://a+b", "user:x", "user=x", "spiffe://user=x", long, long + "x", long + "y"} {
		id := SourceIdentity(s)
		if other, dup := seen[id]; dup {
			t.Errorf("%q and %q both map to %q", s, other, id)
		}
		seen[id] = s
	}
}

func TestTagValue(t *testing.T) {
	spiffe := "spiffe://prod.example.org/ns/orders/sa/api"
	if got := tagValue(spiffe); got != spiffe {
		t.Errorf("tagValue(%q) = %q; SPIFFE IDs fit as they are", spiffe, got)
	}
	for _, s := range []string{strings.Repeat("a", 300), "user:a,b", "bad\x00byte", string([]byte{0xff, 'a'}), strings.Repeat("é", 257)} {
		got := tagValue(s)
		if utf8.RuneCountInString(got) > maxTagValue || !tagChars(got) {
			t.Errorf("tagValue(%q) = %q: not a valid tag value", s, got)
		}
		if got == s {
			t.Errorf("tagValue(%q) left it unchanged", s)
		}
	}
	if got := tagValue(strings.Repeat("é", 256)); got != strings.Repeat("é", 256) {
		t.Error("256 characters (not bytes) fit")
	}
}

func TestWebIdentityClaims(t *testing.T) {
	l := &lease.Lease{ID: "01m8k24s7g69ypvtqj1zvntz21", Subject: "spiffe://example.org/ns/a/sa/b", Entitlement: "s3-reports-read"}
	b, err := json.Marshal(WebIdentityClaims(l))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"https://aws.amazon.com/source_identity":"example.org+ns+a+sa+b",` +
		`"https://aws.amazon.com/tags":{"principal_tags":{"mayfly:entitlement":["s3-reports-read"],` +
		`"mayfly:lease":["01m8k24s7g69ypvtqj1zvntz21"],"mayfly:subject":["spiffe://example.org/ns/a/sa/b"]}}}`
	if string(b) != want {
		t.Errorf("WebIdentityClaims =\n%s\nwant\n%s", b, want)
	}
}

func TestScrub(t *testing.T) {
	jwtLike := "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlIn0.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl"
	secret := "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	in := "Not authorized\nfor token " + jwtLike + " key " + secret + " role arn:aws:iam::123456789012:role/x"
	got := scrub(in)
	if strings.Contains(got, jwtLike[:20]) || strings.Contains(got, "K7MDENG") || strings.Contains(got, "\n") {
		t.Errorf("scrub left a secret or a newline: %q", got)
	}
	if !strings.Contains(got, "Not authorized for token [redacted] key [redacted] role arn:aws:iam::123456789012:role/x") {
		t.Errorf("scrub = %q", got)
	}
	if got := scrub(strings.Repeat("a b ", 200)); len(got) > 304 {
		t.Errorf("scrub kept %d bytes", len(got))
	}
}
