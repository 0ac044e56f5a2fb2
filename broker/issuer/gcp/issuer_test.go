package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
)

const saParams = "service_account: " + testSA

func TestIssue(t *testing.T) {
	e := newEnv(t, nil)
	p := decode(t, e.iss, saParams+"\nscopes: [https://www.googleapis.com/auth/bigquery.readonly]\ndelegates: [projects/-/serviceAccounts/hop@analytics-prod.iam.gserviceaccount.com]")
	l := testLease(20 * time.Minute)
	c, err := e.issue(t, l, p)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	e.verify(t, l, c, p)

	// What Google STS received: the exchange, and a subject token the fake
	// verified against the broker's JWKS.
	ex := e.sts.recorded()
	if len(ex) != 1 {
		t.Fatalf("Google STS got %d exchanges", len(ex))
	}
	f, claims := ex[0].Form, ex[0].Claims
	if f.Get("audience") != "//iam.googleapis.com/"+testProvider || f.Get("scope") != DefaultScope || f.Get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt" {
		t.Errorf("exchange form %v", f)
	}
	if claims.Issuer != e.jwt.srv.URL || !claims.Audience.Contains("https://iam.googleapis.com/"+testProvider) || claims.Subject != testSubject || claims.Ent != testEnt || claims.ID != l.ID {
		t.Errorf("subject token iss %q aud %v sub %q ent %q jti %q", claims.Issuer, claims.Audience, claims.Subject, claims.Ent, claims.ID)
	}
	if life := claims.Expiry.Time().Sub(claims.IssuedAt.Time()); life > ExchangeTokenLifetime {
		t.Errorf("subject token lives %v; want at most %v", life, ExchangeTokenLifetime)
	}

	// What generateAccessToken received: the federated token as bearer,
	// and the body.
	gen := e.iam.recorded()
	if len(gen) != 1 {
		t.Fatalf("generateAccessToken got %d calls", len(gen))
	}
	g := gen[0]
	if fed, ok := e.sts.lookup(g.Bearer); !ok || fed.Subject != testSubject {
		t.Errorf("generateAccessToken bearer is not the federated token of the caller")
	}
	if !slices.Equal(g.Scope, []string{"https://www.googleapis.com/auth/bigquery.readonly"}) ||
		!slices.Equal(g.Delegates, []string{"projects/-/serviceAccounts/hop@analytics-prod.iam.gserviceaccount.com"}) {
		t.Errorf("scope %v delegates %v", g.Scope, g.Delegates)
	}
	want := 20*time.Minute - SkewAllowance
	if g.Lifetime > want || g.Lifetime < want-2*time.Second {
		t.Errorf("lifetime %v; want %v (less the time the test took)", g.Lifetime, want)
	}
	e.assertNoSecrets(t, nil)
}

// TestSigningAlgorithms: workload identity federation accepts RSA and EC
// keys, not Ed25519; the fake enforces the same.
func TestSigningAlgorithms(t *testing.T) {
	for alg, want := range map[string]error{jwt.ES256: nil, jwt.RS256: nil, jwt.EdDSA: issuer.ErrRejected} {
		t.Run(alg, func(t *testing.T) {
			e := newEnvAlg(t, alg, nil)
			p := decode(t, e.iss, saParams)
			l := testLease(15 * time.Minute)
			c, err := e.issue(t, l, p)
			if !errors.Is(err, want) {
				t.Fatalf("Issue with %s tokens = %v; want %v", alg, err, want)
			}
			if want == nil {
				e.verify(t, l, c, p)
			}
		})
	}
}

func TestLifetimes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		params    string
		saMax     time.Duration
		ttl       time.Duration
		issuedAgo time.Duration
		want      time.Duration // lifetime asked for (±2s)
		wantErr   error
		wantInErr string
		called    bool
	}{
		{name: "1m lease refused", ttl: time.Minute, wantErr: issuer.ErrRejected, wantInErr: "set ttl >= 2m"},
		{name: "2m lease", ttl: 2 * time.Minute, want: 90 * time.Second, called: true},
		{name: "15m lease", ttl: 15 * time.Minute, want: 15*time.Minute - 30*time.Second, called: true},
		{name: "2h lease capped at 1h", ttl: 2 * time.Hour, want: time.Hour, called: true},
		{name: "12h with the org policy", params: "\nmax_lifetime: 12h", saMax: 12 * time.Hour, ttl: 12 * time.Hour, want: 12*time.Hour - 30*time.Second, called: true},
		{name: "12h without the org policy", params: "\nmax_lifetime: 12h", ttl: 12 * time.Hour, called: true, wantErr: issuer.ErrRejected, wantInErr: "HTTP 400, INVALID_ARGUMENT"},
		{name: "too little left", ttl: time.Hour, issuedAgo: 59*time.Minute + 20*time.Second, wantErr: issuer.ErrRejected, wantInErr: "too little for a token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			if tc.saMax != 0 {
				sa := e.iam.sas[testSA]
				sa.MaxLifetime = tc.saMax
				e.iam.sas[testSA] = sa
			}
			p := decode(t, e.iss, saParams+tc.params)
			l := testLease(tc.ttl)
			l.IssuedAt = l.IssuedAt.Add(-tc.issuedAgo)
			l.ExpiresAt = l.ExpiresAt.Add(-tc.issuedAgo)
			c, err := e.issue(t, l, p)
			if got := e.iam.attemptCount() > 0; got != tc.called {
				t.Fatalf("generateAccessToken called = %v; want %v", got, tc.called)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || c != nil || !strings.Contains(err.Error(), tc.wantInErr) || !strings.Contains(err.Error(), `"`+testEnt+`"`) {
					t.Fatalf("Issue = %v, %v; want %v containing %q", c, err, tc.wantErr, tc.wantInErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			got := e.iam.recorded()[0].Lifetime
			if got > tc.want || got < tc.want-2*time.Second {
				t.Errorf("lifetime %v; want %v", got, tc.want)
			}
			e.verify(t, l, c, p)
		})
	}
}

func TestTokenOutlivingLeaseIsDropped(t *testing.T) {
	e := newEnv(t, nil)
	e.iam.skew = 2 * time.Minute
	c, err := e.issue(t, testLease(15*time.Minute), decode(t, e.iss, saParams))
	if !errors.Is(err, issuer.ErrUnavailable) || c != nil || !strings.Contains(err.Error(), "after the lease") {
		t.Fatalf("Issue = %v, %v; want ErrUnavailable", c, err)
	}
	errs := &errorTexts{}
	errs.add(err)
	e.assertNoSecrets(t, errs)
}

func TestRenew(t *testing.T) {
	e := newEnv(t, nil)
	p := decode(t, e.iss, saParams)
	l := testLease(15 * time.Minute)
	first, err := e.issue(t, l, p)
	if err != nil {
		t.Fatal(err)
	}
	active := l.Clone()
	active.State = lease.StateActive
	newExp := l.ExpiresAt.Add(15 * time.Minute)
	c, err := e.iss.Renew(context.Background(), active, p, newExp)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	renewed := active.Clone()
	renewed.ExpiresAt = newExp
	e.verify(t, renewed, c, p)
	if c.Token == first.Token || !c.ExpiresAt.After(first.ExpiresAt) {
		t.Error("renewal did not mint a later token")
	}
	if _, err := e.iss.Renew(context.Background(), active, p, l.HardEnd.Add(time.Second)); !errors.Is(err, lease.ErrPastHardEnd) {
		t.Errorf("Renew past the hard end = %v", err)
	}
	if _, err := e.iss.Renew(context.Background(), l, p, newExp); !errors.Is(err, lease.ErrWrongState) {
		t.Errorf("Renew of a pending lease = %v", err)
	}
}

func TestRevoke(t *testing.T) {
	e := newEnv(t, nil)
	p := decode(t, e.iss, saParams)
	l := testLease(15 * time.Minute)
	c, err := e.issue(t, l, p)
	if err != nil {
		t.Fatal(err)
	}
	r := l.Clone()
	r.State = lease.StateRevoking
	for range 2 {
		if err := e.iss.Revoke(context.Background(), r); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
	}
	e.verify(t, l, c, p) // still valid: what Revocability says
	if ok, reason := e.iss.Revocability(p); ok || !strings.Contains(reason, "cannot be revoked") {
		t.Errorf("Revocability = %v, %q", ok, reason)
	}
}

func TestErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		name         string
		stsFault     *gFault
		iamFault     *gFault
		failAttempts int // then succeed; 0: always
		want         error
		wantSTS      int // attempts seen by each fake
		wantIAM      int
		wantInErr    string
	}{
		{name: "STS invalid_grant", stsFault: oauthError(400, "invalid_grant", "ID Token issuer mismatch"), want: issuer.ErrRejected, wantSTS: 1, wantInErr: "HTTP 400, invalid_grant"},
		{name: "STS invalid_target", stsFault: oauthError(400, "invalid_target", "pool disabled"), want: issuer.ErrRejected, wantSTS: 1, wantInErr: "does not exist or is disabled"},
		{name: "STS 503", stsFault: oauthError(503, "temporarily_unavailable", "later"), want: issuer.ErrUnavailable, wantSTS: 3, wantInErr: "after 3 attempts"},
		{name: "STS 429 then success", stsFault: oauthError(429, "rate_limited", "slow down"), failAttempts: 2, wantSTS: 3, wantIAM: 1},
		{name: "IAM PERMISSION_DENIED", iamFault: apiError(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getAccessToken' denied"), want: issuer.ErrRejected, wantSTS: 1, wantIAM: 1, wantInErr: "roles/iam.workloadIdentityUser"},
		{name: "IAM NOT_FOUND", iamFault: apiError(404, "NOT_FOUND", "Gaia id not found"), want: issuer.ErrRejected, wantSTS: 1, wantIAM: 1, wantInErr: "service account does not exist"},
		{name: "IAM 500", iamFault: apiError(500, "INTERNAL", "oops"), want: issuer.ErrUnavailable, wantSTS: 1, wantIAM: 3, wantInErr: "HTTP 500, INTERNAL"},
		{name: "IAM 429", iamFault: apiError(429, "RESOURCE_EXHAUSTED", "quota"), want: issuer.ErrUnavailable, wantSTS: 1, wantIAM: 3},
		{name: "IAM 503 then success", iamFault: apiError(503, "UNAVAILABLE", "later"), failAttempts: 1, wantSTS: 1, wantIAM: 2},
		{name: "IAM answer not JSON", iamFault: &gFault{502, "<html>bad gateway</html>"}, want: issuer.ErrUnavailable, wantSTS: 1, wantIAM: 3, wantInErr: "HTTP 502, unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			faultAt := func(f *gFault) func(int) *gFault {
				return func(n int) *gFault {
					if tc.failAttempts > 0 && n > tc.failAttempts {
						return nil
					}
					return f
				}
			}
			if tc.stsFault != nil {
				e.sts.fail = faultAt(tc.stsFault)
			}
			if tc.iamFault != nil {
				e.iam.fail = faultAt(tc.iamFault)
			}
			p := decode(t, e.iss, saParams)
			l := testLease(15 * time.Minute)
			c, err := e.issue(t, l, p)
			if got := e.sts.attemptCount(); got != tc.wantSTS {
				t.Errorf("Google STS saw %d attempts; want %d", got, tc.wantSTS)
			}
			if got := e.iam.attemptCount(); got != tc.wantIAM {
				t.Errorf("IAM Credentials saw %d attempts; want %d", got, tc.wantIAM)
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				e.verify(t, l, c, p)
				return
			}
			if !errors.Is(err, tc.want) || c != nil {
				t.Fatalf("Issue = %v, %v; want %v", c, err, tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, `entitlement "`+testEnt+`"`) || !strings.Contains(msg, tc.wantInErr) {
				t.Errorf("error %q; want the entitlement and %q", msg, tc.wantInErr)
			}
			for _, text := range []string{"oops", "denied on", "Gaia", "mismatch", "pool disabled", "slow down", "quota", "bad gateway"} {
				if strings.Contains(msg, text) {
					t.Errorf("error %q carries Google's message", msg)
				}
			}
			errs := &errorTexts{}
			errs.add(err)
			e.assertNoSecrets(t, errs)
		})
	}
}

// TestFederationRefusals lets the fakes refuse for real.
func TestFederationRefusals(t *testing.T) {
	for _, tc := range []struct {
		name      string
		setup     func(e *env)
		mod       func(c *Config)
		want      error
		wantInErr string
	}{
		{name: "no binding for this entitlement", setup: func(e *env) {
			e.iam.sas[testSA] = fakeSA{Principals: []string{"principalSet://" + poolPrefix + "/attribute.entitlement/other"}}
		}, want: issuer.ErrRejected, wantInErr: "PERMISSION_DENIED"},
		{name: "binding for this caller", setup: func(e *env) {
			e.iam.sas[testSA] = fakeSA{Principals: []string{"principal://" + poolPrefix + "/subject/" + testSubject}}
		}},
		{name: "wrong token audience", mod: func(c *Config) { c.TokenAudience = "mayfly" }, want: issuer.ErrRejected, wantInErr: "invalid_grant"},
		{name: "provider trusts another issuer", setup: func(e *env) { e.sts.issuer = "https://other.example.org" }, want: issuer.ErrRejected, wantInErr: "invalid_grant"},
		{name: "wrong provider", mod: func(c *Config) {
			c.WorkloadIdentityProvider = "projects/123456789012/locations/global/workloadIdentityPools/other/providers/broker"
		}, want: issuer.ErrRejected, wantInErr: "invalid_target"},
		{name: "JWKS unreachable", setup: func(e *env) { e.jwt.srv.Close() }, want: issuer.ErrRejected, wantInErr: "invalid_grant"},
		{name: "Google STS unreachable", setup: func(e *env) { e.sts.srv.Close() }, want: issuer.ErrUnavailable, wantInErr: "could not reach Google"},
		{name: "token source down", setup: func(e *env) { e.jwt.fail = errors.New("jwt: no key") }, want: issuer.ErrUnavailable, wantInErr: "token for lease"},
		{name: "token source refuses", setup: func(e *env) { e.jwt.fail = fmt.Errorf("jwt: too long: %w", issuer.ErrRejected) }, want: issuer.ErrRejected, wantInErr: "token for lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.mod)
			if tc.setup != nil {
				tc.setup(e)
			}
			p := decode(t, e.iss, saParams)
			l := testLease(15 * time.Minute)
			c, err := e.issue(t, l, p)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				e.verify(t, l, c, p)
				return
			}
			if !errors.Is(err, tc.want) || c != nil || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("Issue = %v, %v; want %v containing %q", c, err, tc.want, tc.wantInErr)
			}
			errs := &errorTexts{}
			errs.add(err)
			e.assertNoSecrets(t, errs) // the fake's invalid_grant echoes the subject token
		})
	}
}

func TestCallTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CallTimeout = 300 * time.Millisecond })
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	e.iam.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})
	start := time.Now()
	_, err := e.issue(t, testLease(15*time.Minute), decode(t, e.iss, saParams))
	if !errors.Is(err, issuer.ErrUnavailable) || !strings.Contains(err.Error(), "did not complete") {
		t.Fatalf("Issue against a hanging IAM = %v; want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Issue took %v; CallTimeout is 300ms", d)
	}
}

func TestConfigValidation(t *testing.T) {
	src := func(context.Context, *lease.Lease, string) (string, error) { return "", nil }
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{TokenSource: src}, "Config.WorkloadIdentityProvider is required"},
		{Config{WorkloadIdentityProvider: "projects/x/pools/y", TokenSource: src}, "is not projects/NUMBER"},
		{Config{WorkloadIdentityProvider: testProvider}, "Config.TokenSource"},
		{Config{WorkloadIdentityProvider: testProvider, TokenSource: src, STSURL: "sts"}, "Config.STSURL"},
		{Config{WorkloadIdentityProvider: testProvider, TokenSource: src, CallTimeout: time.Minute}, "shorter than SkewAllowance"},
		{Config{WorkloadIdentityProvider: testProvider, TokenSource: src, MaxAttempts: -2}, "Config.MaxAttempts"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want an error containing %q", tc.cfg, err, tc.want)
		}
	}
	iss, err := New(Config{WorkloadIdentityProvider: "//iam.googleapis.com/" + testProvider, TokenSource: src})
	if err != nil {
		t.Fatal(err)
	}
	if iss.cfg.WorkloadIdentityProvider != testProvider || iss.cfg.TokenAudience != "https://iam.googleapis.com/"+testProvider ||
		iss.cfg.STSURL != DefaultSTSURL || iss.cfg.IAMCredentialsURL != DefaultIAMCredentialsURL {
		t.Errorf("defaults: %+v", iss.cfg)
	}
}
