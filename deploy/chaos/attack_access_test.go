package chaos

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/access"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// approvalPolicy: agents request database admin access that two leads
// from different groups approve. The migrator agent and lead-b are one
// person; lead-a and admin-a are another.
const approvalPolicy = `
version: 1
trust_domains: [mayfly.test]
groups:
  agents: ["spiffe://mayfly.test/agents/*"]
  db-leads: ["spiffe://mayfly.test/people/lead-a", "spiffe://mayfly.test/people/lead-b", "spiffe://mayfly.test/people/admin-a"]
  security: ["spiffe://mayfly.test/people/sec"]
identities:
  - ["spiffe://mayfly.test/agents/migrator", "spiffe://mayfly.test/people/lead-b"]
  - ["spiffe://mayfly.test/people/lead-a", "spiffe://mayfly.test/people/admin-a"]
entitlements:
  orders-db-admin:
    description: DDL on the orders database
    owner: group:security
    issuer: jwt
    jwt: { audience: https://orders-db.mayfly.test }
    ttl: 10m
    max_ttl: 1h
    requestable_by: [group:agents]
    approval:
      approvals: 2
      approvers: [group:db-leads, group:security]
      distinct_groups: true
      max_duration: 2h
      pending_ttl: 30m
`

const (
	migrator = "spiffe://mayfly.test/agents/migrator"
	reporter = "spiffe://mayfly.test/agents/reporter"
	leadA    = "spiffe://mayfly.test/people/lead-a"
	adminA   = "spiffe://mayfly.test/people/admin-a"
	leadB    = "spiffe://mayfly.test/people/lead-b"
	secLead  = "spiffe://mayfly.test/people/sec"
)

// TestAttackApprovals: approvals that must not count, through the real
// AccessService; every refusal is also a decision record.
func TestAttackApprovals(t *testing.T) {
	e := startAttackEnv(t, attackOptions{policy: approvalPolicy, clock: true})
	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return c
	}
	create := func(t *testing.T, who string) *mayflyv1.AccessRequest {
		t.Helper()
		r, err := mayflyv1.NewAccessServiceClient(e.Dial(t, who)).CreateAccessRequest(ctx(), &mayflyv1.CreateAccessRequestRequest{
			Entitlement: "orders-db-admin", Reason: "add an index", Duration: durationpb.New(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetRequest()
	}
	review := func(t *testing.T, who, id, digest string) (*mayflyv1.AccessRequest, error) {
		resp, err := mayflyv1.NewAccessServiceClient(e.Dial(t, who)).ReviewAccessRequest(ctx(), &mayflyv1.ReviewAccessRequestRequest{
			Id: id, Decision: mayflyv1.ReviewDecision_REVIEW_DECISION_APPROVE, Comment: "ok", Digest: digest})
		return resp.GetRequest(), err
	}
	get := func(t *testing.T, id string) *mayflyv1.AccessRequest {
		t.Helper()
		r, err := mayflyv1.NewAccessServiceClient(e.Dial(t, secLead)).GetAccessRequest(ctx(), &mayflyv1.GetAccessRequestRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetRequest()
	}
	// refused checks a review is refused with code, is recorded, and
	// leaves the request without a new approval.
	refused := func(t *testing.T, who string, r *mayflyv1.AccessRequest, digest string, code codes.Code, msg, recErr string) {
		t.Helper()
		before := len(get(t, r.GetId()).GetApprovals())
		_, err := review(t, who, r.GetId(), digest)
		wantStatus(t, err, code, msg)
		if n := len(get(t, r.GetId()).GetApprovals()); n != before {
			t.Errorf("the refused approval counted: %d approvals, had %d", n, before)
		}
		e.wantRecorded(t, access.ActionReview, who, r.GetId(), access.OutcomeRefused, recErr)
	}

	Matrix(t, Case{ID: "A4", Title: "approvals that must not count (and are recorded as refused)"}, []Attack{
		{"by the requester", func(t *testing.T) {
			r := create(t, migrator)
			refused(t, migrator, r, r.GetDigest(), codes.PermissionDenied, "same person or agent", "reviewer is the requester")
		}},
		{"by another identity of the requester", func(t *testing.T) {
			r := create(t, migrator)
			refused(t, leadB, r, r.GetDigest(), codes.PermissionDenied, "same person or agent", "reviewer is the requester")
		}},
		{"after the request was edited", func(t *testing.T) {
			r := create(t, migrator)
			stored, err := e.Access.GetRequest(ctx(), r.GetId())
			if err != nil {
				t.Fatal(err)
			}
			stored.Reason = "drop the orders table"
			stored.Duration = 2 * time.Hour
			if _, err := e.Access.UpdateRequest(ctx(), stored); err != nil {
				t.Fatal(err)
			}
			refused(t, leadA, r, r.GetDigest(), codes.FailedPrecondition, "changed", "changed")
		}},
		{"replayed on another request", func(t *testing.T) {
			first := create(t, migrator)
			other := create(t, reporter)
			refused(t, leadA, other, first.GetDigest(), codes.FailedPrecondition, "changed", "changed")
			if _, err := review(t, leadA, first.GetId(), first.GetDigest()); err != nil {
				t.Fatalf("control: the approval on its own request: %v", err)
			}
		}},
		{"after expiry", func(t *testing.T) {
			r := create(t, reporter)
			e.Clock.Advance(31 * time.Minute)
			refused(t, leadA, r, r.GetDigest(), codes.FailedPrecondition, "closed", "closed")
		}},
		{"concurrent double approval by one approver", func(t *testing.T) {
			r := create(t, migrator)
			oks, errs := raceReviews(t, 16, func(int) (string, error) {
				_, err := review(t, leadA, r.GetId(), r.GetDigest())
				return leadA, err
			})
			checkRace(t, e, r, get(t, r.GetId()), oks, errs)
		}},
		{"concurrent approvals by two identities of one approver", func(t *testing.T) {
			r := create(t, reporter)
			oks, errs := raceReviews(t, 16, func(i int) (string, error) {
				who := []string{leadA, adminA}[i%2]
				_, err := review(t, who, r.GetId(), r.GetDigest())
				return who, err
			})
			checkRace(t, e, r, get(t, r.GetId()), oks, errs)
		}},
	})
}

// raceReviews runs n reviews at once and returns how many succeeded and
// the errors of the others.
func raceReviews(t *testing.T, n int, f func(i int) (string, error)) (int, []error) {
	t.Helper()
	var (
		mu   sync.Mutex
		oks  int
		errs []error
		wg   sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := f(i)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				oks++
			} else {
				errs = append(errs, err)
			}
		})
	}
	close(start)
	wg.Wait()
	return oks, errs
}

// checkRace: exactly one of the racing approvals counted; the others were
// refused as already decided (or asked to retry), and recorded.
func checkRace(t *testing.T, e *attackEnv, r, after *mayflyv1.AccessRequest, oks int, errs []error) {
	t.Helper()
	if oks != 1 {
		t.Errorf("%d racing approvals by one person succeeded, want 1", oks)
	}
	for _, err := range errs {
		if c := status.Code(err); c != codes.FailedPrecondition && c != codes.Aborted {
			t.Errorf("a racing approval: %v, want FailedPrecondition (already reviewed) or Aborted", err)
		}
	}
	if n := len(after.GetApprovals()); n != 1 || after.GetState() != mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING {
		t.Errorf("after the race: %d approvals, %v; want 1 approval and still pending (2 needed)", n, after.GetState())
	}
	refusedRecords := 0
	for _, rec := range e.records(t) {
		if rec.RequestID == r.GetId() && rec.Action == access.ActionReview && rec.Outcome == access.OutcomeRefused {
			refusedRecords++
		}
	}
	if refusedRecords < len(errs) {
		t.Errorf("%d refused approvals, %d refusal records", len(errs), refusedRecords)
	}
}
