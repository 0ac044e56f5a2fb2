// Package vault is the broker's HashiCorp Vault issuer: it brokers any
// Vault secret that comes with a lease (database, AWS, RabbitMQ, ...
// credentials read from a path, or PKI certificates) so that every one of
// them ends with its Mayfly lease, even if the broker dies.
//
//	entitlements:
//	  orders-db-ro:
//	    issuer: vault
//	    vault:
//	      path: database/creds/orders-ro
//	      token_policies: [mayfly-orders-ro]
//	    ttl: 15m
//	    max_ttl: 8h
//
// # Crash safety
//
// Each lease gets its own Vault token. Issue creates it as a child of the
// broker's token (or through Config.TokenRole) with the entitlement's
// token_policies and a TTL that ends with the lease (explicit max TTL: the
// hard end), records its accessor in the pending lease with Bind, and only
// then reads the secret with it, so that the secret's Vault lease belongs
// to that token. No secret exists before the lease names the token that
// revokes it: a broker that dies at any point leaves a pending lease the
// revoker reaps (revoking the token and every secret under it), and a
// broker that never comes back still has Vault end every credential when
// the token's TTL runs out. On activation the lease's reference becomes
// ACCESSOR|LEASE_ID (see Ref), for renewal and synchronous revocation.
// Where the engine gives the secret a Vault lease of another length than
// the lease (database: the role's default_ttl), Issue renews it to the
// lease's expiry, so the backend's own expiry (database: VALID UNTIL)
// bounds the credential even without Vault. Vault counts whole seconds,
// which Issue rounds down: Vault ends a credential up to a second before
// its lease, and Credential.ExpiresAt says when. Issuance costs two Vault
// calls (token create, read), and a third where the engine's TTL differs
// from the lease's: give database roles default_ttl = the entitlement's
// ttl to save it.
//
// One case leaves a token the broker cannot revoke: Vault answering the
// token create after the broker gave up on it (Vault frozen, the request
// timed out). That token holds no secret, its value reached no one, and
// it ends at its TTL.
//
// Revoke revokes the Vault lease synchronously (the database role is gone
// when it returns), then the token by accessor; already gone is success.
// Once its secret is revoked a token holds nothing, so that second step
// runs in the background, after the secret revocations in flight, and a
// lease revoked at its expiry skips it (the token's TTL has ended it). A
// broker that dies before revoking such a token leaves it to its TTL.
// Vault's database plugin drops one role at a time per connection, so in
// a burst of due leases every other request Vault serves delays the
// drops: this way a revocation costs Vault one request, close to what
// Vault's own expiry of the lease costs it.
//
// Renew extends both by accessor and lease id, never past the hard end.
// A retried Issue for the same lease returns the same credential while
// this process remembers it (Config.ReplayWindow); a token cannot be
// recovered from its accessor, so after that the retry is refused with
// "cannot replay; request a new lease".
//
// # Vault set-up
//
// The broker's own token (Config.Auth: a fixed token, AppRole, or JWT login
// with the broker's JWT-SVID) needs this policy, plus permission to grant
// token_policies (a non-root token may only give its children its own
// policies, so prefer Config.TokenRole with allowed_policies):
//
//	path "auth/token/create"          { capabilities = ["update"] } # or auth/token/create/<TokenRole>
//	path "auth/token/renew-accessor"  { capabilities = ["update"] }
//	path "auth/token/revoke-accessor" { capabilities = ["update"] }
//	path "sys/leases/renew"           { capabilities = ["update"] }
//	path "sys/leases/revoke"          { capabilities = ["update"] }
//	path "auth/token/lookup-self"     { capabilities = ["read"] }
//	path "auth/token/renew-self"      { capabilities = ["update"] }
//
// Give the broker's token no default policy (token_no_default_policy on
// its auth role, no_default_policy for a fixed token): the last two paths
// are all it needs from it, and Vault's default policy is templated, so
// Vault parses it again on every request the broker makes, about a fifth
// of Vault's CPU in a burst of revocations.
//
// Per-lease tokens are children of the broker's token unless the token
// role makes them orphans: when the broker's token ends, Vault revokes
// them all. Give the broker's auth role a token_period (Run renews a
// periodic token forever and warns about one that is not), or use a token
// role with orphan=true.
//
// Errors follow issuer.Issuer: Vault unreachable, timing out, sealed or
// failing (5xx, 429) wraps issuer.ErrUnavailable; Vault refusing (a missing
// role, a permission error, a path without a lease) wraps
// issuer.ErrRejected with a message that names the entitlement and what to
// check. Messages never carry a token, a secret or Vault's own error text.
//
// Usage from the composition root:
//
//	iss, err := vault.New(vault.Config{
//		Address:   "https://vault.example.com:8200",
//		TLS:       vault.TLSConfig{CAFile: "/etc/mayfly/vault-ca.pem"},
//		Auth:      vault.Auth{JWT: &vault.JWTAuth{Role: "mayfly", TokenSource: svidForVault}},
//		TokenRole: "mayfly",
//	})
//	if err != nil {
//		return err
//	}
//	tasks = append(tasks, iss.Run) // keeps the broker's Vault token alive
//	cfg.Issuers = append(cfg.Issuers, iss)
package vault
