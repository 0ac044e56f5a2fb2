package api

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// errLeaseNotFound is the one answer for a lease that does not exist and a
// lease that belongs to someone else.
var errLeaseNotFound = status.Error(codes.NotFound, "lease not found")

func invalidArg(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}

// storeStatus maps a lease store error for the given operation.
func storeStatus(err error) error {
	switch {
	case errors.Is(err, lease.ErrNotFound):
		return errLeaseNotFound
	case errors.Is(err, lease.ErrWrongState):
		return status.Error(codes.FailedPrecondition, "lease is not active (revoked, expired or being revoked)")
	case errors.Is(err, lease.ErrPastHardEnd):
		return status.Error(codes.FailedPrecondition, "lease is at its hard end and cannot be renewed further; issue a new credential")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "lease store did not answer in time; nothing was issued")
	default:
		return status.Error(codes.Unavailable, "lease store unavailable; nothing was issued, retry later")
	}
}

// issuerStatus maps an issuer error; the message names the entitlement and
// never includes the backend's own error text.
func issuerStatus(ent string, err error) error {
	switch {
	case errors.Is(err, issuer.ErrRejected):
		return status.Errorf(codes.FailedPrecondition, "entitlement %q: the backend refused to mint the credential; the broker's operators must fix its configuration", ent)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled; nothing was issued")
	default:
		return status.Errorf(codes.Unavailable, "entitlement %q: backend unavailable; nothing was issued, retry later", ent)
	}
}

// authnStatus maps an authentication failure.
func authnStatus(err error) error {
	if errors.Is(err, authn.ErrUnauthenticated) {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	// The caller could not be judged (a verifier failed): refuse, but say it
	// is on our side.
	return status.Error(codes.Unavailable, "authentication could not be completed; retry later")
}
