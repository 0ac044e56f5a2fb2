package authn_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/devca"
)

// tlsPeer is the peer of a TLS connection without a client certificate, as
// grpc's own TLS credentials describe it.
var tlsPeer = &peer.Peer{AuthInfo: credentials.TLSInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}}

// incoming returns a server-side context with the given peer and
// "authorization" metadata values.
func incoming(p *peer.Peer, authorization ...string) context.Context {
	ctx := context.Background()
	if p != nil {
		ctx = peer.NewContext(ctx, p)
	}
	md := metadata.MD{}
	for _, v := range authorization {
		md.Append("authorization", v)
	}
	return metadata.NewIncomingContext(ctx, md)
}

// fakeOIDC is a fake of the OIDC verifier a later package provides: it
// recognizes tokens "human:<name>" and nothing else.
type fakeOIDC struct {
	notAfter time.Time
	kind     authn.Kind
}

func (f fakeOIDC) VerifyBearer(_ context.Context, token string) (authn.Principal, error) {
	name, ok := strings.CutPrefix(token, "human:")
	if !ok {
		return authn.Principal{}, authn.ErrTokenNotRecognized
	}
	if name == "mallory" {
		return authn.Principal{}, errors.New("oidc: identity provider unreachable")
	}
	return authn.Principal{Kind: f.kind, ID: "user:" + name, Groups: []string{"dev"}, Method: authn.MethodOIDC, NotAfter: f.notAfter}, nil
}

func newCA(t *testing.T) *devca.CA {
	t.Helper()
	ca, err := devca.Open(filepath.Join(t.TempDir(), "ca"), td)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestNewAuthenticatorChecksConfig(t *testing.T) {
	ca := newCA(t)
	tds := []spiffeid.TrustDomain{td}
	cases := []struct {
		name string
		cfg  authn.Config
		want string
	}{
		{"no trust domains", authn.Config{}, "authn: Config.TrustDomains is empty: list the trust domains whose workloads may call the broker"},
		{"empty trust domain", authn.Config{TrustDomains: []spiffeid.TrustDomain{td, {}}}, "authn: Config.TrustDomains[1] is empty"},
		{"JWT without audience", authn.Config{TrustDomains: tds, JWTBundles: ca.JWTBundle()}, "authn: Config.Audience is required when Config.JWTBundles is set"},
		{"negative lifetime", authn.Config{TrustDomains: tds, MaxJWTLifetime: -time.Second}, "authn: Config.MaxJWTLifetime -1s is negative"},
		{"nil verifier", authn.Config{TrustDomains: tds, Bearer: []authn.BearerVerifier{nil}}, "authn: Config.Bearer[0] is nil"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := authn.NewAuthenticator(tc.cfg)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestAuthenticateWithoutNetwork(t *testing.T) {
	ca := newCA(t)
	token, err := ca.MintJWTSVID(workload, []string{audience}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := authn.NewAuthenticator(authn.Config{
		TrustDomains: []spiffeid.TrustDomain{td},
		JWTBundles:   jwtbundle.NewSet(ca.JWTBundle()),
		Audience:     audience,
		Bearer:       []authn.BearerVerifier{fakeOIDC{notAfter: time.Now().Add(time.Hour), kind: authn.KindHuman}},
	})
	if err != nil {
		t.Fatal(err)
	}
	x509Only, err := authn.NewAuthenticator(authn.Config{TrustDomains: []spiffeid.TrustDomain{td}})
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{}
	unverifiedTLS := &peer.Peer{AuthInfo: credentials.TLSInfo{State: tlsStateWith(leaf), CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}}

	cases := []struct {
		name   string
		auth   *authn.Authenticator
		ctx    context.Context
		want   string // whole error message
		unauth bool   // the error wraps ErrUnauthenticated
	}{
		{"no peer, no token", auth, incoming(nil), `authn: unauthenticated: no client certificate and no bearer token: present an X.509-SVID as the TLS client certificate, or send "authorization: Bearer <token>" metadata`, true},
		{"bearer over plaintext", auth, incoming(&peer.Peer{}, "Bearer "+token), "authn: unauthenticated: bearer token refused: the connection is not protected by TLS", true},
		{"two authorization entries", auth, incoming(tlsPeer, "Bearer "+token, "Bearer "+token), `authn: unauthenticated: the call has 2 "authorization" metadata entries, at most 1 is allowed`, true},
		{"basic auth", auth, incoming(tlsPeer, "Basic YWxpY2U6cGFzc3dvcmQ="), `authn: unauthenticated: "authorization" metadata is not of the form "Bearer <token>"`, true},
		{"empty bearer", auth, incoming(tlsPeer, "Bearer "), `authn: unauthenticated: "authorization" metadata is not of the form "Bearer <token>"`, true},
		{"not a JWT", auth, incoming(tlsPeer, "Bearer s3cr3t"), "authn: unauthenticated: bearer token is not a JWT: it has 1 dot-separated parts, a JWT has 3", true},
		{"garbage JWT", auth, incoming(tlsPeer, "Bearer bm90anNvbg.e30.x"), "authn: unauthenticated: bearer token is not a JWT: header: not a JSON object of the expected shape", true},
		{"bad base64", auth, incoming(tlsPeer, "Bearer a.b.c"), "authn: unauthenticated: bearer token is not a JWT: header: not base64url", true},
		{"JWT-SVIDs disabled", x509Only, incoming(tlsPeer, "Bearer "+token), "authn: unauthenticated: bearer token is a JWT-SVID, and this broker does not accept JWT-SVIDs; use an X.509-SVID", true},
		{"unverified client certificate", auth, incoming(unverifiedTLS), "authn: the connection's client certificate was not verified by authn.ServerCredentials; the gRPC server must use them", false},
		{"AuthInfo not made by ServerCredentials", auth, incoming(&peer.Peer{AuthInfo: authn.AuthInfo{TLSInfo: unverifiedTLS.AuthInfo.(credentials.TLSInfo)}}), "authn: the connection's client certificate was not verified by authn.ServerCredentials; the gRPC server must use them", false},
		{"verifier cannot decide", auth, incoming(tlsPeer, "Bearer human:mallory"), "oidc: identity provider unreachable", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.auth.Authenticate(tc.ctx)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error:\n got: %v\nwant: %s", err, tc.want)
			}
			if got := errors.Is(err, authn.ErrUnauthenticated); got != tc.unauth {
				t.Errorf("errors.Is(err, ErrUnauthenticated) = %v, want %v", got, tc.unauth)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "YWxpY2U6") {
				t.Error("the error message contains the credential")
			}
		})
	}

	t.Run("JWT-SVID", func(t *testing.T) {
		p, err := auth.Authenticate(incoming(tlsPeer, "bearer "+token))
		if err != nil {
			t.Fatal(err)
		}
		if p.ID != workload.String() || p.Method != authn.MethodJWTSVID {
			t.Errorf("principal = %+v", p)
		}
	})
	t.Run("OIDC hook", func(t *testing.T) {
		p, err := auth.Authenticate(incoming(tlsPeer, "Bearer human:alice"))
		if err != nil {
			t.Fatal(err)
		}
		if p.Kind != authn.KindHuman || p.ID != "user:alice" || p.Method != authn.MethodOIDC || len(p.Groups) != 1 {
			t.Errorf("principal = %+v", p)
		}
	})
}

func TestIncompletePrincipalFromVerifierIsRefused(t *testing.T) {
	cases := map[string]fakeOIDC{
		"expired":      {notAfter: time.Now().Add(-time.Second), kind: authn.KindHuman},
		"unknown kind": {notAfter: time.Now().Add(time.Hour)},
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			auth, err := authn.NewAuthenticator(authn.Config{TrustDomains: []spiffeid.TrustDomain{td}, Bearer: []authn.BearerVerifier{v}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = auth.Authenticate(incoming(tlsPeer, "Bearer human:alice"))
			if err == nil || errors.Is(err, authn.ErrUnauthenticated) || !strings.HasPrefix(err.Error(), "authn: bearer verifier authn_test.fakeOIDC: principal") {
				t.Fatalf("error = %v, want a fault of the verifier", err)
			}
		})
	}
}

func tlsStateWith(certs ...*x509.Certificate) tls.ConnectionState {
	return tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: certs}
}
