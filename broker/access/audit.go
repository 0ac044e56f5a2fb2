package access

import (
	"context"
	"fmt"
	"time"

	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// gate asks Config.Gate whether an action may go ahead; an action that
// could not be audited must not happen.
func (s *Service) gate(ctx context.Context) error {
	if s.cfg.Gate == nil {
		return nil
	}
	if err := s.cfg.Gate(ctx); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// AuditEvents turns a decision record into the audit events it stands
// for: the request, approval, grant and review events that link a lease
// back to who asked and who approved, or a decision event for a refusal.
// Issuance records (ActionIssue) yield none: the API audits issuance
// itself, every time.
func AuditEvents(rec *DecisionRecord) []audit.Event {
	if rec.Action == ActionIssue {
		return nil
	}
	at := rec.At
	var in *policy.RequestInput
	var bg *policy.BreakGlassInput
	var ap *policy.ApprovalInput
	if d := rec.Decision; d != nil {
		in, bg, ap = d.Request, d.BreakGlass, d.Approval
	}
	refused := func() []audit.Event {
		e := audit.Decision(audit.DecisionInfo{Subject: rec.Actor, Entitlement: rec.Entitlement, RequestID: rec.RequestID,
			GrantID: rec.GrantID, Outcome: rec.Outcome, Reasons: reasonCodes(rec.Reasons), PolicyDigest: rec.PolicyDigest})
		setField(&e, "action", rec.Action)
		setField(&e, "error", rec.Error)
		return stamp(at, e)
	}
	if rec.Outcome == OutcomeRefused || (rec.Outcome == policy.Deny.String() && rec.Action != ActionReview) {
		return refused()
	}
	switch rec.Action {
	case ActionCreate:
		var ttl time.Duration
		var reason, ticket string
		var until time.Time
		if in != nil {
			ttl, reason, ticket = in.Duration, in.Reason, in.Ticket
			start := in.Now
			if in.StartAt.After(start) {
				start = in.StartAt
			}
			if ttl > 0 {
				until = start.Add(ttl)
			}
		}
		evs := []audit.Event{audit.RequestCreated(rec.RequestID, rec.Actor, rec.Entitlement, ttl, reason, ticket)}
		evs[0].PolicyDigest, evs[0].Outcome = rec.PolicyDigest, rec.Outcome
		if rec.GrantID != "" {
			evs = append(evs, audit.RequestApproved(rec.RequestID, actorSystem, rec.GrantID),
				audit.GrantCreated(rec.GrantID, rec.RequestID, rec.Actor, rec.Entitlement, actorSystem, until))
		}
		return stamp(at, evs...)
	case ActionReview:
		switch {
		case rec.Outcome == policy.Deny.String() && rec.Error != "":
			// Policy refused the request at its last approval.
			e := audit.RequestDenied(rec.RequestID, actorSystem, reasonText(rec.Reasons))
			e.Reasons = reasonCodes(rec.Reasons)
			return stamp(at, e)
		case rec.Outcome == policy.Deny.String():
			return stamp(at, audit.RequestDenied(rec.RequestID, rec.Actor, ""))
		case rec.Outcome == policy.NeedsApproval.String():
			return stamp(at, audit.RequestApproved(rec.RequestID, rec.Actor, ""))
		default:
			evs := []audit.Event{audit.RequestApproved(rec.RequestID, rec.Actor, rec.GrantID)}
			subject := ""
			if ap != nil {
				subject = ap.Requester.ID
			}
			g := audit.GrantCreated(rec.GrantID, rec.RequestID, subject, rec.Entitlement, rec.Actor, time.Time{})
			return stamp(at, append(evs, g)...)
		}
	case ActionCancel:
		return stamp(at, audit.RequestCancelled(rec.RequestID, rec.Actor))
	case ActionExpire:
		return stamp(at, audit.RequestExpired(rec.RequestID))
	case ActionBreakGlass:
		var ttl time.Duration
		var reason string
		if bg != nil {
			ttl, reason = bg.TTL, bg.Reason
		}
		used := audit.BreakGlassUsed(rec.Actor, rec.Entitlement, rec.GrantID, reason, ttl, time.Time{})
		used.PolicyDigest = rec.PolicyDigest
		return stamp(at, used, audit.GrantCreated(rec.GrantID, "", rec.Actor, rec.Entitlement, rec.Actor, time.Time{}))
	case ActionRevokeGrant:
		e := audit.GrantEnded(rec.GrantID, rec.Actor, "revoked")
		e.RequestID, e.Entitlement = rec.RequestID, rec.Entitlement
		return stamp(at, e)
	case ActionEndGrant:
		e := audit.GrantEnded(rec.GrantID, "", "expired")
		e.RequestID, e.Entitlement = rec.RequestID, rec.Entitlement
		return stamp(at, e)
	case ActionLapse:
		e := audit.GrantEnded(rec.GrantID, "", "not_certified")
		e.Entitlement, e.Reasons = rec.Entitlement, reasonCodes(rec.Reasons)
		return stamp(at, e)
	case ActionCompleteReview:
		e := audit.ReviewCertified(rec.GrantID, rec.Actor, time.Time{})
		e.Entitlement = rec.Entitlement
		setField(&e, "kind", "break_glass")
		return stamp(at, e)
	case ActionEscalate:
		e := audit.ReviewOverdue(rec.GrantID, time.Time{})
		e.Entitlement, e.Reasons = rec.Entitlement, reasonCodes(rec.Reasons)
		return stamp(at, e)
	case ActionCertify:
		if len(rec.Reasons) > 0 && rec.Reasons[0].Code == string(Revoke) {
			e := audit.ReviewRevoked(rec.GrantID, rec.Actor, "")
			e.Entitlement = rec.Entitlement
			return stamp(at, e)
		}
		e := audit.ReviewCertified(rec.GrantID, rec.Actor, time.Time{})
		e.Entitlement = rec.Entitlement
		return stamp(at, e)
	}
	return refused()
}

// stamp sets the time of the events to when the action happened.
func stamp(at time.Time, evs ...audit.Event) []audit.Event {
	for i := range evs {
		if evs[i].Time.IsZero() {
			evs[i].Time = at
		}
	}
	return evs
}

func reasonCodes(rs []policy.Reason) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Code)
	}
	return out
}

// setField sets a field of e when v is not empty.
func setField(e *audit.Event, k, v string) {
	if v == "" {
		return
	}
	if e.Fields == nil {
		e.Fields = map[string]string{}
	}
	e.Fields[k] = v
}
