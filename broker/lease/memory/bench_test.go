package memory_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
)

func BenchmarkCreateActivate(b *testing.B) {
	ctx := b.Context()
	s := memory.New()
	i := 0
	for b.Loop() {
		i++
		l := newLease(base.Add(time.Duration(i) * time.Millisecond))
		if _, err := s.Create(ctx, l); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Activate(ctx, l.ID, "ref"); err != nil {
			b.Fatal(err)
		}
	}
}

// fill returns a store with n active leases, all due at base+1h.
func fill(b *testing.B, n int) *memory.Store {
	b.Helper()
	s := memory.New()
	for i := range n {
		l := newLease(base.Add(time.Duration(i) * time.Microsecond))
		l.Subject = fmt.Sprintf("spiffe://example.org/app-%d", i%1000)
		if _, err := s.Create(b.Context(), l); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Activate(b.Context(), l.ID, ""); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkClaim claims a batch of 256 from n due leases. Each iteration
// moves now past the previous claims' deadlines, so the due set stays n.
func BenchmarkClaim(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := fill(b, n)
			const hold = 30 * time.Second
			now := base.Add(2 * time.Hour)
			for b.Loop() {
				cs, err := s.Claim(b.Context(), now, 256, hold)
				if err != nil || len(cs) != 256 {
					b.Fatalf("Claim = %d, %v", len(cs), err)
				}
				now = now.Add(hold)
			}
		})
	}
}

// BenchmarkClaimFinish is one revoker round trip per lease: a batch of 256
// claimed from 100k due leases, each finished as a retry (so it stays due).
func BenchmarkClaimFinish(b *testing.B) {
	s := fill(b, 100_000)
	now := base.Add(2 * time.Hour)
	for b.Loop() {
		cs, err := s.Claim(b.Context(), now, 256, 30*time.Second)
		if err != nil || len(cs) != 256 {
			b.Fatalf("Claim = %d, %v", len(cs), err)
		}
		for _, c := range cs {
			if err := s.Finish(b.Context(), c, lease.Outcome{At: now, RetryAt: now, Err: "x"}); err != nil {
				b.Fatal(err)
			}
		}
		now = now.Add(time.Millisecond)
	}
}
