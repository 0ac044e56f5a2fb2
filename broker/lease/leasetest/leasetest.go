package leasetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// base is the fixed time every subtest starts from: a whole millisecond.
var base = time.Date(2031, time.March, 4, 5, 6, 7, 8_000_000, time.UTC)

const (
	pendingFor = time.Minute      // newLease: DueAt = base + pendingFor
	ttl        = time.Hour        // newLease: ExpiresAt = base + ttl
	maxTTL     = 4 * time.Hour    // newLease: HardEnd = base + maxTTL
	hold       = 30 * time.Second // claim hold used throughout
	reapAt     = time.Second      // prepare revokes and claims at base + reapAt
)

type testCase struct {
	name string
	fn   func(t *testing.T, s lease.Store)
}

// Run runs the conformance suite. newStore must return a new, empty store
// on every call; each subtest uses its own.
func Run(t *testing.T, newStore func(t *testing.T) lease.Store) {
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"Create", []testCase{
			{"RoundTrip", testCreateRoundTrip},
			{"RequiredFields", testCreateRequiredFields},
			{"Exists", testCreateExists},
			{"DuplicateRequestID", testCreateDuplicateRequestID},
			{"RequestIDPerSubject", testCreateRequestIDPerSubject},
			{"EmptyRequestID", testCreateEmptyRequestID},
		}},
		{"Copies", []testCase{{"NotShared", testCopies}}},
		{"NotFound", []testCase{{"EveryMethod", testNotFound}}},
		{"Bind", []testCase{
			{"Pending", testBindPending},
			{"NotPending", testBindNotPending},
			{"RevocationAskedFor", testBindRevocationAskedFor},
		}},
		{"Activate", []testCase{
			{"Pending", testActivatePending},
			{"KeepsBoundRef", testActivateKeepsBoundRef},
			{"NotPending", testActivateNotPending},
			{"AfterReap", testActivateAfterReap},
			{"AfterRevoke", testActivateAfterRevoke},
		}},
		{"List", []testCase{
			{"Queries", testList},
			{"PageSizeCap", testListPageSizeCap},
		}},
		{"Renew", []testCase{
			{"Active", testRenewActive},
			{"HardEnd", testRenewHardEnd},
			{"WrongState", testRenewWrongState},
		}},
		{"Revoke", []testCase{
			{"Active", testRevokeActive},
			{"Pending", testRevokePending},
			{"Unchanged", testRevokeUnchanged},
			{"Repeated", testRevokeRepeated},
			{"EarlierWins", testRevokeEarlierWins},
			{"NeverDelays", testRevokeNeverDelays},
		}},
		{"RevokeMatching", []testCase{
			{"Subject", testRevokeMatching(lease.Selector{Subject: "s1"})},
			{"Entitlement", testRevokeMatching(lease.Selector{Entitlement: "e2"})},
			{"Grant", testRevokeMatching(lease.Selector{GrantID: "g0"})},
			{"NoMatch", testRevokeMatching(lease.Selector{Subject: "nobody"})},
			{"BadSelector", testRevokeMatchingBadSelector},
		}},
		{"Claim", []testCase{
			{"OnlyDue", testClaimOnlyDue},
			{"Max", testClaimMax},
			{"Fields", testClaimFields},
			{"PendingReap", testClaimPendingReap},
			{"KeepsReason", testClaimKeepsReason},
			{"Held", testClaimHeld},
			{"Lapsed", testClaimLapsed},
			{"Concurrent", testClaimConcurrent},
			{"TerminalNever", testClaimTerminalNever},
		}},
		{"Finish", []testCase{
			{"Revoked", testFinishRevoked},
			{"Irrevocable", testFinishIrrevocable},
			{"Retry", testFinishRetry},
			{"RetryPending", testFinishRetryPending},
			{"Fenced", testFinishFenced},
			{"Twice", testFinishTwice},
			{"AfterLapseUnclaimed", testFinishAfterLapseUnclaimed},
		}},
		{"NextDue", []testCase{
			{"Empty", testNextDueEmpty},
			{"Earliest", testNextDueEarliest},
			{"ClaimDeadlines", testNextDueClaimDeadlines},
		}},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) { c.fn(t, newStore(t)) })
			}
		})
	}
}

// ---- helpers ----

// newLease returns a lease ready for Create: pending deadline base+1m,
// expiry base+1h, hard end base+4h.
func newLease(subject, entitlement, grant string) *lease.Lease {
	return &lease.Lease{
		ID:          lease.NewID(base),
		Subject:     subject,
		Entitlement: entitlement,
		GrantID:     grant,
		Issuer:      "test",
		IssuedAt:    base,
		ExpiresAt:   base.Add(ttl),
		HardEnd:     base.Add(maxTTL),
		DueAt:       base.Add(pendingFor),
		Renewable:   true,
		Revocable:   true,
	}
}

func create(t *testing.T, s lease.Store, l *lease.Lease) *lease.Lease {
	t.Helper()
	got, err := s.Create(t.Context(), l.Clone())
	if err != nil {
		t.Fatalf("Create(%s): %v", l.ID, err)
	}
	return got
}

func activate(t *testing.T, s lease.Store, id string) *lease.Lease {
	t.Helper()
	got, err := s.Activate(t.Context(), id, "")
	if err != nil {
		t.Fatalf("Activate(%s): %v", id, err)
	}
	return got
}

func get(t *testing.T, s lease.Store, id string) *lease.Lease {
	t.Helper()
	got, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return got
}

func revoke(t *testing.T, s lease.Store, id string, reason lease.Reason, at time.Time) *lease.Lease {
	t.Helper()
	got, err := s.Revoke(t.Context(), id, reason, at)
	if err != nil {
		t.Fatalf("Revoke(%s): %v", id, err)
	}
	return got
}

func claim(t *testing.T, s lease.Store, now time.Time, max int) []lease.Claim {
	t.Helper()
	cs, err := s.Claim(t.Context(), now, max, hold)
	if err != nil {
		t.Fatalf("Claim(%s, %d): %v", now.Format(time.RFC3339Nano), max, err)
	}
	return cs
}

// claimOne claims at now and requires that exactly the lease id is claimed.
func claimOne(t *testing.T, s lease.Store, now time.Time, id string) lease.Claim {
	t.Helper()
	cs := claim(t, s, now, 1000)
	if len(cs) != 1 || cs[0].Lease == nil || cs[0].Lease.ID != id {
		t.Fatalf("Claim(%s) = %v, want only lease %s", now.Format(time.RFC3339Nano), claimIDs(cs), id)
	}
	return cs[0]
}

// claimNone requires that Claim at now returns nothing.
func claimNone(t *testing.T, s lease.Store, now time.Time) {
	t.Helper()
	if cs := claim(t, s, now, 1000); len(cs) != 0 {
		t.Fatalf("Claim(%s) = %v, want nothing", now.Format(time.RFC3339Nano), claimIDs(cs))
	}
}

func claimIDs(cs []lease.Claim) []string {
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		if c.Lease == nil {
			ids = append(ids, "<nil lease>")
			continue
		}
		ids = append(ids, c.Lease.ID)
	}
	return ids
}

func finish(t *testing.T, s lease.Store, c lease.Claim, out lease.Outcome) {
	t.Helper()
	if err := s.Finish(t.Context(), c, out); err != nil {
		t.Fatalf("Finish(%s, fence %d): %v", c.Lease.ID, c.Fence, err)
	}
}

func nextDue(t *testing.T, s lease.Store) (time.Time, bool) {
	t.Helper()
	at, ok, err := s.NextDue(t.Context())
	if err != nil {
		t.Fatalf("NextDue: %v", err)
	}
	return at, ok
}

func wantNextDue(t *testing.T, s lease.Store, want time.Time) {
	t.Helper()
	at, ok := nextDue(t, s)
	if !ok || !at.Equal(want) {
		t.Fatalf("NextDue = %v, %v; want %v, true", at, ok, want)
	}
}

func wantNoneDue(t *testing.T, s lease.Store) {
	t.Helper()
	if at, ok := nextDue(t, s); ok {
		t.Fatalf("NextDue = %v, true; want false", at)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

// prepare creates l and brings it into state st, touching no other lease:
// revoking, revoked and irrevocable leases are revoked (ReasonExplicit) and
// claimed at base+reapAt, which no lease from newLease is due by. It
// returns the lease as it is then, and the claim for a revoking lease.
func prepare(t *testing.T, s lease.Store, l *lease.Lease, st lease.State) (*lease.Lease, lease.Claim) {
	t.Helper()
	got := create(t, s, l)
	if st == lease.StatePending {
		return got, lease.Claim{}
	}
	activate(t, s, l.ID)
	if st == lease.StateActive {
		return get(t, s, l.ID), lease.Claim{}
	}
	at := base.Add(reapAt)
	revoke(t, s, l.ID, lease.ReasonExplicit, at)
	c := claimOne(t, s, at, l.ID)
	switch st {
	case lease.StateRevoking:
		return get(t, s, l.ID), c
	case lease.StateRevoked:
		finish(t, s, c, lease.Outcome{At: at.Add(time.Millisecond), Revoked: true})
	case lease.StateIrrevocable:
		finish(t, s, c, lease.Outcome{At: at.Add(time.Millisecond), Irrevocable: true, Err: "backend refused"})
	default:
		t.Fatalf("prepare: unknown state %q", st)
	}
	return get(t, s, l.ID), lease.Claim{}
}

// sameLease compares every field of two leases; times with Equal.
func sameLease(t *testing.T, what string, got, want *lease.Lease) {
	t.Helper()
	if got == nil || want == nil {
		if got != want {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
		return
	}
	gv, wv := reflect.ValueOf(*got), reflect.ValueOf(*want)
	for i := range gv.NumField() {
		name := gv.Type().Field(i).Name
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if gt, ok := g.(time.Time); ok {
			if wt := w.(time.Time); !gt.Equal(wt) {
				t.Errorf("%s: %s = %v, want %v", what, name, gt, wt)
			}
			continue
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: %s = %#v, want %#v", what, name, g, w)
		}
	}
}

// unchanged requires that the stored lease still equals before.
func unchanged(t *testing.T, s lease.Store, before *lease.Lease) {
	t.Helper()
	sameLease(t, "stored lease after a refused change", get(t, s, before.ID), before)
}

// ---- Create ----

func testCreateRoundTrip(t *testing.T, s lease.Store) {
	l := newLease("spiffe://example.org/ns/prod/sa/app", "db-read", "grant-1")
	l.ExternalRef = "accessor-1"
	l.RequestID = "req-1"
	l.IssuedAt = base.Add(3 * time.Millisecond)
	l.ExpiresAt = base.Add(ttl + 123*time.Millisecond)
	l.HardEnd = base.Add(maxTTL + 999*time.Millisecond)
	l.DueAt = base.Add(pendingFor + 7*time.Millisecond)
	l.Renewable = false
	l.Revocable = false
	l.RevocableReason = "bearer JWT: listed as revoked until exp"
	l.State = lease.StateActive // ignored: a new lease is pending
	want := l.Clone()
	want.State = lease.StatePending

	got := create(t, s, l)
	sameLease(t, "Create result", got, want)
	sameLease(t, "Get after Create", get(t, s, l.ID), want)
}

func testCreateRequiredFields(t *testing.T, s lease.Store) {
	for _, field := range []string{"ID", "Subject", "Entitlement", "Issuer", "IssuedAt", "ExpiresAt", "HardEnd", "DueAt"} {
		l := newLease("s", "e", "g")
		reflect.ValueOf(l).Elem().FieldByName(field).SetZero()
		if _, err := s.Create(t.Context(), l); err == nil {
			t.Errorf("Create without %s: no error", field)
		}
		if l.ID != "" {
			if _, err := s.Get(t.Context(), l.ID); !errors.Is(err, lease.ErrNotFound) {
				t.Errorf("Get after Create without %s: error %v, want ErrNotFound", field, err)
			}
		}
	}
	got, _, err := s.List(t.Context(), lease.Query{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("List after refused Creates returned %d leases, want 0", len(got))
	}
}

func testCreateExists(t *testing.T, s lease.Store) {
	first := create(t, s, newLease("s1", "e1", "g1"))
	dup := newLease("s2", "e2", "g2")
	dup.ID = first.ID
	_, err := s.Create(t.Context(), dup)
	wantErr(t, "Create with a taken id", err, lease.ErrExists)
	unchanged(t, s, first)
}

func testCreateDuplicateRequestID(t *testing.T, s lease.Store) {
	a := newLease("s1", "e1", "g1")
	a.RequestID = "req-42"
	create(t, s, a)
	active := activate(t, s, a.ID)

	b := newLease("s1", "e1", "g1")
	b.RequestID = "req-42"
	b.ExpiresAt = base.Add(2 * ttl)
	got, err := s.Create(t.Context(), b)
	wantErr(t, "Create with a used request id", err, lease.ErrDuplicate)
	sameLease(t, "lease returned with ErrDuplicate", got, active)
	if _, err := s.Get(t.Context(), b.ID); !errors.Is(err, lease.ErrNotFound) {
		t.Fatalf("Get(duplicate's id): error %v, want ErrNotFound (nothing written)", err)
	}
	unchanged(t, s, active)
}

func testCreateRequestIDPerSubject(t *testing.T, s lease.Store) {
	a := newLease("s1", "e1", "g1")
	a.RequestID = "req-42"
	create(t, s, a)

	b := newLease("s2", "e1", "g1")
	b.RequestID = "req-42"
	got, err := s.Create(t.Context(), b.Clone())
	if err != nil {
		t.Fatalf("Create for another subject with the same request id: %v", err)
	}
	if got.ID != b.ID {
		t.Fatalf("Create for another subject returned lease %s, want a new lease %s", got.ID, b.ID)
	}

	c := newLease("s2", "e1", "g1")
	c.RequestID = "req-42"
	got, err = s.Create(t.Context(), c)
	wantErr(t, "Create repeating the second subject's request id", err, lease.ErrDuplicate)
	if got == nil || got.ID != b.ID {
		t.Fatalf("ErrDuplicate returned %v, want lease %s", got, b.ID)
	}
}

func testCreateEmptyRequestID(t *testing.T, s lease.Store) {
	for range 3 {
		create(t, s, newLease("s1", "e1", "g1"))
	}
	got, _, err := s.List(t.Context(), lease.Query{Subject: "s1"})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("three Creates without a request id stored %d leases, want 3", len(got))
	}
}

// ---- copies ----

func testCopies(t *testing.T, s lease.Store) {
	ctx := t.Context()
	scribble := func(l *lease.Lease) {
		l.Subject = "mallory"
		l.State = lease.StateRevoked
		l.ExpiresAt = base.Add(1000 * time.Hour)
		l.DueAt = base.Add(1000 * time.Hour)
		l.Fence = 99
	}

	in := newLease("s1", "e1", "g1")
	out, err := s.Create(ctx, in)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	want := get(t, s, in.ID)
	scribble(in)
	scribble(out)
	sameLease(t, "after changing Create's argument and result", get(t, s, want.ID), want)

	g := get(t, s, want.ID)
	scribble(g)
	sameLease(t, "after changing Get's result", get(t, s, want.ID), want)

	a := activate(t, s, want.ID)
	want = get(t, s, want.ID)
	scribble(a)
	sameLease(t, "after changing Activate's result", get(t, s, want.ID), want)

	r, err := s.Renew(ctx, want.ID, base.Add(2*ttl))
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	want = get(t, s, want.ID)
	scribble(r)
	sameLease(t, "after changing Renew's result", get(t, s, want.ID), want)

	ls, _, err := s.List(ctx, lease.Query{})
	if err != nil || len(ls) != 1 {
		t.Fatalf("List = %d leases, %v; want 1", len(ls), err)
	}
	scribble(ls[0])
	sameLease(t, "after changing List's result", get(t, s, want.ID), want)

	v := revoke(t, s, want.ID, lease.ReasonExplicit, base.Add(time.Minute))
	want = get(t, s, want.ID)
	scribble(v)
	sameLease(t, "after changing Revoke's result", get(t, s, want.ID), want)

	c := claimOne(t, s, base.Add(time.Minute), want.ID)
	want = get(t, s, want.ID)
	scribble(c.Lease)
	sameLease(t, "after changing Claim's lease", get(t, s, want.ID), want)
}

// ---- not found ----

func testNotFound(t *testing.T, s lease.Store) {
	ctx := t.Context()
	create(t, s, newLease("s1", "e1", "g1")) // the store is not empty
	id := lease.NewID(base)
	_, err := s.Get(ctx, id)
	wantErr(t, "Get", err, lease.ErrNotFound)
	wantErr(t, "Bind", s.Bind(ctx, id, "ref"), lease.ErrNotFound)
	_, err = s.Activate(ctx, id, "ref")
	wantErr(t, "Activate", err, lease.ErrNotFound)
	_, err = s.Renew(ctx, id, base.Add(ttl))
	wantErr(t, "Renew", err, lease.ErrNotFound)
	_, err = s.Revoke(ctx, id, lease.ReasonExplicit, base)
	wantErr(t, "Revoke", err, lease.ErrNotFound)
	err = s.Finish(ctx, lease.Claim{Lease: &lease.Lease{ID: id}, Fence: 1, Deadline: base.Add(hold)},
		lease.Outcome{At: base, Revoked: true})
	wantErr(t, "Finish", err, lease.ErrNotFound)
	n, err := s.RevokeMatching(ctx, lease.Selector{Subject: "nobody"}, lease.ReasonKillSwitch, base)
	if err != nil || n != 0 {
		t.Fatalf("RevokeMatching(unknown subject) = %d, %v; want 0, nil", n, err)
	}
}

// ---- Bind ----

func testBindPending(t *testing.T, s lease.Store) {
	want := create(t, s, newLease("s1", "e1", "g1"))
	if err := s.Bind(t.Context(), want.ID, "accessor-7"); err != nil {
		t.Fatalf("Bind: %v", err)
	}
	want.ExternalRef = "accessor-7"
	sameLease(t, "after Bind", get(t, s, want.ID), want)
}

func testBindNotPending(t *testing.T, s lease.Store) {
	for _, st := range []lease.State{lease.StateActive, lease.StateRevoking, lease.StateRevoked, lease.StateIrrevocable} {
		before, _ := prepare(t, s, newLease("s1", "e1", "g1"), st)
		wantErr(t, "Bind on "+string(st), s.Bind(t.Context(), before.ID, "late-ref"), lease.ErrWrongState)
		unchanged(t, s, before)
	}
}

func testBindRevocationAskedFor(t *testing.T, s lease.Store) {
	l := create(t, s, newLease("s1", "e1", "g1"))
	want := revoke(t, s, l.ID, lease.ReasonExplicit, base.Add(10*time.Second))
	if err := s.Bind(t.Context(), l.ID, "accessor-8"); err != nil {
		t.Fatalf("Bind on a pending lease whose revocation was asked for: %v", err)
	}
	want.ExternalRef = "accessor-8"
	sameLease(t, "after Bind", get(t, s, l.ID), want)
}

// ---- Activate ----

func testActivatePending(t *testing.T, s lease.Store) {
	l := create(t, s, newLease("s1", "e1", "g1"))
	got, err := s.Activate(t.Context(), l.ID, "accessor-1")
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}
	want := l.Clone()
	want.State = lease.StateActive
	want.ExternalRef = "accessor-1"
	want.DueAt = l.ExpiresAt
	sameLease(t, "Activate result", got, want)
	sameLease(t, "Get after Activate", get(t, s, l.ID), want)
	if !got.Active(base) {
		t.Errorf("Active(base) = false for a fresh active lease")
	}
}

func testActivateKeepsBoundRef(t *testing.T, s lease.Store) {
	a := create(t, s, newLease("s1", "e1", "g1"))
	if err := s.Bind(t.Context(), a.ID, "bound-a"); err != nil {
		t.Fatalf("Bind: %v", err)
	}
	if got := activate(t, s, a.ID); got.ExternalRef != "bound-a" {
		t.Errorf("Activate(ref \"\") ExternalRef = %q, want the bound %q", got.ExternalRef, "bound-a")
	}
	b := create(t, s, newLease("s1", "e1", "g1"))
	if err := s.Bind(t.Context(), b.ID, "bound-b"); err != nil {
		t.Fatalf("Bind: %v", err)
	}
	got, err := s.Activate(t.Context(), b.ID, "final-b")
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}
	if got.ExternalRef != "final-b" {
		t.Errorf("Activate(ref %q) ExternalRef = %q", "final-b", got.ExternalRef)
	}
}

func testActivateNotPending(t *testing.T, s lease.Store) {
	for _, st := range []lease.State{lease.StateActive, lease.StateRevoking, lease.StateRevoked, lease.StateIrrevocable} {
		before, _ := prepare(t, s, newLease("s1", "e1", "g1"), st)
		_, err := s.Activate(t.Context(), before.ID, "ref")
		wantErr(t, "Activate on "+string(st), err, lease.ErrWrongState)
		unchanged(t, s, before)
	}
}

func testActivateAfterReap(t *testing.T, s lease.Store) {
	l := create(t, s, newLease("s1", "e1", "g1"))
	deadline := l.DueAt
	c := claimOne(t, s, deadline, l.ID)
	_, err := s.Activate(t.Context(), l.ID, "ref")
	wantErr(t, "Activate of a reaped lease", err, lease.ErrWrongState)

	// The revocation failed and the lease is waiting to be retried: it
	// must still not become active.
	finish(t, s, c, lease.Outcome{At: deadline, RetryAt: deadline.Add(time.Minute), Err: "backend down"})
	before := get(t, s, l.ID)
	_, err = s.Activate(t.Context(), l.ID, "ref")
	wantErr(t, "Activate of a reaped lease waiting for a retry", err, lease.ErrWrongState)
	unchanged(t, s, before)
}

func testActivateAfterRevoke(t *testing.T, s lease.Store) {
	l := create(t, s, newLease("s1", "e1", "g1"))
	before := revoke(t, s, l.ID, lease.ReasonExplicit, base.Add(10*time.Second))
	_, err := s.Activate(t.Context(), l.ID, "ref")
	wantErr(t, "Activate after Revoke", err, lease.ErrWrongState)
	unchanged(t, s, before)
}

// ---- List ----

func testList(t *testing.T, s lease.Store) {
	states := []lease.State{lease.StatePending, lease.StateActive, lease.StateRevoking, lease.StateRevoked, lease.StateIrrevocable}
	var all []*lease.Lease
	for i := range 25 {
		l := newLease(fmt.Sprintf("s%d", i%3), fmt.Sprintf("e%d", i%2), fmt.Sprintf("g%d", i%4))
		got, _ := prepare(t, s, l, states[i%5])
		all = append(all, got)
	}
	slices.SortFunc(all, func(a, b *lease.Lease) int { return strings.Compare(a.ID, b.ID) })

	queries := []lease.Query{
		{},
		{Subject: "s1"},
		{Entitlement: "e0"},
		{GrantID: "g2"},
		{States: []lease.State{lease.StateActive}},
		{States: []lease.State{lease.StatePending, lease.StateRevoked}},
		{Subject: "s0", Entitlement: "e1"},
		{Subject: "s2", GrantID: "g1", States: []lease.State{lease.StateRevoking, lease.StateIrrevocable, lease.StateActive}},
		{Entitlement: "e1", States: []lease.State{lease.StateIrrevocable}},
		{Subject: "nobody"},
		{Subject: "s1", Entitlement: "e1", GrantID: "g3", States: []lease.State{lease.StatePending}},
	}
	for _, q := range queries {
		var want []string
		for _, l := range all {
			if (q.Subject == "" || l.Subject == q.Subject) &&
				(q.Entitlement == "" || l.Entitlement == q.Entitlement) &&
				(q.GrantID == "" || l.GrantID == q.GrantID) &&
				(len(q.States) == 0 || slices.Contains(q.States, l.State)) {
				want = append(want, l.ID)
			}
		}
		for _, size := range []int{0, 1, 4, 7, 1000, 5000} {
			q.PageSize = size
			got := listAll(t, s, q)
			if !slices.Equal(got, want) {
				t.Errorf("List(%+v) = %d ids %v\nwant %d ids %v", q, len(got), got, len(want), want)
			}
		}
	}
}

func testListPageSizeCap(t *testing.T, s lease.Store) {
	for range 1001 {
		create(t, s, newLease("s1", "e1", "g1"))
	}
	for _, size := range []int{0, 1001, 5000} {
		ls, next, err := s.List(t.Context(), lease.Query{PageSize: size})
		if err != nil {
			t.Fatalf("List(PageSize %d): %v", size, err)
		}
		if len(ls) == 0 || len(ls) > 1000 || next == "" {
			t.Errorf("List(PageSize %d) over 1001 leases = %d leases, token %q; want 1 to 1000 and a token", size, len(ls), next)
		}
	}
	if got := listAll(t, s, lease.Query{PageSize: 5000}); len(got) != 1001 {
		t.Errorf("paging with PageSize 5000 listed %d leases, want 1001", len(got))
	}
}

// listAll pages through List and checks the paging rules: pages in
// ascending id order, none longer than PageSize, a token exactly when more
// matches follow, listed leases equal to Get.
func listAll(t *testing.T, s lease.Store, q lease.Query) []string {
	t.Helper()
	var ids []string
	for page := 0; ; page++ {
		if page > 100 {
			t.Fatalf("List(%+v): more than 100 pages", q)
		}
		ls, next, err := s.List(t.Context(), q)
		if err != nil {
			t.Fatalf("List(%+v): %v", q, err)
		}
		if q.PageSize > 0 && len(ls) > q.PageSize {
			t.Fatalf("List(%+v) returned %d leases", q, len(ls))
		}
		if page > 0 && len(ls) == 0 {
			t.Fatalf("List(%+v): a token was returned but the next page is empty", q)
		}
		for _, l := range ls {
			if n := len(ids); n > 0 && l.ID <= ids[n-1] {
				t.Fatalf("List(%+v): id %s after %s (want ascending, each once)", q, l.ID, ids[n-1])
			}
			ids = append(ids, l.ID)
			sameLease(t, "listed lease", l, get(t, s, l.ID))
		}
		if next == "" {
			return ids
		}
		q.PageToken = next
	}
}

// ---- Renew ----

func testRenewActive(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	to := base.Add(2*ttl + 5*time.Millisecond)
	got, err := s.Renew(t.Context(), l.ID, to)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	want := l.Clone()
	want.ExpiresAt = to
	want.DueAt = to
	sameLease(t, "Renew result", got, want)
	sameLease(t, "Get after Renew", get(t, s, l.ID), want)
	wantNextDue(t, s, to)
	claimNone(t, s, l.ExpiresAt)
	claimOne(t, s, to, l.ID)
}

func testRenewHardEnd(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	got, err := s.Renew(t.Context(), l.ID, l.HardEnd)
	if err != nil {
		t.Fatalf("Renew to HardEnd: %v", err)
	}
	if !got.ExpiresAt.Equal(l.HardEnd) {
		t.Fatalf("Renew to HardEnd: ExpiresAt = %v, want %v", got.ExpiresAt, l.HardEnd)
	}
	_, err = s.Renew(t.Context(), l.ID, l.HardEnd.Add(time.Millisecond))
	wantErr(t, "Renew past HardEnd", err, lease.ErrPastHardEnd)
	unchanged(t, s, got)
}

func testRenewWrongState(t *testing.T, s lease.Store) {
	for _, st := range []lease.State{lease.StatePending, lease.StateRevoking, lease.StateRevoked, lease.StateIrrevocable} {
		before, _ := prepare(t, s, newLease("s1", "e1", "g1"), st)
		_, err := s.Renew(t.Context(), before.ID, base.Add(2*ttl))
		wantErr(t, "Renew of a "+string(st)+" lease", err, lease.ErrWrongState)
		unchanged(t, s, before)
	}
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	before := revoke(t, s, l.ID, lease.ReasonExplicit, base.Add(30*time.Minute))
	_, err := s.Renew(t.Context(), l.ID, base.Add(2*ttl))
	wantErr(t, "Renew of an active lease whose revocation was asked for", err, lease.ErrWrongState)
	unchanged(t, s, before)
}

// ---- Revoke ----

func testRevokeActive(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	at := base.Add(10 * time.Minute)
	got := revoke(t, s, l.ID, lease.ReasonExplicit, at)
	want := l.Clone()
	want.DueAt = at
	want.RevokeReason = lease.ReasonExplicit
	want.RevokeRequestedAt = at
	sameLease(t, "Revoke result", got, want)
	sameLease(t, "Get after Revoke", get(t, s, l.ID), want)
	if got.Active(at.Add(-time.Second)) {
		t.Errorf("Active() = true after Revoke")
	}
	if !got.EndDue().Equal(at) {
		t.Errorf("EndDue = %v, want %v", got.EndDue(), at)
	}
	wantNextDue(t, s, at)
	claimNone(t, s, at.Add(-time.Millisecond))
	claimOne(t, s, at, l.ID)
}

func testRevokePending(t *testing.T, s lease.Store) {
	l := create(t, s, newLease("s1", "e1", "g1"))
	at := base.Add(10 * time.Second)
	got := revoke(t, s, l.ID, lease.ReasonShutdown, at)
	want := l.Clone()
	want.DueAt = at
	want.RevokeReason = lease.ReasonShutdown
	want.RevokeRequestedAt = at
	sameLease(t, "Revoke result", got, want)
	sameLease(t, "Get after Revoke", get(t, s, l.ID), want)
	claimOne(t, s, at, l.ID)
}

func testRevokeUnchanged(t *testing.T, s lease.Store) {
	for _, st := range []lease.State{lease.StateRevoking, lease.StateRevoked, lease.StateIrrevocable} {
		before, _ := prepare(t, s, newLease("s1", "e1", "g1"), st)
		// Earlier than any time recorded so far, so only the state can
		// explain leaving the lease alone.
		got := revoke(t, s, before.ID, lease.ReasonKillSwitch, base)
		sameLease(t, "Revoke of a "+string(st)+" lease", got, before)
		unchanged(t, s, before)
	}
}

func testRevokeRepeated(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	first := revoke(t, s, l.ID, lease.ReasonExplicit, base.Add(10*time.Minute))
	got := revoke(t, s, l.ID, lease.ReasonKillSwitch, base.Add(20*time.Minute))
	sameLease(t, "second Revoke, later", got, first)
	unchanged(t, s, first)
	got = revoke(t, s, l.ID, lease.ReasonExplicit, base.Add(10*time.Minute))
	sameLease(t, "second Revoke, same time", got, first)
}

func testRevokeEarlierWins(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	revoke(t, s, l.ID, lease.ReasonGrantEnded, base.Add(50*time.Minute))
	at := base.Add(10 * time.Minute)
	got := revoke(t, s, l.ID, lease.ReasonKillSwitch, at)
	want := l.Clone()
	want.DueAt = at
	want.RevokeReason = lease.ReasonKillSwitch
	want.RevokeRequestedAt = at
	sameLease(t, "earlier Revoke after a later one", got, want)
	unchanged(t, s, want)
}

func testRevokeNeverDelays(t *testing.T, s lease.Store) {
	a, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	got := revoke(t, s, a.ID, lease.ReasonExplicit, a.ExpiresAt.Add(time.Hour))
	if !got.DueAt.Equal(a.DueAt) {
		t.Errorf("Revoke after expiry moved DueAt from %v to %v", a.DueAt, got.DueAt)
	}
	if got.RevokeReason != lease.ReasonExplicit {
		t.Errorf("RevokeReason = %q, want %q", got.RevokeReason, lease.ReasonExplicit)
	}
	p := create(t, s, newLease("s1", "e1", "g1"))
	got = revoke(t, s, p.ID, lease.ReasonExplicit, p.DueAt.Add(time.Minute))
	if !got.DueAt.Equal(p.DueAt) {
		t.Errorf("Revoke after the pending deadline moved DueAt from %v to %v", p.DueAt, got.DueAt)
	}
	wantNextDue(t, s, p.DueAt)
}

// ---- RevokeMatching ----

func testRevokeMatching(sel lease.Selector) func(t *testing.T, s lease.Store) {
	return func(t *testing.T, s lease.Store) {
		states := []lease.State{lease.StatePending, lease.StateActive, lease.StateRevoking, lease.StateRevoked, lease.StateIrrevocable}
		var before []*lease.Lease
		for i := range 30 {
			l := newLease(fmt.Sprintf("s%d", i%2), fmt.Sprintf("e%d", i%3), fmt.Sprintf("g%d", i%4))
			got, _ := prepare(t, s, l, states[i%5])
			before = append(before, got)
		}
		// An active lease whose revocation was already asked for, earlier
		// than the kill switch: not changed, not counted.
		asked, _ := prepare(t, s, newLease("s1", "e2", "g0"), lease.StateActive)
		before = append(before, revoke(t, s, asked.ID, lease.ReasonExplicit, base.Add(5*time.Second)))

		at := base.Add(10 * time.Second)
		matches := func(l *lease.Lease) bool {
			return sel.Subject != "" && l.Subject == sel.Subject ||
				sel.Entitlement != "" && l.Entitlement == sel.Entitlement ||
				sel.GrantID != "" && l.GrantID == sel.GrantID
		}
		wantN := 0
		for _, l := range before {
			if matches(l) && (l.State == lease.StatePending || l.State == lease.StateActive) && l.RevokeReason == "" {
				wantN++
			}
		}
		n, err := s.RevokeMatching(t.Context(), sel, lease.ReasonKillSwitch, at)
		if err != nil {
			t.Fatalf("RevokeMatching(%+v): %v", sel, err)
		}
		if n != wantN {
			t.Errorf("RevokeMatching(%+v) = %d, want %d", sel, n, wantN)
		}
		for _, l := range before {
			want := l
			if matches(l) && (l.State == lease.StatePending || l.State == lease.StateActive) && l.RevokeReason == "" {
				want = l.Clone()
				want.RevokeReason = lease.ReasonKillSwitch
				want.RevokeRequestedAt = at
				want.DueAt = at
			}
			sameLease(t, fmt.Sprintf("%s lease %s/%s/%s", l.State, l.Subject, l.Entitlement, l.GrantID), get(t, s, l.ID), want)
		}
		n, err = s.RevokeMatching(t.Context(), sel, lease.ReasonKillSwitch, at.Add(time.Second))
		if err != nil || n != 0 {
			t.Errorf("repeated RevokeMatching(%+v) = %d, %v; want 0, nil", sel, n, err)
		}
	}
}

func testRevokeMatchingBadSelector(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	for _, sel := range []lease.Selector{{}, {Subject: "s1", Entitlement: "e1"}, {Entitlement: "e1", GrantID: "g1"}} {
		if _, err := s.RevokeMatching(t.Context(), sel, lease.ReasonKillSwitch, base); err == nil {
			t.Errorf("RevokeMatching(%+v): no error, want one (exactly one field must be set)", sel)
		}
	}
	unchanged(t, s, l)
}

// ---- Claim ----

func testClaimOnlyDue(t *testing.T, s lease.Store) {
	p := create(t, s, newLease("s1", "e1", "g1"))
	a, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	claimNone(t, s, base)
	claimNone(t, s, p.DueAt.Add(-time.Millisecond))
	c := claimOne(t, s, p.DueAt, p.ID)
	finish(t, s, c, lease.Outcome{At: p.DueAt, Revoked: true})
	claimNone(t, s, a.DueAt.Add(-time.Millisecond))
	claimOne(t, s, a.DueAt, a.ID)
}

func testClaimMax(t *testing.T, s lease.Store) {
	want := map[string]bool{}
	for range 10 {
		want[create(t, s, newLease("s1", "e1", "g1")).ID] = true
	}
	now := base.Add(pendingFor)
	got := map[string]bool{}
	for i, n := range []int{3, 3, 3, 1, 0} {
		cs := claim(t, s, now, 3)
		if len(cs) != n {
			t.Fatalf("Claim #%d with max 3 returned %d, want %d", i+1, len(cs), n)
		}
		for _, id := range claimIDs(cs) {
			if got[id] || !want[id] {
				t.Fatalf("Claim returned %s again or a lease never created", id)
			}
			got[id] = true
		}
	}
}

func testClaimFields(t *testing.T, s lease.Store) {
	before, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	now := before.ExpiresAt
	c := claimOne(t, s, now, before.ID)
	if c.Fence <= before.Fence {
		t.Errorf("Claim.Fence = %d, not above the lease's fence %d", c.Fence, before.Fence)
	}
	if !c.Deadline.Equal(now.Add(hold)) {
		t.Errorf("Claim.Deadline = %v, want now+hold %v", c.Deadline, now.Add(hold))
	}
	want := before.Clone()
	want.State = lease.StateRevoking
	want.Fence = c.Fence
	want.RevokeReason = lease.ReasonExpired
	sameLease(t, "Claim.Lease", c.Lease, want)
	sameLease(t, "Get after Claim", get(t, s, before.ID), want)
	if !c.Lease.EndDue().Equal(before.ExpiresAt) {
		t.Errorf("EndDue of an expired lease = %v, want ExpiresAt %v", c.Lease.EndDue(), before.ExpiresAt)
	}
}

func testClaimPendingReap(t *testing.T, s lease.Store) {
	l := create(t, s, newLease("s1", "e1", "g1"))
	c := claimOne(t, s, l.DueAt, l.ID)
	want := l.Clone()
	want.State = lease.StateRevoking
	want.Fence = c.Fence
	want.RevokeReason = lease.ReasonPendingTimeout
	want.RevokeRequestedAt = l.DueAt
	sameLease(t, "reaped pending lease", c.Lease, want)
	if !c.Lease.EndDue().Equal(l.DueAt) {
		t.Errorf("EndDue of a reaped pending lease = %v, want its pending deadline %v", c.Lease.EndDue(), l.DueAt)
	}
}

func testClaimKeepsReason(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	at := base.Add(10 * time.Minute)
	want := revoke(t, s, l.ID, lease.ReasonExplicit, at)
	c := claimOne(t, s, at, l.ID)
	want.State = lease.StateRevoking
	want.Fence = c.Fence
	sameLease(t, "claimed after an explicit Revoke", c.Lease, want)
}

func testClaimHeld(t *testing.T, s lease.Store) {
	l := create(t, s, newLease("s1", "e1", "g1"))
	now := l.DueAt
	claimOne(t, s, now, l.ID)
	claimNone(t, s, now)
	claimNone(t, s, now.Add(hold-time.Millisecond))
}

func testClaimLapsed(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	now := l.ExpiresAt
	first := claimOne(t, s, now, l.ID)
	wantNextDue(t, s, first.Deadline)
	second := claimOne(t, s, first.Deadline, l.ID)
	if second.Fence <= first.Fence {
		t.Fatalf("re-claim after the deadline: fence %d, want above %d", second.Fence, first.Fence)
	}
	if !second.Deadline.Equal(first.Deadline.Add(hold)) {
		t.Errorf("re-claim Deadline = %v, want %v", second.Deadline, first.Deadline.Add(hold))
	}
	want := first.Lease.Clone()
	want.Fence = second.Fence
	sameLease(t, "re-claimed lease", second.Lease, want)
	claimNone(t, s, first.Deadline.Add(hold-time.Millisecond))
}

func testClaimConcurrent(t *testing.T, s lease.Store) {
	const (
		leases   = 500
		claimers = 8
		max      = 7
	)
	created := map[string]bool{}
	for range leases {
		l := newLease("s1", "e1", "g1")
		l.DueAt = base
		created[create(t, s, l).ID] = true
	}
	got := make([][]lease.Claim, claimers)
	var wg sync.WaitGroup
	for i := range claimers {
		wg.Go(func() {
			for {
				cs, err := s.Claim(t.Context(), base, max, hold)
				if err != nil {
					t.Errorf("claimer %d: Claim: %v", i, err)
					return
				}
				if len(cs) > max {
					t.Errorf("claimer %d: Claim returned %d, max %d", i, len(cs), max)
				}
				if len(cs) == 0 {
					return
				}
				got[i] = append(got[i], cs...)
			}
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for _, cs := range got {
		for _, c := range cs {
			seen[c.Lease.ID]++
			if c.Fence != c.Lease.Fence {
				t.Errorf("Claim.Fence %d != Claim.Lease.Fence %d", c.Fence, c.Lease.Fence)
			}
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("lease %s claimed %d times", id, n)
		}
		if !created[id] {
			t.Errorf("claimed unknown lease %s", id)
		}
	}
	if len(seen) != leases {
		t.Errorf("%d distinct leases claimed, want %d", len(seen), leases)
	}
	claimNone(t, s, base)
}

func testClaimTerminalNever(t *testing.T, s lease.Store) {
	prepare(t, s, newLease("s1", "e1", "g1"), lease.StateRevoked)
	prepare(t, s, newLease("s1", "e1", "g1"), lease.StateIrrevocable)
	wantNoneDue(t, s)
	claimNone(t, s, base.Add(1000*time.Hour))
}

// ---- Finish ----

func testFinishRevoked(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	c := claimOne(t, s, l.ExpiresAt, l.ID)
	at := l.ExpiresAt.Add(250 * time.Millisecond)
	finish(t, s, c, lease.Outcome{At: at, Revoked: true})
	want := c.Lease.Clone()
	want.State = lease.StateRevoked
	want.RevokedAt = at
	sameLease(t, "after Finish revoked", get(t, s, l.ID), want)
	wantNoneDue(t, s)
	claimNone(t, s, base.Add(1000*time.Hour))
}

func testFinishIrrevocable(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	c := claimOne(t, s, l.ExpiresAt, l.ID)
	at := l.ExpiresAt.Add(time.Second)
	finish(t, s, c, lease.Outcome{At: at, Irrevocable: true, Err: "issuer: backend rejected the request: role gone"})
	want := c.Lease.Clone()
	want.State = lease.StateIrrevocable
	want.RevokedAt = at
	want.Attempts = c.Lease.Attempts + 1
	want.LastError = "issuer: backend rejected the request: role gone"
	sameLease(t, "after Finish irrevocable", get(t, s, l.ID), want)
	wantNoneDue(t, s)
	claimNone(t, s, base.Add(1000*time.Hour))
}

func testFinishRetry(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	now := l.ExpiresAt
	c := claimOne(t, s, now, l.ID)
	retryAt := now.Add(5 * time.Minute)
	finish(t, s, c, lease.Outcome{At: now.Add(time.Second), RetryAt: retryAt, Err: "issuer: backend unavailable"})
	want := c.Lease.Clone()
	want.State = lease.StateActive
	want.DueAt = retryAt
	want.Attempts = 1
	want.LastError = "issuer: backend unavailable"
	sameLease(t, "after Finish retry", get(t, s, l.ID), want)
	if want.Active(now) {
		t.Errorf("Active() = true for a lease waiting for a revocation retry")
	}
	_, err := s.Renew(t.Context(), l.ID, l.HardEnd)
	wantErr(t, "Renew of a lease waiting for a revocation retry", err, lease.ErrWrongState)
	wantNextDue(t, s, retryAt)
	claimNone(t, s, retryAt.Add(-time.Millisecond))
	again := claimOne(t, s, retryAt, l.ID)
	if again.Fence <= c.Fence {
		t.Errorf("claim after retry: fence %d, want above %d", again.Fence, c.Fence)
	}
	if again.Lease.Attempts != 1 {
		t.Errorf("claim after retry: Attempts %d, want 1", again.Lease.Attempts)
	}
	finish(t, s, again, lease.Outcome{At: retryAt, RetryAt: retryAt.Add(10 * time.Minute), Err: "second failure"})
	if got := get(t, s, l.ID); got.Attempts != 2 || got.LastError != "second failure" {
		t.Errorf("after a second retry: Attempts %d, LastError %q; want 2, %q", got.Attempts, got.LastError, "second failure")
	}
}

func testFinishRetryPending(t *testing.T, s lease.Store) {
	l := create(t, s, newLease("s1", "e1", "g1"))
	c := claimOne(t, s, l.DueAt, l.ID)
	retryAt := l.DueAt.Add(time.Minute)
	finish(t, s, c, lease.Outcome{At: l.DueAt, RetryAt: retryAt, Err: "backend down"})
	want := c.Lease.Clone()
	want.State = lease.StatePending
	want.DueAt = retryAt
	want.Attempts = 1
	want.LastError = "backend down"
	sameLease(t, "reaped pending lease after Finish retry", get(t, s, l.ID), want)
	_, err := s.Activate(t.Context(), l.ID, "ref")
	wantErr(t, "Activate of a reaped lease waiting for a retry", err, lease.ErrWrongState)
	claimOne(t, s, retryAt, l.ID)
}

func testFinishFenced(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	first := claimOne(t, s, l.ExpiresAt, l.ID)
	second := claimOne(t, s, first.Deadline, l.ID) // the first holder was too slow
	before := get(t, s, l.ID)
	for _, out := range []lease.Outcome{
		{At: first.Deadline, Revoked: true},
		{At: first.Deadline, Irrevocable: true, Err: "x"},
		{At: first.Deadline, RetryAt: first.Deadline.Add(time.Hour), Err: "x"},
	} {
		wantErr(t, "Finish with a superseded claim", s.Finish(t.Context(), first, out), lease.ErrFenced)
		unchanged(t, s, before)
	}
	finish(t, s, second, lease.Outcome{At: second.Deadline, Revoked: true})
	after := get(t, s, l.ID)
	wantErr(t, "Finish with a superseded claim after the new holder finished",
		s.Finish(t.Context(), first, lease.Outcome{At: second.Deadline, RetryAt: second.Deadline, Err: "x"}), lease.ErrFenced)
	unchanged(t, s, after)
}

func testFinishTwice(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	c := claimOne(t, s, l.ExpiresAt, l.ID)
	finish(t, s, c, lease.Outcome{At: l.ExpiresAt, Revoked: true})
	after := get(t, s, l.ID)
	for _, out := range []lease.Outcome{
		{At: l.ExpiresAt, Revoked: true},
		{At: l.ExpiresAt, RetryAt: l.ExpiresAt.Add(time.Minute), Err: "x"},
	} {
		err := s.Finish(t.Context(), c, out)
		if !errors.Is(err, lease.ErrWrongState) && !errors.Is(err, lease.ErrFenced) {
			t.Errorf("second Finish of one claim: error %v, want ErrWrongState or ErrFenced", err)
		}
		unchanged(t, s, after)
	}
}

func testFinishAfterLapseUnclaimed(t *testing.T, s lease.Store) {
	l, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	c := claimOne(t, s, l.ExpiresAt, l.ID)
	// The deadline passed but no one claimed the lease again: the slow
	// holder's outcome still counts.
	at := c.Deadline.Add(time.Minute)
	finish(t, s, c, lease.Outcome{At: at, Revoked: true})
	if got := get(t, s, l.ID); got.State != lease.StateRevoked {
		t.Fatalf("state %s, want revoked", got.State)
	}
}

// ---- NextDue ----

func testNextDueEmpty(t *testing.T, s lease.Store) {
	wantNoneDue(t, s)
}

func testNextDueEarliest(t *testing.T, s lease.Store) {
	a, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive)
	wantNextDue(t, s, a.ExpiresAt)
	for _, d := range []time.Duration{3 * time.Minute, time.Minute, 2 * time.Minute} {
		l := newLease("s1", "e1", "g1")
		l.DueAt = base.Add(d)
		create(t, s, l)
	}
	wantNextDue(t, s, base.Add(time.Minute))
}

func testNextDueClaimDeadlines(t *testing.T, s lease.Store) {
	a, _ := prepare(t, s, newLease("s1", "e1", "g1"), lease.StateActive) // due base+1h
	p := create(t, s, newLease("s1", "e1", "g1"))                        // due base+1m
	c := claimOne(t, s, p.DueAt, p.ID)
	wantNextDue(t, s, c.Deadline) // base+1m+30s, before a's expiry
	again := claimOne(t, s, c.Deadline, p.ID)
	finish(t, s, again, lease.Outcome{At: c.Deadline, Revoked: true})
	wantNextDue(t, s, a.ExpiresAt)
	claimOne(t, s, a.ExpiresAt, a.ID)
	wantNextDue(t, s, a.ExpiresAt.Add(hold))
}
