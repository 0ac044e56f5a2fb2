package accesstest

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// base is the fixed time every subtest starts from: a whole millisecond.
var base = time.Date(2031, time.March, 4, 5, 6, 7, 8_000_000, time.UTC)

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) access.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s access.Store)
	}{
		{"RequestCreateGet", testRequestCreateGet},
		{"RequestUpdate", testRequestUpdate},
		{"RequestConcurrentUpdate", testRequestConcurrentUpdate},
		{"RequestList", testRequestList},
		{"RequestCopies", testRequestCopies},
		{"GrantCreateGetUpdate", testGrant},
		{"GrantConcurrentUpdate", testGrantConcurrentUpdate},
		{"GrantList", testGrantList},
		{"Certifications", testCertifications},
		{"Marks", testMarks},
		{"Records", testRecords},
		{"Generations", testGenerations},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f(t, newStore(t))
		})
	}
}

var ctx = context.Background()

func at(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }

// newRequest returns a pending request with an id that sorts after the
// ids of earlier calls with smaller n.
func newRequest(n int, requester, ent string) *access.Request {
	r := &access.Request{
		ID:          lease.NewID(at(n)),
		Requester:   authn.Principal{Kind: authn.KindHuman, ID: requester, Groups: []string{"oidc-group:corp/sre"}, Method: authn.MethodOIDC},
		Entitlement: ent, Reason: "fix", Ticket: "INC-1", Duration: time.Hour, CreatedAt: at(n), ExpiresAt: at(n).Add(24 * time.Hour),
		State: access.RequestPending, Needed: 2, Approvers: []string{"group:leads", "group:security"}, DistinctGroups: true, PolicyDigest: "d",
	}
	r.Digest = access.Digest(r)
	return r
}

func newGrant(n int, subject, ent string, kind policy.GrantKind) *access.Grant {
	return &access.Grant{
		ID: lease.NewID(at(n)), Kind: kind, Subject: subject, Entitlement: ent, Reason: "r",
		Start: at(n), End: at(n).Add(time.Hour), State: access.GrantActive, CreatedAt: at(n),
	}
}

func equalRequests(t *testing.T, got, want *access.Request) {
	t.Helper()
	g, w := *got, *want
	for _, p := range []*access.Request{&g, &w} {
		p.StartAt, p.CreatedAt, p.ExpiresAt, p.ClosedAt = p.StartAt.UTC(), p.CreatedAt.UTC(), p.ExpiresAt.UTC(), p.ClosedAt.UTC()
		for i := range p.Approvals {
			p.Approvals[i].At = p.Approvals[i].At.UTC()
		}
		p.Requester.NotAfter = p.Requester.NotAfter.UTC()
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("request\n got %+v\nwant %+v", g, w)
	}
}

func testRequestCreateGet(t *testing.T, s access.Store) {
	r := newRequest(0, "user:alice", "db")
	r.Approvals = []access.Approval{{Approver: authn.Principal{Kind: authn.KindHuman, ID: "user:lee"}, CountedAs: "group:leads", Comment: "ok", At: at(5), Digest: r.Digest}}
	r.StartAt = at(100)
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	if r.Version != 1 {
		t.Errorf("version %d after create, want 1", r.Version)
	}
	got, err := s.GetRequest(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	equalRequests(t, got, r)
	if err := s.CreateRequest(ctx, newRequestWithID(r.ID)); !errors.Is(err, access.ErrExists) {
		t.Errorf("create with a taken id: %v, want ErrExists", err)
	}
	if _, err := s.GetRequest(ctx, lease.NewID(base)); !errors.Is(err, access.ErrNotFound) {
		t.Errorf("get unknown: %v, want ErrNotFound", err)
	}
}

func newRequestWithID(id string) *access.Request {
	r := newRequest(1, "user:bob", "other")
	r.ID = id
	return r
}

func testRequestUpdate(t *testing.T, s access.Store) {
	r := newRequest(0, "user:alice", "db")
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.State, r.ClosedAt = access.RequestDenied, at(10)
	r.Denial = &access.Approval{Approver: authn.Principal{Kind: authn.KindHuman, ID: "user:lee"}, Comment: "no", At: at(10)}
	got, err := s.UpdateRequest(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 || got.State != access.RequestDenied || got.Denial == nil || got.Denial.Comment != "no" {
		t.Fatalf("updated %+v", got)
	}
	again, _ := s.GetRequest(ctx, r.ID)
	equalRequests(t, again, got)
	// r still says version 1: stale.
	r.State = access.RequestCancelled
	if _, err := s.UpdateRequest(ctx, r); !errors.Is(err, access.ErrConflict) {
		t.Errorf("stale update: %v, want ErrConflict", err)
	}
	if cur, _ := s.GetRequest(ctx, r.ID); cur.State != access.RequestDenied || cur.Version != 2 {
		t.Errorf("stale update changed the request: %+v", cur)
	}
	if _, err := s.UpdateRequest(ctx, newRequest(3, "user:x", "y")); !errors.Is(err, access.ErrNotFound) {
		t.Errorf("update unknown: %v, want ErrNotFound", err)
	}
}

func testRequestConcurrentUpdate(t *testing.T, s access.Store) {
	r := newRequest(0, "user:alice", "db")
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	const n = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := *r
			c.Approvals = []access.Approval{{Approver: authn.Principal{ID: "user:lee"}, Comment: string(rune('a' + i)), At: at(i)}}
			_, err := s.UpdateRequest(ctx, &c)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, access.ErrConflict):
				conflicts++
			default:
				t.Errorf("update: %v", err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 || conflicts != n-1 {
		t.Fatalf("%d updates won and %d conflicted, want 1 and %d", wins, conflicts, n-1)
	}
	got, _ := s.GetRequest(ctx, r.ID)
	if got.Version != 2 || len(got.Approvals) != 1 {
		t.Errorf("after the race: %+v", got)
	}
}

func testRequestList(t *testing.T, s access.Store) {
	var all []*access.Request
	for i, spec := range []struct{ who, ent string }{
		{"user:alice", "db"}, {"user:bob", "db"}, {"user:alice", "web"}, {"user:alice", "db"}, {"user:carol", "web"},
	} {
		r := newRequest(i, spec.who, spec.ent)
		if err := s.CreateRequest(ctx, r); err != nil {
			t.Fatal(err)
		}
		all = append(all, r)
	}
	all[3].State = access.RequestApproved
	if _, err := s.UpdateRequest(ctx, all[3]); err != nil {
		t.Fatal(err)
	}
	ids := func(rs []*access.Request) []string {
		out := []string{}
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		q    access.RequestQuery
		want []int
	}{
		{"all", access.RequestQuery{}, []int{0, 1, 2, 3, 4}},
		{"requester", access.RequestQuery{Requester: "user:alice"}, []int{0, 2, 3}},
		{"entitlement", access.RequestQuery{Entitlement: "web"}, []int{2, 4}},
		{"state", access.RequestQuery{States: []access.RequestState{access.RequestApproved}}, []int{3}},
		{"both", access.RequestQuery{Requester: "user:alice", Entitlement: "db", States: []access.RequestState{access.RequestPending}}, []int{0}},
		{"page", access.RequestQuery{Limit: 2}, []int{0, 1}},
		{"next page", access.RequestQuery{Limit: 2, After: all[1].ID}, []int{2, 3}},
		{"filtered page", access.RequestQuery{Requester: "user:alice", After: all[0].ID, Limit: 1}, []int{2}},
		{"past the end", access.RequestQuery{After: all[4].ID}, []int{}},
	} {
		got, err := s.ListRequests(ctx, tc.q)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{}
		for _, i := range tc.want {
			want = append(want, all[i].ID)
		}
		if !reflect.DeepEqual(ids(got), want) {
			t.Errorf("%s: got %v, want %v", tc.name, ids(got), want)
		}
	}
}

func testRequestCopies(t *testing.T, s access.Store) {
	r := newRequest(0, "user:alice", "db")
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.Approvers[0] = "changed after create"
	got, _ := s.GetRequest(ctx, r.ID)
	if got.Approvers[0] != "group:leads" {
		t.Fatalf("stored request aliases the argument: %v", got.Approvers)
	}
	got.Approvers[0] = "changed after get"
	got.Requester.Groups[0] = "changed"
	again, _ := s.GetRequest(ctx, r.ID)
	if again.Approvers[0] != "group:leads" || again.Requester.Groups[0] != "oidc-group:corp/sre" {
		t.Fatalf("stored request aliases a returned one: %+v", again)
	}
	list, _ := s.ListRequests(ctx, access.RequestQuery{})
	list[0].Approvers[0] = "changed after list"
	if again, _ := s.GetRequest(ctx, r.ID); again.Approvers[0] != "group:leads" {
		t.Fatal("stored request aliases a listed one")
	}
}

func testGrant(t *testing.T, s access.Store) {
	g := newGrant(0, "user:alice", "db", policy.GrantBreakGlass)
	g.ReviewDue = at(1000)
	if err := s.CreateGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	if g.Version != 1 {
		t.Errorf("version %d", g.Version)
	}
	if err := s.CreateGrant(ctx, g); !errors.Is(err, access.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	got, err := s.GetGrant(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != g.Kind || !got.Start.Equal(g.Start) || !got.End.Equal(g.End) || !got.ReviewDue.Equal(g.ReviewDue) || got.Subject != g.Subject || got.Version != 1 {
		t.Fatalf("grant %+v, want %+v", got, g)
	}
	got.State, got.RevokedBy, got.RevokedAt = access.GrantRevoked, "user:lee", at(5)
	upd, err := s.UpdateGrant(ctx, got)
	if err != nil || upd.Version != 2 || upd.State != access.GrantRevoked || !upd.RevokedAt.Equal(at(5)) {
		t.Fatalf("update %+v %v", upd, err)
	}
	if _, err := s.UpdateGrant(ctx, got); !errors.Is(err, access.ErrConflict) {
		t.Errorf("stale grant update: %v, want ErrConflict", err)
	}
	if _, err := s.GetGrant(ctx, lease.NewID(base)); !errors.Is(err, access.ErrNotFound) {
		t.Errorf("get unknown grant: %v", err)
	}
	if _, err := s.UpdateGrant(ctx, newGrant(9, "x", "y", policy.GrantRequest)); !errors.Is(err, access.ErrNotFound) {
		t.Errorf("update unknown grant: %v", err)
	}
}

func testGrantConcurrentUpdate(t *testing.T, s access.Store) {
	g := newGrant(0, "user:alice", "db", policy.GrantRequest)
	if err := s.CreateGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := *g
			c.State = access.GrantRevoked
			if _, err := s.UpdateGrant(ctx, &c); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, access.ErrConflict) {
				t.Errorf("update: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent updates won, want 1", wins)
	}
}

func testGrantList(t *testing.T, s access.Store) {
	var all []*access.Grant
	for i, spec := range []struct {
		who, ent string
		kind     policy.GrantKind
	}{
		{"user:alice", "db", policy.GrantRequest}, {"user:bob", "db", policy.GrantBreakGlass}, {"user:alice", "web", policy.GrantBreakGlass},
	} {
		g := newGrant(i, spec.who, spec.ent, spec.kind)
		if err := s.CreateGrant(ctx, g); err != nil {
			t.Fatal(err)
		}
		all = append(all, g)
	}
	all[1].State = access.GrantEnded
	if _, err := s.UpdateGrant(ctx, all[1]); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		q    access.GrantQuery
		want []int
	}{
		{"all", access.GrantQuery{}, []int{0, 1, 2}},
		{"subject", access.GrantQuery{Subject: "user:alice"}, []int{0, 2}},
		{"entitlement", access.GrantQuery{Entitlement: "db"}, []int{0, 1}},
		{"kind", access.GrantQuery{Kind: policy.GrantBreakGlass}, []int{1, 2}},
		{"state", access.GrantQuery{States: []access.GrantState{access.GrantActive}}, []int{0, 2}},
		{"page", access.GrantQuery{After: all[0].ID, Limit: 1}, []int{1}},
	} {
		got, err := s.ListGrants(ctx, tc.q)
		if err != nil {
			t.Fatal(err)
		}
		var gotIDs, want []string
		for _, g := range got {
			gotIDs = append(gotIDs, g.ID)
		}
		for _, i := range tc.want {
			want = append(want, all[i].ID)
		}
		if !reflect.DeepEqual(gotIDs, want) {
			t.Errorf("%s: got %v, want %v", tc.name, gotIDs, want)
		}
	}
}

func testCertifications(t *testing.T, s access.Store) {
	if m, err := s.LatestCertifications(ctx); err != nil || len(m) != 0 {
		t.Fatalf("empty store: %v %v", m, err)
	}
	c1 := &access.Certification{ID: lease.NewID(at(1)), GrantID: "g1", Entitlement: "db", By: "user:o", At: at(1), Decision: access.Certify}
	c2 := &access.Certification{ID: lease.NewID(at(3)), GrantID: "g1", Entitlement: "db", By: "user:o", At: at(3), Decision: access.Revoke, Comment: "unused"}
	c3 := &access.Certification{ID: lease.NewID(at(2)), GrantID: "g2", Entitlement: "db", By: "user:o", At: at(2), Decision: access.Certify}
	// Same time as c3, greater id: it wins.
	c4 := &access.Certification{ID: c3.ID + "z", GrantID: "g2", Entitlement: "db", By: "user:p", At: at(2), Decision: access.Revoke}
	for _, c := range []*access.Certification{c2, c1, c3, c4} {
		if err := s.AddCertification(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddCertification(ctx, c1); !errors.Is(err, access.ErrExists) {
		t.Errorf("duplicate certification: %v", err)
	}
	m, err := s.LatestCertifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m["g1"].ID != c2.ID || m["g1"].Decision != access.Revoke || m["g1"].Comment != "unused" || !m["g1"].At.Equal(at(3)) || m["g2"].ID != c4.ID {
		t.Fatalf("latest %+v", m)
	}
}

func testMarks(t *testing.T, s access.Store) {
	got, first, err := s.Mark(ctx, "seen/g1", at(1))
	if err != nil || !first || !got.Equal(at(1)) {
		t.Fatalf("first mark: %v %v %v", got, first, err)
	}
	got, first, err = s.Mark(ctx, "seen/g1", at(2))
	if err != nil || first || !got.Equal(at(1)) {
		t.Fatalf("second mark: %v %v %v (want the first time kept)", got, first, err)
	}
	if _, first, _ := s.Mark(ctx, "seen/g2", at(3)); !first {
		t.Error("another key was marked already")
	}
	if err := s.Unmark(ctx, "seen/g1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unmark(ctx, "never"); err != nil {
		t.Errorf("unmark of an unknown key: %v", err)
	}
	if got, first, _ := s.Mark(ctx, "seen/g1", at(4)); !first || !got.Equal(at(4)) {
		t.Errorf("mark after unmark: %v %v", got, first)
	}
	// The zero time is a valid mark.
	if got, first, _ := s.Mark(ctx, "zero", time.Time{}); !first || !got.IsZero() {
		t.Errorf("zero mark: %v %v", got, first)
	}
}

func testRecords(t *testing.T, s access.Store) {
	var ids []string
	for i := 0; i < 5; i++ {
		in := policy.Input{Principal: authn.Principal{Kind: authn.KindHuman, ID: "user:alice"}, Entitlement: "db", Now: at(i * 10), Certified: map[string]time.Time{"g": at(0)}}
		rec := &access.DecisionRecord{
			ID: lease.NewID(at(i * 10)), At: at(i * 10), Action: access.ActionIssue, Actor: "user:alice", Entitlement: "db", Outcome: "deny",
			Reasons:  []policy.Reason{{Code: policy.ReasonNotGranted, Message: "no"}},
			Decision: &policy.Record{Kind: policy.RecordIssue, At: at(i * 10), Issue: &in, Result: policy.Result{Outcome: policy.Deny}},
		}
		if err := s.AppendRecord(ctx, rec); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	if err := s.AppendRecord(ctx, &access.DecisionRecord{ID: ids[0], At: at(0)}); !errors.Is(err, access.ErrExists) {
		t.Errorf("duplicate record: %v", err)
	}
	all, err := s.Records(ctx, access.RecordQuery{})
	if err != nil || len(all) != 5 {
		t.Fatalf("records %d %v", len(all), err)
	}
	r := all[2]
	if r.ID != ids[2] || r.Decision == nil || r.Decision.Issue == nil || !r.Decision.Issue.Certified["g"].Equal(at(0)) || r.Reasons[0].Code != policy.ReasonNotGranted {
		t.Fatalf("record %+v", r)
	}
	since, _ := s.Records(ctx, access.RecordQuery{Since: at(20)})
	if len(since) != 3 || since[0].ID != ids[2] {
		t.Errorf("since: %d records", len(since))
	}
	page, _ := s.Records(ctx, access.RecordQuery{After: ids[1], Limit: 2})
	if len(page) != 2 || page[0].ID != ids[2] || page[1].ID != ids[3] {
		t.Errorf("page %v", page)
	}
}

// testGenerations checks a store that implements access.Generations: the
// generation moves with every grant or certification change, and only
// then (a conflicting update changes nothing), and it never returns to a
// value it had.
func testGenerations(t *testing.T, s access.Store) {
	g, ok := s.(access.Generations)
	if !ok {
		t.Skip("the store does not implement access.Generations")
	}
	seen := map[string]string{} // generation -> the step that returned it
	last := ""
	step := func(what string, moved bool) {
		t.Helper()
		gen, err := g.Generation(ctx)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if before, dup := seen[gen]; moved && dup {
			t.Fatalf("%s: generation %q was returned before (after %s)", what, gen, before)
		}
		if !moved && gen != last {
			t.Fatalf("%s changed nothing the generation covers, yet it moved from %q to %q", what, last, gen)
		}
		seen[gen], last = what, gen
	}
	step("empty store", true)
	step("a second read", false)
	if err := s.CreateRequest(ctx, newRequest(1, "user:a", "db")); err != nil {
		t.Fatal(err)
	}
	gr := newGrant(2, "user:a", "db", policy.GrantRequest)
	if err := s.CreateGrant(ctx, gr); err != nil {
		t.Fatal(err)
	}
	step("CreateGrant", true)
	stale := *gr
	gr.State = access.GrantRevoked
	if _, err := s.UpdateGrant(ctx, gr); err != nil {
		t.Fatal(err)
	}
	step("UpdateGrant", true)
	if _, err := s.UpdateGrant(ctx, &stale); !errors.Is(err, access.ErrConflict) {
		t.Fatalf("update at a stale version: %v", err)
	}
	taken := newGrant(4, "user:b", "db", policy.GrantRequest)
	taken.ID = gr.ID
	if err := s.CreateGrant(ctx, taken); !errors.Is(err, access.ErrExists) {
		t.Fatalf("create with a taken id: %v", err)
	}
	step("a refused update and create", false)
	c := &access.Certification{ID: lease.NewID(at(3)), GrantID: "g1", Entitlement: "db", By: "user:o", At: at(3), Decision: access.Certify}
	if err := s.AddCertification(ctx, c); err != nil {
		t.Fatal(err)
	}
	step("AddCertification", true)
}
