package gcp

// Fakes of Google STS and the IAM Credentials API (no Google endpoint is
// reachable from tests), and a real broker JWT issuer served over HTTPS as
// Google would fetch it. fakeGoogleSTS verifies the subject token the way
// a workload identity pool provider does (discovery document, jwks_uri,
// signature, iss, aud, exp) and maps its claims to the federated
// principal; fakeIAMCredentials checks the bearer it is given, the
// impersonation binding of that principal, and the generateAccessToken
// body (scope, lifetime, delegates).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// ---------------------------------------------------------------------------
// The broker's JWT issuer, served over TLS like a real OIDC provider.

type brokerJWT struct {
	iss    *jwt.Issuer
	srv    *httptest.Server
	mu     sync.Mutex
	tokens []string
	fail   error
}

func newBrokerJWT(t *testing.T, alg string) *brokerJWT {
	t.Helper()
	b := &brokerJWT{}
	ready := make(chan http.Handler, 1)
	var h http.Handler
	var once sync.Once
	b.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { h = <-ready })
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(b.srv.Close)
	iss, err := jwt.New(jwt.Config{IssuerURL: b.srv.URL, Algorithm: alg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("jwt.New: %v", err)
	}
	b.iss = iss
	ready <- iss.Handler(nil, nil)
	return b
}

// source is the TokenSource the composition root would wire.
func (b *brokerJWT) source(ctx context.Context, l *lease.Lease, aud string) (string, error) {
	b.mu.Lock()
	fail := b.fail
	b.mu.Unlock()
	if fail != nil {
		return "", fail
	}
	c, err := b.iss.Issue(ctx, issuer.Request{Lease: l, Params: jwt.Params{Audience: []string{aud}}})
	if err != nil {
		return "", err
	}
	b.mu.Lock()
	b.tokens = append(b.tokens, c.Token)
	b.mu.Unlock()
	return c.Token, nil
}

func (b *brokerJWT) minted() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.tokens...)
}

type tokenClaims struct {
	josejwt.Claims
	Ent string `json:"ent"`
}

// verifyOIDC verifies a subject token as a workload identity pool provider
// does: registered issuer, discovery document naming it exactly, the kid's
// key from jwks_uri, signature, and current times.
func verifyOIDC(client *http.Client, token, wantIssuer string, now time.Time) (*tokenClaims, error) {
	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512})
	if err != nil {
		return nil, fmt.Errorf("not a JWT signed with RS* or ES*: %v", err)
	}
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := getJSON(client, wantIssuer+"/.well-known/openid-configuration", &disc); err != nil {
		return nil, err
	}
	if disc.Issuer != wantIssuer || !strings.HasPrefix(disc.JWKSURI, "https://") {
		return nil, fmt.Errorf("discovery issuer %q jwks_uri %q", disc.Issuer, disc.JWKSURI)
	}
	var set jose.JSONWebKeySet
	if err := getJSON(client, disc.JWKSURI, &set); err != nil {
		return nil, err
	}
	if len(tok.Headers) != 1 {
		return nil, errors.New("want one signature")
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		return nil, fmt.Errorf("kid %q not in the JWKS", tok.Headers[0].KeyID)
	}
	var c tokenClaims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		return nil, fmt.Errorf("signature: %v", err)
	}
	if err := c.Claims.ValidateWithLeeway(josejwt.Expected{Issuer: wantIssuer, Time: now}, 5*time.Second); err != nil {
		return nil, err
	}
	if c.Subject == "" || c.IssuedAt == nil || c.Expiry == nil {
		return nil, errors.New("sub, iat and exp are required")
	}
	return &c, nil
}

func getJSON(client *http.Client, u string, v any) error {
	resp, err := client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// gFault is an error answer of a fake: an HTTP status and a JSON body.
type gFault struct {
	Status int
	Body   string
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// oauthError is Google STS's error shape (RFC 6749 section 5.2).
func oauthError(status int, code, desc string) *gFault {
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": desc})
	return &gFault{status, string(b)}
}

// apiError is the IAM API's error shape.
func apiError(status int, s, msg string) *gFault {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": status, "message": msg, "status": s}})
	return &gFault{status, string(b)}
}

// ---------------------------------------------------------------------------
// fakeGoogleSTS: POST /v1/token.

const (
	testProvider = "projects/123456789012/locations/global/workloadIdentityPools/mayfly/providers/broker"
	poolPrefix   = "iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/mayfly"
)

// federated is a token fakeGoogleSTS issued: for whom.
type federated struct {
	Subject     string // google.subject = assertion.sub
	Entitlement string // attribute.entitlement = assertion.ent
	JTI         string
	Expires     time.Time
}

type exchangeCall struct {
	Form   url.Values
	Claims *tokenClaims
}

type fakeGoogleSTS struct {
	srv       *httptest.Server
	issuer    string // the provider's issuer URI
	jwks      *http.Client
	audiences []string // allowed audiences
	mu        sync.Mutex
	calls     []exchangeCall
	attempts  int
	fail      func(attempt int) *gFault
	tokens    map[string]federated
}

func newFakeGoogleSTS(t *testing.T, b *brokerJWT) *fakeGoogleSTS {
	f := &fakeGoogleSTS{
		issuer: b.srv.URL, jwks: b.srv.Client(),
		audiences: []string{"https://iam.googleapis.com/" + testProvider, "//iam.googleapis.com/" + testProvider},
		tokens:    map[string]federated{},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeGoogleSTS) lookup(token string) (federated, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fed, ok := f.tokens[token]
	return fed, ok
}

func (f *fakeGoogleSTS) recorded() []exchangeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]exchangeCall(nil), f.calls...)
}

func (f *fakeGoogleSTS) attemptCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

func (f *fakeGoogleSTS) serve(w http.ResponseWriter, r *http.Request) {
	fault := f.exchange(w, r)
	if fault != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(fault.Status)
		io.WriteString(w, fault.Body)
	}
}

func (f *fakeGoogleSTS) exchange(w http.ResponseWriter, r *http.Request) *gFault {
	f.mu.Lock()
	f.attempts++
	n, fail := f.attempts, f.fail
	f.mu.Unlock()
	if fail != nil {
		if fault := fail(n); fault != nil {
			return fault
		}
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/token" {
		return oauthError(404, "not_found", r.Method+" "+r.URL.Path)
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		return oauthError(400, "invalid_request", "want a form")
	}
	if err := r.ParseForm(); err != nil {
		return oauthError(400, "invalid_request", "bad form")
	}
	form := r.PostForm
	switch {
	case form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
		return oauthError(400, "unsupported_grant_type", form.Get("grant_type"))
	case form.Get("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token":
		return oauthError(400, "invalid_request", "requested_token_type")
	case form.Get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt":
		return oauthError(400, "invalid_request", "subject_token_type")
	case form.Get("audience") != "//iam.googleapis.com/"+testProvider:
		return oauthError(400, "invalid_target", "The target service indicated by the \"audience\" parameters is invalid.")
	case form.Get("scope") != DefaultScope:
		return oauthError(400, "invalid_scope", form.Get("scope"))
	}
	claims, err := verifyOIDC(f.jwks, form.Get("subject_token"), f.issuer, time.Now())
	if err != nil {
		return oauthError(400, "invalid_grant", "ID Token verification failed: "+err.Error()+" token: "+form.Get("subject_token"))
	}
	audOK := false
	for _, a := range f.audiences {
		if claims.Audience.Contains(a) {
			audOK = true
		}
	}
	if !audOK {
		return oauthError(400, "invalid_grant", "The audience in ID Token does not match the expected audience.")
	}
	if len(claims.Subject) > 127 {
		return oauthError(400, "invalid_request", "The size of mapped attribute google.subject exceeds the 127 bytes limit.")
	}
	tok := "ya29.fed." + randHex(24)
	f.mu.Lock()
	f.calls = append(f.calls, exchangeCall{Form: form, Claims: claims})
	f.tokens[tok] = federated{Subject: claims.Subject, Entitlement: claims.Ent, JTI: claims.ID, Expires: time.Now().Add(time.Hour)}
	f.mu.Unlock()
	writeJSON(w, 200, map[string]any{
		"access_token":      tok,
		"issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
		"token_type":        "Bearer",
		"expires_in":        3600,
	})
	return nil
}

// ---------------------------------------------------------------------------
// fakeIAMCredentials: POST /v1/projects/-/serviceAccounts/SA:generateAccessToken
// and GET /tokeninfo (what a Google API would check).

type fakeSA struct {
	// Principals allowed to impersonate it (roles/iam.workloadIdentityUser):
	// principal://…/subject/SUB or principalSet://…/attribute.entitlement/ENT.
	Principals []string
	// MaxLifetime: 1h, or 12h where the org policy lists the account.
	MaxLifetime time.Duration
}

type generateCall struct {
	ServiceAccount string
	Bearer         string
	Principal      federated
	Delegates      []string
	Scope          []string
	Lifetime       time.Duration
}

type saToken struct {
	call    generateCall
	expires time.Time
}

type fakeIAMCredentials struct {
	srv      *httptest.Server
	sts      *fakeGoogleSTS
	sas      map[string]fakeSA
	skew     time.Duration
	mu       sync.Mutex
	calls    []generateCall
	attempts int
	fail     func(attempt int) *gFault
	tokens   map[string]saToken
}

func newFakeIAMCredentials(t *testing.T, sts *fakeGoogleSTS) *fakeIAMCredentials {
	f := &fakeIAMCredentials{sts: sts, sas: map[string]fakeSA{}, tokens: map[string]saToken{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeIAMCredentials) recorded() []generateCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]generateCall(nil), f.calls...)
}

func (f *fakeIAMCredentials) attemptCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

func (f *fakeIAMCredentials) token(tok string) (saToken, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tokens[tok]
	return t, ok
}

func (f *fakeIAMCredentials) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/tokeninfo" {
		t, ok := f.token(r.URL.Query().Get("access_token"))
		if !ok || !time.Now().Before(t.expires) {
			writeJSON(w, 400, map[string]string{"error": "invalid_token"})
			return
		}
		writeJSON(w, 200, map[string]any{
			"azp": t.call.ServiceAccount, "email": t.call.ServiceAccount,
			"scope":      strings.Join(t.call.Scope, " "),
			"expires_in": strconv.Itoa(int(time.Until(t.expires).Seconds())),
		})
		return
	}
	if fault := f.generate(w, r); fault != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(fault.Status)
		io.WriteString(w, fault.Body)
	}
}

func (f *fakeIAMCredentials) generate(w http.ResponseWriter, r *http.Request) *gFault {
	f.mu.Lock()
	f.attempts++
	n, fail := f.attempts, f.fail
	f.mu.Unlock()
	if fail != nil {
		if fault := fail(n); fault != nil {
			return fault
		}
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/projects/-/serviceAccounts/")
	sa, ok2 := strings.CutSuffix(rest, ":generateAccessToken")
	if r.Method != http.MethodPost || !ok || !ok2 {
		return apiError(404, "NOT_FOUND", "no such method "+r.URL.Path)
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	fed, known := f.sts.lookup(bearer)
	if !ok || !known || !time.Now().Before(fed.Expires) {
		return apiError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
	}
	acct, exists := f.sas[sa]
	if !exists {
		return apiError(404, "NOT_FOUND", "Not found; Gaia id not found for email "+sa)
	}
	allowed := false
	for _, p := range acct.Principals {
		if p == "principal://"+poolPrefix+"/subject/"+fed.Subject || p == "principalSet://"+poolPrefix+"/attribute.entitlement/"+fed.Entitlement {
			allowed = true
		}
	}
	if !allowed {
		return apiError(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).")
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return apiError(400, "INVALID_ARGUMENT", "want JSON")
	}
	var body struct {
		Delegates []string `json:"delegates"`
		Scope     []string `json:"scope"`
		Lifetime  string   `json:"lifetime"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return apiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received. "+err.Error())
	}
	if len(body.Scope) == 0 {
		return apiError(400, "INVALID_ARGUMENT", "Scope required.")
	}
	for _, d := range body.Delegates {
		if !strings.HasPrefix(d, "projects/-/serviceAccounts/") {
			return apiError(400, "INVALID_ARGUMENT", "bad delegate "+d)
		}
	}
	secs, err := strconv.Atoi(strings.TrimSuffix(body.Lifetime, "s"))
	if err != nil || !strings.HasSuffix(body.Lifetime, "s") || secs <= 0 {
		return apiError(400, "INVALID_ARGUMENT", "bad lifetime "+body.Lifetime)
	}
	life := time.Duration(secs) * time.Second
	max := acct.MaxLifetime
	if max == 0 {
		max = time.Hour
	}
	if life > max {
		return apiError(400, "INVALID_ARGUMENT", "Lifetime must be at most "+max.String())
	}
	c := generateCall{ServiceAccount: sa, Bearer: bearer, Principal: fed, Delegates: body.Delegates, Scope: body.Scope, Lifetime: life}
	tok := "ya29.sa." + randHex(32)
	exp := time.Now().Add(f.skew).Add(life).UTC()
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.tokens[tok] = saToken{call: c, expires: exp}
	f.mu.Unlock()
	writeJSON(w, 200, map[string]string{"accessToken": tok, "expireTime": exp.Format(time.RFC3339Nano)})
	return nil
}

// ---------------------------------------------------------------------------

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
