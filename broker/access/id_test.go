package access

import (
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

func TestIDsIncrease(t *testing.T) {
	var g idGen
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	last := ""
	for i := 0; i < 1000; i++ {
		at := now
		switch {
		case i%100 == 99:
			now = now.Add(time.Millisecond)
		case i == 500:
			at = now.Add(-time.Hour) // the clock stepped back
		}
		id := g.next(at)
		if !lease.ValidID(id) {
			t.Fatalf("invalid id %q", id)
		}
		if id <= last {
			t.Fatalf("id %q after %q", id, last)
		}
		last = id
	}
	// The time part is the lease.NewID time part.
	if got, want := g.next(now.Add(time.Second))[:9], lease.NewID(now.Add(time.Second))[:9]; got != want {
		t.Errorf("time prefix %q, want %q", got, want)
	}
}
