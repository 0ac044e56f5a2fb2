// Package policy is Mayfly's governance model: the policy file that says
// which entitlements exist, who owns them, which backend mints them, for
// how long, and who holds them; and Decide, the pure function that answers
// whether a principal may use an entitlement now.
//
// # The file
//
//	version: 1
//	trust_domains: [prod.example.org]
//	groups:
//	  sre: ["user:alice@example.org", "oidc-group:corp/sre"]
//	entitlements:
//	  ci-deploy-token:
//	    description: Token the CI runner presents to the deploy API
//	    owner: group:sre
//	    issuer: jwt
//	    jwt: { audience: https://deploy.example.org, scopes: [deploy:write] }
//	    ttl: 10m
//	    max_ttl: 30m
//	    standing:
//	      - subject: "spiffe://prod.example.org/ci/runner/*"
//	        purpose: CI deploys after merge
//	        until: 2027-01-31           # holds through that day, UTC
//	        review_every: 30d
//
// Loading is strict: unknown or duplicate keys, bad names, durations, dates
// and subjects, undefined groups, group cycles and unknown issuers are all
// errors, each reported as "policy: FILE:LINE: ..." with the line of the key
// or value at fault ("policy: line LINE: ..." from Parse, which has no file
// name; an ErrorList holds every problem found). The section named after the
// entitlement's issuer is handed to that issuer's DecodeParams.
//
// Names of entitlements, groups and grant ids are lower-case ASCII
// (^[a-z0-9][a-z0-9._-]{0,62}$), and subjects are compared byte for byte
// after parsing, so names that differ by case, spaces or look-alike Unicode
// letters never match each other. Subjects are spiffe://TD/PATH (where the
// trailing segments may be "*", exactly one segment each, and the last may
// be "**", one or more segments), user:NAME and group:NAME; groups may also
// list oidc-group:PROVIDER/NAME as asserted by an identity provider.
//
// # Deciding
//
// Decide is pure: the caller passes the time, and the answer depends only
// on the policy and the input. An unknown entitlement and one the caller
// holds no grant for give the same public reason, so the API leaks
// nothing; Decision.Entitlement tells the broker which it was.
//
//	p, err := policy.LoadFile("/etc/mayfly/policy.yaml", policy.Options{
//		Issuers: map[string]func(*yaml.Node) (any, error){"jwt": jwtIssuer.DecodeParams},
//	})
//	if err != nil {
//		return err // every problem, with its line
//	}
//	d := p.Decide(policy.Input{Principal: caller, Entitlement: "ci-deploy-token", Now: now})
//	if d.Outcome != policy.Allow {
//		return deny(d.Reasons)
//	}
//	// mint a credential for d.TTL, lease it until d.ExpiresAt, never past d.HardEnd
//
// # Reloading
//
// A Holder serves the policy in force and reloads it on SIGHUP or when the
// file's content changes; a reload that fails keeps the last good policy.
//
//	h, err := policy.NewHolder(path, opts, logger, func(p *policy.Policy, err error) {
//		// audit the reload: p.Digest is the policy in force
//	})
//	if err != nil {
//		return err
//	}
//	go h.Run(ctx)
//	d := h.Current().Decide(in)
package policy
