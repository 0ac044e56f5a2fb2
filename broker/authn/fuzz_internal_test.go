package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzBearerParsing feeds arbitrary tokens to the parsing paths every
// bearer token goes through before any key is trusted: the JWT-SVID
// verifier (header, claims, audience, lifetime, then the signature) and the
// OIDC pre-checks. None may panic, and none may accept a token it cannot
// verify: every outcome is an error wrapping ErrUnauthenticated.
func FuzzBearerParsing(f *testing.F) {
	b64 := base64.RawURLEncoding.EncodeToString
	for _, s := range []string{
		"", ".", "..", "a.b.c", "a.b.c.d",
		b64([]byte(`{"alg":"none"}`)) + "." + b64([]byte(`{"sub":"spiffe://mayfly.test/w","aud":"spiffe://mayfly.test/mayfly","exp":9999999999}`)) + ".",
		b64([]byte(`{"alg":"ES256","kid":"k"}`)) + "." + b64([]byte(`{"sub":"spiffe://mayfly.test/w","aud":["a","b"],"exp":1e300}`)) + ".c2ln",
		b64([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + b64([]byte(`{"iss":"https://idp","aud":"mayfly","azp":"x","exp":"1","iat":-1}`)) + ".AAAA",
	} {
		f.Add(s)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("mayfly.test")
	bundle := jwtbundle.New(td)
	if err := bundle.AddJWTAuthority("k", key.Public()); err != nil {
		f.Fatal(err)
	}
	v := &jwtSVIDVerifier{bundles: bundle, audience: "spiffe://mayfly.test/mayfly", maxLifetime: time.Hour,
		accepts: func(t spiffeid.TrustDomain) bool { return t == td }, now: time.Now}
	f.Fuzz(func(t *testing.T, token string) {
		if _, err := v.VerifyBearer(context.Background(), token); err == nil {
			t.Fatalf("an unsigned or foreign token was accepted: %q", token)
		} else if !errors.Is(err, ErrUnauthenticated) && !errors.Is(err, ErrTokenNotRecognized) {
			t.Fatalf("error %v is not a refusal", err)
		}
		_, _, _ = peekOIDC(token)
	})
}
