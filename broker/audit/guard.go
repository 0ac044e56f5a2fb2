package audit

import (
	"encoding/base64"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on what one event may hold. An audit event names things and says
// why; it is not a place for payloads.
const (
	// MaxValueLen is the longest string one field of an event may hold.
	MaxValueLen = 4096
	// MaxFields is the most entries Event.Fields may have.
	MaxFields = 64
	// MaxReasons is the most codes Event.Reasons may have.
	MaxReasons = 32
	// MaxEventSize caps the canonical encoding of one event.
	MaxEventSize = 64 << 10
)

var (
	// typeRE: dotted lower-case words.
	typeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	// fieldKeyRE: keys of Event.Fields.
	fieldKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

	// assignmentRE: "password=...", "token: ...", "Authorization: Bearer ...".
	assignmentRE = regexp.MustCompile(`(?i)(passw(or)?d|\bpwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|authorization)["']?\s*[:=]\s*\S`)
	// bearerRE: an HTTP bearer credential.
	bearerRE = regexp.MustCompile(`(?i)\bbearer\s+[A-Za-z0-9._~+/-]{8,}`)
	// urlUserinfoRE: a URL with a password in it.
	urlUserinfoRE = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@`)
	// tokenPrefixRE: well-known token formats (Vault, GitHub, Slack,
	// Stripe, OpenAI, Google API keys).
	tokenPrefixRE = regexp.MustCompile(`\b(hv[sbr]\.[A-Za-z0-9_-]{20,}|s\.[A-Za-z0-9]{24}\b|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|[sr]k_(live|test)_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{20,}|AIza[A-Za-z0-9_-]{35})`)
	// dottedRE: three or more dot-separated base64url segments (JWS, JWE).
	dottedRE = regexp.MustCompile(`[A-Za-z0-9_=-]{2,}(\.[A-Za-z0-9_=-]*){2,}`)
)

// LooksLikeSecret reports whether s looks like a secret, and which shape:
// a PEM block or private key, a JWT/JWS/JWE, a "password=" style
// assignment, a bearer credential, a URL with a password, a well-known
// token format (Vault, GitHub, Slack, ...), or a long opaque run of
// base64 characters that mixes upper case, lower case and digits the way
// random bytes do. Hex digests, UUIDs, lease ids, SPIFFE ids and host
// names do not match.
//
// It is a guard, not the protection: events have no field meant for a
// credential, and the constructors never read one. The guard catches a
// secret that reaches a free-text field by mistake.
func LooksLikeSecret(s string) (shape string, ok bool) {
	if len(s) < 8 {
		return "", false
	}
	// Cheap tests first: the regular expressions run only on values that
	// hold what they look for.
	lower := lowerASCII(s)
	switch {
	case strings.Contains(s, "-----BEGIN") || strings.Contains(s, "PRIVATE KEY"):
		return "a PEM block", true
	case strings.Count(s, ".") >= 2 && hasJWT(s):
		return "a JWT", true
	case strings.ContainsAny(s, ":=") && containsAny(lower, assignmentWords) && assignmentRE.MatchString(s):
		return "a secret assignment", true
	case strings.Contains(lower, "bearer") && bearerRE.MatchString(s):
		return "a bearer credential", true
	case strings.Contains(s, "://") && strings.Contains(s, "@") && urlUserinfoRE.MatchString(s):
		return "a URL with a password", true
	case containsAny(s, tokenPrefixes) && tokenPrefixRE.MatchString(s):
		return "an API token", true
	case hasOpaque(s):
		return "an opaque token", true
	}
	return "", false
}

// assignmentWords prefilter assignmentRE; tokenPrefixes tokenPrefixRE.
var (
	assignmentWords = []string{"passw", "pwd", "secret", "token", "key", "credential", "authorization"}
	tokenPrefixes   = []string{"hv", "s.", "gh", "github_pat_", "xox", "k_live_", "k_test_", "sk-", "AIza"}
)

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// lowerASCII lower-cases ASCII letters, without allocating when there are
// none to change.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// hasJWT finds three or more dot-separated base64url segments of which the
// first decodes to a JSON object (a JOSE header), or that are all long
// and random-looking (a JWS with an unusual header encoding).
func hasJWT(s string) bool {
	for _, m := range dottedRE.FindAllString(s, -1) {
		parts := strings.Split(m, ".")
		head := strings.TrimRight(parts[0], "=")
		if b, err := base64.RawURLEncoding.DecodeString(head); err == nil && len(b) > 0 && b[0] == '{' {
			return true
		}
		long := 0
		for _, p := range parts {
			if len(p) >= 16 && randomLooking(p) {
				long++
			}
		}
		if long >= 3 {
			return true
		}
	}
	return false
}

// hasOpaque finds a run of 20 or more base64 characters that looks random
// (a generated password, an AWS secret key, an opaque access token).
func hasOpaque(s string) bool {
	start := -1
	for i := 0; i <= len(s); i++ {
		if i < len(s) && isBase64Char(s[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 && i-start >= 20 && randomLooking(s[start:i]) {
			return true
		}
		start = -1
	}
	return false
}

// isBase64Char reports whether c is in the standard or URL base64
// alphabet (padding included).
func isBase64Char(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
		c == '+' || c == '/' || c == '=' || c == '_' || c == '-'
}

// randomLooking reports whether s mixes upper case, lower case and digits,
// switches between these classes often (symbols are skipped: a path or a
// hyphenated name does not count as switching), and has high character
// entropy, as base64 of random bytes does and words, camel-case names,
// paths and hex digests do not.
func randomLooking(s string) bool {
	var upper, lower, digit int
	var counts [256]int
	switches, alnum, prev := 0, 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		counts[c]++
		class := 0
		switch {
		case c >= 'A' && c <= 'Z':
			upper, class = upper+1, 1
		case c >= 'a' && c <= 'z':
			lower, class = lower+1, 2
		case c >= '0' && c <= '9':
			digit, class = digit+1, 3
		default:
			continue
		}
		if prev != 0 && class != prev {
			switches++
		}
		prev = class
		alnum++
	}
	if upper == 0 || lower == 0 || digit == 0 || alnum < 16 {
		return false
	}
	// Random base64 switches class about 62% of the time. Short runs need
	// more evidence; long runs may have structure (DER) but stay far from
	// words: camel case has few capitals.
	minSwitch := 0.4
	if alnum >= 32 && upper*5 >= alnum && lower*5 >= alnum {
		minSwitch = 0.3
	}
	if float64(switches) < minSwitch*float64(alnum-1) {
		return false
	}
	var h float64
	for _, n := range counts {
		if n > 0 {
			p := float64(n) / float64(len(s))
			h -= p * math.Log2(p)
		}
	}
	return h >= 3.5
}

// validateEvent checks what a caller gave Append: shape, size and the
// secret guard on every free-text field.
func validateEvent(e *Event) error {
	switch {
	case e.Type == "":
		return fmt.Errorf("%w: Type is required", ErrInvalid)
	case !typeRE.MatchString(string(e.Type)) || len(e.Type) > 64:
		return fmt.Errorf("%w: Type %q is not dotted lower-case words", ErrInvalid, e.Type)
	case strings.HasPrefix(string(e.Type), "audit."):
		return fmt.Errorf("%w: Type %s is written by the log itself", ErrInvalid, e.Type)
	case e.Seq != 0 || e.Prev != "" || e.Hash != "" || e.Checkpoint != nil:
		return fmt.Errorf("%w: Seq, Prev, Hash and Checkpoint are set by the log", ErrInvalid)
	case len(e.Fields) > MaxFields:
		return fmt.Errorf("%w: %d Fields, at most %d", ErrInvalid, len(e.Fields), MaxFields)
	case len(e.Reasons) > MaxReasons:
		return fmt.Errorf("%w: %d Reasons, at most %d", ErrInvalid, len(e.Reasons), MaxReasons)
	case !e.Time.IsZero() && (e.Time.Year() < 1 || e.Time.Year() > 9999):
		return fmt.Errorf("%w: Time out of range", ErrInvalid)
	}
	if err := checkString("ID", e.ID, false); err != nil {
		return err
	}
	if err := checkString("PolicyDigest", e.PolicyDigest, false); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"Actor", e.Actor}, {"Subject", e.Subject}, {"Entitlement", e.Entitlement},
		{"RequestID", e.RequestID}, {"GrantID", e.GrantID}, {"LeaseID", e.LeaseID},
		{"Outcome", e.Outcome}, {"How", e.How},
	} {
		if err := checkString(f.name, f.v, true); err != nil {
			return err
		}
	}
	for i, r := range e.Reasons {
		if err := checkString("Reasons["+strconv.Itoa(i)+"]", r, true); err != nil {
			return err
		}
	}
	for k, v := range e.Fields {
		if !fieldKeyRE.MatchString(k) {
			return fmt.Errorf("%w: Fields key %q is not a lower-case name", ErrInvalid, k)
		}
		if err := checkString("Fields["+k+"]", v, true); err != nil {
			return err
		}
	}
	return nil
}

// checkString checks one field: valid UTF-8 (JSON would silently replace
// bad bytes and break the hash), bounded, and, for free text, no secret.
// Errors name the field, never the value.
func checkString(name, v string, guard bool) error {
	switch {
	case len(v) > MaxValueLen:
		return fmt.Errorf("%w: %s is %d bytes, at most %d", ErrInvalid, name, len(v), MaxValueLen)
	case !utf8.ValidString(v):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, name)
	}
	if guard {
		if shape, ok := LooksLikeSecret(v); ok {
			return fmt.Errorf("%w: %s looks like %s", ErrSecret, name, shape)
		}
	}
	return nil
}
