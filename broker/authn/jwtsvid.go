package authn

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// jwtSVIDAlgorithms are the signature algorithms a JWT-SVID may use: those of
// the JWT-SVID specification, which go-spiffe also enforces. Never "none" or
// an HMAC ("HS256"), whose key a verifier would have to share.
var jwtSVIDAlgorithms = []string{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

// jwtSVIDVerifier is the BearerVerifier for JWT-SVIDs: tokens whose "sub" is
// a SPIFFE ID. Every check that refuses a token happens before or after
// go-spiffe verifies the signature; a token is accepted only after it.
type jwtSVIDVerifier struct {
	bundles     jwtbundle.Source
	audience    string
	maxLifetime time.Duration
	accepts     func(spiffeid.TrustDomain) bool
	now         func() time.Time
}

// VerifyBearer implements BearerVerifier.
func (v *jwtSVIDVerifier) VerifyBearer(_ context.Context, token string) (Principal, error) {
	tok, err := peekJWT(token)
	if err != nil || !strings.HasPrefix(tok.claims.Sub, "spiffe://") {
		return Principal{}, ErrTokenNotRecognized
	}
	if !slices.Contains(jwtSVIDAlgorithms, tok.header.Alg) {
		return Principal{}, unauthenticated("JWT-SVID is signed with alg %q, which is not accepted: use one of %s", tok.header.Alg, strings.Join(jwtSVIDAlgorithms, ", "))
	}
	id, err := spiffeid.FromString(tok.claims.Sub)
	if err != nil {
		return Principal{}, unauthenticated("JWT-SVID subject is not a valid SPIFFE ID: %v", err)
	}
	if !v.accepts(id.TrustDomain()) {
		return Principal{}, unauthenticated("trust domain %q is not accepted", id.TrustDomain().Name())
	}

	// Claims, read before the signature is checked; they can only refuse.
	aud := tok.claims.Aud
	switch {
	case len(aud) == 0:
		return Principal{}, unauthenticated("JWT-SVID %q has no audience; exactly 1 is required: %q", id, v.audience)
	case len(aud) > 1:
		return Principal{}, unauthenticated("JWT-SVID %q has %d audiences %q; exactly 1 is required: %q", id, len(aud), []string(aud), v.audience)
	case aud[0] != v.audience:
		return Principal{}, unauthenticated("JWT-SVID %q audience %q is not this broker's audience %q", id, aud[0], v.audience)
	case tok.claims.Exp == nil:
		return Principal{}, unauthenticated("JWT-SVID %q has no exp claim", id)
	}
	now := v.now()
	exp := numericDate(*tok.claims.Exp)
	if !now.Before(exp) {
		return Principal{}, unauthenticated("JWT-SVID %q expired at %s; fetch a new one", id, formatTime(exp))
	}
	if tok.claims.Iat != nil {
		if life := exp.Sub(numericDate(*tok.claims.Iat)); life > v.maxLifetime {
			return Principal{}, unauthenticated("JWT-SVID %q lifetime (exp - iat) is %s, longer than the %s allowed; request a shorter-lived token", id, life, v.maxLifetime)
		}
	} else if left := exp.Sub(now); left > v.maxLifetime {
		return Principal{}, unauthenticated("JWT-SVID %q has no iat claim and expires in %s, longer than the %s lifetime allowed", id, left.Truncate(time.Second), v.maxLifetime)
	}

	// The signature, key ID, "typ", "nbf" and "iat" (not in the future).
	svid, err := jwtsvid.ParseAndValidate(token, v.bundles, nil)
	if err != nil {
		return Principal{}, unauthenticated("JWT-SVID %q did not verify: %v", id, err)
	}
	return Principal{
		Kind:        KindWorkload,
		ID:          svid.ID.String(),
		TrustDomain: svid.ID.TrustDomain().Name(),
		Method:      MethodJWTSVID,
		NotAfter:    svid.Expiry,
	}, nil
}

// peekedJWT is the unverified header and claims of a compact JWS.
type peekedJWT struct {
	header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	claims struct {
		Sub string       `json:"sub"`
		Aud audience     `json:"aud"`
		Exp *json.Number `json:"exp"`
		Iat *json.Number `json:"iat"`
	}
}

// peekJWT decodes the header and claims of a compact JWS without verifying
// it. Its error says what is malformed, never what the token contains.
func peekJWT(token string) (*peekedJWT, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("it has %d dot-separated parts, a JWT has 3", len(parts))
	}
	var tok peekedJWT
	if err := decodeSegment(parts[0], &tok.header); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if err := decodeSegment(parts[1], &tok.claims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	return &tok, nil
}

func decodeSegment(seg string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return errors.New("not base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return errors.New("not a JSON object of the expected shape")
	}
	return nil
}

// numericDate converts a JWT NumericDate (seconds since the epoch, possibly
// fractional) to a time; a value that is not a number is the zero time.
func numericDate(n json.Number) time.Time {
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// audience is the "aud" claim: a string or an array of strings.
type audience []string

// UnmarshalJSON accepts both forms of "aud".
func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*a = audience{s}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	*a = list
	return nil
}
