// Package jwt is the broker's own JWT issuer: it mints signed bearer
// tokens for entitlements whose issuer is "jwt", publishes its public keys
// the way an OpenID Connect provider does, and answers RFC 7662 token
// introspection.
//
// A token's jti is its lease id, chosen before the token exists, so the
// lease is the handle and Issue never calls Bind. Its claims are iss (the
// configured issuer URL), sub (the lease subject), aud and scope (from the
// entitlement), iat = nbf (the lease's issue time), exp (the lease's
// expiry), jti and ent (the entitlement name):
//
//	entitlements:
//	  orders-api:
//	    issuer: jwt
//	    jwt:
//	      audience: https://orders.example.com
//	      scopes: [orders.read]
//
// A bearer JWT cannot be recalled: Revoke succeeds without effect and
// Revocability says so. What stands in for revocation is introspection:
// from the moment its lease is revoked, POST /introspect (and the gRPC
// IntrospectionService, through IntrospectToken) reports the token
// inactive. Verifiers that check the signature only accept it until exp,
// which is why entitlements issuing JWTs should keep their ttl short.
//
// Because the discovery document (/.well-known/openid-configuration) and
// JWKS (/.well-known/jwks.json) follow OIDC, the tokens also work as web
// identity tokens: an AWS IAM OIDC provider or a Google workload identity
// pool configured with the issuer URL exchanges them for cloud
// credentials (use ES256 or RS256; neither accepts EdDSA).
//
// Keys: each key's kid is its RFC 7638 thumbprint. Rotate (or Run, every
// Config.RotateEvery) makes a new active key; a retired key stays
// published for Config.Retain, so tokens it signed keep verifying until
// they expire, and is then pruned. With Config.KeyDir the keys persist as
// PKCS#8 PEM files named <created>_<kid>.pem (mode 0600, directory 0700),
// so a restart keeps them and their kids. Signing reads the active key
// through an atomic pointer and never waits on a lock.
//
// Usage from the composition root:
//
//	iss, err := jwt.New(jwt.Config{
//		IssuerURL:   "https://mayfly.example.com",
//		KeyDir:      "/var/lib/mayfly/jwt-keys",
//		RotateEvery: 24 * time.Hour,
//		Retain:      48 * time.Hour, // >= the longest max_ttl of a jwt entitlement
//	})
//	if err != nil {
//		return err
//	}
//	tasks = append(tasks, iss.Run)
//	mux.Handle("/", iss.Handler(leaseActive, authorizeResourceServer))
//
// Replicas: one process owns a KeyDir, and private keys are never shared.
// Broker replicas behind one issuer URL share their public keys through
// Config.Peers (RedisPeers, in the leases' Redis): each publishes its keys
// with how long tokens they signed may be presented, and serves and
// verifies with everyone's, so a verifier that fetches the JWKS from any
// replica finds the key that signed its token. A new key reaches the
// other replicas within Config.PeerRefresh; a verifier that sees an
// unknown kid should refetch the JWKS (the well-behaved ones do).
package jwt
