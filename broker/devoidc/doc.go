// Package devoidc is the OpenID Connect provider of `mayflyd dev`: a local
// identity provider for named dev users, so that the human side of Mayfly
// (`mayfly login`, OIDC bearer tokens, policy on user: and oidc-group:
// subjects) can be tried on one machine.
//
// # DEV ONLY — IT AUTHENTICATES NOBODY
//
// Anyone who can reach it can sign in as any user, with no password: the
// verification page asks for a user name and believes it. Never mount it on
// a broker that serves anything but the local dev trust domain, and never
// configure a real broker to trust its issuer. Its tokens are real (ES256
// signatures, a real JWKS, the real device authorization grant); only the
// authentication of the person is missing.
//
// It speaks just enough OIDC for the device authorization grant (RFC 8628):
//
//	PATH/.well-known/openid-configuration   discovery
//	PATH/keys                               JWKS (its ES256 key, persisted in Config.KeyDir)
//	PATH/device/code                        device authorization endpoint
//	PATH/token                              token endpoint (device_code grant only)
//	PATH/device                             verification page: GET shows a form, POST with
//	                                        user_code and user approves (action=deny denies)
//
// The token endpoint returns an ID token (iss, sub, aud and azp = the client
// ID, preferred_username, email, email_verified, name, groups) and an opaque
// access token that nothing accepts, both for Config.TokenLifetime (one hour
// by default). The one client is public (no secret): Config.ClientID.
//
// Mount it on the dev broker's HTTPS listener under its issuer's path, and
// configure the broker's OIDC verifier with OIDCProvider:
//
//	op, err := devoidc.New(devoidc.Config{
//		Issuer: httpURL + devoidc.DefaultPath, // https://127.0.0.1:7444/dev-oidc
//		KeyDir: filepath.Join(stateDir, "dev-oidc"),
//	})
//	mux.Handle(op.Path()+"/", op)
//	verifier, err := authn.NewOIDCVerifier(ctx, []authn.OIDCProvider{op.OIDCProvider()},
//		authn.WithOIDCHTTPClient(clientTrustingTheDevBundle))
//
// A script or test signs in without a browser by doing the device flow and
// approving its own user code with Approve, which is what `mayfly --dev
// --user alice` does.
package devoidc
