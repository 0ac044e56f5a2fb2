package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no issuer", Config{}, "jwt: Config.IssuerURL is required"},
		{"http issuer", Config{IssuerURL: "http://mayfly.example.com"}, `jwt: Config.IssuerURL "http://mayfly.example.com" must use https`},
		{"no host", Config{IssuerURL: "https:///x"}, `jwt: Config.IssuerURL "https:///x" must name a host and no user`},
		{"query", Config{IssuerURL: "https://m.example.com?a=b"}, `jwt: Config.IssuerURL "https://m.example.com?a=b" must not have a query or fragment`},
		{"fragment", Config{IssuerURL: "https://m.example.com#x"}, `jwt: Config.IssuerURL "https://m.example.com#x" must not have a query or fragment`},
		{"trailing slash", Config{IssuerURL: "https://m.example.com/"}, `jwt: Config.IssuerURL "https://m.example.com/" must not end with a slash`},
		{"hs256", Config{IssuerURL: "https://m.example.com", Algorithm: "HS256"}, `jwt: Config.Algorithm "HS256" is not supported (want ES256, RS256 or EdDSA)`},
		{"none", Config{IssuerURL: "https://m.example.com", Algorithm: "none"}, `jwt: Config.Algorithm "none" is not supported (want ES256, RS256 or EdDSA)`},
		{"negative rotate", Config{IssuerURL: "https://m.example.com", RotateEvery: -time.Hour}, "jwt: Config.RotateEvery -1h0m0s must not be negative"},
		{"tiny rotate", Config{IssuerURL: "https://m.example.com", RotateEvery: 24}, "jwt: Config.RotateEvery 24ns must be at least 1s"},
		{"negative retain", Config{IssuerURL: "https://m.example.com", Retain: -time.Second}, "jwt: Config.Retain -1s must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("New error %v; want %q", err, tt.want)
			}
		})
	}

	iss, err := New(Config{IssuerURL: "https://mayfly.example.com/oidc"})
	if err != nil {
		t.Fatal(err)
	}
	if iss.cfg.Algorithm != ES256 || iss.cfg.Retain != DefaultRetain || iss.cfg.Clock == nil || iss.cfg.Logger == nil {
		t.Errorf("defaults not applied: %+v", iss.cfg)
	}
	if keys := iss.Keys(); len(keys) != 1 || !keys[0].Active || keys[0].File != "" {
		t.Errorf("in-memory issuer keys %+v; want one active key without a file", keys)
	}
}

func TestIssueClaims(t *testing.T) {
	for _, alg := range []string{ES256, RS256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			e := newEnv(t, Config{Algorithm: alg})
			l := testLease(time.Now(), 10*time.Minute)
			l.ExpiresAt = l.ExpiresAt.Add(700 * time.Millisecond) // exp rounds down
			c := e.issue(t, l, testParams)

			if c.Kind != issuer.KindJWT || c.ExternalRef != "" || !slices.Equal(c.Scopes, testParams.Scopes) {
				t.Errorf("credential %v scopes %v", c, c.Scopes)
			}
			if want := l.ExpiresAt.Truncate(time.Second); !c.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt %v; want %v", c.ExpiresAt, want)
			}

			// The raw header and payload, exactly.
			parts := strings.Split(c.Token, ".")
			if len(parts) != 3 {
				t.Fatalf("token has %d parts", len(parts))
			}
			var hdr map[string]any
			decodeSegment(t, parts[0], &hdr)
			if hdr["alg"] != alg || hdr["typ"] != "JWT" || hdr["kid"] != e.iss.Keys()[0].KID || len(hdr) != 3 {
				t.Errorf("header %v", hdr)
			}
			var payload map[string]any
			decodeSegment(t, parts[1], &payload)
			want := map[string]any{
				"iss":   e.srv.URL,
				"sub":   l.Subject,
				"aud":   "https://orders.example.com", // one audience: a string
				"iat":   float64(l.IssuedAt.Unix()),
				"nbf":   float64(l.IssuedAt.Unix()),
				"exp":   float64(l.ExpiresAt.Unix()),
				"jti":   l.ID,
				"ent":   "orders-api",
				"scope": "orders.read orders.write",
			}
			if !mapsEqual(payload, want) {
				t.Errorf("payload %v\nwant    %v", payload, want)
			}

			// Our own Verify agrees.
			claims, err := e.iss.Verify(c.Token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			wantClaims := Claims{Issuer: e.srv.URL, Subject: l.Subject, Audience: testParams.Audience,
				IssuedAt: l.IssuedAt, NotBefore: l.IssuedAt, ExpiresAt: c.ExpiresAt, ID: l.ID,
				Entitlement: l.Entitlement, Scopes: testParams.Scopes}
			if !claimsEqual(*claims, wantClaims) {
				t.Errorf("Verify claims %+v\nwant %+v", *claims, wantClaims)
			}
		})
	}
}

func TestIssueAudienceListAndNoScope(t *testing.T) {
	e := newEnv(t, Config{})
	l := testLease(time.Now(), time.Minute)
	c := e.issue(t, l, Params{Audience: []string{"a", "b"}})
	var payload map[string]any
	decodeSegment(t, strings.Split(c.Token, ".")[1], &payload)
	if aud, _ := payload["aud"].([]any); len(aud) != 2 || aud[0] != "a" || aud[1] != "b" {
		t.Errorf("aud %v; want [a b]", payload["aud"])
	}
	if _, ok := payload["scope"]; ok {
		t.Errorf("scope present without scopes: %v", payload)
	}
	if c.Scopes != nil {
		t.Errorf("credential scopes %v; want none", c.Scopes)
	}
}

func TestIssueDeterministic(t *testing.T) {
	e := newEnv(t, Config{})
	l := testLease(time.Now(), time.Minute)
	a, b := e.issue(t, l, testParams), e.issue(t, l.Clone(), &testParams)
	ca, err := e.iss.Verify(a.Token)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := e.iss.Verify(b.Token)
	if err != nil {
		t.Fatal(err)
	}
	if !claimsEqual(*ca, *cb) || !a.ExpiresAt.Equal(b.ExpiresAt) {
		t.Errorf("two issues of one lease differ: %+v vs %+v", ca, cb)
	}
}

func TestIssueErrors(t *testing.T) {
	e := newEnv(t, Config{Retain: time.Hour})
	now := time.Now()
	issue := func(l *lease.Lease, p any) error {
		_, err := e.iss.Issue(context.Background(), issuer.Request{Lease: l, Params: p})
		return err
	}
	long := testLease(now, 2*time.Hour)
	err := issue(long, testParams)
	if !errors.Is(err, issuer.ErrRejected) || !strings.Contains(err.Error(), `jwt: entitlement "orders-api": token lifetime 2h0m0s exceeds Config.Retain 1h0m0s`) {
		t.Errorf("lease longer than Retain: %v", err)
	}
	err = issue(testLease(now, time.Minute), "audience: x")
	if !errors.Is(err, issuer.ErrRejected) || err.Error() != `jwt: entitlement "orders-api": params are string, want jwt.Params from DecodeParams: issuer: backend rejected the request` {
		t.Errorf("wrong params type: %v", err)
	}
	err = issue(testLease(now, time.Minute), Params{})
	if !errors.Is(err, issuer.ErrRejected) {
		t.Errorf("empty params: %v", err)
	}
	short := testLease(now, 500*time.Millisecond)
	if err := issue(short, testParams); err == nil || !strings.Contains(err.Error(), "is not after") {
		t.Errorf("sub-second lease: %v", err)
	}
	noSub := testLease(now, time.Minute)
	noSub.Subject = ""
	if err := issue(noSub, testParams); err == nil || !strings.Contains(err.Error(), "has no subject") {
		t.Errorf("no subject: %v", err)
	}
	if err := issue(nil, testParams); err == nil || err.Error() != "jwt: issue: no lease" {
		t.Errorf("nil lease: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = e.iss.Issue(ctx, issuer.Request{Lease: testLease(now, time.Minute), Params: testParams})
	if !errors.Is(err, issuer.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestRenew(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, Config{Clock: clk.Now})
	l := testLease(clk.Now(), 10*time.Minute)
	first := e.issue(t, l, testParams)
	l.State = lease.StateActive

	clk.Advance(5 * time.Minute)
	newExp := l.ExpiresAt.Add(10 * time.Minute)
	c, err := e.iss.Renew(context.Background(), l, testParams, newExp)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if c == nil || c.Token == first.Token || !c.ExpiresAt.Equal(newExp) {
		t.Fatalf("renewed credential %v expires %v; want a new token until %v", c, c.ExpiresAt, newExp)
	}
	claims, err := e.iss.Verify(c.Token)
	if err != nil {
		t.Fatal(err)
	}
	if claims.ID != l.ID || !claims.ExpiresAt.Equal(newExp) || !claims.IssuedAt.Equal(clk.Now()) || !claims.NotBefore.Equal(clk.Now()) {
		t.Errorf("renewed claims %+v; want jti %s exp %v iat=nbf=%v", claims, l.ID, newExp, clk.Now())
	}
	// The first token keeps verifying until its own exp.
	if _, err := e.iss.Verify(first.Token); err != nil {
		t.Errorf("first token after renewal: %v", err)
	}

	past := l.HardEnd.Add(time.Second)
	if _, err := e.iss.Renew(context.Background(), l, testParams, past); !errors.Is(err, lease.ErrPastHardEnd) {
		t.Errorf("renew past hard end: %v", err)
	}
	revoked := l.Clone()
	revoked.RevokeReason = lease.ReasonExplicit
	if _, err := e.iss.Renew(context.Background(), revoked, testParams, newExp); !errors.Is(err, lease.ErrWrongState) {
		t.Errorf("renew of a lease being revoked: %v", err)
	}
	pending := l.Clone()
	pending.State = lease.StatePending
	if _, err := e.iss.Renew(context.Background(), pending, testParams, newExp); !errors.Is(err, lease.ErrWrongState) {
		t.Errorf("renew of a pending lease: %v", err)
	}
	if _, err := e.iss.Renew(context.Background(), l, testParams, clk.Now().Add(-time.Second)); err == nil {
		t.Error("renew to the past succeeded")
	}
}

func TestRevokeAndRevocability(t *testing.T) {
	e := newEnv(t, Config{})
	ok, reason := e.iss.Revocability(testParams)
	if ok || reason != RevocableReason || !strings.Contains(reason, "introspection") {
		t.Errorf("Revocability = %v, %q", ok, reason)
	}
	l := testLease(time.Now(), time.Minute)
	if err := e.iss.Revoke(context.Background(), l); err != nil {
		t.Errorf("Revoke: %v", err)
	}
	if err := e.iss.Revoke(context.Background(), nil); err == nil {
		t.Error("Revoke(nil) succeeded")
	}
}

// forge signs claims with any method and key, setting kid.
func forge(t *testing.T, m gojwt.SigningMethod, key any, kid string, c *Claims) string {
	t.Helper()
	tok := gojwt.NewWithClaims(m, c.wire())
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("forge %s: %v", m.Alg(), err)
	}
	return s
}

func TestVerifyRefuses(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, Config{Clock: clk.Now})
	l := testLease(clk.Now(), 10*time.Minute)
	good := e.issue(t, l, testParams)
	claims, err := e.iss.Verify(good.Token)
	if err != nil {
		t.Fatal(err)
	}
	kid := e.iss.Keys()[0].KID
	k := e.iss.keys.Load().active()
	pubPEM := publicKeyPEM(t, k)
	jwkJSON, _ := json.Marshal(k.jwk)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	parts := strings.Split(good.Token, ".")

	none := func() string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"` + kid + `","typ":"JWT"}`))
		return h + "." + parts[1] + "."
	}()
	tampered := func() string {
		c := *claims
		c.Subject = "spiffe://example.org/attacker"
		b, _ := json.Marshal(c.wire())
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
	}()
	wrongIss := *claims
	wrongIss.Issuer = "https://evil.example.com"
	noJTI := *claims
	noJTI.ID = ""

	tests := []struct {
		name, token, want string
	}{
		{"alg none", none, "signing method none is invalid"},
		{"HS256 keyed with the public key PEM", forge(t, gojwt.SigningMethodHS256, pubPEM, kid, claims), "signing method HS256 is invalid"},
		{"HS256 keyed with the JWK", forge(t, gojwt.SigningMethodHS256, jwkJSON, kid, claims), "signing method HS256 is invalid"},
		{"wrong signature", forge(t, gojwt.SigningMethodES256, other, kid, claims), "signature is invalid"},
		{"unknown kid", forge(t, gojwt.SigningMethodES256, other, "not-a-kid", claims), `unknown kid "not-a-kid"`},
		{"no kid", forge(t, gojwt.SigningMethodES256, other, "", claims), "no kid in the header"},
		{"tampered payload", tampered, "signature is invalid"},
		{"wrong issuer", forge(t, k.method, k.priv, kid, &wrongIss), "token has invalid issuer"},
		{"no jti", forge(t, k.method, k.priv, kid, &noJTI), "jti is missing"},
		{"garbage", "not.a.token", "token is malformed"},
		{"too long", strings.Repeat("a", maxTokenLen+1), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.iss.Verify(tt.token)
			if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Verify error %v; want ErrInvalidToken containing %q", err, tt.want)
			}
		})
	}

	t.Run("alg of another key", func(t *testing.T) {
		// An RS256 key published beside the ES256 one: a token claiming
		// ES256 under the RSA key's kid must not be checked with it.
		rsaEnv := newEnv(t, Config{Algorithm: RS256, Clock: clk.Now})
		rk := rsaEnv.iss.keys.Load().active()
		tok := forge(t, gojwt.SigningMethodES256, other, rk.kid, claims)
		if _, err := rsaEnv.iss.Verify(tok); err == nil || !strings.Contains(err.Error(), "alg does not match key") {
			t.Errorf("Verify: %v", err)
		}
	})

	t.Run("time", func(t *testing.T) {
		clk.Advance(10*time.Minute + 4*time.Second) // within leeway
		if _, err := e.iss.Verify(good.Token); err != nil {
			t.Errorf("4s after exp (leeway 5s): %v", err)
		}
		clk.Advance(2 * time.Second)
		if _, err := e.iss.Verify(good.Token); !errors.Is(err, gojwt.ErrTokenExpired) {
			t.Errorf("6s after exp: %v", err)
		}
		future := *claims
		future.NotBefore = clk.Now().Add(time.Minute)
		future.IssuedAt = future.NotBefore
		future.ExpiresAt = future.NotBefore.Add(time.Hour)
		if _, err := e.iss.Verify(forge(t, k.method, k.priv, kid, &future)); !errors.Is(err, gojwt.ErrTokenNotValidYet) {
			t.Errorf("nbf in a minute: %v", err)
		}
	})
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("segment: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("segment %s: %v", b, err)
	}
}

func mapsEqual(a, b map[string]any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func claimsEqual(a, b Claims) bool {
	return a.Issuer == b.Issuer && a.Subject == b.Subject && slices.Equal(a.Audience, b.Audience) &&
		a.IssuedAt.Equal(b.IssuedAt) && a.NotBefore.Equal(b.NotBefore) && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.ID == b.ID && a.Entitlement == b.Entitlement && slices.Equal(a.Scopes, b.Scopes)
}

// publicKeyPEM is the key's public half as an attacker can get it.
func publicKeyPEM(t *testing.T, k *signingKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
