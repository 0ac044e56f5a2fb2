package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// TestCase5ReplicaKilledMidRevocation: two broker replicas (processes of
// this test binary running broker.New, see replica.go) share Redis; 150
// leases of a slow backend (each Revoke takes 50 to 150 ms, 16 at a time
// per replica, so one replica alone keeps up) fall due within a second. One replica, chosen at random, is killed with SIGKILL
// once it has started a random number of revocations, so that it dies
// holding claims. No lease may be missed; the claims the dead replica held
// must be picked up by the survivor within 5 s (the claim deadline: hold
// 4 s, and the survivor looks again at least every second); a lease revoked twice (the dead replica had called the backend)
// ends revoked once, and is counted.
func TestCase5ReplicaKilledMidRevocation(t *testing.T) {
	Repeat(t, Case{ID: "5", Title: "two replicas share Redis; SIGKILL one mid-revocation-batch (hold 4 s)"}, func(r *Run) {
		const (
			leases = 150
			hold   = 4 * time.Second
		)
		rs := testenv.Redis(r.T)
		prefix := fmt.Sprintf("c5-%d", r.Seed%1000)
		store := RedisLeaseStore(r.T, rs.Addr(), prefix)
		cfg := func(name string) ReplicaConfig {
			return ReplicaConfig{Name: name, RedisAddr: rs.Addr(), Prefix: prefix, Hold: hold, Batch: 64, Concurrency: 16,
				RevokeMin: 50 * time.Millisecond, RevokeMax: 150 * time.Millisecond}
		}
		reps := []*Replica{StartReplica(r.T, cfg("replica-a")), StartReplica(r.T, cfg("replica-b"))}

		// The leases: active, of the probe issuer, due 1 to 2 s from now.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		now := time.Now()
		due := map[string]time.Time{}
		for i := range leases {
			exp := now.Add(time.Second + time.Duration(i)*time.Second/leases)
			l := &lease.Lease{ID: lease.NewID(now), Subject: "spiffe://mayfly.test/workload/c5", Entitlement: "slow-backend",
				Issuer: "probe", IssuedAt: now, ExpiresAt: exp, HardEnd: exp, DueAt: now.Add(30 * time.Second), Revocable: true}
			if _, err := store.Create(ctx, l); err != nil {
				r.Fatal(err)
			}
			if _, err := store.Activate(ctx, l.ID, "probe-"+l.ID); err != nil {
				r.Fatal(err)
			}
			due[l.ID] = exp
		}

		victim, survivor := reps[0], reps[1]
		if r.Rand.IntN(2) == 1 {
			victim, survivor = survivor, victim
		}
		after := 1 + r.Rand.IntN(30)
		if _, ok := WaitFor(20*time.Second, func() bool { return len(victim.Revokes()) >= after }); !ok {
			r.Fatalf("%s never started %d revocations", victim.Name, after)
		}
		victim.Kill()
		killedAt := time.Now()
		r.Logf("killed %s after it started %d revocations", victim.Name, len(victim.Revokes()))

		// The claims it died with: leases still revoking whose last
		// revocation call (if any) was the victim's.
		held := map[string]int64{} // lease -> fence of the dead claim
		all, err := AllLeases(ctx, store)
		if err != nil {
			r.Fatal(err)
		}
		lastBy := map[string]RevokeCall{}
		for _, rep := range reps {
			for _, c := range rep.Revokes() {
				if p, ok := lastBy[c.LeaseID]; !ok || c.Fence > p.Fence {
					lastBy[c.LeaseID] = c
				}
			}
		}
		for _, l := range all {
			if l.State != lease.StateRevoking {
				continue
			}
			if c, ok := lastBy[l.ID]; ok && c.By == survivor.Name && c.Fence == l.Fence {
				continue // the survivor's own claim, in flight
			}
			held[l.ID] = l.Fence
		}
		if len(held) == 0 {
			r.Logf("%s held no claims when it died (it had finished its batch)", victim.Name)
		}

		// The survivor picks each one up: a claim with a higher fence.
		pickedAt := map[string]time.Time{}
		WaitFor(hold+10*time.Second, func() bool {
			for id, f := range held {
				if _, ok := pickedAt[id]; ok {
					continue
				}
				l, err := store.Get(ctx, id)
				if err == nil && (l.Fence > f || l.State.Terminal()) {
					pickedAt[id] = time.Now()
				}
			}
			return len(pickedAt) == len(held)
		})
		// Everything ends revoked; duplicates are harmless and counted.
		all, err = WaitTerminal(ctx, store, time.Now().Add(hold+20*time.Second))
		if err != nil {
			r.Fatal(err)
		}
		// A lease that ended with the fence it had at the kill was claimed
		// by the survivor before the kill (its Revoke had not started yet).
		final := map[string]*lease.Lease{}
		for _, l := range all {
			final[l.ID] = l
		}
		for id, f := range held {
			if l := final[id]; l != nil && l.Fence == f {
				delete(held, id)
			}
		}
		worstPick := time.Duration(0)
		for id := range held {
			at, ok := pickedAt[id]
			if !ok {
				r.Errorf("the dead replica's claim on lease %s was never picked up", id)
				continue
			}
			worstPick = max(worstPick, at.Sub(killedAt))
		}
		if worstPick > 5*time.Second {
			r.Errorf("a dead replica's claim was picked up %v after the kill, want within 5s (claim deadline %v)", worstPick, hold)
		}

		calls := map[string]int{}
		for _, rep := range reps {
			for _, c := range rep.Revokes() {
				calls[c.LeaseID]++
			}
		}
		missed, dups, worstHeldLag := 0, 0, time.Duration(0)
		for _, l := range all {
			if _, ours := due[l.ID]; !ours {
				continue
			}
			if l.State != lease.StateRevoked {
				missed++
				r.Errorf("lease %s ended %s, want revoked", l.ID, l.State)
				continue
			}
			if calls[l.ID] == 0 {
				missed++
				r.Errorf("lease %s recorded revoked without a Revoke call", l.ID)
			}
			if calls[l.ID] > 1 {
				dups++
				if l.Attempts != 0 || l.LastError != "" {
					r.Errorf("lease %s revoked twice ended with attempts %d, error %q: the duplicate was not harmless", l.ID, l.Attempts, l.LastError)
				}
			}
			if _, wasHeld := held[l.ID]; wasHeld {
				worstHeldLag = max(worstHeldLag, l.RevokedAt.Sub(l.EndDue()))
			} else {
				if lag := l.RevokedAt.Sub(l.EndDue()); lag > 2*time.Second {
					r.Errorf("lease %s not held by the dead replica revoked %v after its due time", l.ID, lag)
				}
			}
		}
		if n := len(all); n != leases {
			r.Errorf("%d leases in Redis, want %d", n, leases)
			missed += leases - n
		}
		r.Duration("pick-up of dead claims", worstPick)
		r.Duration("worst lag of the dead replica's leases", worstHeldLag)
		r.Figure("missed", float64(missed), "")
		r.Count("claims held by the dead replica", len(held))
		r.Count("duplicate revokes", dups)
	})
}
