package vault_test

import (
	"testing"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/issuertest"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// TestConformance runs the issuer.Issuer conformance suite against a real
// Vault dev server whose database secrets engine makes roles on a real
// PostgreSQL: Verify logs in with the credential and reads a table;
// IsRevoked checks that the role left pg_roles and a new login fails.
func TestConformance(t *testing.T) {
	f := newFixture(t)
	issuertest.Run(t, issuertest.Harness{
		New: func(t *testing.T) issuer.Issuer {
			return f.issuer(t, f.cfg(f.brokerToken, nil))
		},
		ValidParams: []string{
			"path: database/creds/orders-ro\ntoken_policies: [orders-ro]",
			"pki:\n  mount: pki-int\n  role: workload\n  common_name: \"{{lease_id}}.workloads.internal\"\n  uri_sans: [\"{{subject}}\"]\ntoken_policies: [pki-workload]",
			"path: aws/creds/deploy\ntoken_policies: [aws-deploy, audit]",
		},
		InvalidParams: []issuertest.InvalidParams{
			{Name: "unknown key", YAML: "path: database/creds/orders-ro\ntoken_policies: [orders-ro]\nttl: 1h", WantErr: `unknown key "ttl"`},
			{Name: "no token_policies", YAML: "path: database/creds/orders-ro", WantErr: "token_policies is required"},
			{Name: "no path", YAML: "token_policies: [orders-ro]", WantErr: "one of path and pki is required"},
			{Name: "system path", YAML: "path: sys/leases/lookup\ntoken_policies: [x]", WantErr: "not a secrets engine path"},
			{Name: "ssh", YAML: "ssh: {role: r}\ntoken_policies: [x]", WantErr: "ssh is not supported yet"},
			{Name: "root policy", YAML: "path: database/creds/x\ntoken_policies: [root]", WantErr: "root policy"},
			{Name: "not a mapping", YAML: "database/creds/orders-ro", WantErr: "must be a mapping"},
		},
		Verify: func(t *testing.T, l *lease.Lease, c *issuer.Credential) { f.verify(t, c) },
		IsRevoked: func(t *testing.T, l *lease.Lease, c *issuer.Credential) bool {
			return f.revoked(t, c.Username, c.Password)
		},
		UnseenRefs: []string{
			"hmZ3nRz2wqG6WqYh3dDQ0a2p|database/creds/orders-ro/Q3x9mWUnknownLease0000",
			"hmZ3nRz2wqG6WqYh3dDQ0a2p",
		},
		Entitlement: "orders-db-ro",
	})
}
