// Package gcp is the Google Cloud issuer: it mints OAuth 2.0 access tokens
// of a service account, one per lease, for entitlements whose issuer is
// "gcp":
//
//	entitlements:
//	  bq-reports-read:
//	    issuer: gcp
//	    gcp:
//	      service_account: reports-reader@analytics-prod.iam.gserviceaccount.com
//	      scopes: [https://www.googleapis.com/auth/bigquery.readonly]
//	      max_lifetime: 1h     # 12h only where the org policy allows it
//	      delegates: []        # optional delegation chain
//	    ttl: 15m
//	    max_ttl: 1h            # at most max_lifetime
//
// The broker holds no Google key. For each lease it asks its own JWT
// issuer for a token about the lease (Config.TokenSource: sub is the
// caller, ent the entitlement, aud the workload identity provider),
// exchanges it at Google's Security Token Service
// (sts.googleapis.com/v1/token, RFC 8693 token exchange) for a federated
// access token of the workload identity pool, and with that calls the IAM
// Credentials API, projects/-/serviceAccounts/SA:generateAccessToken, for a
// token of the service account with the entitlement's scopes and a
// lifetime that ends before the lease. The pool's provider trusts the
// broker's issuer URL and maps google.subject = assertion.sub and
// attribute.entitlement = assertion.ent, so the IAM binding that lets the
// federated identity impersonate the service account can name one caller
// or one entitlement (examples/gcp/README.md).
//
// Both calls are plain REST over net/http: two JSON/form POSTs do not
// warrant google.golang.org/api and its dependencies, and
// golang.org/x/oauth2/google's external account flow neither takes
// delegates nor exposes the HTTP status, only an error string holding
// Google's raw answer.
//
// Lifetimes. A token's lifetime is chosen when it is minted: until the
// lease ends, less SkewAllowance (30s, for the call and clock skew), and at
// most max_lifetime (1h unless the organisation policy
// constraints/iam.allowServiceAccountCredentialLifetimeExtension lists the
// service account, then up to 12h). Params.TTLBounds reports the ttl range
// an entitlement must keep (at least MinTTL, 2m, at most max_lifetime); the
// policy loader checks it (policy.TTLBounder). A longer lease gets a token
// that ends at max_lifetime, earlier than the lease; Renew mints a new one.
// Should Google report an expiry after the lease's, the token is dropped
// unseen and Issue fails with ErrUnavailable.
//
// Revocation. Google access tokens cannot be revoked: Revoke succeeds
// without effect and Revocability says so; the token ends at its expiry,
// no later than the lease, and at most max_lifetime after it was minted.
//
// Errors. Refusals an operator must fix (Google STS invalid_grant,
// invalid_target, unauthorized_client; IAM PERMISSION_DENIED, NOT_FOUND,
// INVALID_ARGUMENT, UNAUTHENTICATED, FAILED_PRECONDITION) wrap
// issuer.ErrRejected; 429, 5xx, timeouts and network errors wrap
// issuer.ErrUnavailable and are retried, at most Config.MaxAttempts times
// in all per call: both calls are safe to repeat (each attempt mints an
// independent short-lived token that nobody else has seen). Messages name
// the entitlement, the call, the HTTP status and Google's error code,
// never Google's message text, which goes to the log with anything
// key-like cut out.
//
// Usage from the composition root:
//
//	g, err := gcp.New(gcp.Config{
//		WorkloadIdentityProvider: "projects/123456789012/locations/global/workloadIdentityPools/mayfly/providers/broker",
//		TokenSource: func(ctx context.Context, l *lease.Lease, aud string) (string, error) {
//			c, err := jwtIssuer.Issue(ctx, issuer.Request{Lease: l, Params: jwt.Params{Audience: []string{aud}}})
//			if err != nil {
//				return "", err
//			}
//			return c.Token, nil
//		},
//	})
package gcp
