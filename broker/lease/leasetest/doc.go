// Package leasetest is the conformance suite for lease.Store. Every store
// runs it in one line from its own tests:
//
//	func TestConformance(t *testing.T) {
//		leasetest.Run(t, func(t *testing.T) lease.Store { return memory.New() })
//	}
//
// Each subtest gets a fresh, empty store from newStore (a Redis store can
// flush a database or use a unique key prefix per call; register cleanup
// with t.Cleanup). The suite assumes nothing about a store's internals:
// times are passed explicitly (a fixed base time plus offsets, never the
// clock, never a sleep), ids come from lease.NewID, sentinels are matched
// with errors.Is.
//
// Precision: a store must keep times to the millisecond at least. The suite
// only uses whole-millisecond times and compares them with time.Time.Equal,
// so a store may return them in any location.
//
// Where the Store contract leaves a choice open, the suite pins one down,
// because callers (the API, the revoker) depend on it:
//
//   - Create stores the lease in StatePending whatever State it was given,
//     and rejects a lease missing a required field with an error, writing
//     nothing.
//   - Claim of a lease whose RevokeReason is empty sets it: ReasonExpired
//     for an active lease; ReasonPendingTimeout, with RevokeRequestedAt set
//     to the pending deadline, for a pending one. So EndDue of a reaped
//     pending lease is its pending deadline, and a reaped lease can never be
//     activated or renewed, even after a failed revocation put it back.
//   - A lease is claimable when its DueAt or its claim deadline is at or
//     before now; so Claim(now = NextDue) returns something.
//   - The fence of a lease increases with every claim; Claim.Fence equals
//     Claim.Lease.Fence and Get shows it.
//   - Finish with a retry outcome puts the lease back in the state it had
//     before it was claimed (pending or active), due at RetryAt, with
//     Attempts+1 and LastError. Finish irrevocable also counts the failed
//     attempt (Attempts+1, LastError). Finish revoked or irrevocable sets
//     RevokedAt to Outcome.At; revoked leaves Attempts and LastError as
//     they were. A claim that was finished cannot be finished
//     again (ErrWrongState or ErrFenced); the lease is unchanged. A claim
//     whose deadline passed but that nobody claimed again can still be
//     finished: the work was done.
//   - Revoke records the first request (reason, RevokeRequestedAt = at) and
//     sets DueAt to at, but never moves DueAt later. A later request is
//     ignored unless it asks for an earlier time than the recorded one (a
//     kill switch overtaking a scheduled revocation; a reaped lease that
//     simply expired has no recorded time, so it is left alone).
//     RevokeMatching counts only the leases it changed.
//   - Activate and Renew refuse (ErrWrongState) a lease whose revocation
//     was asked for; Bind still records a handle on such a pending lease
//     (the handle helps revoke it).
//   - RevokeMatching refuses a selector that does not set exactly one field.
//   - List returns a next-page token exactly when more matches follow, and
//     never more than 1000 leases a page.
package leasetest
