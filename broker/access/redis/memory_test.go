package redis_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/access/memory"
	"github.com/mayflyhq/mayfly/broker/access/redis"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// TestMatchesMemory applies the same random changes to the memory store
// (the reference) and to Redis stores with 16 and 1 shards, then asks
// both many random queries and requires the same answers.
func TestMatchesMemory(t *testing.T) {
	c := client(t, testenv.Redis(t).Addr())
	for i, shards := range []int{16, 1} {
		t.Run(fmt.Sprintf("Shards%d", shards), func(t *testing.T) {
			testMatchesMemory(t, newStore(t, c, redis.Options{Shards: shards}), uint64(i+1), 1)
		})
	}
}

// testMatchesMemory compares s with the memory store; the query counts
// are divided by div.
func testMatchesMemory(t *testing.T, s *redis.Store, seed uint64, div int) {
	ctx := t.Context()
	rnd := rand.New(rand.NewPCG(seed, 42))
	mem := memory.New()
	pick := func(xs ...string) string { return xs[rnd.IntN(len(xs))] }
	both := func(what string, f func(st access.Store) error) {
		t.Helper()
		errM, errR := f(mem), f(s)
		if (errM == nil) != (errR == nil) {
			t.Fatalf("%s: memory %v, redis %v", what, errM, errR)
		}
	}
	// same compares two answers as JSON (times compare as written).
	same := func(what string, m, r any) {
		t.Helper()
		jm, _ := json.Marshal(m)
		jr, _ := json.Marshal(r)
		if string(jm) != string(jr) {
			t.Fatalf("%s:\nmemory %s\n redis %s", what, jm, jr)
		}
	}

	// Requests, created in random order, a few with ids of another shape.
	var rids []string
	for _, n := range rnd.Perm(150) {
		r := newRequest(n*7, pick("user:a", "user:b", "user:c"), pick("db", "web", "ops"))
		if n%25 == 0 {
			r.ID = fmt.Sprintf("custom-%03d", n)
		}
		rids = append(rids, r.ID)
		both("create request", func(st access.Store) error { c := *r; return st.CreateRequest(ctx, &c) })
	}
	states := []access.RequestState{access.RequestPending, access.RequestApproved, access.RequestDenied, access.RequestCancelled, access.RequestExpired}
	for range 200 {
		id := rids[rnd.IntN(len(rids))]
		cur, err := mem.GetRequest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		cur.State = states[rnd.IntN(len(states))]
		if rnd.IntN(5) == 0 {
			cur.Requester.ID = pick("user:a", "user:b", "user:d")
		}
		if rnd.IntN(5) == 0 {
			cur.Entitlement = pick("db", "web", "new")
		}
		if rnd.IntN(10) == 0 {
			cur.Version-- // stale: both refuse
		}
		both("update request", func(st access.Store) error { c := *cur; _, err := st.UpdateRequest(ctx, &c); return err })
	}
	// Grants.
	var gids []string
	for _, n := range rnd.Perm(120) {
		g := newGrant(n*5, pick("user:a", "user:b"), pick("db", "web"), policy.GrantKind(pick(string(policy.GrantRequest), string(policy.GrantBreakGlass))))
		gids = append(gids, g.ID)
		both("create grant", func(st access.Store) error { c := *g; return st.CreateGrant(ctx, &c) })
	}
	gstates := []access.GrantState{access.GrantActive, access.GrantRevoked, access.GrantEnded}
	for range 150 {
		cur, err := mem.GetGrant(ctx, gids[rnd.IntN(len(gids))])
		if err != nil {
			t.Fatal(err)
		}
		cur.State = gstates[rnd.IntN(len(gstates))]
		if rnd.IntN(6) == 0 {
			cur.Kind = policy.GrantStanding
		}
		both("update grant", func(st access.Store) error { c := *cur; _, err := st.UpdateGrant(ctx, &c); return err })
	}
	// Certifications: several per grant, some at equal times.
	for i := range 60 {
		c := &access.Certification{ID: lease.NewID(at(rnd.IntN(1000))), GrantID: fmt.Sprintf("g%d", rnd.IntN(8)), Entitlement: "db",
			By: "user:o", At: at(rnd.IntN(5) * 100).Add(time.Duration(rnd.IntN(3)) * time.Nanosecond), Decision: access.Certify, Comment: fmt.Sprint(i)}
		both("add certification", func(st access.Store) error { cc := *c; return st.AddCertification(ctx, &cc) })
	}
	// Decision records whose times stray from their ids' by up to 5s
	// either way.
	var recIDs []string
	for range 300 {
		idAt := rnd.IntN(60_000)
		rec := &access.DecisionRecord{ID: lease.NewID(at(idAt)), At: at(idAt + rnd.IntN(10_000) - 5_000).Add(time.Duration(rnd.IntN(1000)) * time.Microsecond),
			Action: access.ActionIssue, Actor: "user:a", Outcome: "allow"}
		recIDs = append(recIDs, rec.ID)
		both("append record", func(st access.Store) error { return st.AppendRecord(ctx, rec) })
	}

	afterOf := func(ids []string) string {
		switch rnd.IntN(4) {
		case 0:
			return ""
		case 1:
			id := ids[rnd.IntN(len(ids))]
			return id[:rnd.IntN(len(id))] // a prefix: between ids
		}
		return ids[rnd.IntN(len(ids))]
	}
	limit := func() int { return []int{0, 1, 3, 10, 2000}[rnd.IntN(5)] }
	for range 150 / div {
		q := access.RequestQuery{After: afterOf(rids), Limit: limit()}
		if rnd.IntN(2) == 0 {
			q.Requester = pick("user:a", "user:b", "user:d", "user:none")
		}
		if rnd.IntN(2) == 0 {
			q.Entitlement = pick("db", "web", "new")
		}
		for range rnd.IntN(4) {
			q.States = append(q.States, states[rnd.IntN(len(states))])
		}
		m, _ := mem.ListRequests(ctx, q)
		r, err := s.ListRequests(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		same(fmt.Sprintf("ListRequests(%+v)", q), m, r)
	}
	for range 100 / div {
		q := access.GrantQuery{After: afterOf(gids), Limit: limit()}
		if rnd.IntN(2) == 0 {
			q.Subject = pick("user:a", "user:b")
		}
		if rnd.IntN(2) == 0 {
			q.Entitlement = pick("db", "web")
		}
		if rnd.IntN(2) == 0 {
			q.Kind = policy.GrantKind(pick(string(policy.GrantRequest), string(policy.GrantBreakGlass), string(policy.GrantStanding)))
		}
		for range rnd.IntN(3) {
			q.States = append(q.States, gstates[rnd.IntN(len(gstates))])
		}
		m, _ := mem.ListGrants(ctx, q)
		r, err := s.ListGrants(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		same(fmt.Sprintf("ListGrants(%+v)", q), m, r)
	}
	for range 100 / div {
		q := access.RecordQuery{After: afterOf(recIDs), Limit: limit()}
		if rnd.IntN(4) > 0 {
			q.Since = at(rnd.IntN(70_000) - 5_000).Add(time.Duration(rnd.IntN(1000)) * time.Microsecond)
		}
		m, _ := mem.Records(ctx, q)
		r, err := s.Records(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		same(fmt.Sprintf("Records(since %s after %q limit %d)", q.Since.Format(time.RFC3339Nano), q.After, q.Limit), m, r)
	}
	// Paging through everything a page of 7 at a time gives it all once.
	var paged []*access.Request
	for q := (access.RequestQuery{Limit: 7}); ; {
		page, err := s.ListRequests(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, page...)
		if len(page) < q.Limit {
			break
		}
		q.After = page[len(page)-1].ID
	}
	all, _ := mem.ListRequests(ctx, access.RequestQuery{Limit: access.MaxLimit})
	same("paged requests", all, paged)
	if !slices.IsSortedFunc(paged, func(a, b *access.Request) int { return strings.Compare(a.ID, b.ID) }) {
		t.Fatal("pages not in id order")
	}

	mc, _ := mem.LatestCertifications(ctx)
	rc, err := s.LatestCertifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(mc, rc) {
		same("LatestCertifications", mc, rc)
		t.Fatal("LatestCertifications differ")
	}
}
