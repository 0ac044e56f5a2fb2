package chaos

import "fmt"

// tokenPolicy is the policy of the JWT fault cases: one entitlement,
// chaos-token, that every test workload holds through a standing grant,
// described as description, with the given ttl and max_ttl.
func tokenPolicy(description, ttl, maxTTL string) string {
	return fmt.Sprintf(`
version: 1
trust_domains: [mayfly.test]
entitlements:
  chaos-token:
    description: %s
    owner: user:ops
    issuer: jwt
    jwt: { audience: https://api.mayfly.test }
    ttl: %s
    max_ttl: %s
    standing:
      - subject: spiffe://mayfly.test/workload/*
        purpose: fault cases
        until: 2099-12-31
`, description, ttl, maxTTL)
}
