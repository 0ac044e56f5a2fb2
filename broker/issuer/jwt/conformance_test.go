package jwt

import (
	"testing"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/issuertest"
	"github.com/mayflyhq/mayfly/broker/lease"
)

func TestConformance(t *testing.T) {
	for _, alg := range []string{ES256, RS256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			var cur *env // the issuer of the running subtest
			issuertest.Run(t, issuertest.Harness{
				New: func(t *testing.T) issuer.Issuer {
					cur = newEnv(t, Config{Algorithm: alg, KeyDir: t.TempDir()})
					return cur.iss
				},
				ValidParams: []string{
					"audience: https://orders.example.com\nscopes: [orders.read, orders.write]",
					"audience: sts.amazonaws.com",
					"audience: [a, b]\nscopes: []",
				},
				InvalidParams: []issuertest.InvalidParams{
					{Name: "unknown key", YAML: "audience: x\naudiences: y", WantErr: `unknown key "audiences"`},
					{Name: "no audience", YAML: "scopes: [a]", WantErr: "audience is required"},
					{Name: "empty audience list", YAML: "audience: []", WantErr: "audience must not be empty"},
					{Name: "bad scope", YAML: `audience: x` + "\n" + `scopes: ["a b"]`, WantErr: "scopes[0]"},
					{Name: "not a mapping", YAML: "[audience]", WantErr: "must be a mapping"},
				},
				Verify: func(t *testing.T, l *lease.Lease, c *issuer.Credential) {
					cur.harnessVerify(t, l, c, testParams)
				},
				IsRevoked: nil, // a bearer JWT cannot be recalled
			})
		})
	}
}
