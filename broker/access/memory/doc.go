// Package memory is an in-process access.Store: for tests, dev mode and a
// single broker replica. It keeps everything in maps under one mutex and
// copies values in and out through JSON, so nothing a caller holds aliases
// what is stored, and every type it keeps is known to survive the
// encoding a shared store (Redis) will use.
//
//	store := memory.New()
//	svc, err := access.New(access.Config{Store: store, ...})
package memory
