// Package authn decides who is calling the broker.
//
// A caller proves its identity in one of three ways:
//
//   - a workload presents its X.509-SVID as the client certificate of the
//     mTLS connection;
//   - a workload sends a JWT-SVID whose audience is the broker as a bearer
//     token (gRPC metadata "authorization: Bearer <token>") over TLS;
//   - a human sends an OIDC ID token the same way (a BearerVerifier that a
//     later package provides).
//
// The server side has two halves. ServerCredentials is the gRPC transport:
// it serves the broker's own X.509-SVID and asks for, but never requires or
// rejects, a client certificate. It verifies what the client sent against the
// current trust bundle after the handshake and records the result in
// AuthInfo. A bad certificate therefore does not break the connection (which
// a client would see as codes.Unavailable with no reason); instead
// Authenticator.Authenticate, called for every RPC, returns an error wrapping
// ErrUnauthenticated that says precisely what is wrong, and broker/api turns
// it into codes.Unauthenticated.
//
//	creds := authn.ServerCredentials(svidSource, bundleSource)
//	auth, err := authn.NewAuthenticator(authn.Config{
//		TrustDomains: []spiffeid.TrustDomain{td},
//		JWTBundles:   jwtBundleSource, // nil disables JWT-SVIDs
//		Audience:     "spiffe://mayfly.dev/broker",
//	})
//	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(
//		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
//			p, err := auth.Authenticate(ctx)
//			if err != nil {
//				return nil, toStatus(err) // broker/api
//			}
//			return h(authn.WithPrincipal(ctx, p), req)
//		}))
//
// The client side (SDK, sidecar, CLI) uses ClientTLSConfig with a source of
// its own SVID — a workloadapi.X509Source, or the PEM files of a dev setup via
// LoadSVIDFiles or a FileSource that follows the files as they are renewed.
package authn
