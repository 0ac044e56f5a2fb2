package jwt

import (
	"encoding/json"
	"errors"
	"strings"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
)

// Claims are the claims of a token this issuer signs, as Verify returns
// them. Times are whole seconds.
type Claims struct {
	// Issuer (iss) is Config.IssuerURL.
	Issuer string
	// Subject (sub) is the lease's subject: the Principal the token was
	// issued to (a SPIFFE ID, user:alice).
	Subject string
	// Audience (aud) comes from the entitlement's params. One audience is
	// written as a string, more as a list.
	Audience []string
	// IssuedAt (iat) and NotBefore (nbf) are the lease's IssuedAt, or the
	// renewal time for a renewed token.
	IssuedAt, NotBefore time.Time
	// ExpiresAt (exp) is the lease's ExpiresAt.
	ExpiresAt time.Time
	// ID (jti) is the lease id: the handle introspection looks up.
	ID string
	// Entitlement (ent) is the policy entitlement the token was issued for.
	Entitlement string
	// Scopes are the space-separated scope claim (omitted when empty).
	Scopes []string
}

// wireClaims is Claims as JSON. It implements golang-jwt's Claims so the
// library's validator checks exp, nbf, iat and iss.
type wireClaims struct {
	Iss   string   `json:"iss"`
	Sub   string   `json:"sub"`
	Aud   audience `json:"aud"`
	Iat   int64    `json:"iat"`
	Nbf   int64    `json:"nbf"`
	Exp   int64    `json:"exp"`
	Jti   string   `json:"jti"`
	Ent   string   `json:"ent"`
	Scope string   `json:"scope,omitempty"`
}

func (c *Claims) wire() *wireClaims {
	return &wireClaims{
		Iss:   c.Issuer,
		Sub:   c.Subject,
		Aud:   c.Audience,
		Iat:   c.IssuedAt.Unix(),
		Nbf:   c.NotBefore.Unix(),
		Exp:   c.ExpiresAt.Unix(),
		Jti:   c.ID,
		Ent:   c.Entitlement,
		Scope: strings.Join(c.Scopes, " "),
	}
}

func (w *wireClaims) claims() *Claims {
	return &Claims{
		Issuer:      w.Iss,
		Subject:     w.Sub,
		Audience:    w.Aud,
		IssuedAt:    time.Unix(w.Iat, 0),
		NotBefore:   time.Unix(w.Nbf, 0),
		ExpiresAt:   time.Unix(w.Exp, 0),
		ID:          w.Jti,
		Entitlement: w.Ent,
		Scopes:      strings.Fields(w.Scope),
	}
}

func numericDate(sec int64) (*gojwt.NumericDate, error) {
	if sec == 0 {
		return nil, nil // absent: the validator decides whether it is required
	}
	return gojwt.NewNumericDate(time.Unix(sec, 0)), nil
}

func (w *wireClaims) GetExpirationTime() (*gojwt.NumericDate, error) { return numericDate(w.Exp) }
func (w *wireClaims) GetIssuedAt() (*gojwt.NumericDate, error)       { return numericDate(w.Iat) }
func (w *wireClaims) GetNotBefore() (*gojwt.NumericDate, error)      { return numericDate(w.Nbf) }
func (w *wireClaims) GetIssuer() (string, error)                     { return w.Iss, nil }
func (w *wireClaims) GetSubject() (string, error)                    { return w.Sub, nil }
func (w *wireClaims) GetAudience() (gojwt.ClaimStrings, error) {
	return gojwt.ClaimStrings(w.Aud), nil
}

// Validate adds what golang-jwt does not require: every token of ours has
// a jti (the lease id), a subject, an audience and an nbf.
func (w *wireClaims) Validate() error {
	switch {
	case w.Jti == "":
		return errors.New("jti is missing")
	case w.Sub == "":
		return errors.New("sub is missing")
	case len(w.Aud) == 0:
		return errors.New("aud is missing")
	case w.Nbf == 0 || w.Iat == 0:
		return errors.New("nbf or iat is missing")
	}
	return nil
}

// audience is the aud claim: a string when there is one, else a list
// (RFC 7519 section 4.1.3). Some verifiers compare a lone audience as a
// string, so a one-element list is never written.
type audience []string

func (a audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud must be a string or a list of strings")
	}
	*a = many
	return nil
}
