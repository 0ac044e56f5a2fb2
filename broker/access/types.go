package access

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// RequestState is where an access request is in its life:
//
//	pending ─► approved   (all approvals; the grant is created)
//	   ├─────► denied     (an approver denied it, or policy at the last approval)
//	   ├─────► cancelled  (the requester withdrew it)
//	   └─────► expired    (pending_ttl passed)
type RequestState string

const (
	// RequestPending waits for approvals.
	RequestPending RequestState = "pending"
	// RequestApproved got its approvals; GrantID names its grant.
	RequestApproved RequestState = "approved"
	// RequestDenied was denied; Denial says by whom and why.
	RequestDenied RequestState = "denied"
	// RequestCancelled was withdrawn by the requester.
	RequestCancelled RequestState = "cancelled"
	// RequestExpired was not decided in time.
	RequestExpired RequestState = "expired"
)

// Request is an access request: someone asking for an entitlement for a
// while, and what approvers said.
type Request struct {
	// ID is a lease.NewID-style id: time-ordered, 26 characters.
	ID string `json:"id"`
	// Requester is the principal as it was when it asked (id, kind,
	// groups): approvals are checked against this snapshot.
	Requester authn.Principal `json:"requester"`
	// Entitlement is the entitlement asked for.
	Entitlement string `json:"entitlement"`
	// Reason and Ticket are what the requester said.
	Reason string `json:"reason,omitempty"`
	Ticket string `json:"ticket,omitempty"`
	// Duration is how long the grant lasts once it starts.
	Duration time.Duration `json:"duration"`
	// StartAt is the earliest start asked for; zero means at approval.
	// The grant starts at approval or StartAt, whichever is later.
	StartAt time.Time `json:"start_at,omitzero"`
	// CreatedAt is when it was made; ExpiresAt is when it expires if
	// still pending.
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// State is pending, approved, denied, cancelled or expired.
	State RequestState `json:"state"`
	// Needed, Approvers and DistinctGroups are the approval rule when the
	// request was made (for display; approvals are counted under the
	// policy in force when they are made).
	Needed         int      `json:"needed"`
	Approvers      []string `json:"approvers,omitempty"`
	DistinctGroups bool     `json:"distinct_groups,omitempty"`
	// Approvals are the approvals so far, in order.
	Approvals []Approval `json:"approvals,omitempty"`
	// Denial is the denial that closed the request, if any.
	Denial *Approval `json:"denial,omitempty"`
	// Extends is the grant this request extends, if the requester held an
	// active grant for the entitlement when asking.
	Extends string `json:"extends,omitempty"`
	// GrantID is the grant created at approval.
	GrantID string `json:"grant_id,omitempty"`
	// ClosedAt is when it left pending.
	ClosedAt time.Time `json:"closed_at,omitzero"`
	// Digest is the hash of the request's content (Digest). A review
	// carries the digest the reviewer saw and is refused if it differs.
	Digest string `json:"digest"`
	// PolicyDigest is the policy the request was decided under.
	PolicyDigest string `json:"policy_digest,omitempty"`
	// Version increases with every stored change (optimistic concurrency).
	Version int64 `json:"version"`
}

// Approval is one review of a request.
type Approval struct {
	// Approver is the reviewer as it was when it reviewed.
	Approver authn.Principal `json:"approver"`
	// CountedAs is the approvers entry the approval counts under (empty
	// for a denial, or for an approval that no longer counts).
	CountedAs string `json:"counted_as,omitempty"`
	// Comment is the reviewer's.
	Comment string `json:"comment,omitempty"`
	// At is when.
	At time.Time `json:"at"`
	// Digest is the request digest the reviewer saw.
	Digest string `json:"digest,omitempty"`
}

// Digest is the hash of what a request asks for: its id, requester,
// entitlement, reason, ticket, duration, start and creation time. The id
// is in it, so an approval cannot be replayed on another request.
func Digest(r *Request) string {
	content := struct {
		ID          string    `json:"id"`
		Requester   string    `json:"requester"`
		Kind        string    `json:"kind"`
		Entitlement string    `json:"entitlement"`
		Reason      string    `json:"reason"`
		Ticket      string    `json:"ticket"`
		Duration    int64     `json:"duration"`
		StartAt     time.Time `json:"start_at"`
		CreatedAt   time.Time `json:"created_at"`
	}{r.ID, r.Requester.ID, r.Requester.Kind.String(), r.Entitlement, r.Reason, r.Ticket, int64(r.Duration), r.StartAt.UTC(), r.CreatedAt.UTC()}
	data, _ := json.Marshal(content) // cannot fail: strings, ints, times
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// GrantState is where a dynamic grant is in its life.
type GrantState string

const (
	// GrantActive holds from Start until End.
	GrantActive GrantState = "active"
	// GrantRevoked was ended early by RevokeGrant.
	GrantRevoked GrantState = "revoked"
	// GrantEnded reached its End.
	GrantEnded GrantState = "ended"
)

// Grant is a dynamic grant: an approved request or a break-glass use.
type Grant struct {
	// ID names the grant in leases (Lease.GrantID) and audit events.
	ID string `json:"id"`
	// Kind is policy.GrantRequest or policy.GrantBreakGlass.
	Kind policy.GrantKind `json:"kind"`
	// RequestID is the approved request (request grants).
	RequestID string `json:"request_id,omitempty"`
	// Subject is the principal id the grant is for.
	Subject string `json:"subject"`
	// Entitlement is the entitlement granted.
	Entitlement string `json:"entitlement"`
	// Reason and Ticket are the request's, or the break-glass reason.
	Reason string `json:"reason,omitempty"`
	Ticket string `json:"ticket,omitempty"`
	// Start and End bound the grant: it holds in [Start, End).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// State is active, revoked or ended.
	State GrantState `json:"state"`
	// CreatedAt is when the grant was made.
	CreatedAt time.Time `json:"created_at"`
	// RevokedBy, RevokedAt and RevokeReason say who ended it early, when
	// and why.
	RevokedBy    string    `json:"revoked_by,omitempty"`
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
	RevokeReason string    `json:"revoke_reason,omitempty"`
	// LeasesRevoked says the leases minted under it were revoked after it
	// ended (Run retries until they are).
	LeasesRevoked bool `json:"leases_revoked,omitempty"`
	// ReviewDue is when a break-glass use must have been reviewed.
	ReviewDue time.Time `json:"review_due,omitzero"`
	// ReviewedBy, ReviewedAt and ReviewNote record the review.
	ReviewedBy string    `json:"reviewed_by,omitempty"`
	ReviewedAt time.Time `json:"reviewed_at,omitzero"`
	ReviewNote string    `json:"review_note,omitempty"`
	// Escalated says the overdue review was reported.
	Escalated bool `json:"escalated,omitempty"`
	// Version increases with every stored change.
	Version int64 `json:"version"`
}

// ActiveAt reports whether the grant holds at now.
func (g *Grant) ActiveAt(now time.Time) bool {
	return g.State == GrantActive && !now.Before(g.Start) && now.Before(g.End)
}

// ReviewOverdue reports whether g is a break-glass use whose review is
// overdue at now: its user may not break glass again until it is done.
func (g *Grant) ReviewOverdue(now time.Time) bool {
	return g.Kind == policy.GrantBreakGlass && g.ReviewedAt.IsZero() && !g.ReviewDue.IsZero() && !now.Before(g.ReviewDue)
}

// CertifyDecision is an owner's answer at certification.
type CertifyDecision string

const (
	// Certify keeps the standing grant for another review period.
	Certify CertifyDecision = "certify"
	// Revoke ends the standing grant: it gives nothing, and its leases
	// are revoked, until it is certified again or removed from the file.
	Revoke CertifyDecision = "revoke"
)

// Certification is an owner's decision on a standing grant.
type Certification struct {
	// ID is a lease.NewID-style id.
	ID string `json:"id"`
	// GrantID is the standing grant's id; Entitlement its entitlement.
	GrantID     string `json:"grant_id"`
	Entitlement string `json:"entitlement"`
	// By is the owner who decided; At is when.
	By string    `json:"by"`
	At time.Time `json:"at"`
	// Decision is certify or revoke.
	Decision CertifyDecision `json:"decision"`
	// Comment is the owner's.
	Comment string `json:"comment,omitempty"`
}

// Actions recorded in DecisionRecord.Action.
const (
	ActionCreate         = "create"
	ActionReview         = "review"
	ActionCancel         = "cancel"
	ActionExpire         = "expire"
	ActionBreakGlass     = "break_glass"
	ActionRevokeGrant    = "revoke_grant"
	ActionEndGrant       = "end_grant"
	ActionCompleteReview = "complete_review"
	ActionEscalate       = "escalate_review"
	ActionCertify        = "certify"
	ActionLapse          = "lapse"
	ActionIssue          = "issue"
)

// Outcomes recorded in DecisionRecord.Outcome besides policy outcomes
// (allow, deny, needs_approval).
const (
	// OutcomeDone: a state change that is not a policy decision happened.
	OutcomeDone = "done"
	// OutcomeRefused: the attempt was refused (Error says why).
	OutcomeRefused = "refused"
)

// DecisionRecord is one decision or refused attempt, for audit and
// what-if. Every service call that decides something appends one.
type DecisionRecord struct {
	// ID is a lease.NewID-style id; ids sort by time.
	ID string `json:"id"`
	// At is when.
	At time.Time `json:"at"`
	// Action is one of the Action* constants.
	Action string `json:"action"`
	// Actor is the principal id that acted, or "mayfly" for Run.
	Actor string `json:"actor"`
	// RequestID, GrantID and Entitlement say what it concerned.
	RequestID   string `json:"request_id,omitempty"`
	GrantID     string `json:"grant_id,omitempty"`
	Entitlement string `json:"entitlement,omitempty"`
	// Outcome is allow, deny or needs_approval for policy decisions,
	// OutcomeDone or OutcomeRefused otherwise.
	Outcome string `json:"outcome"`
	// Error is the refusal's sentinel text ("access: reviewer is the
	// requester"), empty when nothing was refused.
	Error string `json:"error,omitempty"`
	// Reasons are the policy's reasons.
	Reasons []policy.Reason `json:"reasons,omitempty"`
	// PolicyDigest is the policy in force.
	PolicyDigest string `json:"policy_digest,omitempty"`
	// Decision is the policy input and result, for what-if; nil for
	// actions that are not policy decisions (cancel, expire, ...).
	Decision *policy.Record `json:"decision,omitempty"`
}

// RequestQuery filters and pages Store.ListRequests.
type RequestQuery struct {
	// Requester, Entitlement filter when not empty.
	Requester   string
	Entitlement string
	// States filters to these states when not empty.
	States []RequestState
	// After returns only ids greater than After (the last id of the
	// previous page).
	After string
	// Limit caps the page; 0 means 100, at most 1000.
	Limit int
}

// GrantQuery filters and pages Store.ListGrants.
type GrantQuery struct {
	// Subject, Entitlement and Kind filter when not empty.
	Subject     string
	Entitlement string
	Kind        policy.GrantKind
	// States filters to these states when not empty.
	States []GrantState
	// After and Limit page as in RequestQuery.
	After string
	Limit int
}

// RecordQuery pages Store.Records.
type RecordQuery struct {
	// Since keeps records at or after it.
	Since time.Time
	// After and Limit page as in RequestQuery.
	After string
	Limit int
}
