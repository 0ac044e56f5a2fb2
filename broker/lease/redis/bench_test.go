package redis_test

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/redis"
)

// BenchmarkCreateActivate issues leases from 32 goroutines: one Create and
// one Activate script each. Reported as leases/s, with the CPU Redis
// spent per lease in all (redis-µs/lease) and inside the scripts
// (script-µs/lease, from INFO commandstats): the rest is its network I/O.
func BenchmarkCreateActivate(b *testing.B) {
	_, c, s := single(b, redis.Options{})
	ctx := b.Context()
	cpu0, script0 := redisCPU(b, c)
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
	cpu1, script1 := redisCPU(b, c)
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "redis-µs/lease")
	b.ReportMetric(float64((script1-script0).Microseconds())/float64(b.N), "script-µs/lease")
}

// redisCPU returns the CPU time the Redis server has used (user and
// system) and the time it spent inside EVALSHA.
func redisCPU(b *testing.B, c *goredis.Client) (total, scripts time.Duration) {
	b.Helper()
	info, err := c.Info(b.Context(), "cpu", "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "used_cpu_sys", "used_cpu_user":
			sec, _ := strconv.ParseFloat(v, 64)
			total += time.Duration(sec * float64(time.Second))
		case "cmdstat_evalsha":
			for _, f := range strings.Split(v, ",") {
				if n, ok := strings.CutPrefix(f, "usec="); ok {
					us, _ := strconv.ParseInt(n, 10, 64)
					scripts = time.Duration(us) * time.Microsecond
				}
			}
		}
	}
	return total, scripts
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
