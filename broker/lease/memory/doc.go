// Package memory is an in-memory lease.Store for dev mode (mayflyd dev) and
// tests. It passes leasetest.Run, so code that works against it works
// against the Redis store too.
//
// One mutex guards everything; every method is atomic. The leases waiting
// for a revoker (pending, active, and revoking ones whose claim has not yet
// lapsed) sit in a min-heap keyed by (due time or claim deadline, id), so
// Claim costs O(k log n) for k claimed leases and NextDue O(1), however many
// leases are stored. Sorted id lists per subject, entitlement and grant serve
// RevokeMatching and filtered List without scanning every lease; ids from
// lease.NewID arrive nearly in order, so adding one to a list is an append.
//
// Like the Redis store it keeps times to the millisecond: times are
// truncated to whole milliseconds and converted to UTC on the way in, so
// dev mode shows the same values production would. It forgets nothing:
// terminal leases stay (as evidence) until the process exits, and so do
// request ids used for idempotency.
//
// Usage:
//
//	s := memory.New()
//	l, err := s.Create(ctx, &lease.Lease{ID: lease.NewID(now), ...})
//	...
//	claims, err := s.Claim(ctx, now, 256, 30*time.Second)
package memory
