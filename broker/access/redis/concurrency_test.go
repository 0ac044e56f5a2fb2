package redis_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/access/redis"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// TestConcurrency runs the compare-and-set races against one server.
func TestConcurrency(t *testing.T) {
	c := client(t, testenv.Redis(t).Addr())
	t.Run("CASRounds", func(t *testing.T) { testCASRounds(t, newStore(t, c, redis.Options{})) })
	t.Run("NoLostUpdates", func(t *testing.T) { testNoLostUpdates(t, newStore(t, c, redis.Options{})) })
}

// testCASRounds: in each round, many goroutines update one request (and
// one grant) from the same version at once; exactly one wins, the others
// get ErrConflict, and the stored record is the winner's at version+1.
func testCASRounds(t *testing.T, s *redis.Store) {
	ctx := t.Context()
	r := newRequest(0, "user:alice", "db")
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	g := newGrant(0, "user:alice", "db", policy.GrantBreakGlass)
	if err := s.CreateGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	const rounds, racers = 12, 12
	for round := range rounds {
		from, err := s.GetRequest(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		gfrom, err := s.GetGrant(ctx, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners, gwinners []string
		for i := range racers {
			wg.Go(func() {
				<-start
				me := fmt.Sprintf("user:r%d-%d", round, i)
				c := *from
				c.Approvals = append(slices.Clone(from.Approvals), access.Approval{Approver: authn.Principal{ID: me}, At: at(round)})
				if i%2 == 0 {
					c.State = access.RequestApproved // moves the index entry too
				}
				_, err := s.UpdateRequest(ctx, &c)
				gc := *gfrom
				gc.ReviewedBy = me
				_, gerr := s.UpdateGrant(ctx, &gc)
				mu.Lock()
				defer mu.Unlock()
				for _, x := range []struct {
					err error
					won *[]string
				}{{err, &winners}, {gerr, &gwinners}} {
					switch {
					case x.err == nil:
						*x.won = append(*x.won, me)
					case !errors.Is(x.err, access.ErrConflict):
						t.Errorf("round %d: update: %v", round, x.err)
					}
				}
			})
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 || len(gwinners) != 1 {
			t.Fatalf("round %d: request winners %v, grant winners %v; want exactly one each", round, winners, gwinners)
		}
		got, _ := s.GetRequest(ctx, r.ID)
		if got.Version != from.Version+1 || len(got.Approvals) != round+1 || got.Approvals[round].Approver.ID != winners[0] {
			t.Fatalf("round %d: stored version %d with %d approvals (last %v), want version %d with the winner %s",
				round, got.Version, len(got.Approvals), got.Approvals[len(got.Approvals)-1].Approver.ID, from.Version+1, winners[0])
		}
		gg, _ := s.GetGrant(ctx, g.ID)
		if gg.Version != gfrom.Version+1 || gg.ReviewedBy != gwinners[0] {
			t.Fatalf("round %d: grant version %d reviewed by %s, want %d by %s", round, gg.Version, gg.ReviewedBy, gfrom.Version+1, gwinners[0])
		}
		// The request is in exactly one state index, the winner's.
		for _, st := range []access.RequestState{access.RequestPending, access.RequestApproved} {
			list, err := s.ListRequests(ctx, access.RequestQuery{States: []access.RequestState{st}})
			if err != nil {
				t.Fatal(err)
			}
			if want := st == got.State; (len(list) == 1) != want {
				t.Fatalf("round %d: %d requests listed as %s, stored state %s", round, len(list), st, got.State)
			}
		}
	}
}

// testNoLostUpdates: workers each append their own approvals to one
// request, re-reading on ErrConflict; every version from 2 up is won by
// exactly one update, and no approval is lost or doubled.
func testNoLostUpdates(t *testing.T, s *redis.Store) {
	ctx := t.Context()
	r := newRequest(0, "user:alice", "db")
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 10
	var mu sync.Mutex
	var versions []int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; i < each; {
				cur, err := s.GetRequest(ctx, r.ID)
				if err != nil {
					t.Error(err)
					return
				}
				cur.Approvals = append(cur.Approvals, access.Approval{Approver: authn.Principal{ID: fmt.Sprintf("w%d", w)}, Comment: fmt.Sprint(i)})
				up, err := s.UpdateRequest(ctx, cur)
				if errors.Is(err, access.ErrConflict) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				versions = append(versions, up.Version)
				mu.Unlock()
				i++
			}
		})
	}
	wg.Wait()
	slices.Sort(versions)
	for i, v := range versions {
		if v != int64(i+2) {
			t.Fatalf("won versions %v, want each of 2..%d once", versions, workers*each+1)
		}
	}
	got, _ := s.GetRequest(ctx, r.ID)
	if got.Version != workers*each+1 || len(got.Approvals) != workers*each {
		t.Fatalf("version %d with %d approvals, want %d and %d", got.Version, len(got.Approvals), workers*each+1, workers*each)
	}
	next := map[string]int{}
	for _, a := range got.Approvals {
		if a.Comment != fmt.Sprint(next[a.Approver.ID]) {
			t.Fatalf("approval %s of %s out of order or doubled (want %d)", a.Comment, a.Approver.ID, next[a.Approver.ID])
		}
		next[a.Approver.ID]++
	}
}
