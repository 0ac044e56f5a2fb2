package leasetest

import (
	"context"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// RunCounter checks a store's lease.Counter: leases not yet over are
// counted by state, those due before the given time are counted overdue,
// and terminal leases are not counted. newStore must return a new, empty
// store that implements lease.Counter.
func RunCounter(t *testing.T, newStore func(t *testing.T) lease.Store) {
	s := newStore(t)
	c, ok := s.(lease.Counter)
	if !ok {
		t.Fatalf("%T does not implement lease.Counter", s)
	}
	count := func(overdueBefore time.Time, want lease.Counts) {
		t.Helper()
		got, err := c.Count(context.Background(), overdueBefore)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("Count(%v) = %+v, want %+v", overdueBefore.Sub(base), got, want)
		}
	}
	count(base, lease.Counts{})

	// Three pending (due at base+1m), two of them then active (due at
	// base+1h).
	var ids []string
	for _, sub := range []string{"a", "b", "c"} {
		ids = append(ids, create(t, s, newLease(sub, "e", "g")).ID)
	}
	count(base, lease.Counts{Pending: 3})
	activate(t, s, ids[0])
	activate(t, s, ids[1])
	count(base, lease.Counts{Pending: 1, Active: 2})
	// The pending one is overdue once its deadline is behind; all are
	// once their expiry is.
	count(base.Add(pendingFor+time.Second), lease.Counts{Pending: 1, Active: 2, Overdue: 1})
	count(base.Add(ttl+time.Second), lease.Counts{Pending: 1, Active: 2, Overdue: 3})
	// A revocation asked for makes a lease overdue from that moment.
	revoke(t, s, ids[1], lease.ReasonExplicit, base.Add(2*time.Minute))
	count(base.Add(3*time.Minute), lease.Counts{Pending: 1, Active: 2, Overdue: 2})

	// A revoker claims the pending one: it is revoking, and still overdue.
	cl := claimOne(t, s, base.Add(pendingFor+time.Second), ids[2])
	count(base.Add(pendingFor+2*time.Second), lease.Counts{Active: 2, Revoking: 1, Overdue: 1})
	// Revoked, it is no longer counted.
	if err := s.Finish(context.Background(), cl, lease.Outcome{At: base.Add(pendingFor + 2*time.Second), Revoked: true}); err != nil {
		t.Fatal(err)
	}
	count(base.Add(ttl+time.Second), lease.Counts{Active: 2, Overdue: 2})

	// A failed revocation waiting for its retry is still overdue, though
	// its next attempt is later.
	for _, cl := range claim(t, s, base.Add(ttl+time.Second), 10) {
		if err := s.Finish(context.Background(), cl, lease.Outcome{At: base.Add(ttl + time.Second), RetryAt: base.Add(ttl + time.Hour), Err: "backend down"}); err != nil {
			t.Fatal(err)
		}
	}
	count(base.Add(ttl+2*time.Second), lease.Counts{Active: 2, Overdue: 2})
}
