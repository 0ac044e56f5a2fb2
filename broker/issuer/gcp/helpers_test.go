package gcp

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
)

const (
	testSA      = "reports-reader@analytics-prod.iam.gserviceaccount.com"
	testSubject = "spiffe://example.org/ns/analytics/sa/reports"
	testEnt     = "bq-reports-read"
)

type env struct {
	jwt  *brokerJWT
	sts  *fakeGoogleSTS
	iam  *fakeIAMCredentials
	iss  *Issuer
	logs *syncBuffer
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	return newEnvAlg(t, jwt.ES256, mod)
}

// newEnvAlg is newEnv with the broker's JWT issuer signing with alg.
func newEnvAlg(t *testing.T, alg string, mod func(*Config)) *env {
	t.Helper()
	e := &env{jwt: newBrokerJWT(t, alg), logs: &syncBuffer{}}
	e.sts = newFakeGoogleSTS(t, e.jwt)
	e.iam = newFakeIAMCredentials(t, e.sts)
	e.iam.sas[testSA] = fakeSA{Principals: []string{"principalSet://" + poolPrefix + "/attribute.entitlement/" + testEnt}}
	cfg := Config{
		WorkloadIdentityProvider: "//iam.googleapis.com/" + testProvider,
		TokenSource:              e.jwt.source,
		STSURL:                   e.sts.srv.URL + "/v1/token",
		IAMCredentialsURL:        e.iam.srv.URL,
		MaxBackoff:               time.Millisecond,
		Logger:                   slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	iss, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.iss = iss
	return e
}

func node(t *testing.T, text string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

func decode(t *testing.T, iss *Issuer, text string) Params {
	t.Helper()
	p, err := iss.DecodeParams(node(t, text))
	if err != nil {
		t.Fatalf("DecodeParams(%q): %v", text, err)
	}
	return p.(Params)
}

func testLease(ttl time.Duration) *lease.Lease {
	now := time.Now().Truncate(time.Second)
	return &lease.Lease{
		ID:          lease.NewID(now),
		Subject:     testSubject,
		Entitlement: testEnt,
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

func (e *env) issue(t *testing.T, l *lease.Lease, p any) (*issuer.Credential, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return e.iss.Issue(ctx, issuer.Request{
		Lease: l, Params: p,
		Bind: func(context.Context, string) error { t.Error("gcp called Bind"); return nil },
	})
}

// verify checks, at the fakes, that c is a live token of the service
// account for l: minted by generateAccessToken for the federated identity
// of l's subject, with the scopes asked for, and accepted by tokeninfo.
func (e *env) verify(t *testing.T, l *lease.Lease, c *issuer.Credential, p Params) {
	t.Helper()
	if c.Kind != issuer.KindOAuthToken {
		t.Fatalf("Kind %q; want oauth_token", c.Kind)
	}
	tok, ok := e.iam.token(c.Token)
	if !ok {
		t.Fatal("token was not minted by generateAccessToken")
	}
	if tok.call.ServiceAccount != p.ServiceAccount || !slices.Equal(tok.call.Scope, p.Scopes) || !slices.Equal(c.Scopes, p.Scopes) {
		t.Errorf("token of %q with scopes %v (credential %v); want %q %v", tok.call.ServiceAccount, tok.call.Scope, c.Scopes, p.ServiceAccount, p.Scopes)
	}
	if tok.call.Principal.Subject != l.Subject || tok.call.Principal.Entitlement != l.Entitlement || tok.call.Principal.JTI != l.ID {
		t.Errorf("minted for %+v; want subject %q, entitlement %q, jti %q", tok.call.Principal, l.Subject, l.Entitlement, l.ID)
	}
	if !c.ExpiresAt.Equal(tok.expires) || c.ExpiresAt.After(l.ExpiresAt) {
		t.Errorf("ExpiresAt %v, Google expiry %v, lease expiry %v", c.ExpiresAt, tok.expires, l.ExpiresAt)
	}
	if c.ExternalRef != "" {
		t.Errorf("ExternalRef %q; the lease id is the handle", c.ExternalRef)
	}
	resp, err := e.iam.srv.Client().Get(e.iam.srv.URL + "/tokeninfo?access_token=" + url.QueryEscape(c.Token))
	if err != nil {
		t.Fatalf("tokeninfo: %v", err)
	}
	defer resp.Body.Close()
	var info struct {
		Email, Scope string
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&info) != nil || info.Email != p.ServiceAccount || info.Scope != strings.Join(p.Scopes, " ") {
		t.Errorf("tokeninfo: %s %+v", resp.Status, info)
	}
}

type errorTexts struct {
	mu   sync.Mutex
	errs []string
}

func (x *errorTexts) add(err error) {
	if err != nil {
		x.mu.Lock()
		x.errs = append(x.errs, err.Error(), fmt.Sprintf("%+v", err))
		x.mu.Unlock()
	}
}

// assertNoSecrets fails t if a minted token (service account, federated,
// broker JWT) appears in the logs or errs.
func (e *env) assertNoSecrets(t *testing.T, errs *errorTexts) {
	t.Helper()
	var secrets []string
	e.iam.mu.Lock()
	for tok := range e.iam.tokens {
		secrets = append(secrets, tok)
	}
	e.iam.mu.Unlock()
	e.sts.mu.Lock()
	for tok := range e.sts.tokens {
		secrets = append(secrets, tok)
	}
	e.sts.mu.Unlock()
	for _, tok := range e.jwt.minted() {
		secrets = append(secrets, tok, tok[strings.LastIndexByte(tok, '.')+1:])
	}
	outputs := []string{e.logs.String()}
	if errs != nil {
		outputs = append(outputs, errs.errs...)
	}
	for n, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("output %d (0 is the log) contains a secret (%.12s…)", n, s)
			}
		}
	}
}
