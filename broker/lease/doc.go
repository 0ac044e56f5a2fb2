// Package lease defines the lease, the record that guarantees every
// credential the broker mints comes to an end, and the Store seam that
// persists leases and their due index.
//
// Issuance is two-phase: the broker writes a pending lease (with a short
// pending deadline) before it calls a backend, binds the backend's handle to
// it where the backend allows, and activates it once the credential exists.
// A crash at any point leaves a lease that the revoker finds due and ends.
//
// Implementations: lease/memory (dev mode, tests) and lease/redis
// (production, many replicas). Both pass the conformance suite in
// lease/leasetest.
package lease
