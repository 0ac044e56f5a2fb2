package access

import (
	"context"
	"time"
)

// Store keeps requests, grants, certifications, marks and decision records.
//
// Every method takes ctx first. Implementations return ErrNotFound,
// ErrExists and ErrConflict (wrapped with %w is fine) so callers can tell
// "not there" from "already there" from "changed under you"; any other
// error means the store could not be reached or answered badly, and the
// service fails closed (no grant, no approval). Each record is changed
// atomically on its own (compare-and-set on Version), so a Redis store
// needs no multi-key transactions.
//
// Returned values are copies: changing them changes nothing stored. Times
// are passed in by the caller; a store never reads the clock. Every
// implementation passes accesstest.Run.
type Store interface {
	// CreateRequest stores a new request with Version 1 (r.Version is
	// set). ErrExists if the id is taken.
	CreateRequest(ctx context.Context, r *Request) error
	// GetRequest returns the request. ErrNotFound.
	GetRequest(ctx context.Context, id string) (*Request, error)
	// UpdateRequest stores r if the stored version equals r.Version, and
	// returns it with Version+1. ErrNotFound; ErrConflict if the stored
	// version differs (the caller re-reads and decides again).
	UpdateRequest(ctx context.Context, r *Request) (*Request, error)
	// ListRequests returns up to q.Limit matching requests with ids after
	// q.After, in ascending id order.
	ListRequests(ctx context.Context, q RequestQuery) ([]*Request, error)

	// CreateGrant stores a new grant with Version 1. ErrExists.
	CreateGrant(ctx context.Context, g *Grant) error
	// GetGrant returns the grant. ErrNotFound.
	GetGrant(ctx context.Context, id string) (*Grant, error)
	// UpdateGrant is UpdateRequest for grants.
	UpdateGrant(ctx context.Context, g *Grant) (*Grant, error)
	// ListGrants is ListRequests for grants.
	ListGrants(ctx context.Context, q GrantQuery) ([]*Grant, error)

	// AddCertification stores a certification decision. ErrExists.
	AddCertification(ctx context.Context, c *Certification) error
	// LatestCertifications returns the latest certification (greatest
	// At, then greatest id) of every standing grant id that has one.
	LatestCertifications(ctx context.Context) (map[string]*Certification, error)

	// Mark stores at under key unless the key already exists, and returns
	// the stored time and whether this call stored it. The service marks
	// when it first saw a standing grant and that a one-time action (a
	// lapse, a notification) was taken, so that replicas do it once.
	Mark(ctx context.Context, key string, at time.Time) (time.Time, bool, error)
	// Unmark removes a mark (a one-time action that failed is retried).
	// Removing a key that is not marked is not an error.
	Unmark(ctx context.Context, key string) error

	// AppendRecord stores a decision record. ErrExists.
	AppendRecord(ctx context.Context, rec *DecisionRecord) error
	// Records returns up to q.Limit records with At at or after q.Since
	// and ids after q.After, in ascending id order.
	Records(ctx context.Context, q RecordQuery) ([]*DecisionRecord, error)
}

// Page limits of the List methods.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// PageLimit is the effective limit of a query's Limit: DefaultLimit for
// 0, at most MaxLimit. Stores use it.
func PageLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}

// Generations is implemented by a store that can tell cheaply whether its
// grants or certifications changed. Generation returns a value that
// differs from every value it returned before once a grant or a
// certification has been created or changed, or the store has lost data.
//
// With it, Service.State keeps what it read per principal and reads it
// again only when the generation moved: one cheap read per decision
// instead of a listing of grants and certifications. The change and the
// new generation must become visible together (a Redis store bumps the
// generation in the script that writes), so a decision never acts on a
// grant that was revoked before the decision began. Errors mean the store
// could not be reached; the service fails closed.
type Generations interface {
	Generation(ctx context.Context) (string, error)
}
