package broker

import (
	"sync"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// overdueRetries is what this replica's revoker knows of late revocations
// when the lease store cannot count them (lease.Counter): leases whose
// revocation failed after they should have ended, until they end. An
// entry not seen again within the window (another replica revoked the
// lease, or retries it now) is dropped.
type overdueRetries struct {
	mu     sync.Mutex
	seen   map[string]time.Time // lease id -> last failed attempt
	window time.Duration
}

func newOverdueRetries(window time.Duration) *overdueRetries {
	return &overdueRetries{seen: map[string]time.Time{}, window: window}
}

// failed records a failed revocation of l at now, if l is past its end.
func (o *overdueRetries) failed(l *lease.Lease, now time.Time) {
	if !l.EndDue().Before(now.Add(-2 * time.Second)) {
		return
	}
	o.mu.Lock()
	o.seen[l.ID] = now
	o.mu.Unlock()
}

// ended forgets a lease that ended.
func (o *overdueRetries) ended(id string) {
	o.mu.Lock()
	delete(o.seen, id)
	o.mu.Unlock()
}

// count drops stale entries and counts the rest.
func (o *overdueRetries) count(now time.Time) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, at := range o.seen {
		if now.Sub(at) > o.window {
			delete(o.seen, id)
		}
	}
	return int64(len(o.seen))
}
