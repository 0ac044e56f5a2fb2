package broker_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// governancePolicy lets an AI agent (a workload) request database admin
// access that two leads from different groups must approve, and lets the
// on-call workload break glass.
const governancePolicy = `
version: 1
trust_domains: [mayfly.test]
groups:
  agents: ["spiffe://mayfly.test/agents/*"]
  db-leads: ["spiffe://mayfly.test/people/lead-a", "spiffe://mayfly.test/people/lead-b"]
  security: ["spiffe://mayfly.test/people/sec"]
  oncall: ["spiffe://mayfly.test/people/oncall"]
admins: ["spiffe://mayfly.test/admin/*"]
identities:
  - ["spiffe://mayfly.test/agents/migrator", "spiffe://mayfly.test/people/lead-b"]
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
    require: { reason: true, ticket: "^CHG-[0-9]+$" }
    break_glass:
      allowed: [group:oncall]
      max_ttl: 30m
      review_within: 24h
`

const (
	agentID  = "spiffe://mayfly.test/agents/migrator"
	leadA    = "spiffe://mayfly.test/people/lead-a"
	leadB    = "spiffe://mayfly.test/people/lead-b"
	secID    = "spiffe://mayfly.test/people/sec"
	oncallID = "spiffe://mayfly.test/people/oncall"
)

func TestAgentRequestTwoApprovalsThenIssue(t *testing.T) {
	env := brokertest.Start(t, brokertest.Options{Policy: []byte(governancePolicy)})
	agentConn := env.Dial(t, agentID)
	agentAccess := mayflyv1.NewAccessServiceClient(agentConn)
	agentCreds := mayflyv1.NewCredentialServiceClient(agentConn)

	// Without a grant, issuance points at the request flow.
	_, err := agentCreds.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-db-admin"})
	wantCode(t, err, codes.PermissionDenied, "create an access request")

	// Bad requests are refused with what to fix.
	_, err = agentAccess.CreateAccessRequest(ctx(t), &mayflyv1.CreateAccessRequestRequest{Entitlement: "orders-db-admin",
		Reason: "add index", Ticket: "JIRA-1", Duration: durationpb.New(time.Hour)})
	wantCode(t, err, codes.InvalidArgument, "CHG-")
	_, err = agentAccess.CreateAccessRequest(ctx(t), &mayflyv1.CreateAccessRequestRequest{Entitlement: "orders-db-admin",
		Reason: "add index", Ticket: "CHG-7", Duration: durationpb.New(5 * time.Hour)})
	wantCode(t, err, codes.InvalidArgument, "2h")

	created, err := agentAccess.CreateAccessRequest(ctx(t), &mayflyv1.CreateAccessRequestRequest{Entitlement: "orders-db-admin",
		Reason: "add index for the orders report", Ticket: "CHG-7", Duration: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	r := created.GetRequest()
	if r.GetState() != mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING || r.GetApprovalsNeeded() != 2 || r.GetDigest() == "" {
		t.Fatalf("created = %v", r)
	}

	// The agent follows its request live.
	watch, err := agentAccess.WatchAccessRequest(ctx(t), &mayflyv1.WatchAccessRequestRequest{Id: r.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || first.GetRequest().GetState() != mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING {
		t.Fatalf("first watch event = %v, %v", first, err)
	}

	review := func(who string, approve bool, digest string) (*mayflyv1.AccessRequest, error) {
		d := mayflyv1.ReviewDecision_REVIEW_DECISION_APPROVE
		if !approve {
			d = mayflyv1.ReviewDecision_REVIEW_DECISION_DENY
		}
		resp, err := mayflyv1.NewAccessServiceClient(env.Dial(t, who)).ReviewAccessRequest(ctx(t),
			&mayflyv1.ReviewAccessRequestRequest{Id: r.GetId(), Decision: d, Comment: "ok", Digest: digest})
		return resp.GetRequest(), err
	}
	// The requester cannot approve, under its own identity or another it holds.
	_, err = review(agentID, true, r.GetDigest())
	wantCode(t, err, codes.PermissionDenied, "same person or agent")
	_, err = review(leadB, true, r.GetDigest())
	wantCode(t, err, codes.PermissionDenied, "same person or agent")
	// An outsider cannot approve; a stale digest is refused.
	_, err = review(oncallID, true, r.GetDigest())
	wantCode(t, err, codes.PermissionDenied, "not an approver")
	_, err = review(leadA, true, "sha256:not-what-you-saw")
	wantCode(t, err, codes.FailedPrecondition, "changed")

	after1, err := review(leadA, true, r.GetDigest())
	if err != nil || after1.GetState() != mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING || len(after1.GetApprovals()) != 1 {
		t.Fatalf("after the first approval: %v, %v", after1, err)
	}
	_, err = review(leadA, true, r.GetDigest())
	wantCode(t, err, codes.FailedPrecondition, "once")
	after2, err := review(secID, true, r.GetDigest())
	if err != nil || after2.GetState() != mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED || after2.GetGrantId() == "" {
		t.Fatalf("after the second approval: %v, %v", after2, err)
	}
	// The watch ends with the approved request.
	var last *mayflyv1.AccessRequest
	for {
		ev, err := watch.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = ev.GetRequest()
	}
	if last.GetState() != mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED {
		t.Fatalf("watch ended with %v", last)
	}

	// Now the agent can issue, capped by the grant.
	iss, err := agentCreds.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-db-admin", Ttl: durationpb.New(3 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	l := iss.GetLease()
	if l.GetGrantId() != after2.GetGrantId() || !iss.GetTtlClamped() {
		t.Fatalf("lease %v not under grant %s or not clamped", l, after2.GetGrantId())
	}
	grants, err := agentAccess.ListGrants(ctx(t), &mayflyv1.ListGrantsRequest{})
	if err != nil || len(grants.GetGrants()) != 1 {
		t.Fatalf("grants = %v, %v", grants, err)
	}
	if end := grants.GetGrants()[0].GetEnd().AsTime(); l.GetHardEnd().AsTime().After(end) {
		t.Fatalf("lease hard end %v past the grant's end %v", l.GetHardEnd().AsTime(), end)
	}

	// The owner revokes the grant: its lease ends with it, and issuance stops.
	rg, err := mayflyv1.NewAccessServiceClient(env.Dial(t, secID)).RevokeGrant(ctx(t), &mayflyv1.RevokeGrantRequest{Id: after2.GetGrantId(), Reason: "done"})
	if err != nil || rg.GetLeasesRevoked() != 1 {
		t.Fatalf("RevokeGrant = %v, %v", rg, err)
	}
	waitState(t, agentCreds, l.GetId(), mayflyv1.LeaseState_LEASE_STATE_REVOKED, 2*time.Second)
	_, err = agentCreds.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-db-admin"})
	wantCode(t, err, codes.PermissionDenied, "")
}

func TestBreakGlassAndWhatIf(t *testing.T) {
	env := brokertest.Start(t, brokertest.Options{Policy: []byte(governancePolicy)})
	oncall := env.Dial(t, oncallID)
	_, err := mayflyv1.NewAccessServiceClient(env.Dial(t, agentID)).BreakGlass(ctx(t),
		&mayflyv1.BreakGlassRequest{Entitlement: "orders-db-admin", Reason: "prod down"})
	wantCode(t, err, codes.PermissionDenied, "")
	_, err = mayflyv1.NewAccessServiceClient(oncall).BreakGlass(ctx(t), &mayflyv1.BreakGlassRequest{Entitlement: "orders-db-admin"})
	wantCode(t, err, codes.InvalidArgument, "reason")

	bg, err := mayflyv1.NewAccessServiceClient(oncall).BreakGlass(ctx(t),
		&mayflyv1.BreakGlassRequest{Entitlement: "orders-db-admin", Reason: "prod down INC-9", Ttl: durationpb.New(4 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	g := bg.GetGrant()
	if g.GetKind() != mayflyv1.GrantKind_GRANT_KIND_BREAK_GLASS || g.GetEnd().AsTime().Sub(g.GetStart().AsTime()) != 30*time.Minute || g.GetReviewDue() == nil {
		t.Fatalf("break-glass grant = %v", g)
	}
	iss, err := mayflyv1.NewCredentialServiceClient(oncall).IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-db-admin"})
	if err != nil || iss.GetLease().GetGrantId() != g.GetId() {
		t.Fatalf("issue under break-glass = %v, %v", iss, err)
	}
	// Security sees the review; the break-glass user may not review itself.
	reviews, err := mayflyv1.NewReviewServiceClient(env.Dial(t, secID)).ListReviews(ctx(t), &mayflyv1.ListReviewsRequest{IncludeUpcoming: true})
	if err != nil || len(reviews.GetReviews()) == 0 {
		t.Fatalf("reviews = %v, %v", reviews, err)
	}
	_, err = mayflyv1.NewReviewServiceClient(oncall).CompleteBreakGlassReview(ctx(t), &mayflyv1.CompleteBreakGlassReviewRequest{GrantId: g.GetId(), Comment: "fine"})
	wantCode(t, err, codes.PermissionDenied, "")
	done, err := mayflyv1.NewReviewServiceClient(env.Dial(t, secID)).CompleteBreakGlassReview(ctx(t), &mayflyv1.CompleteBreakGlassReviewRequest{GrantId: g.GetId(), Comment: "justified"})
	if err != nil || done.GetGrant().GetReviewedBy() != secID {
		t.Fatalf("review = %v, %v", done, err)
	}

	// What-if: a policy without break-glass would have refused it.
	stricter := strings.Replace(governancePolicy, "    break_glass:\n      allowed: [group:oncall]\n      max_ttl: 30m\n      review_within: 24h\n", "", 1)
	admin := mayflyv1.NewPolicyServiceClient(env.Dial(t, "spiffe://mayfly.test/admin/ops"))
	wi, err := admin.WhatIf(ctx(t), &mayflyv1.WhatIfRequest{Policy: []byte(stricter)})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range wi.GetChanges() {
		if c.GetKind() == "break_glass" && c.GetBefore().GetOutcome() == mayflyv1.Decision_OUTCOME_ALLOW && c.GetAfter().GetOutcome() == mayflyv1.Decision_OUTCOME_DENY {
			found = true
		}
	}
	if !found || wi.GetReplayed() == 0 {
		t.Fatalf("what-if did not find the break-glass change: %v", wi)
	}
	_, err = admin.WhatIf(ctx(t), &mayflyv1.WhatIfRequest{Policy: []byte("version: 1\nbogus: 1\n")})
	wantCode(t, err, codes.InvalidArgument, "line 2")
	_, err = mayflyv1.NewPolicyServiceClient(oncall).WhatIf(ctx(t), &mayflyv1.WhatIfRequest{Policy: []byte(stricter)})
	wantCode(t, err, codes.PermissionDenied, "")
}
