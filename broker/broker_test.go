package broker_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/devca"
	"github.com/mayflyhq/mayfly/broker/lease"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

const (
	workloadID = "spiffe://mayfly.test/workload/orders"
	otherID    = "spiffe://mayfly.test/workload/other"
)

// testPolicy grants short-lived tokens so expiry can be watched in a test.
const testPolicy = `
version: 1
trust_domains: [mayfly.test]
admins: ["spiffe://mayfly.test/admin/*"]
entitlements:
  orders-api:
    description: Token for the orders API
    owner: user:alice
    issuer: jwt
    jwt: { audience: https://orders.mayfly.test, scopes: [orders:read] }
    ttl: 2s
    max_ttl: 4s
    standing:
      - subject: spiffe://mayfly.test/workload/orders
        purpose: the orders workload calls the orders API
        until: 2099-12-31
  long-api:
    description: Token with room to renew
    owner: user:alice
    issuer: jwt
    jwt: { audience: https://long.mayfly.test }
    ttl: 1m
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/*
        purpose: tests
        until: 2099-12-31
`

func start(t *testing.T) *brokertest.Env {
	t.Helper()
	return brokertest.Start(t, brokertest.Options{Policy: []byte(testPolicy)})
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	if msgPart != "" && !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("message %q does not contain %q", status.Convert(err).Message(), msgPart)
	}
}

// TestIssueVerifyExpire is the spine end to end: a workload gets a JWT over
// mTLS, an independent JOSE library verifies it against the JWKS the broker
// serves, exp - iat is the effective TTL, and after the TTL the lease reads
// revoked and introspection says inactive.
func TestIssueVerifyExpire(t *testing.T) {
	env := start(t)
	c := mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))
	resp, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"})
	if err != nil {
		t.Fatal(err)
	}
	l := resp.GetLease()
	if l.GetState() != mayflyv1.LeaseState_LEASE_STATE_ACTIVE || l.GetSubject() != workloadID || l.GetEntitlement() != "orders-api" {
		t.Fatalf("lease = %v", l)
	}
	if got := resp.GetEffectiveTtl().AsDuration(); got != 2*time.Second {
		t.Fatalf("effective ttl = %v, want 2s", got)
	}
	token := resp.GetCredential().GetJwt().GetToken()

	// Verify with go-jose against the JWKS fetched over HTTPS.
	hc := env.HTTPClient(t, "")
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(t, hc, env.HTTPURL+"/.well-known/openid-configuration", &disc)
	if disc.Issuer != env.HTTPURL {
		t.Fatalf("discovery issuer = %q, want %q", disc.Issuer, env.HTTPURL)
	}
	var jwks jose.JSONWebKeySet
	getJSON(t, hc, disc.JWKSURI, &jwks)
	parsed, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	keys := jwks.Key(parsed.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q not in JWKS", parsed.Headers[0].KeyID)
	}
	var claims josejwt.Claims
	var extra struct {
		Ent   string `json:"ent"`
		Scope string `json:"scope"`
	}
	if err := parsed.Claims(keys[0].Key, &claims, &extra); err != nil {
		t.Fatalf("independent verification failed: %v", err)
	}
	if err := claims.Validate(josejwt.Expected{Issuer: env.HTTPURL, Subject: workloadID,
		AnyAudience: josejwt.Audience{"https://orders.mayfly.test"}, ID: l.GetId(), Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if ttl := claims.Expiry.Time().Sub(claims.IssuedAt.Time()); ttl != 2*time.Second {
		t.Fatalf("exp - iat = %v, want the effective TTL 2s", ttl)
	}
	if extra.Ent != "orders-api" || extra.Scope != "orders:read" {
		t.Fatalf("ent/scope = %+v", extra)
	}
	if !introspectHTTP(t, env, token) {
		t.Fatal("introspection says inactive for a fresh token")
	}

	// After the TTL the revoker ends the lease.
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, err := c.GetLease(ctx(t), &mayflyv1.GetLeaseRequest{LeaseId: l.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if g.GetLease().GetState() == mayflyv1.LeaseState_LEASE_STATE_REVOKED {
			if g.GetLease().GetRevokeReason() != string(lease.ReasonExpired) {
				t.Fatalf("revoke reason = %q", g.GetLease().GetRevokeReason())
			}
			lag := g.GetLease().GetRevokedAt().AsTime().Sub(g.GetLease().GetExpiresAt().AsTime())
			t.Logf("revocation lag %v", lag)
			if lag < 0 || lag > 2*time.Second {
				t.Fatalf("revocation lag %v outside [0, 2s]", lag)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease still %v 10s after issue", g.GetLease().GetState())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if introspectHTTP(t, env, token) {
		t.Fatal("introspection says active after expiry")
	}
	in, err := mayflyv1.NewIntrospectionServiceClient(env.Dial(t, otherID)).Introspect(ctx(t), &mayflyv1.IntrospectRequest{Token: token})
	if err != nil || in.GetActive() {
		t.Fatalf("gRPC introspect after expiry = %v, %v", in, err)
	}
}

func getJSON(t *testing.T, hc *http.Client, u string, v any) {
	t.Helper()
	r, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("GET %s: %s", u, r.Status)
	}
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func introspectHTTP(t *testing.T, env *brokertest.Env, token string) bool {
	t.Helper()
	r, err := env.HTTPClient(t, otherID).PostForm(env.HTTPURL+"/introspect", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 {
		t.Fatalf("introspect: %s %s", r.Status, b)
	}
	var out struct {
		Active bool `json:"active"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out.Active
}

func TestIntrospectionNeedsAnSVID(t *testing.T) {
	env := start(t)
	r, err := env.HTTPClient(t, "").PostForm(env.HTTPURL+"/introspect", url.Values{"token": {"x.y.z"}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("introspect without client SVID: %s, want 401", r.Status)
	}
}

func TestRevokeNow(t *testing.T) {
	env := start(t)
	c := mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))
	resp, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "long-api"})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetLease().GetId()
	if _, err := c.RevokeLease(ctx(t), &mayflyv1.RevokeLeaseRequest{LeaseId: id}); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, id, mayflyv1.LeaseState_LEASE_STATE_REVOKED, 2*time.Second)
	if introspectHTTP(t, env, resp.GetCredential().GetJwt().GetToken()) {
		t.Fatal("revoked token introspects active")
	}
	// Revoking again is idempotent.
	again, err := c.RevokeLease(ctx(t), &mayflyv1.RevokeLeaseRequest{LeaseId: id})
	if err != nil || again.GetLease().GetState() != mayflyv1.LeaseState_LEASE_STATE_REVOKED {
		t.Fatalf("second revoke = %v, %v", again, err)
	}
	// Renewing a revoked lease is a failed precondition.
	_, err = c.RenewLease(ctx(t), &mayflyv1.RenewLeaseRequest{LeaseId: id})
	wantCode(t, err, codes.FailedPrecondition, "not active")
}

func waitState(t *testing.T, c mayflyv1.CredentialServiceClient, id string, want mayflyv1.LeaseState, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		g, err := c.GetLease(ctx(t), &mayflyv1.GetLeaseRequest{LeaseId: id})
		if err != nil {
			t.Fatal(err)
		}
		if g.GetLease().GetState() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease %s is %v after %v, want %v", id, g.GetLease().GetState(), within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDenialsLeakNothing(t *testing.T) {
	env := start(t)
	c := mayflyv1.NewCredentialServiceClient(env.Dial(t, otherID))
	_, errNoGrant := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"})
	_, errUnknown := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "no-such-thing"})
	wantCode(t, errNoGrant, codes.PermissionDenied, "no grant")
	wantCode(t, errUnknown, codes.PermissionDenied, "no grant")
	strip := func(err error) string {
		return strings.ReplaceAll(strings.ReplaceAll(status.Convert(err).Message(), "orders-api", "X"), "no-such-thing", "X")
	}
	if strip(errNoGrant) != strip(errUnknown) {
		t.Fatalf("denials differ:\n%s\n%s", status.Convert(errNoGrant).Message(), status.Convert(errUnknown).Message())
	}

	// Another caller's lease is NotFound, exactly like a missing one.
	mine := mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))
	resp, err := mine.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"})
	if err != nil {
		t.Fatal(err)
	}
	_, errTheirs := c.GetLease(ctx(t), &mayflyv1.GetLeaseRequest{LeaseId: resp.GetLease().GetId()})
	_, errMissing := c.GetLease(ctx(t), &mayflyv1.GetLeaseRequest{LeaseId: lease.NewID(time.Now())})
	wantCode(t, errTheirs, codes.NotFound, "")
	wantCode(t, errMissing, codes.NotFound, "")
	if status.Convert(errTheirs).Message() != status.Convert(errMissing).Message() {
		t.Fatal("NotFound messages differ between someone else's lease and a missing one")
	}
	_, err = c.RevokeLease(ctx(t), &mayflyv1.RevokeLeaseRequest{LeaseId: resp.GetLease().GetId()})
	wantCode(t, err, codes.NotFound, "")
	list, err := c.ListLeases(ctx(t), &mayflyv1.ListLeasesRequest{})
	if err != nil || len(list.GetLeases()) != 0 {
		t.Fatalf("other caller lists %v, %v", list.GetLeases(), err)
	}
}

func TestTTLClampedToMax(t *testing.T) {
	env := start(t)
	c := mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))
	resp, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api", Ttl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetEffectiveTtl().AsDuration() != 4*time.Second || !resp.GetTtlClamped() {
		t.Fatalf("effective %v clamped %v, want 4s clamped", resp.GetEffectiveTtl().AsDuration(), resp.GetTtlClamped())
	}
	l := resp.GetLease()
	if got := l.GetExpiresAt().AsTime().Sub(l.GetIssuedAt().AsTime()); got != 4*time.Second {
		t.Fatalf("lease lifetime %v", got)
	}
}

func TestRenewNeverPassesHardEnd(t *testing.T) {
	env := start(t)
	c := mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))
	resp, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"})
	if err != nil {
		t.Fatal(err)
	}
	l := resp.GetLease()
	hardEnd := l.GetHardEnd().AsTime()
	if got := hardEnd.Sub(l.GetIssuedAt().AsTime()); got != 4*time.Second {
		t.Fatalf("hard end %v after issue, want max_ttl 4s", got)
	}
	time.Sleep(1100 * time.Millisecond)
	r, err := c.RenewLease(ctx(t), &mayflyv1.RenewLeaseRequest{LeaseId: l.GetId(), Ttl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetLease().GetExpiresAt().AsTime().Equal(hardEnd) || !r.GetTtlClamped() {
		t.Fatalf("renewed to %v (clamped %v), want the hard end %v", r.GetLease().GetExpiresAt().AsTime(), r.GetTtlClamped(), hardEnd)
	}
	if r.GetCredential().GetJwt().GetToken() == "" || r.GetCredential().GetJwt().GetToken() == resp.GetCredential().GetJwt().GetToken() {
		t.Fatal("renewal of a JWT lease must return a new token")
	}
	_, err = c.RenewLease(ctx(t), &mayflyv1.RenewLeaseRequest{LeaseId: l.GetId()})
	wantCode(t, err, codes.FailedPrecondition, "hard end")
}

func TestRequestIDIsIdempotent(t *testing.T) {
	env := start(t)
	c := mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))
	req := &mayflyv1.IssueCredentialRequest{Entitlement: "long-api", RequestId: "deploy-42"}
	a, err := c.IssueCredential(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.IssueCredential(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if a.GetLease().GetId() != b.GetLease().GetId() || !a.GetLease().GetExpiresAt().AsTime().Equal(b.GetLease().GetExpiresAt().AsTime()) {
		t.Fatalf("retry minted a second lease: %s vs %s", a.GetLease().GetId(), b.GetLease().GetId())
	}
	list, err := c.ListLeases(ctx(t), &mayflyv1.ListLeasesRequest{})
	if err != nil || len(list.GetLeases()) != 1 {
		t.Fatalf("leases after retry = %d, %v", len(list.GetLeases()), err)
	}
	_, err = c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api", RequestId: "deploy-42"})
	wantCode(t, err, codes.InvalidArgument, "request_id")
}

func TestMalformedFieldsNamed(t *testing.T) {
	env := start(t)
	cc := env.Dial(t, workloadID)
	c := mayflyv1.NewCredentialServiceClient(cc)
	p := mayflyv1.NewPolicyServiceClient(cc)
	cases := []struct {
		name  string
		call  func() error
		field string
	}{
		{"empty entitlement", func() error { _, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{}); return err }, "entitlement: required"},
		{"upper-case entitlement", func() error {
			_, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "Orders-API"})
			return err
		}, "entitlement:"},
		{"negative ttl", func() error {
			_, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api", Ttl: durationpb.New(-time.Second)})
			return err
		}, "ttl: must not be negative"},
		{"control char in reason", func() error {
			_, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api", Reason: "a\x00b"})
			return err
		}, "reason:"},
		{"long ticket", func() error {
			_, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api", Ticket: strings.Repeat("x", 200)})
			return err
		}, "ticket: too long"},
		{"bad lease id", func() error { _, err := c.GetLease(ctx(t), &mayflyv1.GetLeaseRequest{LeaseId: "../etc"}); return err }, "lease_id:"},
		{"missing lease id", func() error { _, err := c.RevokeLease(ctx(t), &mayflyv1.RevokeLeaseRequest{}); return err }, "lease_id: required"},
		{"page size", func() error { _, err := c.ListLeases(ctx(t), &mayflyv1.ListLeasesRequest{PageSize: 5000}); return err }, "page_size:"},
		{"bad state", func() error {
			_, err := c.ListLeases(ctx(t), &mayflyv1.ListLeasesRequest{States: []mayflyv1.LeaseState{99}})
			return err
		}, "states:"},
		{"explain as bad subject", func() error {
			_, err := p.Explain(ctx(t), &mayflyv1.ExplainRequest{Entitlement: "orders-api", Subject: "alice"})
			return err
		}, "subject"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			code := codes.InvalidArgument
			if tc.name == "explain as bad subject" {
				code = codes.PermissionDenied // a non-admin may not explain for others at all
			}
			wantCode(t, err, code, tc.field)
		})
	}
}

func TestExplainAndEntitlements(t *testing.T) {
	env := start(t)
	p := mayflyv1.NewPolicyServiceClient(env.Dial(t, workloadID))
	ex, err := p.Explain(ctx(t), &mayflyv1.ExplainRequest{Entitlement: "orders-api", Ttl: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	d := ex.GetDecision()
	if d.GetOutcome() != mayflyv1.Decision_OUTCOME_ALLOW || d.GetTtl().AsDuration() != 4*time.Second || !d.GetTtlClamped() || d.GetSubject() != workloadID {
		t.Fatalf("decision = %v", d)
	}
	codesSeen := map[string]bool{}
	for _, r := range d.GetReasons() {
		codesSeen[r.GetCode()] = true
	}
	if !codesSeen["standing_grant"] || !codesSeen["ttl_clamped"] {
		t.Fatalf("reasons = %v", d.GetReasons())
	}
	// Explain acts on nothing.
	list, err := mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID)).ListLeases(ctx(t), &mayflyv1.ListLeasesRequest{})
	if err != nil || len(list.GetLeases()) != 0 {
		t.Fatalf("explain created leases: %v %v", list, err)
	}
	ents, err := p.ListEntitlements(ctx(t), &mayflyv1.ListEntitlementsRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(ents.GetEntitlements()) != 1 || ents.GetEntitlements()[0].GetName() != "long-api" || ents.GetNextPageToken() == "" {
		t.Fatalf("page 1 = %v", ents)
	}
	ents, err = p.ListEntitlements(ctx(t), &mayflyv1.ListEntitlementsRequest{PageSize: 1, PageToken: ents.GetNextPageToken()})
	if err != nil || len(ents.GetEntitlements()) != 1 || ents.GetEntitlements()[0].GetName() != "orders-api" || ents.GetNextPageToken() != "" {
		t.Fatalf("page 2 = %v %v", ents, err)
	}
	if e := ents.GetEntitlements()[0]; e.GetRevocable() || e.GetRevocableReason() == "" {
		t.Fatalf("a JWT entitlement must say it is not revocable and why: %v", e)
	}
}

func TestPolicyReloadsOnChange(t *testing.T) {
	env := start(t)
	c := mayflyv1.NewCredentialServiceClient(env.Dial(t, otherID))
	_, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"})
	wantCode(t, err, codes.PermissionDenied, "")
	updated := strings.Replace(testPolicy, "- subject: spiffe://mayfly.test/workload/orders\n", "- subject: spiffe://mayfly.test/workload/other\n", 1)
	if err := os.WriteFile(env.PolicyPath+".new", []byte(updated), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(env.PolicyPath+".new", env.PolicyPath); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy change not picked up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A broken policy keeps the last good one.
	if err := os.WriteFile(env.PolicyPath, []byte("version: 1\nbogus: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if _, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"}); err != nil {
		t.Fatalf("a broken policy file replaced the last good policy: %v", err)
	}
}

// TestUnauthenticated checks the interceptor wiring end to end: every bad
// identity gets Unauthenticated, not a transport error.
func TestUnauthenticated(t *testing.T) {
	env := start(t)
	td := spiffeid.RequireTrustDomainFromString(brokertest.TrustDomain)
	brokerAuth := tlsconfig.AuthorizeID(brokertest.BrokerID)
	now := time.Now()
	mint := func(o devca.MintOptions) *tls.Config {
		svid, err := env.CA.MintX509SVIDOpts(o)
		if err != nil {
			t.Fatal(err)
		}
		return tlsconfig.MTLSClientConfig(svid, env.CA.X509Bundle(), brokerAuth)
	}
	foreign, err := devca.NewForeignCA(td)
	if err != nil {
		t.Fatal(err)
	}
	foreignSVID, err := foreign.MintX509SVID(spiffeid.RequireFromString(workloadID), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		tls  *tls.Config
		want string
	}{
		"no client certificate": {tlsconfig.TLSClientConfig(env.CA.X509Bundle(), brokerAuth), "no client certificate"},
		"expired SVID":          {mint(devca.MintOptions{ID: spiffeid.RequireFromString(workloadID), NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}), "expired"},
		"two URI SANs":          {mint(devca.MintOptions{ID: spiffeid.RequireFromString(workloadID), TTL: time.Hour, ExtraURIs: []string{"spiffe://mayfly.test/extra"}}), "2 URI SANs"},
		"foreign CA, same ID":   {tlsconfig.MTLSClientConfig(foreignSVID, env.CA.X509Bundle(), brokerAuth), ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cc, err := grpc.NewClient(env.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc.tls)))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_, err = mayflyv1.NewCredentialServiceClient(cc).IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"})
			wantCode(t, err, codes.Unauthenticated, tc.want)
		})
	}
	// Another trust domain's CA and SVID: refused too.
	dir := t.TempDir()
	evil, err := devca.Open(dir, spiffeid.RequireTrustDomainFromString("evil.test"))
	if err != nil {
		t.Fatal(err)
	}
	evilSVID, err := evil.MintX509SVID(spiffeid.RequireFromString("spiffe://evil.test/workload/orders"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(env.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(evilSVID, env.CA.X509Bundle(), brokerAuth))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = mayflyv1.NewCredentialServiceClient(cc).IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"})
	wantCode(t, err, codes.Unauthenticated, "")
	if n := leaseCount(t, env); n != 0 {
		t.Fatalf("refused callers left %d leases", n)
	}
}

func leaseCount(t *testing.T, env *brokertest.Env) int {
	t.Helper()
	ls, _, err := env.Store.List(ctx(t), lease.Query{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(ls)
}

// bearer sends a JWT-SVID as per-RPC credentials.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

func TestJWTSVIDAuthenticates(t *testing.T) {
	env := start(t)
	id := spiffeid.RequireFromString(workloadID)
	tlsOnly := tlsconfig.TLSClientConfig(env.CA.X509Bundle(), tlsconfig.AuthorizeID(brokertest.BrokerID))
	call := func(token string) (*mayflyv1.IssueCredentialResponse, error) {
		cc, err := grpc.NewClient(env.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsOnly)), grpc.WithPerRPCCredentials(bearer(token)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		return mayflyv1.NewCredentialServiceClient(cc).IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"})
	}
	good, err := env.CA.MintJWTSVID(id, []string{brokertest.BrokerID.String()}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := call(good)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetLease().GetSubject() != workloadID {
		t.Fatalf("subject = %q", resp.GetLease().GetSubject())
	}
	wrongAud, _ := env.CA.MintJWTSVID(id, []string{"spiffe://mayfly.test/not-the-broker"}, 5*time.Minute)
	_, err = call(wrongAud)
	wantCode(t, err, codes.Unauthenticated, "audience")
	none, _ := env.CA.MintJWTSVIDOpts(devca.JWTOptions{ID: id, Audience: []string{brokertest.BrokerID.String()}, TTL: time.Minute, Forgery: devca.ForgeAlgNone})
	_, err = call(none)
	wantCode(t, err, codes.Unauthenticated, "")
}
