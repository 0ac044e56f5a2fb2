package authn_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/devca"
)

// A workload calls with a JWT-SVID whose audience is the broker. In a real
// server the context comes from grpc; here it is built by hand.
func ExampleAuthenticator_Authenticate() {
	dir, err := os.MkdirTemp("", "authn-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	td := spiffeid.RequireTrustDomainFromString("mayfly.dev")
	ca, err := devca.Open(dir, td)
	if err != nil {
		panic(err)
	}

	auth, err := authn.NewAuthenticator(authn.Config{
		TrustDomains: []spiffeid.TrustDomain{td},
		JWTBundles:   ca.JWTBundle(),
		Audience:     "spiffe://mayfly.dev/broker",
	})
	if err != nil {
		panic(err)
	}

	token, err := ca.MintJWTSVID(spiffeid.RequireFromPath(td, "/demo"), []string{"spiffe://mayfly.dev/broker"}, 5*time.Minute)
	if err != nil {
		panic(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+token))

	p, err := auth.Authenticate(ctx)
	fmt.Println(p.Kind, p.ID, p.Method, err)

	_, err = auth.Authenticate(metadata.NewIncomingContext(ctx, metadata.MD{}))
	fmt.Println(err)
	// Output:
	// workload spiffe://mayfly.dev/demo jwt-svid <nil>
	// authn: unauthenticated: no client certificate and no bearer token: present an X.509-SVID as the TLS client certificate, or send "authorization: Bearer <token>" metadata
}
