package chaos

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	leaseredis "github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/broker/metrics"
	"github.com/mayflyhq/mayfly/broker/revoker"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// TestCase3RedisLosesData: 8 callers issue 2-second tokens from a broker
// whose leases are in a real Redis without persistence; then Redis loses
// everything, by FLUSHALL or by a restart (the seed picks). The lease
// store must notice and the alert metric fire (within 5 s); no credential
// a client received may outlive its lease's TTL (its native expiry, the
// JWT exp, bounds it: never past the lease's expiry, never longer than
// max_ttl); tokens whose leases were lost read inactive at introspection;
// and issuance goes on afterwards.
func TestCase3RedisLosesData(t *testing.T) {
	Repeat(t, Case{ID: "3", Title: "Redis loses its data (FLUSHALL or a restart without persistence) under load"}, func(r *Run) {
		rs := testenv.StartRedis(r.T, testenv.RedisConfig{}) // no persistence
		rdb := goredis.NewClient(&goredis.Options{Addr: rs.Addr(), DialerRetries: 1, MaxRetries: 2})
		r.Cleanup(func() { _ = rdb.Close() })
		var (
			report   atomic.Pointer[func(string)]
			detected atomic.Int64
		)
		store, err := leaseredis.New(rdb, leaseredis.Options{OnDataLoss: func(detail string) {
			detected.CompareAndSwap(0, time.Now().UnixNano())
			if f := report.Load(); f != nil {
				(*f)(detail)
			}
		}})
		if err != nil {
			r.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		env := brokertest.Start(r.T, brokertest.Options{Policy: []byte(outagePolicy), Store: store, Registry: reg,
			Revoker: revoker.Config{MaxIdle: 100 * time.Millisecond}})
		f := env.Broker.ReportStoreDataLoss
		report.Store(&f)

		var (
			stop atomic.Bool
			wg   sync.WaitGroup
			mu   sync.Mutex
			toks = map[string]string{} // lease id -> token
		)
		for i := range 8 {
			c := mayflyv1.NewCredentialServiceClient(env.Dial(r.T, "spiffe://mayfly.test/workload/loss-"+string(rune('a'+i))))
			wg.Go(func() {
				for !stop.Load() {
					cctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					resp, err := c.IssueCredential(cctx, &mayflyv1.IssueCredentialRequest{Entitlement: "chaos-token"})
					cancel()
					if err == nil {
						r.Ledger.Add(resp, "broker", "")
						mu.Lock()
						toks[resp.GetLease().GetId()] = resp.GetCredential().GetJwt().GetToken()
						mu.Unlock()
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
		time.Sleep(500*time.Millisecond + time.Duration(r.Rand.Int64N(int64(time.Second))))
		how := "FLUSHALL"
		mu.Lock()
		var before []string
		for id := range toks {
			before = append(before, id)
		}
		mu.Unlock()
		lost := time.Now()
		if r.Rand.IntN(2) == 0 {
			if _, err := rs.Do("FLUSHALL"); err != nil {
				r.Fatal(err)
			}
		} else {
			how = "restart without persistence"
			rs.Restart()
		}
		r.Logf("Redis lost its data: %s", how)

		// The alert metric fires.
		deadline := lost.Add(5 * time.Second)
		for readMetric(r.T, reg, metrics.NameStoreDataLoss) < 1 {
			if time.Now().After(deadline) {
				r.Fatalf("%s: %s did not fire within 5s", how, metrics.NameStoreDataLoss)
			}
			time.Sleep(50 * time.Millisecond)
		}
		r.Duration("data loss detected after", time.Unix(0, detected.Load()).Sub(lost))

		// Issuance goes on.
		time.Sleep(time.Second)
		stop.Store(true)
		wg.Wait()
		after := 0
		for _, c := range r.Ledger.All() {
			if c.ReceivedAt.After(lost.Add(time.Second)) {
				after++
			}
		}
		r.Count("credentials issued after the loss", after)
		if after == 0 {
			r.Errorf("no credential issued after Redis came back")
		}

		// No credential outlives its lease: the JWT exp bounds each one.
		longest := time.Duration(0)
		for _, c := range r.Ledger.All() {
			if c.Exp.After(c.ExpiresAt) {
				r.Errorf("lease %s: token exp %v after the lease's expiry %v", c.LeaseID, c.Exp, c.ExpiresAt)
			}
			longest = max(longest, c.Exp.Sub(c.ReceivedAt))
		}
		r.Duration("longest a received credential lives (native expiry)", longest)
		if longest > 4*time.Second+time.Second {
			r.Errorf("a credential lives %v, past max_ttl 4s", longest)
		}
		// A token whose lease was lost is not active at introspection.
		intro := mayflyv1.NewIntrospectionServiceClient(env.Dial(r.T, "spiffe://mayfly.test/workload/resource"))
		active := 0
		for _, id := range before {
			resp, err := intro.Introspect(context.Background(), &mayflyv1.IntrospectRequest{Token: toks[id]})
			if err != nil {
				r.Fatal(err)
			}
			if resp.GetActive() {
				active++
			}
		}
		r.Count("lost leases' tokens active at introspection", active)
		if active != 0 {
			r.Errorf("%d tokens of lost leases read active at introspection", active)
		}
	})
}
