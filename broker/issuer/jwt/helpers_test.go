package jwt

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// fakeClock is a settable clock for rotation, pruning and expiry tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// leaseStates is the test's stand-in for the broker's lease store, as
// far as introspection asks it: which lease ids are active.
type leaseStates struct {
	mu     sync.Mutex
	active map[string]bool
	fail   error
	calls  atomic.Int64
}

func (s *leaseStates) set(id string, active bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		s.active = map[string]bool{}
	}
	s.active[id] = active
}

func (s *leaseStates) lookup(_ context.Context, jti string) (bool, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return false, s.fail
	}
	return s.active[jti], nil
}

// introspectSecret is what a resource server presents to /introspect.
const introspectSecret = "resource-server-secret"

func authorizeBearer(r *http.Request) error {
	if r.Header.Get("Authorization") != "Bearer "+introspectSecret {
		return errors.New("bad or missing bearer credential")
	}
	return nil
}

// env is an Issuer served over TLS by its own Handler, as verifiers see it.
type env struct {
	iss    *Issuer
	srv    *httptest.Server
	client *http.Client
	leases *leaseStates
	cfg    Config
}

// newEnv starts a TLS server, then the Issuer whose IssuerURL is the
// server's URL. cfg.IssuerURL is ignored.
func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	var h atomic.Pointer[http.Handler]
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*h.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg.IssuerURL = srv.URL
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	iss, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e := &env{iss: iss, srv: srv, client: srv.Client(), leases: &leaseStates{}, cfg: cfg}
	handler := iss.Handler(e.leases.lookup, authorizeBearer)
	h.Store(&handler)
	return e
}

func testLogger(t testing.TB) *slog.Logger {
	if tt, ok := t.(*testing.T); ok {
		return slog.New(slog.NewTextHandler(tt.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testLease is a pending lease as the broker writes it.
func testLease(now time.Time, ttl time.Duration) *lease.Lease {
	now = now.Truncate(time.Second)
	return &lease.Lease{
		ID:          lease.NewID(now),
		Subject:     "spiffe://example.org/ns/shop/sa/orders",
		Entitlement: "orders-api",
		GrantID:     "grant-1",
		Issuer:      Name,
		State:       lease.StatePending,
		IssuedAt:    now,
		ExpiresAt:   now.Add(ttl),
		HardEnd:     now.Add(4 * ttl),
		DueAt:       now.Add(time.Minute),
		Renewable:   true,
	}
}

var testParams = Params{Audience: []string{"https://orders.example.com"}, Scopes: []string{"orders.read", "orders.write"}}

func (e *env) issue(t testing.TB, l *lease.Lease, p any) *issuer.Credential {
	t.Helper()
	c, err := e.iss.Issue(context.Background(), issuer.Request{
		Lease: l, Params: p,
		Bind: func(context.Context, string) error { t.Error("jwt issuer called Bind"); return nil },
	})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return c
}

func (e *env) get(t testing.TB, path string) (*http.Response, []byte) {
	t.Helper()
	resp, err := e.client.Get(e.srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp, body
}

// joseClaims is what the independent verifier extracts.
type joseClaims struct {
	josejwt.Claims
	Ent   string `json:"ent"`
	Scope string `json:"scope"`
}

// verifyIndependently checks token the way an outside relying party does,
// with go-jose and nothing from this package: discovery document, then
// jwks_uri, then the key the kid names, its thumbprint, the signature and
// the registered claims at the real time now.
func (e *env) verifyIndependently(t testing.TB, token string) (joseClaims, jose.JSONWebKey) {
	t.Helper()
	_, body := e.get(t, DiscoveryPath)
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &disc); err != nil {
		t.Fatalf("discovery document: %v", err)
	}
	if disc.Issuer != e.srv.URL || !strings.HasPrefix(disc.JWKSURI, e.srv.URL+"/") {
		t.Fatalf("discovery issuer %q jwks_uri %q; want them under %q", disc.Issuer, disc.JWKSURI, e.srv.URL)
	}
	resp, err := e.client.Get(disc.JWKSURI)
	if err != nil {
		t.Fatalf("GET jwks_uri: %v", err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatalf("JWKS does not parse with go-jose: %v", err)
	}

	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.EdDSA})
	if err != nil {
		t.Fatalf("go-jose ParseSigned: %v", err)
	}
	if len(tok.Headers) != 1 {
		t.Fatalf("token has %d signatures", len(tok.Headers))
	}
	hdr := tok.Headers[0]
	if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); typ != "JWT" {
		t.Errorf("header typ %q; want JWT", typ)
	}
	keys := set.Key(hdr.KeyID)
	if len(keys) != 1 {
		t.Fatalf("JWKS has %d keys with kid %q; want 1", len(keys), hdr.KeyID)
	}
	key := keys[0]
	if key.Algorithm != hdr.Algorithm || key.Use != "sig" || !key.IsPublic() {
		t.Errorf("JWK alg %q use %q public %v; token alg %q", key.Algorithm, key.Use, key.IsPublic(), hdr.Algorithm)
	}
	thumb, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatalf("go-jose Thumbprint: %v", err)
	}
	if got := base64.RawURLEncoding.EncodeToString(thumb); got != hdr.KeyID {
		t.Errorf("kid %q is not the RFC 7638 thumbprint %q", hdr.KeyID, got)
	}
	var c joseClaims
	if err := tok.Claims(key, &c); err != nil {
		t.Fatalf("go-jose signature check: %v", err)
	}
	if err := c.Claims.ValidateWithLeeway(josejwt.Expected{Issuer: e.srv.URL, Time: time.Now()}, 0); err != nil {
		t.Fatalf("go-jose claims check: %v", err)
	}
	return c, key
}

// harnessVerify is issuertest's Verify: the credential is a token an
// outside verifier accepts, with the claims of its lease.
func (e *env) harnessVerify(t *testing.T, l *lease.Lease, cred *issuer.Credential, p Params) {
	t.Helper()
	if cred.Kind != issuer.KindJWT {
		t.Fatalf("Kind %q; want jwt", cred.Kind)
	}
	c, _ := e.verifyIndependently(t, cred.Token)
	if c.Subject != l.Subject || c.ID != l.ID || c.Ent != l.Entitlement {
		t.Errorf("sub %q jti %q ent %q; want %q %q %q", c.Subject, c.ID, c.Ent, l.Subject, l.ID, l.Entitlement)
	}
	if !slices.Equal([]string(c.Audience), p.Audience) {
		t.Errorf("aud %v; want %v", c.Audience, p.Audience)
	}
	if c.Scope != strings.Join(p.Scopes, " ") || !slices.Equal(cred.Scopes, p.Scopes) {
		t.Errorf("scope claim %q, credential scopes %v; want %v", c.Scope, cred.Scopes, p.Scopes)
	}
	if exp := c.Expiry.Time(); !exp.Equal(cred.ExpiresAt) || exp.After(l.ExpiresAt) {
		t.Errorf("exp %v, credential ExpiresAt %v, lease ExpiresAt %v", exp, cred.ExpiresAt, l.ExpiresAt)
	}
	if cred.ExternalRef != "" {
		t.Errorf("ExternalRef %q; the lease id is the handle", cred.ExternalRef)
	}
}
