package awssts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/mayflyhq/mayfly/broker/issuer"
)

// ErrKillSwitchDisabled: KillSwitch was called for an entitlement without
// revoke_sessions_policy: true. Its sessions run to their expiry.
var ErrKillSwitchDisabled = fmt.Errorf("awssts: the entitlement does not allow revoke_sessions_policy: %w", issuer.ErrNotSupported)

// unavailableCodes are AWS error codes that say "try again later", beyond
// HTTP 5xx: throttling, and STS failing to reach the broker's JWKS.
var unavailableCodes = map[string]bool{
	"Throttling":                  true,
	"ThrottlingException":         true,
	"RequestLimitExceeded":        true,
	"TooManyRequestsException":    true,
	"RequestThrottled":            true,
	"ServiceUnavailable":          true,
	"ServiceUnavailableException": true,
	"InternalFailure":             true,
	"InternalError":               true,
	"RequestTimeout":              true,
	"RequestTimeoutException":     true,
	"IDPCommunicationError":       true,
}

// hints say what an operator should look at for a refusal.
var hints = map[string]string{
	"AccessDenied":                "the role's trust policy does not let the broker assume it for this caller (principal, sub and aud conditions, sts:TagSession, sts:SetSourceIdentity)",
	"AccessDeniedException":       "the broker is not allowed to do this",
	"IDPRejectedClaim":            "the role's trust policy rejected the broker's token (check the sub and aud conditions)",
	"InvalidIdentityToken":        "STS could not verify the broker's token (is there an IAM OIDC provider for the broker's issuer URL, with the right audience, and is its JWKS reachable?)",
	"ExpiredTokenException":       "STS found the broker's token expired (check the broker's clock)",
	"ExpiredToken":                "STS found the token or credentials expired (check the broker's clock and credentials)",
	"MalformedPolicyDocument":     "STS refused session_policy as an IAM policy",
	"PackedPolicyTooLarge":        "session_policy and session tags are too large once packed; shorten them",
	"RegionDisabledException":     "STS is not activated in this region for the account; activate it or set region",
	"ValidationError":             "STS refused a parameter (is max_session_duration above the role's maximum session duration, or is the broker's own session a role session limited to 1h?)",
	"InvalidClientTokenId":        "the broker's AWS credentials are not valid",
	"SignatureDoesNotMatch":       "the broker's AWS credentials are not valid",
	"UnrecognizedClientException": "the broker's AWS credentials are not valid",
	"NoSuchEntity":                "the role does not exist",
	"LimitExceeded":               "the role has no room for another inline policy",
	"UnmodifiableEntity":          "the role is a service-linked role and cannot be changed",
}

var safeCode = regexp.MustCompile(`^[A-Za-z0-9.]{1,64}$`)
var safeRequestID = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// backendError turns an SDK error into the contract's: ErrRejected or
// ErrUnavailable, a message naming the entitlement and the operation, the
// error code, status and request id, never AWS's message (which goes to
// the log, scrubbed).
func (i *Issuer) backendError(ctx context.Context, entitlement, op string, err error) error {
	what := fmt.Sprintf("entitlement %q", entitlement)
	if entitlement == "" {
		what = "kill switch"
	}
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		cause := context.Cause(ctx)
		if cause == nil {
			cause = context.DeadlineExceeded
			if errors.Is(err, context.Canceled) {
				cause = context.Canceled
			}
		}
		return fmt.Errorf("awssts: %s: %s did not complete: %w: %w", what, op, issuer.ErrUnavailable, cause)
	}
	attempts := ""
	var max *retry.MaxAttemptsError
	if errors.As(err, &max) {
		attempts = fmt.Sprintf(" after %d attempts", max.Attempt)
	}
	var api smithy.APIError
	if !errors.As(err, &api) {
		i.log.WarnContext(ctx, "AWS call failed", slog.String("op", op), slog.String("entitlement", entitlement), slog.String("error", scrub(err.Error())))
		return fmt.Errorf("awssts: %s: %s failed%s: could not reach AWS: %w", what, op, attempts, issuer.ErrUnavailable)
	}
	code := api.ErrorCode()
	if !safeCode.MatchString(code) {
		code = "unknown"
	}
	status, reqID := 0, ""
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
		if safeRequestID.MatchString(re.ServiceRequestID()) {
			reqID = re.ServiceRequestID()
		}
	}
	detail := code
	if status != 0 {
		detail += fmt.Sprintf(", HTTP %d", status)
	}
	if reqID != "" {
		detail += ", request id " + reqID
	}
	i.log.WarnContext(ctx, "AWS refused a call",
		slog.String("op", op), slog.String("entitlement", entitlement), slog.String("code", code),
		slog.Int("status", status), slog.String("request_id", reqID), slog.String("message", scrub(api.ErrorMessage())))

	if unavailableCodes[code] || status >= 500 || status == 429 {
		return fmt.Errorf("awssts: %s: %s failed%s (%s): AWS is unavailable or throttling: %w", what, op, attempts, detail, issuer.ErrUnavailable)
	}
	hint := hints[code]
	if hint == "" {
		hint = "AWS refused the request"
	}
	return fmt.Errorf("awssts: %s: %s refused (%s): %s: %w", what, op, detail, hint, issuer.ErrRejected)
}
