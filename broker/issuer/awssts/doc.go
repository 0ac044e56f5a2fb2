// Package awssts is the AWS STS issuer: it mints temporary AWS credentials
// (an access key id, a secret access key and a session token) by assuming an
// IAM role, one STS session per lease, for entitlements whose issuer is
// "awssts":
//
//	entitlements:
//	  s3-reports-read:
//	    issuer: awssts
//	    awssts:
//	      role_arn: arn:aws:iam::123456789012:role/reports-read
//	      mode: web_identity            # default; or assume_role
//	      session_policy: |             # optional, narrows the role further
//	        {"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::reports/*"}]}
//	      max_session_duration: 1h      # the role's MaxSessionDuration (1h..12h)
//	      revoke_sessions_policy: true  # let the kill switch deny older sessions
//	    ttl: 20m                        # at least MinTTL (16m)
//	    max_ttl: 1h                     # at most max_session_duration
//
// Two modes. web_identity (the default) calls AssumeRoleWithWebIdentity
// with a JWT the broker mints for the lease (Config.TokenSource, wired to
// the broker's own JWT issuer): AWS verifies it against the broker's OIDC
// discovery document and JWKS, so the broker holds no AWS key at all, and
// the role's trust policy can name the caller through the token's sub (the
// lease subject, a SPIFFE ID). assume_role calls AssumeRole signed with the
// broker's own AWS credentials (Config.Credentials or the SDK's default
// chain) and sets SourceIdentity and session tags on the session.
//
// The session name is the lease id, chosen before STS is called, so the
// lease is the handle (Bind is never called) and every CloudTrail event of
// the session carries it in the assumed-role ARN
// (arn:aws:sts::ACCOUNT:assumed-role/ROLE/LEASE_ID, also the credential's
// ExternalRef). In assume_role mode the session also carries:
//
//   - SourceIdentity: the lease subject mapped by SourceIdentity (a SPIFFE ID
//     spiffe://td/ns/app becomes td+ns+app), which persists across role
//     chaining and shows in CloudTrail as sourceIdentity.
//   - session tags mayfly:lease, mayfly:entitlement and mayfly:subject, and
//     the entitlement's session_tags.
//
// AssumeRoleWithWebIdentity takes neither as a parameter: STS reads them
// from the token's https://aws.amazon.com/source_identity and
// https://aws.amazon.com/tags claims. WebIdentityClaims returns exactly
// those claims for a lease; mayflyd's TokenSource adds them to the broker
// JWT (jwt.Params.Extra), so the session carries the caller as its source
// identity and the mayfly tags. The entitlement's own session_tags are
// still refused in web_identity mode (they would have to be claims too).
//
// Durations. STS sessions last at least 15 minutes and at most the role's
// maximum session duration (1h by default, 12h at most). A credential must
// never outlive its lease, and STS counts its 15 minutes from when it
// receives the call, after the lease's clock started; so the session is
// asked to end SkewAllowance (30s) before the lease does, and a lease
// shorter than MinTTL (16m: 15m, the allowance, and 30s for the lease to
// reach STS) is refused with ErrRejected rather than rounded up. Params.
// TTLBounds reports the ttl range an entitlement must keep; the policy
// loader cannot see ttl in DecodeParams, so the policy loader checks it (policy.TTLBounder) when
// the policy loads. A lease longer than the role allows gets a session that
// ends when the role's maximum does, earlier than the lease. Should STS
// still report an expiry after the lease's (its clock far ahead of the
// broker's), the credential is dropped unseen and Issue fails with
// ErrUnavailable.
//
// Revocation. An STS session cannot be revoked on its own: Revoke succeeds
// without effect (the session ends at its expiry, no later than the lease)
// and Revocability says so. What can be done is the kill switch: KillSwitch
// puts an inline policy named mayfly-revoke-older-sessions on the role that
// denies everything to sessions issued before a time (aws:TokenIssueTime),
// as the IAM console's "Revoke active sessions" does. It ends every older
// session of the role, not just Mayfly's, so it is opt-in per entitlement
// (revoke_sessions_policy: true) and meant for the kill switch.
//
// Errors. STS and IAM refusals an operator must fix (AccessDenied,
// MalformedPolicyDocument, RegionDisabled, InvalidIdentityToken,
// ExpiredToken, IDPRejectedClaim, ValidationError, ...) wrap
// issuer.ErrRejected; throttling, 5xx answers, IDPCommunicationError,
// timeouts and network failures wrap issuer.ErrUnavailable. Messages name
// the entitlement, the STS error code, the HTTP status and the AWS request
// id, never AWS's message text; the message goes to the log, with anything
// that looks like a key or token cut out. Every call is safe to retry (a
// retried AssumeRole yields a session with the same name, PutRolePolicy
// writes the same document), so the SDK retries throttling, 5xx and
// network errors, at most Config.MaxAttempts times in all.
//
// Usage from the composition root:
//
//	sts, err := awssts.New(awssts.Config{
//		Region: "eu-west-1",
//		TokenSource: func(ctx context.Context, l *lease.Lease, aud string) (string, error) {
//			c, err := jwtIssuer.Issue(ctx, issuer.Request{Lease: l, Params: jwt.Params{Audience: []string{aud}}})
//			if err != nil {
//				return "", err
//			}
//			return c.Token, nil
//		},
//	})
package awssts
