package access

import (
	"errors"
	"strings"

	"github.com/mayflyhq/mayfly/broker/policy"
)

// Sentinels. The API maps them to status codes; match them with errors.Is.
var (
	// ErrNotFound: no such request or grant, or not one the caller may
	// see (the same either way). Stores return it too.
	ErrNotFound = errors.New("access: not found")
	// ErrExists: a store already holds a record with that id.
	ErrExists = errors.New("access: id already exists")
	// ErrConflict: a store's compare-and-set failed because the record
	// changed since it was read (its Version moved on). The service
	// re-reads and decides again; callers of the service never see it.
	ErrConflict = errors.New("access: version conflict")

	// ErrDenied: policy refuses (not requestable, conflicting entitlement,
	// condition not met, break-glass not allowed or blocked, ...).
	// DeniedError carries the reasons.
	ErrDenied = errors.New("access: denied by policy")
	// ErrInvalid: the request is malformed or incomplete (duration over
	// the maximum, missing reason, ticket not matching, ...).
	ErrInvalid = errors.New("access: invalid request")
	// ErrSelfApproval: the reviewer is the requester, under some identity
	// they hold (also: reviewing one's own break-glass use, certifying
	// one's own standing grant).
	ErrSelfApproval = errors.New("access: reviewer is the requester")
	// ErrNotApprover: the reviewer is not among the request's approvers
	// (or not the owner, for reviews and certifications).
	ErrNotApprover = errors.New("access: not an approver")
	// ErrAlreadyDecided: this reviewer (under some identity) already
	// approved the request, or the break-glass use was already reviewed.
	ErrAlreadyDecided = errors.New("access: already decided by this reviewer")
	// ErrNotCounted: with distinct_groups, the approval would count under
	// no approvers entry not already counted.
	ErrNotCounted = errors.New("access: approval would not count")
	// ErrClosed: the request is no longer pending (approved, denied,
	// cancelled, expired), or the grant is no longer active.
	ErrClosed = errors.New("access: closed")
	// ErrChanged: the digest the reviewer saw is not the request's: it
	// changed since, or the approval was meant for another request.
	ErrChanged = errors.New("access: request changed since it was seen")
	// ErrForbidden: the caller may see the record but not do this to it
	// (cancelling someone else's request).
	ErrForbidden = errors.New("access: not permitted")
	// ErrUnavailable: the action could not be audited (Config.Gate
	// refused), so nothing was changed.
	ErrUnavailable = errors.New("access: audit trail unavailable")
)

// DeniedError is a refusal with the policy's reasons. Err is the sentinel
// (ErrDenied, ErrInvalid, ErrSelfApproval, ...), so errors.Is works on it.
type DeniedError struct {
	// Err is the sentinel.
	Err error
	// Reasons are the policy's reasons, most important first.
	Reasons []policy.Reason
}

// Error reads "access: denied by policy: MESSAGE; MESSAGE".
func (e *DeniedError) Error() string {
	msgs := make([]string, len(e.Reasons))
	for i, r := range e.Reasons {
		msgs[i] = r.Message
	}
	if len(msgs) == 0 {
		return e.Err.Error()
	}
	return e.Err.Error() + ": " + strings.Join(msgs, "; ")
}

// Unwrap returns the sentinel.
func (e *DeniedError) Unwrap() error { return e.Err }

// Reasons returns the policy reasons err carries, if it is (or wraps) a
// DeniedError.
func Reasons(err error) []policy.Reason {
	var de *DeniedError
	if errors.As(err, &de) {
		return de.Reasons
	}
	return nil
}

// denied builds the refusal for a policy decision: ErrInvalid when every
// reason says the caller sent a bad request, ErrDenied otherwise.
func denied(reasons []policy.Reason) error {
	sentinel := ErrInvalid
	for _, r := range reasons {
		if !policy.IsInvalidArgument(r.Code) {
			sentinel = ErrDenied
			break
		}
	}
	return &DeniedError{Err: sentinel, Reasons: reasons}
}

// approvalError maps a refused review to its sentinel.
func approvalError(reasons []policy.Reason) error {
	sentinel := ErrNotApprover
	if len(reasons) > 0 {
		switch reasons[0].Code {
		case policy.ReasonSelfApproval:
			sentinel = ErrSelfApproval
		case policy.ReasonAlreadyApproved:
			sentinel = ErrAlreadyDecided
		case policy.ReasonApprovalNotCounted:
			sentinel = ErrNotCounted
		case policy.ReasonInvalidTime:
			sentinel = ErrInvalid
		}
	}
	return &DeniedError{Err: sentinel, Reasons: reasons}
}
