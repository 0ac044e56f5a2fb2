package audit

import (
	"context"
	"slices"
	"time"
)

// Filter selects events for Query. Empty fields match everything; set
// fields must all match.
type Filter struct {
	// Subject, Entitlement, RequestID, GrantID, LeaseID and Actor match
	// the event's field of the same name exactly.
	Subject, Entitlement, RequestID, GrantID, LeaseID, Actor string
	// Types matches any of these types.
	Types []Type
	// Since (inclusive) and Until (exclusive) bound Event.Time.
	Since, Until time.Time
	// FromSeq skips events before this seq (paging: pass the last seq
	// returned plus one).
	FromSeq uint64
	// Limit caps the result (0: no cap).
	Limit int
}

// Match reports whether e passes the filter.
func (f *Filter) Match(e *Event) bool {
	switch {
	case f.Subject != "" && e.Subject != f.Subject,
		f.Entitlement != "" && e.Entitlement != f.Entitlement,
		f.RequestID != "" && e.RequestID != f.RequestID,
		f.GrantID != "" && e.GrantID != f.GrantID,
		f.LeaseID != "" && e.LeaseID != f.LeaseID,
		f.Actor != "" && e.Actor != f.Actor,
		len(f.Types) > 0 && !slices.Contains(f.Types, e.Type),
		!f.Since.IsZero() && e.Time.Before(f.Since),
		!f.Until.IsZero() && !e.Time.Before(f.Until),
		e.Seq < f.FromSeq:
		return false
	}
	return true
}

// Query returns the events of r that match f, in storage order (Seq order
// for an intact trail). It reads the trail from f.FromSeq; it does not
// verify it (use Verify), but a malformed record is an error naming its
// position, so a damaged trail is never read as if it were whole.
func Query(ctx context.Context, r Reader, f Filter) ([]Event, error) {
	var out []Event
	for rec, err := range r.Records(ctx, f.FromSeq) {
		if err != nil {
			return out, err
		}
		if f.Match(&rec.Event) {
			out = append(out, rec.Event)
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
		}
	}
	return out, nil
}
