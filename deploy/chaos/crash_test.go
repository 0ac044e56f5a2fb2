package chaos

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// crashPolicy: tokens that outlive the kill window, so that every kill
// lands while the brokers issue (case 5 kills a broker mid-revocation).
var crashPolicy = tokenPolicy("short-lived tokens for the fault cases", "15s", "30s")

// TestCase1SIGKILLMidIssuance: 1,000 concurrent issuances (each retried
// until it succeeds, as a client would) against a real `mayflyd serve` on
// Redis; the broker is killed with
// SIGKILL at one to three random points (by credentials handed out so far,
// within the first 10 s) and restarted on the same address after a random
// pause. Leases fall due only after 12 s (the pending timeout; the tokens
// last 15 s), so no kill lands while a broker holds revocation claims:
// mayflyd's claim hold is 30 s and not configurable, and case 5 covers a
// kill in the middle of a revocation batch. Every credential
// a caller received must have its lease in Redis, written before the
// response (not pending); once a broker is back, every lease in Redis
// (pending ones of the dead broker included) must end revoked by its due
// time + 2 s.
func TestCase1SIGKILLMidIssuance(t *testing.T) {
	Repeat(t, Case{ID: "1", Title: "SIGKILL `mayflyd serve` (Redis leases) at random points during 1,000 concurrent issuances"}, func(r *Run) {
		const (
			issuances = 1000
			callers   = issuances        // every issuance in flight at once
			pending   = 12 * time.Second // nothing falls due before it: no kill lands mid-revocation
			window    = 10 * time.Second // kills happen within this of the start, or not at all
		)
		rs := testenv.StartRedis(r.T, testenv.RedisConfig{AppendOnly: true})
		env := NewServeEnv(r.T, ServeOptions{Policy: crashPolicy, RedisAddr: rs.Addr(), PendingTimeout: pending})
		store := env.LeaseStore(r.T)
		addr := FreeAddr(r.T)
		client := mayflyv1.NewCredentialServiceClient(Dial(r.T, env.CA, addr, "spiffe://mayfly.test/workload/crash"))

		kills := 1 + r.Rand.IntN(3)
		var points []int
		for range kills {
			points = append(points, 50+r.Rand.IntN(issuances-100))
		}
		slices.Sort(points)
		pauses := make([]time.Duration, kills)
		for i := range pauses {
			pauses[i] = time.Duration(r.Rand.IntN(300)) * time.Millisecond
		}
		r.Logf("%d kill(s) after %v credentials handed out, restart pauses %v", kills, points, pauses)

		proc := env.Start(r.T, "broker-0", addr)
		waitServing(r.T, client, proc)

		var (
			jobs     = make(chan int, issuances)
			wg       sync.WaitGroup
			failures atomic.Int64
			stopKill = make(chan struct{})
			killDone = make(chan struct{})
			backAt   time.Time // the last restarted broker answered
			mu       sync.Mutex
			current  = proc
		)
		for i := range issuances {
			jobs <- i
		}
		close(jobs)
		start := time.Now()
		for range callers {
			wg.Go(func() {
				for range jobs {
					deadline := time.Now().Add(60 * time.Second)
					pause := 50 * time.Millisecond
					for {
						ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
						resp, err := client.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "chaos-token"})
						cancel()
						if err == nil {
							mu.Lock()
							via := current.Name
							mu.Unlock()
							r.Ledger.Add(resp, via, "")
							break
						}
						failures.Add(1)
						if time.Now().After(deadline) {
							r.Errorf("an issuance failed for 60 s: %v", err)
							break
						}
						time.Sleep(pause/2 + rand.N(pause)) // jittered, doubling to 1 s: no thundering herd
						pause = min(2*pause, time.Second)
					}
				}
			})
		}
		go func() {
			defer close(killDone)
			for i, at := range points {
				for r.Ledger.Len() < at {
					select {
					case <-stopKill:
						return
					case <-time.After(time.Millisecond):
					}
				}
				if r.Ledger.Len() >= issuances || time.Since(start) > window {
					r.Logf("kill %d skipped: the load is over or the kill window passed", i+1)
					return
				}
				mu.Lock()
				victim := current
				mu.Unlock()
				victim.Kill()
				r.Logf("killed %s after %d credentials", victim.Name, r.Ledger.Len())
				time.Sleep(pauses[i])
				next := env.Start(r.T, "broker-"+string(rune('1'+i)), addr)
				mu.Lock()
				current = next
				mu.Unlock()
			}
		}()
		wg.Wait()
		close(stopKill)
		<-killDone
		issueTime := time.Since(start)
		mu.Lock()
		last := current
		mu.Unlock()
		waitServing(r.T, client, last)
		backAt = time.Now()

		// Every credential received has its lease, not pending.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		problems, lost, err := r.Ledger.Audit(ctx, store)
		if err != nil {
			r.Fatal(err)
		}
		for i, p := range problems {
			if i < 10 {
				r.Errorf("credential %s (via %s): %s", p.Credential.LeaseID, p.Credential.Via, p.What)
			}
		}
		r.Count("credentials received", r.Ledger.Len())
		r.Figure("lost leases", float64(lost), "")
		r.Count("failed attempts (retried)", int(failures.Load()))
		r.Duration("issuing 1,000 with kills took", issueTime)

		// Every lease in Redis ends by its due time + 2 s once a broker is
		// back (a lease due while none ran: by the time one was back + 2 s).
		all, err := AllLeases(ctx, store)
		if err != nil {
			r.Fatal(err)
		}
		latest := backAt
		for _, l := range all {
			if d := l.EndDue(); d.After(latest) {
				latest = d
			}
			if l.State == lease.StatePending {
				if d := l.DueAt; d.After(latest) {
					latest = d
				}
			}
		}
		all, err = WaitTerminal(ctx, store, latest.Add(2500*time.Millisecond))
		if err != nil {
			r.Fatal(err)
		}
		checkEnded(r, all, backAt)
		if r.Failed() {
			r.Logf("last broker log:\n%s", last.LogTail())
		}
	})
}

// checkEnded checks that every lease ended revoked by max(due, back) + 2 s
// and records the worst lag and the number of leases. It reports the
// first ten leases that break the promise and how many did.
func checkEnded(r *Run, all []*lease.Lease, backAt time.Time) {
	worst, reaped, reclaimed, late, notRevoked := time.Duration(0), 0, 0, 0, 0
	for _, l := range all {
		if l.State != lease.StateRevoked {
			if notRevoked++; notRevoked <= 10 {
				r.Errorf("lease %s is %s (due %s), want revoked", l.ID, l.State, l.EndDue().Format(time.RFC3339Nano))
			}
			continue
		}
		if l.RevokeReason == lease.ReasonPendingTimeout {
			reaped++
		}
		if l.Fence > 1 {
			reclaimed++
		}
		from := l.EndDue()
		if from.Before(backAt) {
			from = backAt
		}
		lag := l.RevokedAt.Sub(from)
		worst = max(worst, lag)
		if lag > 2*time.Second {
			if late++; late <= 10 {
				r.Errorf("lease %s revoked %v after max(due %s, broker back %s)", l.ID, lag, l.EndDue().Format(time.RFC3339Nano), backAt.Format(time.RFC3339Nano))
			}
		}
	}
	if notRevoked > 10 || late > 10 {
		r.Errorf("in all, %d leases not revoked and %d revoked more than 2 s late", notRevoked, late)
	}
	r.Count("leases in Redis", len(all))
	r.Count("pending leases reaped", reaped)
	r.Count("leases claimed twice", reclaimed)
	r.Duration("worst revoked_at - due", worst)
}

// waitServing waits until the broker behind client issues, at most 20 s.
func waitServing(t testing.TB, client mayflyv1.CredentialServiceClient, p *Process) {
	t.Helper()
	var last error
	if _, ok := WaitFor(20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, last = client.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "chaos-token"})
		return last == nil
	}); !ok {
		t.Fatalf("broker %s never issued: %v\nits log:\n%s", p.Name, last, p.LogTail())
	}
}
