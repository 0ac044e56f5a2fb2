// Package revoker is the reaper: it ends every lease that falls due.
//
// Every broker replica runs one Revoker against the shared lease.Store. It
// claims due leases (expired, revoked early, pending past their deadline,
// or waiting for a retry), calls the lease's issuer.Issuer Revoke for each,
// a bounded number at a time, and records the outcome with Finish:
//
//   - revoked: the backend confirmed the credential is gone; OnRevoked gets
//     the revocation lag, RevokedAt - EndDue.
//   - retry: the call failed; the lease is due again after a jittered
//     exponential backoff (BackoffBase doubling up to BackoffMax).
//   - irrevocable: MaxAttempts calls failed, or no issuer of the lease's
//     name is configured; counted and reported through OnIrrevocable.
//
// Revocation is at least once: a replica that dies or is too slow loses its
// claim when the claim's Hold passes, another replica claims the lease
// again with a higher fence, and the slow replica's Finish is refused
// (lease.ErrFenced, logged at Info, counted in Stats). Issuer.Revoke is
// idempotent, so a second call is harmless.
//
// Run sleeps until the store's next due time (never longer than MaxIdle,
// since other replicas add leases too) or until Wake is called, which the
// API does after an explicit revoke or a kill switch so the revocation
// starts at once. Store errors are logged and retried with a short backoff;
// they never end Run.
//
// Issuance comes first: with Config.Busy set (the broker says whether an
// issuance call is in flight), a pass that starts while callers wait for
// credentials claims at most BusyBatch leases and keeps at most
// BusyConcurrency calls in flight, so that a burst of expiries does not
// take the CPU and the store from them. The revoker slows down, it never
// stops; the credentials themselves end at their own expiry regardless
// (a JWT's exp, a Vault token's TTL).
//
// Usage, from the composition root:
//
//	r, err := revoker.New(revoker.Config{
//		Store:   store,
//		Issuers: issuers.Lookup,
//		Logger:  logger,
//		OnRevoked: func(l *lease.Lease, lag time.Duration) {
//			metrics.RevocationLag.Observe(lag.Seconds())
//		},
//	})
//	if err != nil {
//		return err
//	}
//	tasks = append(tasks, r.Run)
//
// No clock is read except through Config.Now, and no secret is logged:
// logs carry lease ids, entitlement and issuer names, fences and error text
// (issuer errors are secret-free by the issuer.Issuer contract).
package revoker
