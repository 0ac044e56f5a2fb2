package devca

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Forgery names a way of signing a JWT that a verifier must refuse.
type Forgery int

const (
	// ForgeNothing signs with ES256 and the CA's JWT key: a genuine token.
	ForgeNothing Forgery = iota
	// ForgeAlgNone sets alg "none" and sends an empty signature.
	ForgeAlgNone
	// ForgeHS256PublicKey sets alg HS256 and signs with HMAC-SHA256 keyed
	// with the PEM encoding of the CA's public JWT key: the algorithm
	// confusion attack on verifiers that trust the token's alg header.
	ForgeHS256PublicKey
)

// JWTOptions describes a token for MintJWTSVIDOpts. With ID, Audience and TTL
// set and everything else zero it is a valid JWT-SVID; the other fields make
// tokens that must be refused.
type JWTOptions struct {
	// ID is the SPIFFE ID in the "sub" claim.
	ID spiffeid.ID
	// Subject, when set, replaces ID in the "sub" claim (for example
	// "user:alice", a token that is not a JWT-SVID).
	Subject string
	// Audience is the "aud" claim: a string for one value, an array for
	// more, left out when empty.
	Audience []string
	// TTL is the lifetime from IssuedAt; ignored when Expiry is set.
	TTL time.Duration
	// IssuedAt is the "iat" claim; zero means now.
	IssuedAt time.Time
	// OmitIssuedAt leaves the "iat" claim out.
	OmitIssuedAt bool
	// Expiry is the "exp" claim; zero means IssuedAt plus TTL.
	Expiry time.Time
	// KeyID replaces the CA's key ID in the "kid" header.
	KeyID string
	// Forgery chooses a refused signing method; zero signs genuinely.
	Forgery Forgery
	// Claims are extra claims; they override the ones above.
	Claims map[string]any
}

// MintJWTSVID mints a JWT-SVID for id with the given audience, valid from now
// for ttl, signed ES256 with the CA's JWT key and carrying its key ID.
func (ca *CA) MintJWTSVID(id spiffeid.ID, audience []string, ttl time.Duration) (string, error) {
	if id.IsZero() {
		return "", errors.New("devca: SPIFFE ID is empty")
	}
	if id.TrustDomain() != ca.td {
		return "", fmt.Errorf("devca: SPIFFE ID %q is not in trust domain %q", id, ca.td.Name())
	}
	if len(audience) == 0 {
		return "", errors.New("devca: a JWT-SVID needs at least one audience")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("devca: TTL %s is not positive", ttl)
	}
	return ca.MintJWTSVIDOpts(JWTOptions{ID: id, Audience: audience, TTL: ttl})
}

// MintJWTSVIDOpts mints the token described by opts. It checks little, so
// that it can make invalid JWT-SVIDs for tests.
func (ca *CA) MintJWTSVIDOpts(opts JWTOptions) (string, error) {
	iat := opts.IssuedAt
	if iat.IsZero() {
		iat = ca.now()
	}
	exp := opts.Expiry
	if exp.IsZero() {
		if opts.TTL <= 0 {
			return "", fmt.Errorf("devca: TTL %s is not positive and Expiry is not set", opts.TTL)
		}
		exp = iat.Add(opts.TTL)
	}

	claims := map[string]any{"exp": exp.Unix()}
	switch {
	case opts.Subject != "":
		claims["sub"] = opts.Subject
	case !opts.ID.IsZero():
		claims["sub"] = opts.ID.String()
	}
	switch len(opts.Audience) {
	case 0:
	case 1:
		claims["aud"] = opts.Audience[0]
	default:
		claims["aud"] = opts.Audience
	}
	if !opts.OmitIssuedAt {
		claims["iat"] = iat.Unix()
	}
	for k, v := range opts.Claims {
		claims[k] = v
	}

	kid := opts.KeyID
	if kid == "" {
		kid = ca.jwtKID
	}
	header := map[string]any{"typ": "JWT", "kid": kid}
	switch opts.Forgery {
	case ForgeNothing:
		header["alg"] = "ES256"
	case ForgeAlgNone:
		header["alg"] = "none"
	case ForgeHS256PublicKey:
		header["alg"] = "HS256"
	default:
		return "", fmt.Errorf("devca: unknown forgery %d", opts.Forgery)
	}

	h, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("devca: marshal JWT header: %w", err)
	}
	p, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("devca: marshal JWT claims: %w", err)
	}
	input := b64(h) + "." + b64(p)

	var sig []byte
	switch opts.Forgery {
	case ForgeNothing:
		if sig, err = signES256(ca.jwtKey, input); err != nil {
			return "", err
		}
	case ForgeAlgNone:
		sig = nil
	case ForgeHS256PublicKey:
		der, err := x509.MarshalPKIXPublicKey(ca.jwtKey.Public())
		if err != nil {
			return "", fmt.Errorf("devca: marshal public key: %w", err)
		}
		mac := hmac.New(sha256.New, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		mac.Write([]byte(input))
		sig = mac.Sum(nil)
	}
	return input + "." + b64(sig), nil
}

// signES256 returns the JWS ES256 signature of input: r and s, 32 bytes each.
func signES256(key *ecdsa.PrivateKey, input string) ([]byte, error) {
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("devca: sign JWT: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
