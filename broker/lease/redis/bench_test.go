package redis_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/redis"
)

// BenchmarkCreateActivate issues leases from 32 goroutines: one Create and
// one Activate script each. Reported as leases/s.
func BenchmarkCreateActivate(b *testing.B) {
	_, _, s := single(b, redis.Options{})
	ctx := b.Context()
	var i atomic.Int64
	b.SetParallelism(16) // 32 callers on 2 cores
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := int(i.Add(1))
			l := newLease(base.Add(time.Duration(n)*time.Millisecond), n)
			l.ExternalRef = l.ID
			if _, err := s.Create(ctx, l); err != nil {
				b.Error(err)
				return
			}
			if _, err := s.Activate(ctx, l.ID, ""); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "leases/s")
}

// BenchmarkClaimFinish revokes a backlog of due leases the way the revoker
// does: Claim a batch of 256, Finish each claim from 16 goroutines. One op
// is one batch; reported also as leases/s.
func BenchmarkClaimFinish(b *testing.B) {
	_, _, s := single(b, redis.Options{})
	ctx := b.Context()
	const batch = 256
	fill := func(n int) {
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := w; i < n; i += 16 {
					l := newLease(base, i)
					l.DueAt = base
					if _, err := s.Create(ctx, l); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	b.StopTimer()
	fill(b.N * batch)
	b.StartTimer()
	start := time.Now()
	claims := make(chan lease.Claim)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for c := range claims {
				if err := s.Finish(ctx, c, lease.Outcome{At: base, Revoked: true}); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for range b.N {
		cs, err := s.Claim(ctx, base, batch, time.Minute)
		if err != nil || len(cs) != batch {
			b.Fatalf("Claim = %d, %v", len(cs), err)
		}
		for _, c := range cs {
			claims <- c
		}
	}
	close(claims)
	wg.Wait()
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "leases/s")
}
