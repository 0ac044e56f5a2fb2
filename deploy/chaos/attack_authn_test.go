package chaos

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/devca"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// authnPolicy grants a workload and a person an entitlement of the
// broker's own JWT issuer.
const authnPolicy = `
version: 1
trust_domains: [mayfly.test]
groups:
  platform: ["user:alice", "oidc-group:dev/platform"]
entitlements:
  orders-api:
    description: Token for the orders API
    owner: user:ops
    issuer: jwt
    jwt: { audience: https://orders.mayfly.test }
    ttl: 1m
    max_ttl: 5m
    standing:
      - subject: spiffe://mayfly.test/workload/orders
        purpose: the orders workload
        until: 2099-12-31
      - subject: group:platform
        purpose: operators
        until: 2099-12-31
`

const ordersID = "spiffe://mayfly.test/workload/orders"

// TestAttackMTLS: callers presenting X.509 certificates the broker must
// refuse, each on the real gRPC surface, each Unauthenticated, none
// leaving a lease.
func TestAttackMTLS(t *testing.T) {
	evil, err := devca.Open(t.TempDir(), spiffeid.RequireTrustDomainFromString("evil.test"))
	if err != nil {
		t.Fatal(err)
	}
	e := startAttackEnv(t, attackOptions{policy: authnPolicy, extra: []*devca.CA{evil}})
	td := spiffeid.RequireTrustDomainFromString(brokertest.TrustDomain)
	now := time.Now()
	refused := func(tc *tls.Config, msg string) func(t *testing.T) {
		return func(t *testing.T) {
			before := e.leases(t)
			_, err := issueOn(e.conn(t, tc, ""), "orders-api")
			wantStatus(t, err, codes.Unauthenticated, msg)
			leaseCountUnchanged(t, e, before)
		}
	}
	Matrix(t, Case{ID: "A1", Title: "mTLS: X.509 callers that must be refused (Unauthenticated, nothing issued)"}, []Attack{
		{"control: a valid SVID is served", func(t *testing.T) {
			if _, err := issueOn(e.conn(t, e.svidTLS(t, e.CA, devca.MintOptions{ID: mustID(ordersID), TTL: time.Hour}), ""), "orders-api"); err != nil {
				t.Fatal(err)
			}
		}},
		{"session resumed after the trust bundle changed", func(t *testing.T) {
			tc := e.svidTLS(t, e.CA, devca.MintOptions{ID: mustID(ordersID), TTL: time.Hour})
			tc.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			call := func() (bool, error) {
				var p peer.Peer
				cc := e.conn(t, tc, "")
				defer cc.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := mayflyv1.NewCredentialServiceClient(cc).IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "orders-api"}, grpc.Peer(&p))
				info, _ := p.AuthInfo.(credentials.TLSInfo)
				return info.State.DidResume, err
			}
			if _, err := call(); err != nil {
				t.Fatalf("first connection: %v", err)
			}
			if resumed, err := call(); err != nil || !resumed {
				t.Fatalf("second connection: resumed %v, %v; the case would prove nothing", resumed, err)
			}
			rotated, err := devca.NewForeignCA(td) // the CA that signed the SVID leaves the bundle
			if err != nil {
				t.Fatal(err)
			}
			original := e.CA.X509Bundle()
			e.Bundles.Add(rotated.X509Bundle())
			defer e.Bundles.Add(original)
			before := e.leases(t)
			resumed, err := call()
			if !resumed {
				t.Logf("the third connection did not resume (a full handshake was refused instead)")
			}
			wantStatus(t, err, codes.Unauthenticated, "not signed by an authority")
			leaseCountUnchanged(t, e, before)
		}},
		{"two URI SANs", refused(e.svidTLS(t, e.CA, devca.MintOptions{ID: mustID(ordersID), TTL: time.Hour,
			ExtraURIs: []string{"spiffe://mayfly.test/admin/root"}}), "2 URI SANs")},
		{"another trust domain whose bundle the broker knows", refused(e.svidTLS(t, evil, devca.MintOptions{
			ID: mustID("spiffe://evil.test/workload/orders"), TTL: time.Hour}), `trust domain "evil.test" is not accepted`)},
		{"another trust domain's ID signed by our CA", refused(e.svidTLS(t, e.CA, devca.MintOptions{
			ID: mustID("spiffe://evil.test/workload/orders"), TTL: time.Hour}), "")},
		{"expired SVID", refused(e.svidTLS(t, e.CA, devca.MintOptions{ID: mustID(ordersID),
			NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Minute)}), "expired")},
		{"SVID not yet valid", refused(e.svidTLS(t, e.CA, devca.MintOptions{ID: mustID(ordersID),
			NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)}), "not valid until")},
		{"foreign CA with the same subject and SPIFFE ID", func(t *testing.T) {
			foreign, err := devca.NewForeignCA(td)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(foreign.Certificate().RawSubject, e.CA.Certificate().RawSubject) {
				t.Fatal("the foreign CA does not have the same subject; the case would prove nothing")
			}
			refused(e.svidTLS(t, foreign, devca.MintOptions{ID: mustID(ordersID), TTL: time.Hour}), "not signed by an authority")(t)
		}},
		{"a CA certificate as the leaf", refused(e.svidTLS(t, e.CA, devca.MintOptions{ID: mustID(ordersID), TTL: time.Hour, IsCA: true}), "CA certificate")},
	})
}

// TestAttackBearer: JWT-SVIDs and OIDC ID tokens that must be refused, and
// a revoked credential replayed at introspection.
func TestAttackBearer(t *testing.T) {
	e := startAttackEnv(t, attackOptions{policy: authnPolicy, oidc: true})
	aud := brokertest.BrokerID.String()
	id := mustID(ordersID)
	base := devca.JWTOptions{ID: id, Audience: []string{aud}, TTL: 5 * time.Minute}
	with := func(f func(*devca.JWTOptions)) devca.JWTOptions { o := base; f(&o); return o }
	foreign, err := devca.NewForeignCA(spiffeid.RequireTrustDomainFromString(brokertest.TrustDomain))
	if err != nil {
		t.Fatal(err)
	}
	svid := func(ca *devca.CA, o devca.JWTOptions, msg string) func(t *testing.T) {
		return func(t *testing.T) {
			tok, err := ca.MintJWTSVIDOpts(o)
			if err != nil {
				t.Fatal(err)
			}
			before := e.leases(t)
			_, err = issueOn(e.conn(t, nil, tok), "orders-api")
			wantStatus(t, err, codes.Unauthenticated, msg)
			leaseCountUnchanged(t, e, before)
		}
	}
	idp := e.OIDC
	pubDER, err := x509.MarshalPKIXPublicKey(idp.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	claims := func(f func(map[string]any)) map[string]any { c := idp.claims("alice", "platform"); f(c); return c }
	oidcRefused := func(tok, msg string) func(t *testing.T) {
		return func(t *testing.T) {
			before := e.leases(t)
			_, err := issueOn(e.conn(t, nil, tok), "orders-api")
			wantStatus(t, err, codes.Unauthenticated, msg)
			leaseCountUnchanged(t, e, before)
		}
	}
	b64 := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	Matrix(t, Case{ID: "A2", Title: "JWT-SVID and OIDC bearer tokens that must be refused; revoked token at introspection"}, []Attack{
		{"control: a valid JWT-SVID and a valid ID token are served", func(t *testing.T) {
			tok, err := e.CA.MintJWTSVIDOpts(base)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := issueOn(e.conn(t, nil, tok), "orders-api"); err != nil {
				t.Fatalf("JWT-SVID: %v", err)
			}
			if _, err := issueOn(e.conn(t, nil, idp.good(t, "alice")), "orders-api"); err != nil {
				t.Fatalf("ID token: %v", err)
			}
		}},
		{"JWT-SVID alg none", svid(e.CA, with(func(o *devca.JWTOptions) { o.Forgery = devca.ForgeAlgNone }), `alg "none"`)},
		{"JWT-SVID HS256 keyed with the public key", svid(e.CA, with(func(o *devca.JWTOptions) { o.Forgery = devca.ForgeHS256PublicKey }), `alg "HS256"`)},
		{"JWT-SVID wrong audience", svid(e.CA, with(func(o *devca.JWTOptions) { o.Audience = []string{"spiffe://mayfly.test/other"} }), "audience")},
		{"JWT-SVID several audiences", svid(e.CA, with(func(o *devca.JWTOptions) { o.Audience = []string{aud, "spiffe://mayfly.test/other"} }), "2 audiences")},
		{"JWT-SVID over-long lifetime", svid(e.CA, with(func(o *devca.JWTOptions) { o.TTL = 48 * time.Hour }), "lifetime")},
		{"JWT-SVID unknown kid", svid(e.CA, with(func(o *devca.JWTOptions) { o.KeyID = "no-such-key" }), "no JWT authority")},
		{"JWT-SVID foreign key under the real kid", svid(foreign, with(func(o *devca.JWTOptions) { o.KeyID = e.CA.JWTKeyID() }), "did not verify")},
		{"JWT-SVID expired", svid(e.CA, with(func(o *devca.JWTOptions) { o.IssuedAt = time.Now().Add(-10 * time.Minute) }), "expired")},

		{"OIDC alg none", oidcRefused(b64(map[string]string{"alg": "none", "typ": "JWT"})+"."+b64(idp.claims("alice"))+".", `alg "none"`)},
		{"OIDC HS256 keyed with the public key", oidcRefused(idp.sign(t, idp.claims("alice"), jose.HS256, pubPEM, idp.kid), `alg "HS256"`)},
		{"OIDC wrong audience", oidcRefused(idp.sign(t, claims(func(c map[string]any) { c["aud"] = "other-app"; c["azp"] = "other-app" }), jose.ES256, nil, idp.kid), "audience")},
		{"OIDC several audiences, issued to another client (azp)", oidcRefused(idp.sign(t, claims(func(c map[string]any) {
			c["aud"] = []string{"other-app", idp.op.ClientID()}
			c["azp"] = "other-app"
		}), jose.ES256, nil, idp.kid), "")},
		{"OIDC over-long lifetime (30 days)", oidcRefused(idp.sign(t, claims(func(c map[string]any) {
			c["exp"] = time.Now().Add(30 * 24 * time.Hour).Unix()
		}), jose.ES256, nil, idp.kid), "")},
		{"OIDC unknown kid", oidcRefused(idp.sign(t, idp.claims("alice"), jose.ES256, otherKey, "no-such-key"), "does not publish")},
		{"OIDC another key under the provider's kid", oidcRefused(idp.sign(t, idp.claims("alice"), jose.ES256, otherKey, idp.kid), "does not verify")},
		{"OIDC expired", oidcRefused(idp.sign(t, claims(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), jose.ES256, nil, idp.kid), "expired")},

		{"a credential the broker minted, replayed as a bearer token", func(t *testing.T) {
			resp, err := issueOn(e.Dial(t, ordersID), "orders-api")
			if err != nil {
				t.Fatal(err)
			}
			oidcRefused(resp.GetCredential().GetJwt().GetToken(), "")(t)
		}},
		{"revoked token replayed at introspection (gRPC and HTTPS)", func(t *testing.T) {
			cc := e.Dial(t, ordersID)
			resp, err := issueOn(cc, "orders-api")
			if err != nil {
				t.Fatal(err)
			}
			tok := resp.GetCredential().GetJwt().GetToken()
			if !introspectGRPC(t, cc, tok) || !introspectHTTPS(t, e, tok) {
				t.Fatal("control: the live token is not active at introspection")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := mayflyv1.NewCredentialServiceClient(cc).RevokeLease(ctx, &mayflyv1.RevokeLeaseRequest{LeaseId: resp.GetLease().GetId()}); err != nil {
				t.Fatal(err)
			}
			if introspectGRPC(t, cc, tok) {
				t.Error("gRPC introspection says the revoked token is active")
			}
			if introspectHTTPS(t, e, tok) {
				t.Error("HTTPS introspection says the revoked token is active")
			}
		}},
	})
}

func introspectGRPC(t *testing.T, cc *grpc.ClientConn, tok string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := mayflyv1.NewIntrospectionServiceClient(cc).Introspect(ctx, &mayflyv1.IntrospectRequest{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetActive()
}

func introspectHTTPS(t *testing.T, e *attackEnv, tok string) bool {
	t.Helper()
	hc := e.HTTPClient(t, ordersID)
	resp, err := hc.Post(e.HTTPURL+"/introspect", "application/x-www-form-urlencoded", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("introspect: HTTP %d", resp.StatusCode)
	}
	var out struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Active
}
