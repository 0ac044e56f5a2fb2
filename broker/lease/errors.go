package lease

import "errors"

var (
	// ErrNotFound: no lease with that id.
	ErrNotFound = errors.New("lease: not found")
	// ErrExists: a lease with that id already exists.
	ErrExists = errors.New("lease: id already exists")
	// ErrDuplicate: the subject already used this request id; the existing
	// lease is returned alongside.
	ErrDuplicate = errors.New("lease: request id already used")
	// ErrWrongState: the lease is not in a state that allows the change.
	ErrWrongState = errors.New("lease: wrong state for this change")
	// ErrPastHardEnd: a renewal would move the expiry past the hard end.
	ErrPastHardEnd = errors.New("lease: expiry past hard end")
	// ErrFenced: the claim was superseded by a later claim.
	ErrFenced = errors.New("lease: claim superseded")
)
