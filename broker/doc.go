// Package broker is Mayfly's composition root: New builds every component
// from a Config (authentication, policy, lease store, issuers, revoker, the
// gRPC API and the HTTPS endpoints) and Run runs them as one set of tasks
// until the context ends, then shuts down gracefully.
//
//	b, err := broker.New(cfg)
//	if err != nil { ... }
//	err = b.Run(ctx) // blocks; cancel ctx to stop
package broker
