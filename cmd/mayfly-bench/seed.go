package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
	leaseredis "github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// observedStore is the lease store a broker is given: the real store, with
// every outcome the broker's revoker records successfully reported to a
// lagRecorder. Nothing else changes.
type observedStore struct {
	lease.Store
	rec atomic.Pointer[lagRecorder]
}

// Finish records the outcome in the store and, once it is recorded,
// reports it.
func (s *observedStore) Finish(ctx context.Context, c lease.Claim, out lease.Outcome) error {
	err := s.Store.Finish(ctx, c, out)
	if err == nil {
		if r := s.rec.Load(); r != nil {
			r.observe(c.Lease, out)
		}
	}
	return err
}

// lagRecorder collects the revocation lag of the leases it is told about:
// RevokedAt - EndDue() as the store records it (what the revoker's lag
// metric observes), for leases of the seed entitlements.
type lagRecorder struct {
	want int

	mu   sync.Mutex
	lags []time.Duration
	// last is when the latest revocation was recorded.
	last time.Time
	done chan struct{} // closed when want leases were revoked

	irrevocable, retried atomic.Int64
}

func newLagRecorder(want int) *lagRecorder {
	return &lagRecorder{want: want, lags: make([]time.Duration, 0, want), done: make(chan struct{})}
}

func (r *lagRecorder) observe(l *lease.Lease, out lease.Outcome) {
	if !slices.Contains(seedEntitlements, l.Entitlement) {
		return
	}
	switch {
	case out.Revoked:
		lag := out.At.Sub(l.EndDue())
		r.mu.Lock()
		r.lags = append(r.lags, lag)
		r.last = out.At
		if len(r.lags) == r.want {
			close(r.done)
		}
		r.mu.Unlock()
	case out.Irrevocable:
		r.irrevocable.Add(1)
	default:
		r.retried.Add(1)
	}
}

func (r *lagRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lags)
}

// wait waits until want leases were revoked or until deadline.
func (r *lagRecorder) wait(ctx context.Context, deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("only %d of %d leases revoked by %s", r.count(), r.want, deadline.Format("15:04:05"))
	}
}

// lagStats summarises the recorded lags.
type lagStats struct {
	n             int
	p50, p99, max time.Duration
	neg           int // lags below zero (must not happen)
	first, last   time.Time
}

func (r *lagRecorder) stats() lagStats {
	r.mu.Lock()
	lags := slices.Clone(r.lags)
	last := r.last
	r.mu.Unlock()
	slices.Sort(lags)
	s := lagStats{n: len(lags), last: last}
	if len(lags) == 0 {
		return s
	}
	s.p50, s.p99, s.max = pct(lags, 0.50), pct(lags, 0.99), lags[len(lags)-1]
	for _, l := range lags {
		if l < 0 {
			s.neg++
		}
	}
	return s
}

// pct is the q-quantile of sorted (nearest rank).
func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// seedPlan says which leases seed writes.
type seedPlan struct {
	n int
	// dueAt is when lease i expires (its ExpiresAt, so its DueAt once
	// active).
	dueAt func(i int) time.Time
	// pol and iss decide and describe a lease as IssueCredential would.
	pol *policy.Policy
	iss issuer.Issuer
	// sample is how many lease ids to keep (evenly spread) for verify.
	sample int
	// subjects is how many workloads hold the leases (round robin).
	subjects int
}

// seedResult is what seed did.
type seedResult struct {
	ids     []string // the sampled ids
	elapsed time.Duration
	late    int // leases written after their planned expiry
}

// seedWorkers write leases concurrently; each Create and Activate is one
// round trip, so the parallelism is what keeps Redis busy.
const seedWorkers = 64

// seed writes plan.n active leases through the lease Store API exactly as
// IssueCredential does, minus the gRPC call and the signature: the policy
// decides (standing grant, TTL, hard end), Create writes the pending lease
// with the pending deadline, Activate makes it active with ExpiresAt as
// its due time. Subjects cycle through plan.subjects workloads, and
// entitlements through seedEntitlements.
func seed(ctx context.Context, store lease.Store, plan seedPlan) (seedResult, error) {
	principals := make([]authn.Principal, max(plan.subjects, 1))
	for i := range principals {
		principals[i] = authn.Principal{Kind: authn.KindWorkload, TrustDomain: trustDomain,
			ID: fmt.Sprintf("spiffe://%s/workload/svc-%05d", trustDomain, i), Method: authn.MethodX509SVID}
	}
	stride := max(1, plan.n/max(plan.sample, 1))
	var (
		next atomic.Int64
		late atomic.Int64
		mu   sync.Mutex
		ids  = make([]string, 0, plan.sample+1)
		errs = make(chan error, seedWorkers)
		wg   sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for range seedWorkers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= plan.n || ctx.Err() != nil {
					return
				}
				id, wasLate, err := seedOne(ctx, store, plan, principals[i%len(principals)], seedEntitlements[i%len(seedEntitlements)], plan.dueAt(i))
				if err != nil {
					errs <- fmt.Errorf("lease %d: %w", i, err)
					cancel()
					return
				}
				if wasLate {
					late.Add(1)
				}
				if plan.sample > 0 && i%stride == 0 {
					mu.Lock()
					ids = append(ids, id)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	res := seedResult{ids: ids, elapsed: time.Since(start), late: int(late.Load())}
	if err := <-errs; err != nil {
		return res, err
	}
	return res, ctx.Err()
}

// seedPendingTimeout is the broker's default pending deadline.
const seedPendingTimeout = 30 * time.Second

func seedOne(ctx context.Context, store lease.Store, plan seedPlan, p authn.Principal, ent string, due time.Time) (string, bool, error) {
	now := time.Now()
	ttl := due.Sub(now)
	late := ttl < time.Millisecond
	if late {
		ttl = time.Millisecond
	}
	d := plan.pol.Decide(policy.Input{Principal: p, Entitlement: ent, TTL: ttl, Now: now})
	if d.Outcome != policy.Allow {
		return "", false, fmt.Errorf("policy does not allow %s for %s: %v", ent, p.ID, d.Outcome)
	}
	revocable, why := plan.iss.Revocability(d.Entitlement.Params)
	l := &lease.Lease{
		ID:              lease.NewID(now),
		Subject:         p.ID,
		Entitlement:     ent,
		GrantID:         d.GrantID,
		Issuer:          d.Entitlement.Issuer,
		State:           lease.StatePending,
		IssuedAt:        now,
		ExpiresAt:       d.ExpiresAt,
		HardEnd:         d.HardEnd,
		DueAt:           now.Add(seedPendingTimeout),
		Renewable:       d.HardEnd.After(d.ExpiresAt),
		Revocable:       revocable,
		RevocableReason: why,
	}
	if _, err := store.Create(ctx, l); err != nil {
		return "", false, err
	}
	if _, err := store.Activate(ctx, l.ID, ""); err != nil {
		return "", false, err
	}
	return l.ID, late, nil
}

// verifyResult is what reading sampled leases back found.
type verifyResult struct {
	read, revoked int
	states        map[lease.State]int
	negative      int // RevokedAt before EndDue
}

func (v verifyResult) String() string {
	if v.revoked == v.read {
		return fmt.Sprintf("%d sampled records all revoked", v.read)
	}
	return fmt.Sprintf("%d of %d sampled records revoked (%v)", v.revoked, v.read, v.states)
}

// verify reads the sampled leases back from the store and checks that each
// ended revoked, not before it was due.
func verify(ctx context.Context, store lease.Store, ids []string) (verifyResult, error) {
	v := verifyResult{states: map[lease.State]int{}}
	for _, id := range ids {
		l, err := store.Get(ctx, id)
		if err != nil {
			return v, fmt.Errorf("read back %s: %w", id, err)
		}
		v.read++
		v.states[l.State]++
		if l.State == lease.StateRevoked {
			v.revoked++
			if l.RevokedAt.Before(l.EndDue()) {
				v.negative++
			}
		}
	}
	if v.negative > 0 {
		return v, fmt.Errorf("%d sampled leases revoked before they were due", v.negative)
	}
	return v, nil
}

// seedLead is how far ahead of the planned write time the first lease of
// a window is due, beyond the estimate and its margin of a half (writes
// slow down when the machine's other load rises).
const seedLead = 2 * time.Second

// estimateSeed is how long writing n leases should take, with a margin:
// from the last seeding of this run, or from a quick calibration run in a
// prefix of its own.
func (e *env) estimateSeed(ctx context.Context, n int, pol *policy.Policy, iss issuer.Issuer) (time.Duration, error) {
	if e.seedRate == 0 {
		if err := e.calibrateSeed(ctx, pol, iss); err != nil {
			return 0, fmt.Errorf("calibrate lease writes: %w", err)
		}
	}
	est := time.Duration(float64(n) / e.seedRate * float64(time.Second))
	return est + est/2 + seedLead, nil
}

func (e *env) calibrateSeed(ctx context.Context, pol *policy.Policy, iss issuer.Issuer) error {
	prefix := e.newPrefix()
	rc := e.newRedisClient()
	defer rc.Close()
	store, err := leaseredis.New(rc, leaseredis.Options{Prefix: prefix})
	if err != nil {
		return err
	}
	const n = 4000
	far := time.Now().Add(30 * time.Minute)
	res, err := seed(ctx, store, seedPlan{n: n, dueAt: func(int) time.Time { return far }, pol: pol, iss: iss, subjects: e.cfg.subjects()})
	if err != nil {
		return err
	}
	e.seedRate = n / res.elapsed.Seconds()
	e.logf("  lease writes calibrated: %.0f leases/s", e.seedRate)
	return e.deleteKeys(ctx, prefix)
}

// noteSeed remembers the rate of a seeding for later estimates.
func (e *env) noteSeed(n int, res seedResult) {
	if res.elapsed > 0 && n >= 1000 {
		e.seedRate = float64(n) / res.elapsed.Seconds()
	}
}

var errNotAllRevoked = errors.New("not every lease ended revoked")
