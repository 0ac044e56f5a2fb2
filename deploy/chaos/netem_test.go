package chaos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// netemPolicy: tokens that outlive an issuance over the slow link (about
// 4 s: eight round trips to Redis).
var netemPolicy = tokenPolicy("tokens for the slow-link case", "5s", "10s")

const (
	// mayflydHold is the claim hold of `mayflyd serve` (revoker.DefaultHold:
	// the config has no key for it).
	mayflydHold = 30 * time.Second
	linkDelay   = 250 * time.Millisecond // each way: 500 ms more round trip
	linkLoss    = 0.05
	callLimit   = 8 * time.Second // each call's deadline
)

// TestCase7SlowLossyRedisLink: Redis runs in a network namespace of its own
// behind a veth pair; the link gets 500 ms more round-trip latency (250 ms
// each way) and 5% loss each way, with tc netem, or, on a kernel without
// sch_netem, with a user-space impairment proxy on the same link. A real
// `mayflyd serve` is loaded by 8 callers, each request with its own
// request_id, retried with the same request_id. No request_id may have two
// activated leases (duplicate); every lease must end once the link is
// healthy again (no orphan: a claim whose reply was lost may hold a lease
// until the claim's deadline, which is measured as lateness); every
// received credential has its lease; and every call ends within its
// deadline.
func TestCase7SlowLossyRedisLink(t *testing.T) {
	load := 10 * time.Second
	if Full() {
		load = 60 * time.Second
	}
	ns := testenv.StartNetNS(t)
	redisAddr := ns.StartRedis(t, 6379)
	mode := "tc netem"
	var proxy *LinkProxy
	if err := ns.Netem("delay", "1ms"); errors.Is(err, testenv.ErrNoNetem) {
		mode = "user-space link emulation (this kernel has no sch_netem)"
		t.Logf("%v: emulating latency and loss in user space on the same link", err)
	} else if err != nil {
		t.Fatal(err)
	}
	ns.ClearNetem()
	Repeat(t, Case{ID: "7", Title: fmt.Sprintf("Redis link +500 ms RTT and 5%% loss (netns + veth, %s) under load", mode)}, func(r *Run) {
		target := redisAddr
		if mode != "tc netem" {
			p, err := NewLinkProxy(redisAddr, r.Seed)
			if err != nil {
				r.Fatal(err)
			}
			r.Cleanup(func() { _ = p.Close() })
			proxy, target = p, p.Addr()
		}
		prefix := fmt.Sprintf("c7-%d", r.Seed%1000)
		env := NewServeEnv(r.T, ServeOptions{Policy: netemPolicy, RedisAddr: target, Prefix: prefix, PendingTimeout: 6 * time.Second})
		store := RedisLeaseStore(r.T, redisAddr, prefix) // the test's own view, not impaired
		addr := FreeAddr(r.T)
		client := mayflyv1.NewCredentialServiceClient(Dial(r.T, env.CA, addr, "spiffe://mayfly.test/workload/netem"))
		proc := env.Start(r.T, "broker", addr)
		waitServing(r.T, client, proc)

		impair := func() {
			if proxy != nil {
				proxy.Impair(linkDelay, linkLoss)
				return
			}
			if err := ns.Netem("delay", linkDelay.String(), "loss", "5%"); err != nil {
				r.Fatal(err)
			}
		}
		heal := func() {
			if proxy != nil {
				proxy.Impair(0, 0)
				return
			}
			ns.ClearNetem()
		}
		impair()
		r.Cleanup(heal)

		var (
			mu        sync.Mutex
			durations []time.Duration
			overdue   int
			codesSeen = map[codes.Code]int{}
			wg        sync.WaitGroup
		)
		end := time.Now().Add(load)
		for w := range 8 {
			wg.Go(func() {
				for n := 0; time.Now().Before(end); n++ {
					rid := fmt.Sprintf("w%d-r%d-%d", w, n, r.Seed%100000)
					for try := 0; try < 3 && time.Now().Before(end.Add(10*time.Second)); try++ {
						start := time.Now()
						ctx, cancel := context.WithTimeout(context.Background(), callLimit)
						resp, err := client.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "chaos-token", RequestId: rid})
						cancel()
						took := time.Since(start)
						mu.Lock()
						durations = append(durations, took)
						codesSeen[status.Code(err)]++
						if took > callLimit+500*time.Millisecond {
							overdue++
						}
						mu.Unlock()
						if err == nil {
							r.Ledger.Add(resp, "broker", rid)
							break
						}
						time.Sleep(100 * time.Millisecond)
					}
				}
			})
		}
		wg.Wait()
		heal()
		for c, n := range codesSeen {
			r.Logf("calls ending %v: %d", c, n)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		problems, lost, err := r.Ledger.Audit(ctx, store)
		if err != nil {
			r.Fatal(err)
		}
		for _, p := range problems {
			r.Errorf("credential %s: %s", p.Credential.LeaseID, p.What)
		}
		// The same request_id, received twice, must name the same lease.
		byRequest := map[string]string{}
		for _, c := range r.Ledger.All() {
			if prev, ok := byRequest[c.RequestID]; ok && prev != c.LeaseID {
				r.Errorf("request_id %s answered with leases %s and %s", c.RequestID, prev, c.LeaseID)
			}
			byRequest[c.RequestID] = c.LeaseID
		}
		all, err := AllLeases(ctx, store)
		if err != nil {
			r.Fatal(err)
		}
		latest := time.Now()
		for _, l := range all {
			for _, d := range []time.Time{l.EndDue(), l.DueAt} {
				if d.After(latest) {
					latest = d
				}
			}
		}
		// A claim whose reply was lost on the link is held until its
		// deadline (mayflyd's hold: 30 s) before another pass takes it:
		// late, not orphaned. An orphan is a lease that never ends.
		all, err = WaitTerminal(ctx, store, latest.Add(mayflydHold+5*time.Second))
		if err != nil {
			r.Fatal(err)
		}
		dups, orphans, stranded, extra := 0, 0, 0, 0
		worstLag := time.Duration(0)
		leasesOf := map[string][]*lease.Lease{}
		for _, l := range all {
			if !l.State.Terminal() {
				orphans++
				r.Errorf("lease %s still %s %v after its due time %s", l.ID, l.State, mayflydHold+5*time.Second, l.DueAt.Format(time.RFC3339Nano))
				continue
			}
			lag := l.RevokedAt.Sub(l.EndDue())
			worstLag = max(worstLag, lag)
			if lag > 2*time.Second {
				stranded++
			}
			if l.RequestID != "" {
				leasesOf[l.RequestID] = append(leasesOf[l.RequestID], l)
			}
		}
		// Two leases of one request_id both activated would be two
		// credentials for one request. A lease whose Create failed on the
		// link (its reply lost, the retry told "exists") stays pending and
		// is reaped: nothing was minted for it. Those are counted apart.
		for rid, ls := range leasesOf {
			activated := 0
			for _, l := range ls {
				if l.RevokeReason != lease.ReasonPendingTimeout {
					activated++
				}
			}
			extra += len(ls) - max(activated, 1)
			if activated > 1 {
				dups++
				for _, l := range ls {
					r.Errorf("request_id %s: lease %s ended %s (%s), issued %s", rid, l.ID, l.State, l.RevokeReason, l.IssuedAt.Format(time.RFC3339Nano))
				}
			}
		}
		if overdue > 0 {
			r.Errorf("%d calls outlived their %v deadline by more than 0.5 s", overdue, callLimit)
		}
		slices.Sort(durations)
		if len(durations) == 0 || r.Ledger.Len() == 0 {
			r.Fatal("no issuance succeeded over the impaired link")
		}
		r.Duration("slowest call", durations[len(durations)-1])
		r.Duration("median call", durations[len(durations)/2])
		r.Figure("duplicate leases", float64(dups), "")
		r.Figure("orphaned leases", float64(orphans), "")
		r.Duration("worst revoked_at - due", worstLag)
		r.Count("leases revoked > 2 s after due (slow link, lost replies)", stranded)
		r.Count("never-activated extra leases of a request_id (reaped)", extra)
		r.Figure("lost leases", float64(lost), "")
		r.Count("credentials received", r.Ledger.Len())
		r.Count("calls", len(durations))
		r.Count("calls past deadline", overdue)
	})
}
