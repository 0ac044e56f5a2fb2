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
// # Governance
//
// Besides standing grants an entitlement may say who may ask for it and
// how requests are approved, what a request must carry, a condition, the
// entitlements it conflicts with, and who may break glass:
//
//	orders-db-admin:
//	  ...
//	  requestable_by: [group:sre, "spiffe://prod.example.org/ns/agents/*"]  # humans and agents
//	  approval:
//	    approvals: 2                 # 0 approves at once
//	    approvers: [group:sre-leads, group:security]
//	    distinct_groups: true        # one from each entry
//	    max_duration: 4h             # longest grant a request may ask for (default 8h)
//	    pending_ttl: 24h             # how long a request waits (default 24h)
//	  require: { reason: true, ticket: "(INC|CHG)-[0-9]+" }   # the whole ticket must match
//	  when: 'request.time.getHours() >= 6 || "oncall" in principal.groups'
//	  conflicts_with: [payments-release]   # symmetric
//	  break_glass:
//	    allowed: [group:oncall]
//	    max_ttl: 1h                  # longer asks are capped
//	    review_within: 24h           # overdue: no more break-glass until reviewed
//	    notify: [webhook:security]
//	  notify: [webhook:security]     # every request, approval, denial, review
//
// At the top of the file, identity_providers lists the OIDC issuers for
// humans (https; groups_claim defaults to "groups", username_claim to
// "email"), webhooks the notification endpoints (https, or http to
// loopback; secret_env names the environment variable holding the HMAC
// key, which loading never reads), and identities the sets of subjects
// that are one person or agent, so that nobody approves their own request
// under another identity and one person's two identities count once.
//
// # Conditions
//
// `when` is a CEL expression (github.com/google/cel-go), compiled at load
// (a bad one is a load error naming the entitlement and the line) and
// checked for every request and every issuance except break-glass. It
// must be true or false. Its variables:
//
//	principal.id            string        "user:alice", "spiffe://td/agents/a1"
//	principal.kind          string        "human" or "workload"
//	principal.groups        list(string)  policy groups (names under groups:) the caller belongs to
//	principal.idp_groups    list(string)  groups asserted by the IdP, "oidc-group:corp/sre"
//	principal.trust_domain  string        a workload's trust domain; "" for humans
//	request.entitlement     string
//	request.reason          string        at issuance, the request's if the call has none
//	request.ticket          string        likewise
//	request.duration        duration      the grant asked for (requests), the TTL asked for (issuance)
//	request.time            timestamp     the decision time, UTC: request.time.getHours() is UTC
//
// CEL's standard functions and the strings extension are available. A
// condition that cannot be evaluated (say, an index out of range) denies
// with condition_error: conditions fail closed.
//
// # Deciding
//
// Decide is pure: the caller passes the time and what the broker knows
// (dynamic grants, entitlements held, certifications, a break-glass block),
// and the answer depends only on the policy and the input, so a recorded
// input can be replayed. An unknown entitlement and one the caller has no
// relation to give the same public reason, so the API leaks nothing;
// Decision.Entitlement tells the broker which it was.
//
// The other decisions are pure too: DecideRequest (may this access
// request be made; approved at once, needs approval, or refused with every
// reason), CheckApproval (does this review count: not the requester under
// any identity, an approver, once per identity, distinct approver entries
// by bipartite matching), DecideBreakGlass, and Reviews (which standing
// grants are due for certification). WhatIf replays recorded decisions
// under a changed policy and reports every one whose outcome, TTL or
// approvals needed would change, which way, and why.
//
// Certification: Input.Certified maps each standing grant id to the start
// of its review period (the last certification, or when the broker first
// saw the grant); a grant with review_every whose period has run out gives
// nothing (certification_lapsed). The access service keeps that state.
// Requirements (require:) are checked when asking (DecideRequest), not at
// issuance: an issuance under a request grant rests on the reason and
// ticket its request carried, and standing grants are held without asking.
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
