package authn_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/devca"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("mayfly.test")
	evilTD   = spiffeid.RequireTrustDomainFromString("evil.test")
	brokerID = spiffeid.RequireFromPath(td, "/broker")
	workload = spiffeid.RequireFromPath(td, "/demo")
	audience = brokerID.String()
)

// fakeClock is the Authenticator's clock: real time plus an offset that a
// test can move forward.
type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
	frozen time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.frozen.IsZero() {
		return c.frozen
	}
	return time.Now().Add(c.offset)
}

// Freeze stops the clock at t; the zero time starts it again.
func (c *fakeClock) Freeze(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frozen = t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// testServer is a real gRPC server on loopback TLS whose interceptor
// authenticates every call the way broker/api does.
type testServer struct {
	addr    string
	ca      *devca.CA // the trust domain mayfly.test
	evil    *devca.CA // the trust domain evil.test, whose bundles the broker knows but does not accept
	bundles *x509bundle.Set
	clock   *fakeClock

	mu       sync.Mutex
	calls    int
	last     authn.Principal
	lastInfo authn.AuthInfo
}

func newTestServer(t *testing.T, cfg authn.Config) *testServer {
	t.Helper()
	ca, err := devca.Open(filepath.Join(t.TempDir(), "ca"), td)
	if err != nil {
		t.Fatal(err)
	}
	evil, err := devca.Open(filepath.Join(t.TempDir(), "evil"), evilTD)
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{
		ca:      ca,
		evil:    evil,
		bundles: x509bundle.NewSet(ca.X509Bundle(), evil.X509Bundle()),
		clock:   &fakeClock{},
	}
	if cfg.TrustDomains == nil {
		cfg.TrustDomains = []spiffeid.TrustDomain{td}
	}
	if cfg.JWTBundles == nil {
		cfg.JWTBundles = jwtbundle.NewSet(ca.JWTBundle(), evil.JWTBundle())
		cfg.Audience = audience
	}
	cfg.Now = s.clock.Now
	auth, err := authn.NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serverSVID, err := ca.MintX509SVIDWithDNS(brokerID, time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}

	intercept := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(authn.AuthInfo); ok {
				s.mu.Lock()
				s.lastInfo = info
				s.mu.Unlock()
			}
		}
		principal, err := auth.Authenticate(ctx)
		switch {
		case errors.Is(err, authn.ErrUnauthenticated):
			return nil, status.Error(codes.Unauthenticated, err.Error())
		case err != nil:
			return nil, status.Error(codes.Internal, err.Error())
		}
		s.mu.Lock()
		s.calls++
		s.last = principal
		s.mu.Unlock()
		return handler(authn.WithPrincipal(ctx, principal), req)
	}
	gs := grpc.NewServer(grpc.Creds(authn.ServerCredentials(serverSVID, s.bundles)), grpc.UnaryInterceptor(intercept))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return s
}

// clientConfig is the TLS configuration of a client presenting svid (none
// when nil) that trusts the real CA and expects the broker's SPIFFE ID.
func (s *testServer) clientConfig(svid *x509svid.SVID) *tls.Config {
	var src x509svid.Source
	if svid != nil {
		src = svid
	}
	return authn.ClientTLSConfig(src, s.ca.X509Bundle(), tlsconfig.AuthorizeID(brokerID))
}

// dial opens a client connection; every call on it uses the same TLS session.
func (s *testServer) dial(t *testing.T, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// check makes one health check on conn, with token as bearer token if set.
func check(conn *grpc.ClientConn, token string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// call makes one call on a new connection.
func (s *testServer) call(t *testing.T, cfg *tls.Config, token string) error {
	t.Helper()
	conn := s.dial(t, cfg)
	defer conn.Close()
	return check(conn, token)
}

func (s *testServer) principal() authn.Principal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *testServer) authInfo() authn.AuthInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastInfo
}

// wantUnauthenticated fails unless err is exactly codes.Unauthenticated
// with message want.
func wantUnauthenticated(t *testing.T, err error, want string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unauthenticated {
		t.Fatalf("error = %v, want code Unauthenticated", err)
	}
	if st.Message() != want {
		t.Fatalf("message:\n got: %s\nwant: %s", st.Message(), want)
	}
}

func mint(t *testing.T, ca *devca.CA, opts devca.MintOptions) *x509svid.SVID {
	t.Helper()
	svid, err := ca.MintX509SVIDOpts(opts)
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

func utc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func TestX509SVIDAuthenticates(t *testing.T) {
	s := newTestServer(t, authn.Config{})
	svid, err := s.ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.call(t, s.clientConfig(svid), ""); err != nil {
		t.Fatalf("call: %v", err)
	}
	want := authn.Principal{
		Kind:        authn.KindWorkload,
		ID:          "spiffe://mayfly.test/demo",
		TrustDomain: "mayfly.test",
		Method:      authn.MethodX509SVID,
		NotAfter:    svid.Certificates[0].NotAfter,
	}
	got := s.principal()
	if got.Kind != want.Kind || got.ID != want.ID || got.TrustDomain != want.TrustDomain || got.Method != want.Method || !got.NotAfter.Equal(want.NotAfter) || got.Groups != nil {
		t.Errorf("principal = %+v, want %+v", got, want)
	}
	info := s.authInfo()
	if info.ID != workload || info.VerifyErr != nil || info.SPIFFEID == nil || info.SPIFFEID.String() != workload.String() {
		t.Errorf("AuthInfo ID = %v, SPIFFEID = %v, VerifyErr = %v", info.ID, info.SPIFFEID, info.VerifyErr)
	}
	if info.State.Version != tls.VersionTLS13 {
		t.Errorf("TLS version = %x, want TLS 1.3", info.State.Version)
	}
}

func TestBadClientCertificatesAreUnauthenticated(t *testing.T) {
	s := newTestServer(t, authn.Config{})
	foreign, err := devca.NewForeignCA(td)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expired := mint(t, s.ca, devca.MintOptions{ID: workload, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})
	notYet := mint(t, s.ca, devca.MintOptions{ID: workload, NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)})
	validToken, err := s.ca.MintJWTSVID(workload, []string{audience}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		svid  *x509svid.SVID
		token string
		want  string
	}{
		{
			name: "no client certificate and no bearer token",
			want: `authn: unauthenticated: no client certificate and no bearer token: present an X.509-SVID as the TLS client certificate, or send "authorization: Bearer <token>" metadata`,
		},
		{
			name: "expired",
			svid: expired,
			want: fmt.Sprintf(`authn: unauthenticated: X.509-SVID "spiffe://mayfly.test/demo" expired at %s; renew it`, utc(expired.Certificates[0].NotAfter)),
		},
		{
			name:  "expired, with a valid bearer token as well",
			svid:  expired,
			token: validToken,
			want:  fmt.Sprintf(`authn: unauthenticated: X.509-SVID "spiffe://mayfly.test/demo" expired at %s; renew it`, utc(expired.Certificates[0].NotAfter)),
		},
		{
			name: "not yet valid",
			svid: notYet,
			want: fmt.Sprintf(`authn: unauthenticated: X.509-SVID "spiffe://mayfly.test/demo" is not valid until %s (check the clocks of client and broker)`, utc(notYet.Certificates[0].NotBefore)),
		},
		{
			name: "two URI SANs",
			svid: mint(t, s.ca, devca.MintOptions{ID: workload, TTL: time.Hour, ExtraURIs: []string{"spiffe://mayfly.test/admin"}}),
			want: "authn: unauthenticated: client certificate is not an X.509-SVID: it has 2 URI SANs, exactly 1 is required",
		},
		{
			name: "no URI SAN",
			svid: mint(t, s.ca, devca.MintOptions{TTL: time.Hour, DNS: []string{"demo.example.com"}}),
			want: "authn: unauthenticated: client certificate is not an X.509-SVID: it has no URI SAN, exactly 1 is required",
		},
		{
			name: "URI SAN that is not a SPIFFE ID",
			svid: mint(t, s.ca, devca.MintOptions{TTL: time.Hour, ExtraURIs: []string{"https://demo.example.com/"}}),
			want: `authn: unauthenticated: client certificate is not an X.509-SVID: its URI SAN "https://demo.example.com/" is not a SPIFFE ID: scheme is missing or invalid`,
		},
		{
			name: "leaf is a CA",
			svid: mint(t, s.ca, devca.MintOptions{ID: workload, TTL: time.Hour, IsCA: true}),
			want: `authn: unauthenticated: X.509-SVID "spiffe://mayfly.test/demo" is a CA certificate; a leaf X.509-SVID must not be`,
		},
		{
			name: "another trust domain",
			svid: mint(t, s.evil, devca.MintOptions{ID: spiffeid.RequireFromPath(evilTD, "/demo"), TTL: time.Hour}),
			want: `authn: unauthenticated: trust domain "evil.test" is not accepted`,
		},
		{
			name: "foreign CA with the same subject and SPIFFE ID",
			svid: mint(t, foreign, devca.MintOptions{ID: workload, TTL: time.Hour}),
			want: `authn: unauthenticated: X.509-SVID "spiffe://mayfly.test/demo" is not signed by an authority in the trust bundle of "mayfly.test"`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := s.call(t, s.clientConfig(tc.svid), tc.token)
			wantUnauthenticated(t, err, tc.want)
		})
	}
}

func TestLongLivedConnectionDoesNotOutliveCertificate(t *testing.T) {
	s := newTestServer(t, authn.Config{})
	svid, err := s.ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn := s.dial(t, s.clientConfig(svid))
	if err := check(conn, ""); err != nil {
		t.Fatalf("first call: %v", err)
	}
	s.clock.Advance(2 * time.Hour)
	err = check(conn, "")
	wantUnauthenticated(t, err, fmt.Sprintf(`authn: unauthenticated: X.509-SVID "spiffe://mayfly.test/demo" expired at %s; renew it`, utc(svid.Certificates[0].NotAfter)))
}

func TestBundleChangeRefusesLiveConnection(t *testing.T) {
	s := newTestServer(t, authn.Config{})
	svid, err := s.ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn := s.dial(t, s.clientConfig(svid))
	if err := check(conn, ""); err != nil {
		t.Fatalf("first call: %v", err)
	}
	rotated, err := devca.NewForeignCA(td)
	if err != nil {
		t.Fatal(err)
	}
	s.bundles.Add(rotated.X509Bundle()) // replaces the bundle of mayfly.test
	err = check(conn, "")
	wantUnauthenticated(t, err, `authn: unauthenticated: X.509-SVID "spiffe://mayfly.test/demo" is not signed by an authority in the trust bundle of "mayfly.test"`)
}

func TestSessionResumptionIsReverifiedAgainstCurrentBundle(t *testing.T) {
	s := newTestServer(t, authn.Config{})
	svid, err := s.ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.clientConfig(svid)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)

	if err := s.call(t, cfg, ""); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	if s.authInfo().State.DidResume {
		t.Fatal("first connection resumed a session")
	}
	if err := s.call(t, cfg, ""); err != nil {
		t.Fatalf("resumed connection: %v", err)
	}
	if !s.authInfo().State.DidResume {
		t.Fatal("second connection did not resume the session; the test would prove nothing")
	}

	// The CA that signed the client's SVID leaves the bundle.
	rotated, err := devca.NewForeignCA(td)
	if err != nil {
		t.Fatal(err)
	}
	s.bundles.Add(rotated.X509Bundle())

	err = s.call(t, cfg, "")
	if !s.authInfo().State.DidResume {
		t.Fatal("third connection did not resume the session")
	}
	wantUnauthenticated(t, err, `authn: unauthenticated: X.509-SVID "spiffe://mayfly.test/demo" is not signed by an authority in the trust bundle of "mayfly.test"`)
}

func TestClientRefusesUnexpectedServer(t *testing.T) {
	s := newTestServer(t, authn.Config{})
	svid, err := s.ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := authn.ClientTLSConfig(svid, s.ca.X509Bundle(), tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/not-the-broker")))
	err = s.call(t, cfg, "")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("error = %v, want Unavailable from a failed handshake", err)
	}
	if cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("MinVersion = %x, want TLS 1.3", cfg.MinVersion)
	}
}

func TestJWTSVIDAuthenticates(t *testing.T) {
	s := newTestServer(t, authn.Config{})
	token, err := s.ca.MintJWTSVID(workload, []string{audience}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.call(t, s.clientConfig(nil), token); err != nil {
		t.Fatalf("call: %v", err)
	}
	got := s.principal()
	if got.Kind != authn.KindWorkload || got.ID != workload.String() || got.TrustDomain != "mayfly.test" || got.Method != authn.MethodJWTSVID {
		t.Errorf("principal = %+v", got)
	}
	if d := time.Until(got.NotAfter); d < 4*time.Minute || d > 5*time.Minute {
		t.Errorf("NotAfter in %s, want about 5m", d)
	}
	if s.authInfo().ClientCertificatePresented() {
		t.Error("client certificate presented")
	}
}

func TestBadJWTSVIDsAreUnauthenticated(t *testing.T) {
	s := newTestServer(t, authn.Config{})
	foreign, err := devca.NewForeignCA(td)
	if err != nil {
		t.Fatal(err)
	}
	base := devca.JWTOptions{ID: workload, Audience: []string{audience}, TTL: 5 * time.Minute}
	with := func(f func(*devca.JWTOptions)) devca.JWTOptions { o := base; f(&o); return o }
	now := time.Now()
	// The broker's clock stands still at a whole second during these calls,
	// so that durations in messages are exact.
	wholeSecond := now.Truncate(time.Second)
	s.clock.Freeze(wholeSecond)
	defer s.clock.Freeze(time.Time{})
	const prefix = `authn: unauthenticated: JWT-SVID "spiffe://mayfly.test/demo"`

	cases := []struct {
		name string
		ca   *devca.CA
		opts devca.JWTOptions
		want string
	}{
		{
			name: "wrong audience",
			opts: with(func(o *devca.JWTOptions) { o.Audience = []string{"spiffe://mayfly.test/other"} }),
			want: prefix + ` audience "spiffe://mayfly.test/other" is not this broker's audience "spiffe://mayfly.test/broker"`,
		},
		{
			name: "two audiences",
			opts: with(func(o *devca.JWTOptions) { o.Audience = []string{audience, "other"} }),
			want: prefix + ` has 2 audiences ["spiffe://mayfly.test/broker" "other"]; exactly 1 is required: "spiffe://mayfly.test/broker"`,
		},
		{
			name: "no audience",
			opts: with(func(o *devca.JWTOptions) { o.Audience = nil }),
			want: prefix + ` has no audience; exactly 1 is required: "spiffe://mayfly.test/broker"`,
		},
		{
			name: "expired",
			opts: with(func(o *devca.JWTOptions) { o.IssuedAt = now.Add(-10 * time.Minute) }),
			want: prefix + fmt.Sprintf(` expired at %s; fetch a new one`, utc(time.Unix(now.Add(-5*time.Minute).Unix(), 0))),
		},
		{
			name: "lifetime longer than allowed",
			opts: with(func(o *devca.JWTOptions) { o.TTL = 2 * time.Hour }),
			want: prefix + ` lifetime (exp - iat) is 2h0m0s, longer than the 1h0m0s allowed; request a shorter-lived token`,
		},
		{
			name: "no iat and far expiry",
			opts: with(func(o *devca.JWTOptions) { o.OmitIssuedAt = true; o.Expiry = wholeSecond.Add(3 * time.Hour) }),
			want: prefix + ` has no iat claim and expires in 3h0m0s, longer than the 1h0m0s lifetime allowed`,
		},
		{
			name: "alg none",
			opts: with(func(o *devca.JWTOptions) { o.Forgery = devca.ForgeAlgNone }),
			want: `authn: unauthenticated: JWT-SVID is signed with alg "none", which is not accepted: use one of ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512`,
		},
		{
			name: "HS256 keyed with the public key",
			opts: with(func(o *devca.JWTOptions) { o.Forgery = devca.ForgeHS256PublicKey }),
			want: `authn: unauthenticated: JWT-SVID is signed with alg "HS256", which is not accepted: use one of ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512`,
		},
		{
			name: "foreign key under the real key ID",
			ca:   foreign,
			opts: with(func(o *devca.JWTOptions) { o.KeyID = s.ca.JWTKeyID() }),
			want: prefix + ` did not verify: jwtsvid: unable to get claims from token: go-jose/go-jose: error in cryptographic primitive`,
		},
		{
			name: "unknown key ID",
			opts: with(func(o *devca.JWTOptions) { o.KeyID = "nope" }),
			want: prefix + ` did not verify: jwtsvid: no JWT authority "nope" found for trust domain "mayfly.test"`,
		},
		{
			name: "another trust domain",
			ca:   s.evil,
			opts: with(func(o *devca.JWTOptions) { o.ID = spiffeid.RequireFromPath(evilTD, "/demo") }),
			want: `authn: unauthenticated: trust domain "evil.test" is not accepted`,
		},
		{
			name: "subject is not a SPIFFE ID",
			opts: with(func(o *devca.JWTOptions) { o.Subject = "user:alice" }),
			want: `authn: unauthenticated: bearer token is not a JWT-SVID (its subject is not a SPIFFE ID) and no other configured verifier recognizes it`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ca := tc.ca
			if ca == nil {
				ca = s.ca
			}
			token, err := ca.MintJWTSVIDOpts(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			err = s.call(t, s.clientConfig(nil), token)
			wantUnauthenticated(t, err, tc.want)
		})
	}
}
