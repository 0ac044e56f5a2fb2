package chaos

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// outagePolicy: tokens shorter than the outage, so some fall due while
// Redis is down.
var outagePolicy = tokenPolicy("short-lived tokens for the fault cases", "2s", "4s")

// outage is how long Redis stays down: 30 s with -chaos.full, 5 s in CI.
func outage() time.Duration {
	if Full() {
		return 30 * time.Second
	}
	return 5 * time.Second
}

// TestCase2RedisDownUnderLoad: 16 callers issue from a real `mayflyd
// serve` while its Redis is stopped for the outage (at a random moment of
// the load) and started again. During the outage every issuance must be
// refused with Unavailable, within 1 s of the outage's start, and nothing
// may be minted (no credential received, no lease written); the service
// must be back within 5 s of Redis returning; and every lease that fell
// due meanwhile must be revoked by the outage's end + 2 s.
func TestCase2RedisDownUnderLoad(t *testing.T) {
	Repeat(t, Case{ID: "2", Title: "Redis down " + outage().String() + " under load (16 callers, `mayflyd serve`)"}, func(r *Run) {
		rs := testenv.StartRedis(r.T, testenv.RedisConfig{AppendOnly: true}) // the restart keeps the leases
		env := NewServeEnv(r.T, ServeOptions{Policy: outagePolicy, RedisAddr: rs.Addr(), PendingTimeout: 2 * time.Second})
		store := env.LeaseStore(r.T)
		addr := FreeAddr(r.T)
		client := mayflyv1.NewCredentialServiceClient(Dial(r.T, env.CA, addr, "spiffe://mayfly.test/workload/outage"))
		proc := env.Start(r.T, "broker", addr)
		waitServing(r.T, client, proc)

		type attempt struct {
			start, end time.Time
			err        error
		}
		var (
			mu       sync.Mutex
			attempts []attempt
			stop     = make(chan struct{})
			wg       sync.WaitGroup
		)
		for range 16 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := client.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "chaos-token"})
					cancel()
					end := time.Now()
					if err == nil {
						r.Ledger.Add(resp, "broker", "")
					}
					mu.Lock()
					attempts = append(attempts, attempt{start, end, err})
					mu.Unlock()
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
		time.Sleep(time.Duration(500+r.Rand.IntN(1500)) * time.Millisecond)
		downAt := time.Now()
		rs.Stop()
		stoppedAt := time.Now()
		time.Sleep(outage() - time.Since(downAt))
		upAt := time.Now()
		rs.Start()
		backAt := time.Now() // Redis answers PING
		var recovered time.Time
		if _, ok := WaitFor(15*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for i := len(attempts) - 1; i >= 0 && attempts[i].start.After(backAt); i-- {
				if attempts[i].err == nil {
					recovered = attempts[i].end
					return true
				}
			}
			return false
		}); !ok {
			r.Errorf("no issuance succeeded within 15 s of Redis returning; broker log:\n%s", proc.LogTail())
		}
		time.Sleep(500 * time.Millisecond)
		close(stop)
		wg.Wait()

		// During the outage: Unavailable, fast, nothing minted.
		var firstRefusal time.Time
		worstRefusal, minted, during := time.Duration(0), 0, 0
		for _, a := range attempts {
			if a.start.Before(stoppedAt) || !a.start.Before(upAt) {
				continue
			}
			if a.err == nil && !a.end.Before(upAt) {
				// Started in the outage's last moment and answered after
				// Redis was back: its lease was written then (lost
				// leases, checked below, would show one that was not).
				// Concurrent calls share pipelines, so a call can wait
				// behind one that is failing and go out after the return.
				continue
			}
			during++
			if a.err == nil {
				minted++
				r.Errorf("issuance started %v into the outage succeeded", a.start.Sub(downAt))
				continue
			}
			if status.Code(a.err) != codes.Unavailable {
				r.Errorf("issuance during the outage: %v, want Unavailable", a.err)
			}
			if firstRefusal.IsZero() || a.end.Before(firstRefusal) {
				firstRefusal = a.end
			}
			worstRefusal = max(worstRefusal, a.end.Sub(a.start))
		}
		if during == 0 {
			r.Fatal("no issuance was attempted during the outage")
		}
		toUnavailable := firstRefusal.Sub(downAt)
		if toUnavailable > time.Second {
			r.Errorf("first Unavailable %v after Redis went down, want within 1 s", toUnavailable)
		}
		if worstRefusal > time.Second {
			r.Errorf("an issuance during the outage took %v to be refused, want within 1 s", worstRefusal)
		}
		recovery := recovered.Sub(backAt)
		if recovered.IsZero() || recovery > 5*time.Second {
			r.Errorf("service back %v after Redis returned, want within 5 s", recovery)
		}
		for _, c := range r.Ledger.All() {
			if c.ReceivedAt.After(stoppedAt) && c.ReceivedAt.Before(upAt) {
				minted++
				r.Errorf("credential %s received during the outage", c.LeaseID)
			}
		}

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		problems, lost, err := r.Ledger.Audit(ctx, store)
		if err != nil {
			r.Fatal(err)
		}
		for _, p := range problems {
			r.Errorf("credential %s: %s", p.Credential.LeaseID, p.What)
		}
		all, err := AllLeases(ctx, store)
		if err != nil {
			r.Fatal(err)
		}
		latest := backAt
		for _, l := range all {
			// A lease is written before the backend is called, so a lease
			// created during the outage would be something minted. IssuedAt
			// is when the call began: one that began in the outage's last
			// moment may have reached Redis after it returned (calls share
			// pipelines, so it can wait behind a failing one), but calls
			// are refused within about 0.1 s, so a lease issued earlier
			// than lastMoment before the restart was written in the outage.
			const lastMoment = 250 * time.Millisecond
			if l.IssuedAt.After(stoppedAt) && l.IssuedAt.Before(upAt.Add(-lastMoment)) {
				minted++
				r.Errorf("lease %s written during the outage (issued %v into it)", l.ID, l.IssuedAt.Sub(downAt))
			}
			if d := l.EndDue(); d.After(latest) {
				latest = d
			}
			if !l.State.Terminal() && l.DueAt.After(latest) {
				latest = l.DueAt
			}
		}
		all, err = WaitTerminal(ctx, store, latest.Add(2500*time.Millisecond))
		if err != nil {
			r.Fatal(err)
		}
		// Leases due during the outage: revoked by its end + 2 s.
		dueDuring := 0
		for _, l := range all {
			if l.EndDue().After(downAt) && l.EndDue().Before(backAt) {
				dueDuring++
			}
		}
		checkEnded(r, all, backAt)
		r.Duration("time to Unavailable", toUnavailable)
		r.Duration("slowest refusal", worstRefusal)
		r.Duration("recovery after Redis back", recovery)
		r.Figure("lost leases", float64(lost), "")
		r.Figure("minted during outage", float64(minted), "")
		r.Count("refused during outage", during)
		r.Count("leases due during outage", dueDuring)
		if dueDuring == 0 {
			r.Error("no lease fell due during the outage: the case proved nothing about revocation after it")
		}
	})
}
