package jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Tokens are built here rather than with golang-jwt's Token.SignedString,
// which marshals a header map and the claims through reflection, encodes
// each segment into its own string, and for ES256 turns the signature into
// big.Ints and back. The output is byte for byte what SignedString makes of
// the same header and claims (json.Marshal's field order and escaping), and
// the signatures are the same algorithms: ES256 is hedged ECDSA from
// crypto/ecdsa with r||s per RFC 7518 section 3.4, RS256 is PKCS #1 v1.5
// with SHA-256, EdDSA is Ed25519. Verification stays with golang-jwt.

// tokenHeader renders the JOSE header of k's tokens as golang-jwt does:
// {"alg":...,"kid":...,"typ":"JWT"}, base64url, followed by the dot.
func tokenHeader(alg, kid string) string {
	h, _ := json.Marshal(struct { // strings only: cannot fail
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{alg, kid, "JWT"})
	return b64.EncodeToString(h) + "."
}

// signatureLen is the length of k's raw signatures.
func signatureLen(priv crypto.Signer) int {
	switch p := priv.(type) {
	case *rsa.PrivateKey:
		return p.Size()
	default: // ES256 r||s, Ed25519
		return 64
	}
}

// signToken returns header.payload.signature for the JSON claims.
func (k *signingKey) signToken(claims []byte) (string, error) {
	var scratch [1024]byte // the signing input of our tokens fits
	input := append(scratch[:0], k.header...)
	input = b64.AppendEncode(input, claims)
	var (
		rs  [64]byte
		sig []byte
	)
	switch p := k.priv.(type) {
	case *ecdsa.PrivateKey:
		digest := sha256.Sum256(input)
		der, err := ecdsa.SignASN1(rand.Reader, p, digest[:])
		if err != nil {
			return "", err
		}
		if err := rawECDSASignature(der, &rs); err != nil {
			return "", err
		}
		sig = rs[:]
	case *rsa.PrivateKey:
		digest := sha256.Sum256(input)
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, p, crypto.SHA256, digest[:]); err != nil {
			return "", err
		}
	case ed25519.PrivateKey:
		sig = ed25519.Sign(p, input)
	default:
		return "", fmt.Errorf("unsupported key type %T", k.priv)
	}
	if len(sig) != k.sigLen {
		return "", fmt.Errorf("signature of %d bytes, want %d", len(sig), k.sigLen)
	}
	var tok strings.Builder
	tok.Grow(len(input) + 1 + b64.EncodedLen(len(sig)))
	tok.Write(input)
	tok.WriteByte('.')
	var enc [128]byte // ES256 and EdDSA; RS256 grows onto the heap
	tok.Write(b64.AppendEncode(enc[:0], sig))
	return tok.String(), nil
}

var errMalformedSignature = errors.New("malformed ECDSA signature")

// rawECDSASignature turns a P-256 ASN.1 signature, SEQUENCE { r INTEGER,
// s INTEGER }, into the fixed-width r||s that JWS uses.
func rawECDSASignature(der []byte, out *[64]byte) error {
	bad := errMalformedSignature
	// A P-256 signature is at most 72 bytes, so every length is short form.
	if len(der) < 8 || der[0] != 0x30 || der[1]&0x80 != 0 || int(der[1]) != len(der)-2 {
		return bad
	}
	rest := der[2:]
	for i := range 2 {
		if len(rest) < 2 || rest[0] != 0x02 || rest[1]&0x80 != 0 {
			return bad
		}
		n := int(rest[1])
		if n == 0 || n+2 > len(rest) {
			return bad
		}
		v := rest[2 : 2+n]
		if v[0]&0x80 != 0 {
			return bad // negative
		}
		for len(v) > 0 && v[0] == 0 {
			v = v[1:]
		}
		if len(v) > 32 {
			return bad
		}
		copy(out[32*i+32-len(v):32*(i+1)], v)
		rest = rest[2+n:]
	}
	if len(rest) != 0 {
		return bad
	}
	return nil
}

// appendClaims appends w as json.Marshal(w) renders it.
func appendClaims(b []byte, w *wireClaims) []byte {
	b = append(b, `{"iss":`...)
	b = appendString(b, w.Iss)
	b = append(b, `,"sub":`...)
	b = appendString(b, w.Sub)
	b = append(b, `,"aud":`...)
	switch len(w.Aud) {
	case 0:
		b = append(b, "null"...) // as json.Marshal([]string(nil)); Issue never gets here
	case 1:
		b = appendString(b, w.Aud[0])
	default:
		b = append(b, '[')
		for n, a := range w.Aud {
			if n > 0 {
				b = append(b, ',')
			}
			b = appendString(b, a)
		}
		b = append(b, ']')
	}
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, w.Iat, 10)
	b = append(b, `,"nbf":`...)
	b = strconv.AppendInt(b, w.Nbf, 10)
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, w.Exp, 10)
	b = append(b, `,"jti":`...)
	b = appendString(b, w.Jti)
	b = append(b, `,"ent":`...)
	b = appendString(b, w.Ent)
	if w.Scope != "" {
		b = append(b, `,"scope":`...)
		b = appendString(b, w.Scope)
	}
	return append(b, '}')
}

// appendString appends s as a JSON string exactly as encoding/json does:
// plain printable ASCII is copied; anything it would escape (quotes,
// backslash, control characters, <, > and &, non-ASCII) goes through
// json.Marshal.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// reservedClaims are the claims mint sets; Params.Extra may not replace them.
var reservedClaims = map[string]bool{"iss": true, "sub": true, "aud": true, "iat": true, "nbf": true, "exp": true, "jti": true, "ent": true, "scope": true}

// appendExtra adds extra claims, sorted by name, to a JSON object that
// appendClaims closed.
func appendExtra(b []byte, extra map[string]any) ([]byte, error) {
	names := make([]string, 0, len(extra))
	for name := range extra {
		if reservedClaims[name] {
			return nil, fmt.Errorf("extra claim %q would replace one the issuer sets", name)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	b = b[:len(b)-1] // drop the closing brace
	for _, name := range names {
		v, err := json.Marshal(extra[name])
		if err != nil {
			return nil, fmt.Errorf("extra claim %q: %w", name, err)
		}
		b = append(b, ',')
		b = appendString(b, name)
		b = append(b, ':')
		b = append(b, v...)
	}
	return append(b, '}'), nil
}
