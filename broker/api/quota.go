package api

import (
	"fmt"
	"hash/maphash"
	"sync"
	"time"
)

// Quota is a token bucket per caller identity: each identity may make
// Rate calls a second on average and Burst at once. One noisy workload
// then gets ResourceExhausted while everyone else keeps their latency;
// identities do not share buckets. A nil *Quota allows everything.
//
// Buckets idle long enough to be full again are dropped, so memory
// follows the identities active in the last minutes, not every identity
// ever seen.
type Quota struct {
	rate   float64 // tokens per second
	burst  float64
	now    func() time.Time
	seed   maphash.Seed
	shards [quotaShards]quotaShard
}

const quotaShards = 64

type quotaShard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	sweepAt time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewQuota returns a quota of rate calls a second with bursts of burst
// per identity. rate <= 0 returns nil (no quota). now may be nil.
func NewQuota(rate float64, burst int, now func() time.Time) *Quota {
	if rate <= 0 {
		return nil
	}
	if burst < 1 {
		burst = max(1, int(rate))
	}
	if now == nil {
		now = time.Now
	}
	q := &Quota{rate: rate, burst: float64(burst), now: now, seed: maphash.MakeSeed()}
	for i := range q.shards {
		q.shards[i].buckets = map[string]*bucket{}
	}
	return q
}

// String describes the quota for error messages.
func (q *Quota) String() string {
	if q == nil {
		return "no quota"
	}
	return fmt.Sprintf("%g calls/s (bursts of %g)", q.rate, q.burst)
}

// Allow takes one token from id's bucket and reports whether there was one.
func (q *Quota) Allow(id string) bool {
	if q == nil {
		return true
	}
	now := q.now()
	sh := &q.shards[maphash.String(q.seed, id)%quotaShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.buckets[id]
	if b == nil {
		b = &bucket{tokens: q.burst, at: now}
		sh.buckets[id] = b
	} else if el := now.Sub(b.at); el > 0 {
		b.tokens = min(q.burst, b.tokens+el.Seconds()*q.rate)
		b.at = now
	}
	if now.After(sh.sweepAt) {
		q.sweep(sh, now)
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep drops the buckets of a shard that would be full by now: forgetting
// them changes nothing.
func (q *Quota) sweep(sh *quotaShard, now time.Time) {
	full := time.Duration(q.burst / q.rate * float64(time.Second))
	for id, b := range sh.buckets {
		if now.Sub(b.at) > full {
			delete(sh.buckets, id)
		}
	}
	sh.sweepAt = now.Add(max(full, time.Minute))
}
