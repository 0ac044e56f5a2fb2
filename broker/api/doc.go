// Package api holds the broker's gRPC handlers. It translates between the
// protobuf messages and the domain packages (policy, lease, issuer) and is
// the only place that chooses gRPC status codes: below it, errors are plain
// Go errors and sentinels; here they become codes with messages that say
// what to fix and never carry a secret or a backend's raw error text.
//
// Status contract (see API.md): no or bad credentials → Unauthenticated;
// policy denies, or the entitlement is unknown → PermissionDenied with the
// same message either way; lease not found or not the caller's → NotFound
// with the same message either way; malformed field → InvalidArgument naming
// the field; revoked or expired lease → FailedPrecondition; lease store or
// backend unreachable → Unavailable, and nothing was minted.
package api
