package lease

import (
	"context"
	"time"
)

// Store persists leases and the due index the revoker works from.
//
// Every method takes ctx first. Implementations return the sentinels in
// errors.go (wrapped with %w is fine) so callers can tell "not there" from
// "wrong state" from "store unreachable"; any other error means the store
// could not be reached or answered badly, and the broker fails closed
// (nothing is minted without a lease). Every state change of one lease and
// its indexes is atomic: a failure leaves the lease as it was.
//
// Times are passed in by the caller; a store never reads the clock itself.
// Every implementation passes leasetest.Run; the leasetest package doc pins
// down the choices this contract leaves open (what Claim sets on a reaped
// lease, where a retried lease goes back to, what a repeated Revoke does).
type Store interface {
	// Create records a new lease in StatePending. ID, Subject, Entitlement,
	// Issuer, IssuedAt, ExpiresAt, HardEnd and DueAt (the pending deadline)
	// must be set. If RequestID is set and the same Subject already created a
	// lease with that RequestID, Create returns that lease and ErrDuplicate
	// and writes nothing. ErrExists if the ID is taken.
	Create(ctx context.Context, l *Lease) (*Lease, error)

	// Bind records the backend handle of a pending lease before the secret
	// is minted, so a crash after minting still leaves a revocable lease.
	// ErrNotFound; ErrWrongState if the lease is no longer pending.
	Bind(ctx context.Context, id, ref string) error

	// Activate moves a pending lease to active, recording ref (if not empty)
	// and setting DueAt to ExpiresAt. ErrNotFound; ErrWrongState if the
	// lease is not pending (e.g. reaped at its pending deadline).
	Activate(ctx context.Context, id, ref string) (*Lease, error)

	// Get returns the lease. ErrNotFound.
	Get(ctx context.Context, id string) (*Lease, error)

	// List returns leases matching q, in ascending ID order, and the token
	// for the next page ("" when there is none).
	List(ctx context.Context, q Query) ([]*Lease, string, error)

	// Renew moves ExpiresAt (and DueAt) of an active lease to expiresAt.
	// ErrNotFound; ErrWrongState unless active with no revocation asked
	// for; ErrPastHardEnd if expiresAt is after HardEnd.
	Renew(ctx context.Context, id string, expiresAt time.Time) (*Lease, error)

	// Revoke asks for revocation: a pending or active lease becomes due at
	// `at` with RevokeReason set. A lease already revoking, revoked or
	// irrevocable is returned unchanged (revocation is idempotent).
	// ErrNotFound.
	Revoke(ctx context.Context, id string, reason Reason, at time.Time) (*Lease, error)

	// RevokeMatching does Revoke for every pending or active lease that the
	// selector matches and returns how many it changed.
	RevokeMatching(ctx context.Context, sel Selector, reason Reason, at time.Time) (int, error)

	// Claim takes up to max leases whose DueAt is at or before now, moves
	// them to StateRevoking with a new fencing token and a claim deadline of
	// now+hold, and returns them. A claim whose deadline passed (its holder
	// died) is claimable again. Each due lease is claimed by one caller at a
	// time.
	Claim(ctx context.Context, now time.Time, max int, hold time.Duration) ([]Claim, error)

	// Finish records a claim's outcome: revoked, irrevocable, or due again at
	// RetryAt with Attempts incremented. ErrFenced if the lease was claimed
	// again since (the caller was too slow and must not overwrite it).
	Finish(ctx context.Context, c Claim, out Outcome) error

	// NextDue returns the earliest DueAt or claim deadline among leases
	// waiting for a revoker, and false when there are none.
	NextDue(ctx context.Context) (time.Time, bool, error)
}

// Counts is how many leases a store holds that are not yet over, by state,
// and how many of them are overdue.
type Counts struct {
	// Pending, Active and Revoking count the leases in each state.
	Pending, Active, Revoking int64
	// Overdue counts the leases among them that should have ended before
	// the time Count was given (lease.EndDue: the expiry, or a revocation
	// asked for earlier), and pending leases that should have been reaped
	// by then: their revocation is late (a backend down, no revoker
	// running). A lease waiting to retry a failed revocation counts
	// whatever its next retry time.
	Overdue int64
}

// Counter is implemented by stores that can count their leases cheaply,
// for the broker's gauges (active leases by state, overdue revocations).
// The count may be approximate while leases change.
type Counter interface {
	// Count counts the leases not yet over; overdue are those due before
	// overdueBefore.
	Count(ctx context.Context, overdueBefore time.Time) (Counts, error)
}
