package redis_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
	"github.com/mayflyhq/mayfly/broker/lease/redis"
)

// TestRandomAgainstMemory runs one seeded random sequence of every store
// operation against the Redis store (one shard, so that its bucketed sets
// split and merge all the time) and the memory store, and requires the
// same answers from both, and the buckets' invariants, throughout. Then it
// sweeps everything and requires every bucketed set empty.
func TestRandomAgainstMemory(t *testing.T) {
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomAgainstMemory(t, seed) })
	}
}

func randomAgainstMemory(t *testing.T, seed uint64) {
	const retain = 60 * 24 * time.Hour // longer than the random phase: the memory store keeps every lease
	_, c, rs := single(t, redis.Options{Shards: 1, Retain: retain})
	ms := memory.New()
	stores := []lease.Store{rs, ms}
	ctx := t.Context()
	rnd := rand.New(rand.NewPCG(seed, 99))
	now := base
	var ids []string
	var claims [][]lease.Claim // per store, not yet finished
	claims = make([][]lease.Claim, 2)
	dur := func(max time.Duration) time.Duration {
		return time.Duration(rnd.Int64N(int64(max/time.Millisecond))+1) * time.Millisecond
	}
	pick := func() string {
		if len(ids) == 0 || rnd.IntN(50) == 0 {
			return lease.NewID(now) // not there
		}
		return ids[rnd.IntN(len(ids))]
	}
	sameErr := func(op string, errs [2]error) {
		t.Helper()
		for _, s := range []error{lease.ErrNotFound, lease.ErrExists, lease.ErrDuplicate, lease.ErrWrongState, lease.ErrPastHardEnd, lease.ErrFenced} {
			if errors.Is(errs[0], s) != errors.Is(errs[1], s) {
				t.Fatalf("%s: redis %v, memory %v", op, errs[0], errs[1])
			}
		}
		if (errs[0] == nil) != (errs[1] == nil) {
			t.Fatalf("%s: redis %v, memory %v", op, errs[0], errs[1])
		}
	}
	sameLease := func(op string, a, b *lease.Lease) {
		t.Helper()
		if a == nil || b == nil {
			if a != b {
				t.Fatalf("%s: redis %v, memory %v", op, a, b)
			}
			return
		}
		x, y := *a, *b
		for _, p := range [][2]*time.Time{{&x.IssuedAt, &y.IssuedAt}, {&x.ExpiresAt, &y.ExpiresAt}, {&x.HardEnd, &y.HardEnd},
			{&x.DueAt, &y.DueAt}, {&x.RevokeRequestedAt, &y.RevokeRequestedAt}, {&x.RevokedAt, &y.RevokedAt}} {
			if !p[0].Equal(*p[1]) {
				t.Fatalf("%s: lease %s differs:\nredis  %+v\nmemory %+v", op, a.ID, a, b)
			}
			*p[0], *p[1] = time.Time{}, time.Time{}
		}
		if x != y {
			t.Fatalf("%s: lease %s differs:\nredis  %+v\nmemory %+v", op, a.ID, a, b)
		}
	}
	compareAll := func(step int) {
		t.Helper()
		for _, id := range ids {
			var got [2]*lease.Lease
			var errs [2]error
			for i, s := range stores {
				got[i], errs[i] = s.Get(ctx, id)
			}
			sameErr("Get", errs)
			sameLease(fmt.Sprintf("step %d: Get", step), got[0], got[1])
		}
		for _, q := range []lease.Query{{}, {Subject: "s1"}, {Entitlement: "e2"}, {GrantID: "g3"},
			{States: []lease.State{lease.StateActive, lease.StatePending}}, {Subject: "s2", Entitlement: "e0"},
			{Subject: "s0", GrantID: "g1", States: []lease.State{lease.StateRevoked}}} {
			var lists [2][]string
			for i, s := range stores {
				q := q
				q.PageSize = 1 + rnd.IntN(300)
				for page := 0; ; page++ {
					ls, next, err := s.List(ctx, q)
					if err != nil {
						t.Fatalf("List: %v", err)
					}
					for _, l := range ls {
						lists[i] = append(lists[i], l.ID)
					}
					if next == "" {
						break
					}
					q.PageToken = next
				}
			}
			if !slices.Equal(lists[0], lists[1]) {
				t.Fatalf("step %d: List(%+v): redis %d ids, memory %d ids", step, q, len(lists[0]), len(lists[1]))
			}
		}
		var next [2]time.Time
		var ok [2]bool
		for i, s := range stores {
			var err error
			next[i], ok[i], err = s.NextDue(ctx)
			if err != nil {
				t.Fatal(err)
			}
		}
		if ok[0] != ok[1] || !next[0].Equal(next[1]) {
			t.Fatalf("step %d: NextDue: redis %v %v, memory %v %v", step, next[0], ok[0], next[1], ok[1])
		}
		if n, b := checkBuckets(t, c, rs); step == 4000 {
			t.Logf("%d leases: %d index entries in %d buckets", len(ids), n, b)
		}
	}

	for step := range 4000 {
		switch op := rnd.IntN(100); {
		case op < 40: // Create
			l := &lease.Lease{
				ID:          lease.NewID(now),
				Subject:     fmt.Sprintf("s%d", rnd.IntN(7)),
				Entitlement: fmt.Sprintf("e%d", rnd.IntN(4)),
				Issuer:      []string{"jwt", "vault"}[rnd.IntN(2)],
				IssuedAt:    now,
				DueAt:       now.Add(dur(2 * time.Minute)),
				ExpiresAt:   now.Add(time.Minute + dur(2*time.Hour)),
				Renewable:   rnd.IntN(2) == 0,
				Revocable:   rnd.IntN(3) > 0,
			}
			if g := rnd.IntN(7); g < 6 {
				l.GrantID = fmt.Sprintf("g%d", g)
			}
			if !l.Revocable {
				l.RevocableReason = strings.Repeat("a bearer token stays valid until it expires; ", 3)
			}
			l.HardEnd = l.ExpiresAt.Add(dur(time.Hour))
			var errs [2]error
			var got [2]*lease.Lease
			for i, s := range stores {
				got[i], errs[i] = s.Create(ctx, l.Clone())
			}
			sameErr("Create", errs)
			sameLease("Create", got[0], got[1])
			ids = append(ids, l.ID)
		case op < 55: // Activate
			id, ref := pick(), []string{"", "ref-" + fmt.Sprint(step)}[rnd.IntN(2)]
			var errs [2]error
			var got [2]*lease.Lease
			for i, s := range stores {
				got[i], errs[i] = s.Activate(ctx, id, ref)
			}
			sameErr("Activate", errs)
			sameLease("Activate", got[0], got[1])
		case op < 60: // Renew
			id, to := pick(), now.Add(dur(3*time.Hour))
			var errs [2]error
			var got [2]*lease.Lease
			for i, s := range stores {
				got[i], errs[i] = s.Renew(ctx, id, to)
			}
			sameErr("Renew", errs)
			sameLease("Renew", got[0], got[1])
		case op < 65: // Revoke
			id, at := pick(), now.Add(dur(time.Minute)-30*time.Second)
			var errs [2]error
			var got [2]*lease.Lease
			for i, s := range stores {
				got[i], errs[i] = s.Revoke(ctx, id, lease.ReasonExplicit, at)
			}
			sameErr("Revoke", errs)
			sameLease("Revoke", got[0], got[1])
		case op < 67: // RevokeMatching
			sel := []lease.Selector{{Subject: fmt.Sprintf("s%d", rnd.IntN(8))}, {Entitlement: fmt.Sprintf("e%d", rnd.IntN(5))},
				{GrantID: fmt.Sprintf("g%d", rnd.IntN(7))}}[rnd.IntN(3)]
			var n [2]int
			var errs [2]error
			for i, s := range stores {
				n[i], errs[i] = s.RevokeMatching(ctx, sel, lease.ReasonKillSwitch, now)
			}
			sameErr("RevokeMatching", errs)
			if n[0] != n[1] {
				t.Fatalf("step %d: RevokeMatching(%+v): redis %d, memory %d", step, sel, n[0], n[1])
			}
		case op < 80: // Claim, and finish some of the claims
			now = now.Add(dur(5 * time.Minute))
			var got [2][]lease.Claim
			for i, s := range stores {
				var err error
				got[i], err = s.Claim(ctx, now, 1000, 30*time.Second)
				if err != nil {
					t.Fatalf("Claim: %v", err)
				}
				slices.SortFunc(got[i], func(a, b lease.Claim) int { return strings.Compare(a.Lease.ID, b.Lease.ID) })
			}
			if len(got[0]) != len(got[1]) {
				t.Fatalf("step %d: Claim: redis %d, memory %d", step, len(got[0]), len(got[1]))
			}
			for j := range got[0] {
				if got[0][j].Fence != got[1][j].Fence {
					t.Fatalf("step %d: Claim of %s: fence %d and %d", step, got[0][j].Lease.ID, got[0][j].Fence, got[1][j].Fence)
				}
				sameLease("Claim", got[0][j].Lease, got[1][j].Lease)
			}
			for i := range stores {
				claims[i] = append(claims[i], got[i]...)
			}
		case op < 92: // Finish a claim (maybe a stale one)
			if len(claims[0]) == 0 {
				continue
			}
			j := rnd.IntN(len(claims[0]))
			out := []lease.Outcome{{At: now, Revoked: true}, {At: now, Irrevocable: true, Err: "gave up"},
				{At: now, RetryAt: now.Add(dur(time.Minute)), Err: "backend said no"}}[rnd.IntN(3)]
			var errs [2]error
			for i, s := range stores {
				errs[i] = s.Finish(ctx, claims[i][j], out)
				claims[i] = slices.Delete(claims[i], j, j+1)
			}
			sameErr("Finish", errs)
		default:
			now = now.Add(dur(time.Minute))
		}
		if step%500 == 499 {
			compareAll(step)
		}
	}
	compareAll(4000)

	// Sweep: past every lease's end and retention, the revoker claims and
	// finishes everything, and later claims sweep every terminal lease.
	now = now.Add(24 * time.Hour)
	for range 100 {
		cs, err := rs.Claim(ctx, now, 1000, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 0 {
			break
		}
		for _, cl := range cs {
			if err := rs.Finish(ctx, cl, lease.Outcome{At: now, Revoked: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	now = now.Add(retain)
	for range 100 {
		if _, err := rs.Claim(ctx, now, 1000, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if n, b := checkBuckets(t, c, rs); n != 0 || b != 0 {
		t.Errorf("after the sweep: %d entries in %d buckets remain", n, b)
	}
	if ls, _, err := rs.List(ctx, lease.Query{}); err != nil || len(ls) != 0 {
		t.Errorf("List after the sweep: %d leases, %v", len(ls), err)
	}
	if _, ok, err := rs.NextDue(ctx); ok || err != nil {
		t.Errorf("NextDue after the sweep: %v, %v", ok, err)
	}
}
