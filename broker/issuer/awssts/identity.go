package awssts

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// Claim names under which AssumeRoleWithWebIdentity reads a session's
// source identity and tags from the web identity token.
const (
	ClaimSourceIdentity = "https://aws.amazon.com/source_identity"
	ClaimTags           = "https://aws.amazon.com/tags"
)

const (
	maxSourceIdentity = 64
	hashChars         = 12 // hex of SHA-256: 48 bits tell subjects apart
)

// SourceIdentity maps a lease subject (a Principal ID) to an STS
// SourceIdentity: 2 to 64 characters of [A-Za-z0-9_+=,.@-].
//
//   - A SPIFFE ID loses its spiffe:// scheme and its slashes become '+':
//     spiffe://prod.example.org/ns/orders/sa/api → prod.example.org+ns+orders+sa+api.
//     (SPIFFE IDs use only letters, digits, '.', '-' and '_' besides, so
//     nothing else changes.)
//   - A ':' becomes '=': user:alice@example.org → user=alice@example.org.
//   - When that is not enough (a subject over 64 characters, one with
//     other characters, which become '_', one that already holds '+' or
//     '=', or a '/' outside a SPIFFE ID) the result is its first 51
//     characters, ',' and 12 hex digits of the SHA-256 of the whole
//     subject.
//
// So distinct subjects never share a SourceIdentity (short of a 48-bit
// hash collision), the common ones stay readable, and a trust policy can
// match them with sts:SourceIdentity, prefixes included
// ("prod.example.org+ns+orders+*").
func SourceIdentity(subject string) string {
	s, spiffe := strings.CutPrefix(subject, "spiffe://")
	var b strings.Builder
	// '+' and '=' stand for '/' and ':'; a subject that already holds
	// them, or a '/' outside a SPIFFE ID, would be ambiguous.
	lossy := strings.ContainsAny(s, "+=") || (!spiffe && strings.Contains(s, "/"))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '/':
			b.WriteByte('+')
		case c == ':':
			b.WriteByte('=')
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("_+=,.@-", c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteByte('_')
			lossy = true
		}
	}
	out := b.String()
	if !lossy && len(out) >= 2 && len(out) <= maxSourceIdentity {
		return out
	}
	keep := maxSourceIdentity - 1 - hashChars
	if len(out) > keep {
		out = out[:keep]
	}
	return out + "," + shortHash(subject)
}

// tagValue fits s into a session tag value: up to 256 characters of
// letters, digits, spaces and _.:/=+-@ (SPIFFE IDs and user:… subjects
// fit as they are). Anything else becomes '_', and a value that changed
// or was too long keeps its first 243 characters followed by '+' and 12
// hex digits of its SHA-256.
func tagValue(s string) string {
	var b strings.Builder
	lossy := !utf8.ValidString(s)
	n := 0
	for _, r := range s {
		n++
		if tagRune(r) && r != utf8.RuneError {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
			lossy = true
		}
	}
	out := b.String()
	if !lossy && n <= maxTagValue {
		return out
	}
	keep := maxTagValue - 1 - hashChars
	if utf8.RuneCountInString(out) > keep {
		out = string([]rune(out)[:keep])
	}
	return out + "+" + shortHash(s)
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:hashChars]
}

// sessionTags are the broker's session tags for l.
func sessionTags(l *lease.Lease) map[string]string {
	return map[string]string{
		TagLease:       tagValue(l.ID),
		TagEntitlement: tagValue(l.Entitlement),
		TagSubject:     tagValue(l.Subject),
	}
}

// WebIdentityClaims are the claims a web identity token for l should carry
// so that AssumeRoleWithWebIdentity sets what AssumeRole sets as
// parameters: the source identity (SourceIdentity(l.Subject)) and the
// session tags mayfly:lease, mayfly:entitlement and mayfly:subject, in the
// shape AWS reads:
//
//	"https://aws.amazon.com/source_identity": "prod.example.org+ns+orders+sa+api",
//	"https://aws.amazon.com/tags": {"principal_tags": {"mayfly:lease": ["01j…"], …}}
//
// A TokenSource whose JWT issuer can add claims adds these; the role's
// trust policy must then allow sts:TagSession and sts:SetSourceIdentity.
func WebIdentityClaims(l *lease.Lease) map[string]any {
	tags := map[string][]string{}
	for k, v := range sessionTags(l) {
		tags[k] = []string{v}
	}
	return map[string]any{
		ClaimSourceIdentity: SourceIdentity(l.Subject),
		ClaimTags:           map[string]any{"principal_tags": tags},
	}
}

// scrub prepares text from AWS for a log line: control characters go, and
// any run of 32 or more characters that could be a key, a token or a
// signature (base64, base64url, JWT) is cut out, so that a backend that
// echoes what it was sent cannot put a secret into the log. At most 300
// bytes are kept.
func scrub(s string) string {
	const maxLen = 300
	var b strings.Builder
	run := 0
	flush := func(tok string) {
		if run >= 32 {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(tok)
		}
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		var c byte
		if i < len(s) {
			c = s[i]
		}
		if i < len(s) && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("+/=_-.%", c) >= 0) {
			if run == 0 {
				start = i
			}
			run++
			continue
		}
		if run > 0 {
			flush(s[start:i])
			run = 0
		}
		if i < len(s) {
			if c < 0x20 || c == 0x7f {
				b.WriteByte(' ')
			} else {
				b.WriteByte(c)
			}
		}
	}
	out := b.String()
	if len(out) > maxLen {
		out = strings.ToValidUTF8(out[:maxLen], "") + "…"
	}
	return out
}
