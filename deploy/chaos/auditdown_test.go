package chaos

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// auditOutage is how long the audit trail's Redis stays down.
func auditOutage() time.Duration {
	if Full() {
		return 30 * time.Second
	}
	return 4 * time.Second
}

// TestCase9AuditSinkDown: the audit trail is a Redis stream (the chain
// replicas share) on its own real Redis, stopped for the outage at a
// random moment while 8 callers issue 2-second tokens. While it is down,
// issuance must fail closed (Unavailable within 1 s, nothing minted);
// revocations go on (tokens issued before fall due and are revoked). When
// it returns, issuance comes back by itself, and nothing is lost: the
// trail verifies, every credential a client received has its lease.issued
// event, and every lease revoked during the outage its lease.revoked
// event.
func TestCase9AuditSinkDown(t *testing.T) {
	Repeat(t, Case{ID: "9", Title: "audit sink (Redis stream) down " + auditOutage().String() + " under load"}, func(r *Run) {
		ars := testenv.StartRedis(r.T, testenv.RedisConfig{AppendOnly: true})
		rdb := goredis.NewClient(&goredis.Options{Addr: ars.Addr(), MaxRetries: -1, DialTimeout: 300 * time.Millisecond,
			ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond})
		r.Cleanup(func() { _ = rdb.Close() })
		stream, err := audit.NewRedisStreamSink(rdb, audit.RedisConfig{MaxWait: 500 * time.Millisecond})
		if err != nil {
			r.Fatal(err)
		}
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			r.Fatal(err)
		}
		trail, err := audit.NewLog(context.Background(), audit.Config{Chain: stream, Signer: priv, CheckpointEvery: 200,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			r.Fatal(err)
		}
		env := brokertest.Start(r.T, brokertest.Options{Policy: []byte(outagePolicy), Audit: trail})

		type attempt struct {
			at, end time.Time // when the call started and returned
			code    codes.Code
		}
		var (
			mu       sync.Mutex
			attempts []attempt
			stop     atomic.Bool
			wg       sync.WaitGroup
		)
		for i := range 8 {
			c := mayflyv1.NewCredentialServiceClient(env.Dial(r.T, "spiffe://mayfly.test/workload/audit-"+string(rune('a'+i))))
			wg.Go(func() {
				for !stop.Load() {
					// A call is judged by when it started: one that passed the
					// audit before the outage may finish after it began.
					now := time.Now()
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					resp, err := c.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "chaos-token"})
					cancel()
					if err == nil {
						r.Ledger.Add(resp, "broker", "")
					}
					mu.Lock()
					attempts = append(attempts, attempt{now, time.Now(), status.Code(err)})
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
		time.Sleep(time.Second + time.Duration(r.Rand.Int64N(int64(time.Second))))
		stopping := time.Now()
		ars.Stop()
		down := time.Now() // the server has exited
		time.Sleep(auditOutage())
		restarting := time.Now()
		ars.Start()
		back := time.Now()
		// Load goes on until issuance has been back for a second.
		var recovered time.Time
		for deadline := back.Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			mu.Lock()
			for _, a := range attempts {
				if a.at.After(back) && a.code == codes.OK && recovered.IsZero() {
					recovered = a.at
				}
			}
			mu.Unlock()
			if !recovered.IsZero() && time.Since(recovered) > time.Second {
				break
			}
		}
		stop.Store(true)
		wg.Wait()
		if recovered.IsZero() {
			r.Fatalf("issuance did not come back within 15s of the audit trail")
		}
		r.Duration("recovery after the trail returned", recovered.Sub(back))

		// Fail closed: no call that started 1 s or more after the outage
		// began and returned before Redis was started again was issued;
		// every refusal was Unavailable.
		var firstRefusal time.Time
		minted, refused, late := 0, 0, 0
		for _, a := range attempts {
			if a.at.Before(stopping) || a.at.After(back) {
				continue
			}
			switch {
			case a.code == codes.OK && a.at.After(down.Add(time.Second)) && a.end.Before(restarting):
				// Started and answered while the trail was certainly down.
				minted++
			case a.code == codes.Unavailable:
				refused++
				if firstRefusal.IsZero() {
					firstRefusal = a.at
				}
			case a.code == codes.DeadlineExceeded:
				// The one caller probing the trail may wait for Redis past
				// its own deadline: refused all the same.
				late++
			case a.code != codes.OK:
				r.Errorf("during the outage: %v, want Unavailable", a.code)
			}
		}
		r.Count("refusals past the caller's deadline (the probing caller)", late)
		r.Count("credentials minted while the trail was down", minted)
		if minted != 0 {
			r.Errorf("%d credentials minted more than 1 s into the audit outage", minted)
		}
		if firstRefusal.IsZero() {
			r.Fatalf("no issuance refused during the audit outage")
		}
		r.Duration("time to fail closed (from the stop)", firstRefusal.Sub(stopping))

		// Every lease revoked by now; nothing lost from the trail.
		ctx := context.Background()
		leases, err := WaitTerminal(ctx, env.Store, time.Now().Add(10*time.Second))
		if err != nil {
			r.Fatal(err)
		}
		revokedDuring := map[string]bool{}
		for _, l := range leases {
			if l.State == lease.StateRevoked && l.RevokedAt.After(down) && l.RevokedAt.Before(back) {
				revokedDuring[l.ID] = true
			}
		}
		r.Count("leases revoked while the trail was down", len(revokedDuring))
		if len(revokedDuring) == 0 {
			r.Errorf("no lease was revoked during the audit outage: revocation must not wait for the trail")
		}
		// The broker records what it owes once the trail is back; give it
		// a moment, then read the whole trail.
		var issuedEv, revokedEv map[string]bool
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			evs, err := audit.Query(ctx, stream, audit.Filter{Types: []audit.Type{audit.TypeLeaseIssued, audit.TypeLeaseRevoked}})
			if err != nil {
				r.Fatal(err)
			}
			issuedEv, revokedEv = map[string]bool{}, map[string]bool{}
			for _, e := range evs {
				if e.Type == audit.TypeLeaseIssued {
					issuedEv[e.LeaseID] = true
				} else {
					revokedEv[e.LeaseID] = true
				}
			}
			missing := 0
			for id := range revokedDuring {
				if !revokedEv[id] {
					missing++
				}
			}
			for _, c := range r.Ledger.All() {
				if !issuedEv[c.LeaseID] {
					missing++
				}
			}
			if missing == 0 || time.Now().After(deadline) {
				r.Count("events lost", missing)
				if missing != 0 {
					r.Errorf("%d events missing from the trail after it came back", missing)
				}
				break
			}
		}
		rep, err := audit.Verify(ctx, stream, pub)
		if err != nil || !rep.OK() {
			r.Fatalf("the trail does not verify after the outage: %v, %v", rep, err)
		}
		r.Count("events in the trail", int(rep.Records))
		problems, lost, err := r.Ledger.Audit(ctx, env.Store)
		if err != nil {
			r.Fatal(err)
		}
		r.Count("credentials without a lease", lost)
		for _, p := range problems {
			r.Errorf("ledger: %v", p)
		}
	})
}
