package redis_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/redis"
)

// TestRequestIDInFlight: a request id reserved by a Create that has not
// confirmed it makes another Create of it wait; if the reservation lapses
// (its Create crashed), the waiting Create takes it over; if it stays, the
// waiting Create gives up with a store error after a bounded wait.
func TestRequestIDInFlight(t *testing.T) {
	_, c, s := single(t, redis.Options{})
	ctx := t.Context()
	l := newLease(base, 1)
	l.RequestID = "req-1"
	key := redis.RequestKey(s, l.Subject, l.RequestID)

	c.Set(ctx, key, "?"+lease.NewID(base), 300*time.Millisecond)
	start := time.Now()
	if _, err := s.Create(ctx, l.Clone()); err != nil {
		t.Fatalf("Create after a crashed Create's reservation lapsed: %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("Create took %s, want it to wait for the reservation (300ms)", d)
	}

	m := newLease(base, 1)
	m.RequestID = "req-2"
	other := lease.NewID(base)
	c.Set(ctx, redis.RequestKey(s, m.Subject, m.RequestID), "?"+other, time.Hour)
	_, err := s.Create(ctx, m)
	wantStoreError(t, "Create while another Create holds the request id", err, "whose Create has not finished")
	if !strings.Contains(err.Error(), other) {
		t.Errorf("error %q does not name the lease holding the request id", err)
	}
	if _, err := s.Get(ctx, m.ID); !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("Get of the refused lease: %v, want ErrNotFound", err)
	}
}

// TestRequestIDLostReservation: a Create so slow that its reservation
// lapsed and another Create took the request id undoes its own lease and
// returns the other with ErrDuplicate.
func TestRequestIDLostReservation(t *testing.T) {
	_, c, s := single(t, redis.Options{})
	ctx := t.Context()
	winner := newLease(base, 1)
	winner.RequestID = "req-1"
	slow := newLease(base, 1)
	slow.RequestID = "req-1"
	redis.SetAfterWriteHook(func(key string) {
		redis.SetAfterWriteHook(nil)
		c.Del(ctx, key)                                          // the slow Create's reservation lapses...
		if _, err := s.Create(ctx, winner.Clone()); err != nil { // ...and another takes it
			t.Errorf("winner's Create: %v", err)
		}
	})
	defer redis.SetAfterWriteHook(nil)
	got, err := s.Create(ctx, slow.Clone())
	if !errors.Is(err, lease.ErrDuplicate) || got == nil || got.ID != winner.ID {
		t.Fatalf("slow Create = %v, %v; want the winner %s and ErrDuplicate", got, err, winner.ID)
	}
	if _, err := s.Get(ctx, slow.ID); !errors.Is(err, lease.ErrNotFound) {
		t.Fatalf("the slow Create's lease: %v, want it undone (ErrNotFound)", err)
	}
	ls, _, err := s.List(ctx, lease.Query{Subject: slow.Subject})
	if err != nil || len(ls) != 1 {
		t.Fatalf("List = %d, %v; want only the winner", len(ls), err)
	}
	if n, _, _ := s.NextDue(ctx); !n.Equal(winner.DueAt) {
		t.Errorf("NextDue = %v, want the winner's %v", n, winner.DueAt)
	}
}
