package api

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/policy"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

var requestStates = map[access.RequestState]mayflyv1.AccessRequestState{
	access.RequestPending:   mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING,
	access.RequestApproved:  mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED,
	access.RequestDenied:    mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_DENIED,
	access.RequestCancelled: mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_CANCELLED,
	access.RequestExpired:   mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_EXPIRED,
}

var grantStates = map[access.GrantState]mayflyv1.GrantState{
	access.GrantActive:  mayflyv1.GrantState_GRANT_STATE_ACTIVE,
	access.GrantRevoked: mayflyv1.GrantState_GRANT_STATE_REVOKED,
	access.GrantEnded:   mayflyv1.GrantState_GRANT_STATE_ENDED,
}

var grantKinds = map[policy.GrantKind]mayflyv1.GrantKind{
	policy.GrantStanding:   mayflyv1.GrantKind_GRANT_KIND_STANDING,
	policy.GrantRequest:    mayflyv1.GrantKind_GRANT_KIND_REQUEST,
	policy.GrantBreakGlass: mayflyv1.GrantKind_GRANT_KIND_BREAK_GLASS,
}

func requestStateFromProto(s mayflyv1.AccessRequestState) (access.RequestState, bool) {
	for k, v := range requestStates {
		if v == s {
			return k, true
		}
	}
	return "", false
}

func grantStateFromProto(s mayflyv1.GrantState) (access.GrantState, bool) {
	for k, v := range grantStates {
		if v == s {
			return k, true
		}
	}
	return "", false
}

func approvalProto(a access.Approval) *mayflyv1.ApprovalDecision {
	return &mayflyv1.ApprovalDecision{Approver: a.Approver.ID, CountedAs: a.CountedAs, Comment: a.Comment, At: ts(a.At)}
}

func requestProto(r *access.Request) *mayflyv1.AccessRequest {
	out := &mayflyv1.AccessRequest{
		Id:              r.ID,
		Requester:       r.Requester.ID,
		Entitlement:     r.Entitlement,
		Reason:          r.Reason,
		Ticket:          r.Ticket,
		Duration:        durationpb.New(r.Duration),
		StartAt:         ts(r.StartAt),
		CreatedAt:       ts(r.CreatedAt),
		ExpiresAt:       ts(r.ExpiresAt),
		State:           requestStates[r.State],
		ApprovalsNeeded: int32(r.Needed),
		Approvers:       r.Approvers,
		DistinctGroups:  r.DistinctGroups,
		GrantId:         r.GrantID,
		Digest:          r.Digest,
	}
	for _, a := range r.Approvals {
		out.Approvals = append(out.Approvals, approvalProto(a))
	}
	if r.Denial != nil {
		out.Denial = approvalProto(*r.Denial)
	}
	return out
}

func grantProto(g *access.Grant) *mayflyv1.Grant {
	return &mayflyv1.Grant{
		Id:          g.ID,
		Kind:        grantKinds[g.Kind],
		RequestId:   g.RequestID,
		Subject:     g.Subject,
		Entitlement: g.Entitlement,
		Start:       ts(g.Start),
		End:         ts(g.End),
		State:       grantStates[g.State],
		ReviewDue:   ts(g.ReviewDue),
		ReviewedBy:  g.ReviewedBy,
		ReviewedAt:  ts(g.ReviewedAt),
	}
}

func reviewProto(r access.Review, now time.Time) *mayflyv1.Review {
	if r.Kind == access.ReviewBreakGlass && r.Grant != nil {
		g := r.Grant
		return &mayflyv1.Review{
			GrantId:     g.ID,
			Kind:        mayflyv1.GrantKind_GRANT_KIND_BREAK_GLASS,
			Entitlement: g.Entitlement,
			Subject:     g.Subject,
			Purpose:     g.Reason,
			DueAt:       ts(g.ReviewDue),
			Overdue:     g.ReviewOverdue(now),
		}
	}
	it := r.Item
	out := &mayflyv1.Review{
		GrantId:      it.GrantID,
		Kind:         mayflyv1.GrantKind_GRANT_KIND_STANDING,
		Entitlement:  it.Entitlement,
		Subject:      it.Subject,
		Owner:        it.Owner,
		Purpose:      it.Purpose,
		DueAt:        ts(it.Due),
		Overdue:      it.Lapsed,
		RecentLeases: int32(r.Leases30d),
	}
	if r.UsageKnown {
		out.LastIssuedAt = ts(r.LastIssued)
	}
	return out
}
