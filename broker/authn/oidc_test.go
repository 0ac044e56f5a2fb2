package authn_test

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
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mayflyhq/mayfly/broker/authn"
)

// oidcIdP is an identity provider for tests: discovery and JWKS over real
// TLS, and an ES256 key that signs whatever claims a test asks for. It is
// the signer of forged tokens too; the real-provider test is in
// oidc_realop_test.go.
type oidcIdP struct {
	srv    *httptest.Server
	issuer string
	key    *ecdsa.PrivateKey
	kid    string
	algs   []string

	discoveryDown atomic.Bool
	jwksDown      atomic.Bool
	jwksFetches   atomic.Int32

	mu   sync.Mutex
	jwks []jose.JSONWebKey
}

func newOIDCTestIdP(t *testing.T) *oidcIdP {
	t.Helper()
	p := &oidcIdP{key: oidcECKey(t), kid: "key-1", algs: []string{"ES256"}}
	p.jwks = []jose.JSONWebKey{{Key: p.key.Public(), KeyID: p.kid, Algorithm: "ES256", Use: "sig"}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if p.discoveryDown.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                p.issuer,
			"jwks_uri":                              p.issuer + "/keys",
			"authorization_endpoint":                p.issuer + "/auth",
			"token_endpoint":                        p.issuer + "/token",
			"id_token_signing_alg_values_supported": p.algs,
		})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		p.jwksFetches.Add(1)
		if p.jwksDown.Load() {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		p.mu.Lock()
		set := jose.JSONWebKeySet{Keys: slices.Clone(p.jwks)}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	p.srv = httptest.NewUnstartedServer(mux)
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes cut short when a test ends
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	p.issuer = p.srv.URL
	return p
}

// oidcTestLogger discards logs unless MAYFLY_TEST_LOG is set.
func oidcTestLogger() *slog.Logger {
	if os.Getenv("MAYFLY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func oidcECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// claims returns valid claims for alice, valid from now for an hour.
func (p *oidcIdP) claims(now time.Time) map[string]any {
	return map[string]any{
		"iss":                p.issuer,
		"sub":                "00u1a2b3",
		"aud":                "mayfly",
		"iat":                now.Unix(),
		"exp":                now.Add(time.Hour).Unix(),
		"preferred_username": "alice",
		"email":              "alice@example.org",
		"email_verified":     true,
		"groups":             []string{"platform", "sre", "platform"},
	}
}

// sign signs claims with key as kid (the provider's own key by default).
func (p *oidcIdP) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	return oidcSignJWT(t, jose.ES256, p.key, p.kid, claims)
}

func oidcSignJWT(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (p *oidcIdP) provider() authn.OIDCProvider {
	return authn.OIDCProvider{Name: "corp", Issuer: p.issuer, Audience: "mayfly", GroupsClaim: "groups", UsernameClaim: "preferred_username"}
}

// verifier returns a verifier for this provider on clock.
func (p *oidcIdP) verifier(t *testing.T, clock *fakeClock, providers ...authn.OIDCProvider) *authn.OIDCVerifier {
	t.Helper()
	if len(providers) == 0 {
		providers = []authn.OIDCProvider{p.provider()}
	}
	v, err := authn.NewOIDCVerifier(context.Background(), providers,
		authn.WithOIDCHTTPClient(p.srv.Client()), authn.WithOIDCClock(clock.Now),
		authn.WithOIDCDiscoveryTimeout(5*time.Second), authn.WithOIDCLogger(oidcTestLogger()))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestOIDCVerifierAcceptsIDToken(t *testing.T) {
	idp := newOIDCTestIdP(t)
	clock := &fakeClock{}
	now := time.Now()
	clock.Freeze(now)
	v := idp.verifier(t, clock)

	claims := idp.claims(now)
	p, err := v.VerifyBearer(context.Background(), idp.sign(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	want := authn.Principal{
		Kind:     authn.KindHuman,
		ID:       "user:alice",
		Groups:   []string{"oidc-group:corp/platform", "oidc-group:corp/sre"},
		Method:   authn.MethodOIDC,
		NotAfter: time.Unix(now.Add(time.Hour).Unix(), 0),
	}
	if !oidcPrincipalsEqual(p, want) {
		t.Fatalf("principal = %+v, want %+v", p, want)
	}

	// Through the Authenticator, as the broker uses it: one type in
	// Config.Bearer after the JWT-SVID verifier.
	auth, err := authn.NewAuthenticator(authn.Config{
		TrustDomains: []spiffeid.TrustDomain{td},
		JWTBundles:   newCA(t).JWTBundle(),
		Audience:     audience,
		Bearer:       []authn.BearerVerifier{v},
		Now:          clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err = auth.Authenticate(incoming(tlsPeer, "Bearer "+idp.sign(t, claims)))
	if err != nil || !oidcPrincipalsEqual(p, want) {
		t.Fatalf("Authenticate = %+v, %v", p, err)
	}

	// Groups as one string; several audiences that include ours; a group
	// the policy cannot name is dropped; no groups claim at all.
	claims["groups"] = "platform"
	claims["aud"] = []string{"other-app", "mayfly"}
	claims["azp"] = "mayfly"
	if p, err = v.VerifyBearer(context.Background(), idp.sign(t, claims)); err != nil || !slices.Equal(p.Groups, []string{"oidc-group:corp/platform"}) {
		t.Fatalf("groups as a string: %+v, %v", p, err)
	}
	// Another client's token that lists us among its audiences is not a
	// login to the broker (OIDC Core 3.1.3.7), nor is a token for several
	// audiences that does not say which client it is for.
	for _, azp := range []any{"other-app", nil} {
		if azp == nil {
			delete(claims, "azp")
		} else {
			claims["azp"] = azp
		}
		if _, err := v.VerifyBearer(context.Background(), idp.sign(t, claims)); !errors.Is(err, authn.ErrUnauthenticated) || !strings.Contains(err.Error(), "azp") {
			t.Fatalf("aud %v, azp %v: %v; want refused naming azp", claims["aud"], azp, err)
		}
	}
	claims["azp"] = "mayfly"
	// An ID token that lives for days is refused.
	long := maps.Clone(claims)
	long["exp"] = time.Now().Add(30 * 24 * time.Hour).Unix()
	if _, err := v.VerifyBearer(context.Background(), idp.sign(t, long)); !errors.Is(err, authn.ErrUnauthenticated) || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("a 30-day ID token: %v; want refused", err)
	}
	claims["groups"] = []string{"Platform Team", "plätform", " sre", ""}
	if p, err = v.VerifyBearer(context.Background(), idp.sign(t, claims)); err != nil || !slices.Equal(p.Groups, []string{"oidc-group:corp/Platform Team"}) {
		t.Fatalf("groups with unnameable ones: %+v, %v", p, err)
	}
	delete(claims, "groups")
	if p, err = v.VerifyBearer(context.Background(), idp.sign(t, claims)); err != nil || len(p.Groups) != 0 {
		t.Fatalf("no groups claim: %+v, %v", p, err)
	}

	// The username claim may be "sub"; the default is "email", which
	// needs a verified email.
	bySub := idp.provider()
	bySub.UsernameClaim = "sub"
	if p, err = idp.verifier(t, clock, bySub).VerifyBearer(context.Background(), idp.sign(t, claims)); err != nil || p.ID != "user:00u1a2b3" {
		t.Fatalf("by sub: %+v, %v", p, err)
	}
	byEmail := idp.provider()
	byEmail.UsernameClaim, byEmail.GroupsClaim = "", ""
	ve := idp.verifier(t, clock, byEmail)
	if got := ve.Providers()[0]; got.UsernameClaim != "email" || got.GroupsClaim != "groups" {
		t.Fatalf("defaults: %+v", got)
	}
	if p, err = ve.VerifyBearer(context.Background(), idp.sign(t, claims)); err != nil || p.ID != "user:alice@example.org" {
		t.Fatalf("by email: %+v, %v", p, err)
	}
	claims["email_verified"] = "false"
	_, err = ve.VerifyBearer(context.Background(), idp.sign(t, claims))
	wantOIDCRefusal(t, err, "OIDC token from corp: the user's email is not verified (email_verified is not true)")
}

func oidcPrincipalsEqual(a, b authn.Principal) bool {
	return a.Kind == b.Kind && a.ID == b.ID && slices.Equal(a.Groups, b.Groups) && a.Method == b.Method &&
		a.NotAfter.Equal(b.NotAfter) && a.TrustDomain == b.TrustDomain
}

// wantOIDCRefusal fails unless err wraps ErrUnauthenticated with exactly
// the reason want.
func wantOIDCRefusal(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, authn.ErrUnauthenticated) {
		t.Fatalf("error = %v, want one wrapping ErrUnauthenticated", err)
	}
	if got := strings.TrimPrefix(err.Error(), "authn: unauthenticated: "); got != want {
		t.Fatalf("reason:\n got: %s\nwant: %s", got, want)
	}
}

func TestOIDCVerifierRefusesBadTokens(t *testing.T) {
	idp := newOIDCTestIdP(t)
	clock := &fakeClock{}
	now := time.Now().Truncate(time.Second)
	clock.Freeze(now)
	v := idp.verifier(t, clock)
	utcAt := func(d time.Duration) string { return now.Add(d).UTC().Format(time.RFC3339) }

	pubDER, err := x509.MarshalPKIXPublicKey(idp.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pubJWK, err := json.Marshal(idp.jwks[0])
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	with := func(change func(map[string]any)) map[string]any {
		c := idp.claims(now)
		change(c)
		return c
	}
	valid := idp.sign(t, idp.claims(now))
	parts := strings.Split(valid, ".")

	cases := []struct {
		name  string
		token string
		want  string
	}{
		{"alg none", b64(map[string]string{"alg": "none", "typ": "JWT"}) + "." + parts[1] + ".",
			`OIDC token from corp: signed with alg "none", which is not accepted: use one of RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512, EdDSA`},
		{"HS256 keyed with the public key (PEM)", oidcSignJWT(t, jose.HS256, pubPEM, idp.kid, idp.claims(now)),
			`OIDC token from corp: signed with alg "HS256", which is not accepted: use one of RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512, EdDSA`},
		{"HS256 keyed with the public JWK", oidcSignJWT(t, jose.HS256, pubJWK, "", idp.claims(now)),
			`OIDC token from corp: signed with alg "HS256", which is not accepted: use one of RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512, EdDSA`},
		{"an alg the provider does not use", oidcSignJWT(t, jose.ES384, oidcECKeyOn(t, elliptic.P384()), idp.kid, idp.claims(now)),
			`OIDC token from corp: signed with alg "ES384", but the provider signs with ES256`},
		{"forged with another key under the provider's key ID", oidcSignJWT(t, jose.ES256, oidcECKey(t), idp.kid, idp.claims(now)),
			"OIDC token from corp: signature does not verify with the provider's keys"},
		{"forged with a key the provider does not publish", oidcSignJWT(t, jose.ES256, oidcECKey(t), "evil", idp.claims(now)),
			`OIDC token from corp: signed with key "evil", which the provider does not publish`},
		{"payload changed after signing", parts[0] + "." + b64(with(func(c map[string]any) { c["preferred_username"] = "root" })) + "." + parts[2],
			"OIDC token from corp: signature does not verify with the provider's keys"},
		{"signature stripped", parts[0] + "." + parts[1] + ".",
			"OIDC token from corp: signature does not verify with the provider's keys"},
		{"an access token", oidcSignJWTTyp(t, idp, "at+jwt", idp.claims(now)),
			`OIDC token from corp is an access token (typ "at+jwt"); send the ID token`},
		{"wrong audience", idp.sign(t, with(func(c map[string]any) { c["aud"] = "other-app" })),
			`OIDC token from corp: audience ["other-app"] not accepted: it must include "mayfly"`},
		{"no audience", idp.sign(t, with(func(c map[string]any) { delete(c, "aud") })),
			`OIDC token from corp: audience [] not accepted: it must include "mayfly"`},
		{"expired", idp.sign(t, with(func(c map[string]any) { c["exp"] = now.Unix() })),
			"OIDC token from corp expired at " + utcAt(0) + "; log in again (mayfly login)"},
		{"expired a while ago", idp.sign(t, with(func(c map[string]any) { c["exp"] = now.Add(-30 * time.Second).Unix() })),
			"OIDC token from corp expired at " + utcAt(-30*time.Second) + "; log in again (mayfly login)"},
		{"no exp", idp.sign(t, with(func(c map[string]any) { delete(c, "exp") })),
			"OIDC token from corp has no exp claim"},
		{"not yet valid", idp.sign(t, with(func(c map[string]any) { c["nbf"] = now.Add(2 * time.Minute).Unix() })),
			"OIDC token from corp is not valid until " + utcAt(2*time.Minute) + " (check the clocks of the identity provider and the broker)"},
		{"issued in the future", idp.sign(t, with(func(c map[string]any) { c["iat"] = now.Add(2 * time.Minute).Unix() })),
			"OIDC token from corp was issued in the future, at " + utcAt(2*time.Minute) + " (check the clocks of the identity provider and the broker)"},
		{"no username", idp.sign(t, with(func(c map[string]any) { delete(c, "preferred_username") })),
			`OIDC token from corp has no "preferred_username" claim, which names the user`},
		{"username with a space", idp.sign(t, with(func(c map[string]any) { c["preferred_username"] = "alice smith" })),
			`OIDC token from corp: the "preferred_username" claim, which names the user, is not printable ASCII without spaces`},
		{"username not ASCII", idp.sign(t, with(func(c map[string]any) { c["preferred_username"] = "аlice" })),
			`OIDC token from corp: the "preferred_username" claim, which names the user, is not printable ASCII without spaces`},
		{"username not a string", idp.sign(t, with(func(c map[string]any) { c["preferred_username"] = 7 })),
			`OIDC token from corp: the "preferred_username" claim, which names the user, is not a string`},
		{"groups an object", idp.sign(t, with(func(c map[string]any) { c["groups"] = map[string]any{"a": 1} })),
			`OIDC token from corp: the groups claim "groups" is neither a string nor a list of strings`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := v.VerifyBearer(context.Background(), tc.token)
			if err == nil {
				t.Fatalf("accepted as %+v", p)
			}
			wantOIDCRefusal(t, err, tc.want)
			if strings.Contains(err.Error(), tc.token) || strings.Contains(err.Error(), parts[2]) {
				t.Fatal("the error carries the token")
			}
		})
	}

	// A nbf or iat less than a minute ahead is clock skew, and accepted.
	if _, err := v.VerifyBearer(context.Background(), idp.sign(t, with(func(c map[string]any) {
		c["nbf"] = now.Add(50 * time.Second).Unix()
		c["iat"] = now.Add(50 * time.Second).Unix()
	}))); err != nil {
		t.Fatalf("nbf and iat 50s ahead: %v", err)
	}
}

func oidcECKeyOn(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestOIDCVerifierLeavesOtherTokensToOtherVerifiers(t *testing.T) {
	idp := newOIDCTestIdP(t)
	clock := &fakeClock{}
	v := idp.verifier(t, clock)
	other := idp.claims(time.Now())
	other["iss"] = "https://login.example.org"
	noIss := idp.claims(time.Now())
	delete(noIss, "iss")
	trailingSlash := idp.claims(time.Now())
	trailingSlash["iss"] = idp.issuer + "/"
	for name, tok := range map[string]string{
		"another issuer":              idp.sign(t, other),
		"no issuer":                   idp.sign(t, noIss),
		"issuer differs by a slash":   idp.sign(t, trailingSlash),
		"not a JWT":                   "human:alice",
		"JWT with a header that is 0": "MA.e30.sig",
	} {
		if _, err := v.VerifyBearer(context.Background(), tok); !errors.Is(err, authn.ErrTokenNotRecognized) {
			t.Errorf("%s: error = %v, want ErrTokenNotRecognized", name, err)
		}
	}
}

func TestOIDCProviderDownAtStartIsRetried(t *testing.T) {
	idp := newOIDCTestIdP(t)
	idp.discoveryDown.Store(true)
	clock := &fakeClock{}
	v := idp.verifier(t, clock)
	auth, err := authn.NewAuthenticator(authn.Config{TrustDomains: []spiffeid.TrustDomain{td}, Bearer: []authn.BearerVerifier{v}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	tok := idp.sign(t, idp.claims(time.Now()))

	// Refused, but as the broker's fault: the caller is not told it is
	// unauthenticated, and the log says why.
	_, err = auth.Authenticate(incoming(tlsPeer, "Bearer "+tok))
	if err == nil || errors.Is(err, authn.ErrUnauthenticated) || errors.Is(err, authn.ErrTokenNotRecognized) {
		t.Fatalf("provider down: error = %v, want a fault that is not ErrUnauthenticated", err)
	}
	wantPrefix := "authn: OIDC token from corp cannot be verified now: discovery of " + idp.issuer + " failed: 503 Service Unavailable"
	if !strings.HasPrefix(err.Error(), wantPrefix) {
		t.Fatalf("error = %q, want prefix %q", err, wantPrefix)
	}
	// Within the pause, no new attempt.
	_, err = v.VerifyBearer(context.Background(), tok)
	if err == nil || !strings.Contains(err.Error(), "discovery is tried again in 1s") {
		t.Fatalf("within the pause: %v", err)
	}

	idp.discoveryDown.Store(false)
	clock.Advance(2 * time.Second)
	if p, err := auth.Authenticate(incoming(tlsPeer, "Bearer "+tok)); err != nil || p.ID != "user:alice" {
		t.Fatalf("provider back: %+v, %v", p, err)
	}
}

func TestOIDCProviderUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "https://" + ln.Addr().String()
	ln.Close()
	clock := &fakeClock{}
	v, err := authn.NewOIDCVerifier(context.Background(), []authn.OIDCProvider{{Name: "corp", Issuer: issuer, Audience: "mayfly"}}, authn.WithOIDCClock(clock.Now), authn.WithOIDCLogger(oidcTestLogger()))
	if err != nil {
		t.Fatalf("a provider that is down must not stop the broker: %v", err)
	}
	key := oidcECKey(t)
	tok := oidcSignJWT(t, jose.ES256, key, "k", map[string]any{"iss": issuer, "aud": "mayfly", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	_, err = v.VerifyBearer(context.Background(), tok)
	if err == nil || errors.Is(err, authn.ErrUnauthenticated) || !strings.Contains(err.Error(), "authn: OIDC token from corp cannot be verified now: discovery of "+issuer+" failed") {
		t.Fatalf("error = %v", err)
	}
}

func TestOIDCKeysUnreachableIsNotTheCallersFault(t *testing.T) {
	idp := newOIDCTestIdP(t)
	idp.jwksDown.Store(true)
	v := idp.verifier(t, &fakeClock{})
	_, err := v.VerifyBearer(context.Background(), idp.sign(t, idp.claims(time.Now())))
	if err == nil || errors.Is(err, authn.ErrUnauthenticated) {
		t.Fatalf("error = %v, want a fault that is not ErrUnauthenticated", err)
	}
	want := "authn: OIDC token from corp cannot be verified now: keys of the provider could not be fetched: GET " + idp.issuer + "/keys: 500 Internal Server Error"
	if err.Error() != want {
		t.Fatalf("error:\n got: %s\nwant: %s", err, want)
	}
}

func TestOIDCKeyRotation(t *testing.T) {
	idp := newOIDCTestIdP(t)
	clock := &fakeClock{}
	v := idp.verifier(t, clock)
	if _, err := v.VerifyBearer(context.Background(), idp.sign(t, idp.claims(time.Now()))); err != nil {
		t.Fatal(err)
	}
	fetches := idp.jwksFetches.Load()

	// The provider rotates to a new key.
	next := oidcECKey(t)
	idp.mu.Lock()
	idp.jwks = append(idp.jwks, jose.JSONWebKey{Key: next.Public(), KeyID: "key-2", Algorithm: "ES256", Use: "sig"})
	idp.mu.Unlock()
	tok := oidcSignJWT(t, jose.ES256, next, "key-2", idp.claims(time.Now()))

	// Right after a fetch, an unknown key ID does not fetch again: forged
	// key IDs must not make the broker hammer the provider.
	_, err := v.VerifyBearer(context.Background(), tok)
	wantOIDCRefusal(t, err, `OIDC token from corp: signed with key "key-2", which the provider does not publish`)
	if n := idp.jwksFetches.Load(); n != fetches {
		t.Fatalf("JWKS fetched %d times, want %d", n, fetches)
	}
	clock.Advance(11 * time.Second)
	if p, err := v.VerifyBearer(context.Background(), tok); err != nil || p.ID != "user:alice" {
		t.Fatalf("after rotation: %+v, %v", p, err)
	}
	if n := idp.jwksFetches.Load(); n != fetches+1 {
		t.Fatalf("JWKS fetched %d times, want %d", n, fetches+1)
	}
}

func TestOIDCVerifierIgnoresHMACInDiscovery(t *testing.T) {
	idp := newOIDCTestIdP(t)
	idp.algs = []string{"HS256", "none"}
	clock := &fakeClock{}
	v := idp.verifier(t, clock)
	_, err := v.VerifyBearer(context.Background(), idp.sign(t, idp.claims(time.Now())))
	if err == nil || errors.Is(err, authn.ErrUnauthenticated) || !strings.Contains(err.Error(), `signs ID tokens only with ["HS256" "none"]; the broker accepts RS256`) {
		t.Fatalf("error = %v", err)
	}
}

func TestNewOIDCVerifierChecksConfig(t *testing.T) {
	ok := authn.OIDCProvider{Name: "corp", Issuer: "https://login.example.org", Audience: "mayfly"}
	with := func(change func(*authn.OIDCProvider)) []authn.OIDCProvider {
		p := ok
		change(&p)
		return []authn.OIDCProvider{p}
	}
	cases := []struct {
		providers []authn.OIDCProvider
		want      string
	}{
		{nil, "authn: NewOIDCVerifier: no identity providers"},
		{with(func(p *authn.OIDCProvider) { p.Name = "Corp" }), `authn: OIDC provider 0 ("Corp"): Name must be lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 characters`},
		{with(func(p *authn.OIDCProvider) { p.Issuer = "" }), `authn: OIDC provider 0 ("corp"): Issuer is required`},
		{with(func(p *authn.OIDCProvider) { p.Audience = "" }), `authn: OIDC provider 0 ("corp"): Audience (the client ID people log in with) is required`},
		{with(func(p *authn.OIDCProvider) { p.Issuer = "http://login.example.org" }), `authn: OIDC provider 0 ("corp"): Issuer "http://login.example.org" must be an https URL (http only on a loopback host)`},
		{with(func(p *authn.OIDCProvider) { p.Issuer = "https://login.example.org?tenant=1" }), `authn: OIDC provider 0 ("corp"): Issuer "https://login.example.org?tenant=1" must not have a query, fragment or user info`},
		{with(func(p *authn.OIDCProvider) { p.GroupsClaim = "my groups" }), `authn: OIDC provider 0 ("corp"): claim names must not contain spaces`},
		{[]authn.OIDCProvider{ok, ok}, `authn: OIDC provider 1: two providers are named "corp"`},
		{[]authn.OIDCProvider{ok, {Name: "other", Issuer: ok.Issuer, Audience: "x"}}, `authn: OIDC provider 1 ("other"): issuer https://login.example.org is also configured for another provider`},
	}
	for _, tc := range cases {
		_, err := authn.NewOIDCVerifier(context.Background(), tc.providers)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%+v: error = %v\nwant %s", tc.providers, err, tc.want)
		}
	}
	for _, issuer := range []string{"http://localhost:9998/", "http://127.0.0.1:1234", "http://[::1]:80/x"} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no discovery wanted
		if _, err := authn.NewOIDCVerifier(ctx, with(func(p *authn.OIDCProvider) { p.Issuer = issuer }), authn.WithOIDCLogger(oidcTestLogger())); err != nil {
			t.Errorf("loopback http issuer %s: %v", issuer, err)
		}
	}
}

func ExampleNewOIDCVerifier() {
	ctx := context.Background()
	oidcVerifier, err := authn.NewOIDCVerifier(ctx, []authn.OIDCProvider{{
		Name:          "corp",
		Issuer:        "https://login.example.org",
		Audience:      "mayfly",
		GroupsClaim:   "groups",
		UsernameClaim: "email",
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = authn.NewAuthenticator(authn.Config{
		TrustDomains: []spiffeid.TrustDomain{spiffeid.RequireTrustDomainFromString("example.org")},
		Bearer:       []authn.BearerVerifier{oidcVerifier},
	})
	fmt.Println(err)
	// Output: <nil>
}

// oidcSignJWTTyp signs claims with the provider's key and the given typ.
func oidcSignJWTTyp(t *testing.T, idp *oidcIdP, typ string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: idp.key}, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", idp.kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOIDCDiscoveryIsLazyWhenWarmUpIsCalledOff(t *testing.T) {
	idp := newOIDCTestIdP(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the broker stopped starting up, say
	v, err := authn.NewOIDCVerifier(ctx, []authn.OIDCProvider{idp.provider()},
		authn.WithOIDCHTTPClient(idp.srv.Client()), authn.WithOIDCLogger(oidcTestLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := v.VerifyBearer(context.Background(), idp.sign(t, idp.claims(time.Now()))); err != nil || p.ID != "user:alice" {
		t.Fatalf("%+v, %v", p, err)
	}
}
