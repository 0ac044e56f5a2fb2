package chaos

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/revoker"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// skewPolicy: a probe-issued entitlement, so that the test sees on the
// machine's true clock when each credential is revoked.
const skewPolicy = `
version: 1
trust_domains: [mayfly.test]
entitlements:
  skew-token:
    description: credentials for the clock-skew case
    owner: user:ops
    issuer: probe
    ttl: 3s
    max_ttl: 6s
    standing:
      - subject: spiffe://mayfly.test/workload/*
        purpose: fault cases
        until: 2099-12-31
`

// skewBudget is the clock skew between any replica and true time that the
// case allows, and so how early a revocation may come.
const skewBudget = 30 * time.Second

// TestCase6ClockSkew: three in-process brokers share one Redis, with
// clocks at -30 s, 0 and +30 s of true time (which replica gets which is
// random). Each issues credentials; then the replica that runs ahead
// stops and the other two issue again. On the true clock, measured at the
// backend's Revoke, nothing may be revoked before its due time minus the
// 30 s skew budget, nor later than 2 s after its due time (or after the
// moment it was issued, for a credential that a replica running behind
// stamped as due before it was even issued, after it was issued).
//
// Due times are the issuing replica's clock (ExpiresAt); the store
// compares every time with the claiming replica's clock (scripts never
// read Redis TIME), so a replica running ahead claims early by its skew,
// one running behind late by its skew unless another claims first.
func TestCase6ClockSkew(t *testing.T) {
	Repeat(t, Case{ID: "6", Title: "±30 s clock skew between three replicas (in-process brokers, one Redis)"}, func(r *Run) {
		rs := testenv.Redis(r.T)
		prefix := fmt.Sprintf("c6-%d", r.Seed%1000)
		store := RedisLeaseStore(r.T, rs.Addr(), prefix)
		skews := []time.Duration{-skewBudget, 0, skewBudget}
		r.Rand.Shuffle(len(skews), func(i, j int) { skews[i], skews[j] = skews[j], skews[i] })

		type replica struct {
			skew   time.Duration
			env    *brokertest.Env
			probe  *Probe
			client mayflyv1.CredentialServiceClient
			closed bool
		}
		reps := make([]*replica, len(skews))
		for i, skew := range skews {
			probe := &Probe{}
			env, err := brokertest.New(brokertest.Options{
				Policy:  []byte(skewPolicy),
				Store:   RedisLeaseStore(r.T, rs.Addr(), prefix),
				Issuers: []issuer.Issuer{probe},
				Now:     func() time.Time { return time.Now().Add(skew) },
				Revoker: revoker.Config{MaxIdle: 200 * time.Millisecond},
			})
			if err != nil {
				r.Fatal(err)
			}
			reps[i] = &replica{skew: skew, env: env, probe: probe}
			r.Cleanup(func() {
				if !reps[i].closed {
					_ = env.Close()
				}
			})
			reps[i].client = mayflyv1.NewCredentialServiceClient(env.Dial(r.T, "spiffe://mayfly.test/workload/skew"))
		}

		refused := 0
		var mu sync.Mutex
		issue := func(rep *replica, n int) {
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					resp, err := rep.client.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "skew-token"})
					if err != nil {
						mu.Lock()
						refused++
						mu.Unlock()
						r.Logf("issuance through the replica at %+v refused: %v", rep.skew, err)
						return
					}
					r.Ledger.Add(resp, fmt.Sprintf("replica at %+v", rep.skew), "")
				})
				time.Sleep(time.Duration(r.Rand.IntN(50)) * time.Millisecond)
			}
			wg.Wait()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()

		// Phase A: all three replicas issue and revoke.
		for _, rep := range reps {
			issue(rep, 20)
		}
		if _, err := WaitTerminal(ctx, store, time.Now().Add(15*time.Second)); err != nil {
			r.Fatal(err)
		}
		// Phase B: the replica that runs ahead stops; the others go on.
		for _, rep := range reps {
			if rep.skew > 0 {
				rep.closed = true
				if err := rep.env.Close(); err != nil {
					r.Fatal(err)
				}
			}
		}
		for _, rep := range reps {
			if rep.skew <= 0 {
				issue(rep, 20)
			}
		}
		all, err := WaitTerminal(ctx, store, time.Now().Add(15*time.Second))
		if err != nil {
			r.Fatal(err)
		}

		first := map[string]time.Time{}
		calls := map[string]int{}
		for _, rep := range reps {
			for _, c := range rep.probe.Revokes() {
				calls[c.LeaseID]++
				if at, ok := first[c.LeaseID]; !ok || c.At.Before(at) {
					first[c.LeaseID] = c.At
				}
			}
		}
		// When each lease came to exist on the true clock: its IssuedAt
		// is the issuing replica's clock.
		born := map[string]time.Time{}
		for _, rep := range reps {
			for _, c := range rep.probe.Expiries() {
				if !c.Renew {
					born[c.LeaseID] = c.IssuedAt.Add(-rep.skew)
				}
			}
		}
		worstEarly, worstLate, dups, reaped := time.Duration(0), time.Duration(0), 0, 0
		for _, l := range all {
			if l.State != lease.StateRevoked {
				r.Errorf("lease %s is %s, want revoked", l.ID, l.State)
				continue
			}
			if l.RevokeReason == lease.ReasonPendingTimeout {
				reaped++
			}
			if calls[l.ID] > 1 {
				dups++
			}
			at, ok := first[l.ID]
			if !ok {
				r.Errorf("lease %s revoked without a Revoke call", l.ID)
				continue
			}
			due := l.EndDue()
			if early := due.Sub(at); early > worstEarly {
				worstEarly = early
			}
			if early := due.Sub(at); early > skewBudget+time.Second {
				r.Errorf("lease %s revoked %v before its due time, more than the %v skew budget", l.ID, early, skewBudget)
			}
			from := due
			if b, ok := born[l.ID]; ok && b.After(from) {
				from = b
			}
			if late := at.Sub(from); late > worstLate {
				worstLate = late
			}
			if late := at.Sub(from); late > 2*time.Second {
				r.Errorf("lease %s revoked %v after its due time %s", l.ID, late, due.Format(time.RFC3339Nano))
			}
		}
		r.Duration("worst early (due - revoked)", worstEarly)
		r.Duration("worst late (revoked - due)", worstLate)
		r.Count("credentials received", r.Ledger.Len())
		r.Count("issuances refused", refused)
		r.Count("pending leases reaped mid-issuance", reaped)
		r.Count("leases revoked twice", dups)
	})
}
