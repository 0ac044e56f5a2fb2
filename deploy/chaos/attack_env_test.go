package chaos

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/access"
	accessmemory "github.com/mayflyhq/mayfly/broker/access/memory"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/devca"
	"github.com/mayflyhq/mayfly/broker/devoidc"
	"github.com/mayflyhq/mayfly/broker/issuer"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// Clock is a broker clock a test moves by hand: it stands still at a
// given time until Advance.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock stands at the current whole second.
func NewClock() *Clock { return &Clock{now: time.Now().Truncate(time.Second)} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// attackEnv is a real broker (brokertest) for the attack matrix, with the
// stores a test reads to check that a refusal left nothing behind and was
// recorded.
type attackEnv struct {
	*brokertest.Env
	Access *accessmemory.Store
	Probe  *Probe
	Clock  *Clock
	OIDC   *oidcIdP
}

type attackOptions struct {
	policy string
	clock  bool // a hand-moved clock instead of the wall clock
	oidc   bool // people log in through a dev OIDC provider
	extra  []*devca.CA
}

func startAttackEnv(t *testing.T, o attackOptions) *attackEnv {
	t.Helper()
	e := &attackEnv{Access: accessmemory.New(), Probe: &Probe{MaxTTL: time.Hour}}
	opts := brokertest.Options{Policy: []byte(o.policy), AccessStore: e.Access, Issuers: []issuer.Issuer{e.Probe}}
	if o.clock {
		e.Clock = NewClock()
		opts.Now = e.Clock.Now
	}
	for _, ca := range o.extra {
		opts.ExtraBundles = append(opts.ExtraBundles, ca.X509Bundle())
	}
	if o.oidc {
		e.OIDC = newOIDCIdP(t)
		v, err := authn.NewOIDCVerifier(context.Background(), []authn.OIDCProvider{e.OIDC.op.OIDCProvider()},
			authn.WithOIDCHTTPClient(e.OIDC.srv.Client()), authn.WithOIDCLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		opts.Bearer = []authn.BearerVerifier{v}
	}
	e.Env = brokertest.Start(t, opts)
	return e
}

// leases counts every lease in the broker's store.
func (e *attackEnv) leases(t *testing.T) int {
	t.Helper()
	all, err := AllLeases(context.Background(), e.Store)
	if err != nil {
		t.Fatal(err)
	}
	return len(all)
}

// records returns the decision records the broker wrote.
func (e *attackEnv) records(t *testing.T) []*access.DecisionRecord {
	t.Helper()
	recs, err := e.Access.Records(context.Background(), access.RecordQuery{Limit: access.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// wantRecorded fails unless a decision record of action by actor (about
// request, if not empty) has the outcome and an error containing errPart.
func (e *attackEnv) wantRecorded(t *testing.T, action, actor, request, outcome, errPart string) {
	t.Helper()
	for _, r := range e.records(t) {
		if r.Action == action && r.Actor == actor && (request == "" || r.RequestID == request) &&
			r.Outcome == outcome && strings.Contains(r.Error, errPart) {
			return
		}
	}
	t.Errorf("no decision record of %s by %s (request %q) with outcome %s and error %q", action, actor, request, outcome, errPart)
}

// conn dials the broker over mTLS presenting svid (none when nil), with
// bearer token when not empty.
func (e *attackEnv) conn(t *testing.T, svid *tls.Config, bearer string) *grpc.ClientConn {
	t.Helper()
	tc := svid
	if tc == nil {
		tc = tlsconfig.TLSClientConfig(e.CA.X509Bundle(), tlsconfig.AuthorizeID(brokertest.BrokerID))
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}
	if bearer != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(bearer)))
	}
	cc, err := grpc.NewClient(e.GRPCAddr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// svidTLS is an mTLS client config presenting a certificate from ca.
func (e *attackEnv) svidTLS(t *testing.T, ca *devca.CA, o devca.MintOptions) *tls.Config {
	t.Helper()
	svid, err := ca.MintX509SVIDOpts(o)
	if err != nil {
		t.Fatal(err)
	}
	tc := tlsconfig.MTLSClientConfig(svid, e.CA.X509Bundle(), tlsconfig.AuthorizeID(brokertest.BrokerID))
	tc.MinVersion = tls.VersionTLS13
	return tc
}

// issueAs issues entitlement on cc.
func issueOn(cc *grpc.ClientConn, entitlement string) (*mayflyv1.IssueCredentialResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return mayflyv1.NewCredentialServiceClient(cc).IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: entitlement})
}

// bearerToken sends a token as per-RPC credentials.
type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerToken) RequireTransportSecurity() bool { return true }

// wantStatus fails unless err has code and its message contains msgPart.
func wantStatus(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want %v", code)
	}
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("status %v (%s), want %v", st.Code(), st.Message(), code)
	}
	if msgPart != "" && !strings.Contains(st.Message(), msgPart) {
		t.Fatalf("message %q does not say %q", st.Message(), msgPart)
	}
}

// mustID parses a SPIFFE ID.
func mustID(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }

// oidcIdP is the dev OIDC provider (broker/devoidc) served over real TLS,
// with its signing key at hand to forge tokens.
type oidcIdP struct {
	op  *devoidc.Provider
	srv *httptest.Server
	key *ecdsa.PrivateKey
	kid string
}

func newOIDCIdP(t *testing.T) *oidcIdP {
	t.Helper()
	var h http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	op, err := devoidc.New(devoidc.Config{Issuer: srv.URL + devoidc.DefaultPath, KeyDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h = op
	b, err := os.ReadFile(filepath.Join(dir, devoidc.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	p := &oidcIdP{op: op, srv: srv, key: k.(*ecdsa.PrivateKey)}
	// The key id the provider publishes.
	tok, err := op.IDToken(devoidc.User{Name: "probe"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	p.kid = hdr.Signatures[0].Header.KeyID
	return p
}

// claims are valid ID token claims for user, issued now for an hour.
func (p *oidcIdP) claims(user string, groups ...string) map[string]any {
	now := time.Now()
	if groups == nil {
		groups = []string{}
	}
	return map[string]any{
		"iss": p.op.Issuer(), "sub": user, "aud": p.op.ClientID(), "azp": p.op.ClientID(),
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"preferred_username": user, "email": user + "@mayfly.test", "email_verified": true, "groups": groups,
	}
}

// sign signs claims with alg and key (the provider's own by default) under
// kid.
func (p *oidcIdP) sign(t *testing.T, claims map[string]any, alg jose.SignatureAlgorithm, key any, kid string) string {
	t.Helper()
	if key == nil {
		key = p.key
	}
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
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// good is a genuine ID token for user.
func (p *oidcIdP) good(t *testing.T, user string, groups ...string) string {
	t.Helper()
	return p.sign(t, p.claims(user, groups...), jose.ES256, nil, p.kid)
}

// leaseCountUnchanged fails if the store holds more leases than before.
func leaseCountUnchanged(t *testing.T, e *attackEnv, before int) {
	t.Helper()
	if n := e.leases(t); n != before {
		t.Errorf("a refused call left %d new lease(s)", n-before)
	}
}
