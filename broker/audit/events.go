package audit

import (
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// The constructors below build the events the broker records, with the
// same fields every time, so queries and lineage can rely on them. None of
// them reads a secret: a Credential contributes its kind and native expiry
// only. Text that people type (a request's reason, a denial's why) is
// kept as given, and Append refuses it if it looks like a secret, so the
// person can say it differently; text that systems produce (a backend's
// last error, a policy load error) is replaced by a marker when it looks
// like a secret, so that recording a failure never fails.

// redactedText replaces system-produced text that looks like a secret.
const redactedText = "[redacted: looked like a secret]"

// sysText returns s, or a marker if it looks like a secret, as valid
// UTF-8 cut to MaxValueLen.
func sysText(s string) string {
	if _, ok := LooksLikeSecret(s); ok {
		return redactedText
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > MaxValueLen {
		s = strings.ToValidUTF8(s[:MaxValueLen], "")
	}
	return s
}

// ts formats a time for Fields: RFC 3339 in UTC, empty for zero.
func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// fields drops empty values.
func fields(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			m[kv[i]] = kv[i+1]
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

func dur(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// RequestCreated records an access request by requester for entitlement.
// reason and ticket are the requester's justification.
func RequestCreated(requestID, requester, entitlement string, ttl time.Duration, reason, ticket string) Event {
	return Event{Type: TypeRequestCreated, Actor: requester, Subject: requester, Entitlement: entitlement,
		RequestID: requestID, Fields: fields("ttl", dur(ttl), "reason", reason, "ticket", ticket)}
}

// RequestApproved records one approval of a request by approver. grantID
// is set on the approval that met the approval rule and created the grant.
func RequestApproved(requestID, approver, grantID string) Event {
	return Event{Type: TypeRequestApproved, Actor: approver, RequestID: requestID, GrantID: grantID}
}

// RequestDenied records a denial of a request by approver, with their why.
func RequestDenied(requestID, approver, why string) Event {
	return Event{Type: TypeRequestDenied, Actor: approver, RequestID: requestID, Fields: fields("why", why)}
}

// RequestCancelled records that by withdrew a request.
func RequestCancelled(requestID, by string) Event {
	return Event{Type: TypeRequestCancelled, Actor: by, RequestID: requestID}
}

// RequestExpired records that nobody decided a request before its deadline.
func RequestExpired(requestID string) Event {
	return Event{Type: TypeRequestExpired, RequestID: requestID}
}

// DecisionInfo is what a decision event records: a policy decision on an
// issuance (policy.Decision, with the principal and the entitlement asked
// for).
type DecisionInfo struct {
	// Subject is the principal id of the caller.
	Subject string
	// Entitlement is the name asked for.
	Entitlement string
	// RequestID is the access request the issuance rests on, if any.
	RequestID string
	// GrantID is the grant an allow rests on.
	GrantID string
	// Outcome is "allow", "deny" or "needs_approval" (policy.Outcome's
	// String).
	Outcome string
	// Reasons are the policy's reason codes (policy.Reason.Code), most
	// important first; never their messages.
	Reasons []string
	// TTL is the effective lifetime of an allow.
	TTL time.Duration
	// PolicyDigest is the digest of the policy that decided.
	PolicyDigest string
}

// Decision records a policy decision, allowed or denied.
func Decision(d DecisionInfo) Event {
	return Event{Type: TypeDecision, Actor: d.Subject, Subject: d.Subject, Entitlement: d.Entitlement,
		RequestID: d.RequestID, GrantID: d.GrantID, Outcome: d.Outcome,
		Reasons: append([]string(nil), d.Reasons...), PolicyDigest: d.PolicyDigest, Fields: fields("ttl", dur(d.TTL))}
}

// GrantCreated records that a grant came into force: from an approved
// request (requestID), from break-glass, or a standing grant.
func GrantCreated(grantID, requestID, subject, entitlement, by string, until time.Time) Event {
	return Event{Type: TypeGrantCreated, Actor: by, Subject: subject, Entitlement: entitlement,
		GrantID: grantID, RequestID: requestID, Fields: fields("until", ts(until))}
}

// GrantEnded records that a grant ended; how is why ("revoked",
// "expired", "not_certified", ...), by who ended it (empty for the broker).
func GrantEnded(grantID, by, how string) Event {
	return Event{Type: TypeGrantEnded, Actor: by, GrantID: grantID, How: how}
}

// leaseEvent fills what every lease event carries.
func leaseEvent(t Type, l *lease.Lease) Event {
	return Event{Type: t, Subject: l.Subject, Entitlement: l.Entitlement, GrantID: l.GrantID, LeaseID: l.ID}
}

// LeaseIssued records a credential handed out under l. From c it records
// the kind and native expiry only; c may be nil.
func LeaseIssued(l *lease.Lease, c *issuer.Credential) Event {
	e := leaseEvent(TypeLeaseIssued, l)
	e.Actor = l.Subject
	e.Fields = fields("issuer", l.Issuer, "issued_at", ts(l.IssuedAt), "expires_at", ts(l.ExpiresAt),
		"hard_end", ts(l.HardEnd), "renewable", strconv.FormatBool(l.Renewable),
		"revocable", strconv.FormatBool(l.Revocable), "revocable_reason", sysText(l.RevocableReason))
	if c != nil {
		e.Fields["credential_kind"] = string(c.Kind)
		if !c.ExpiresAt.IsZero() {
			e.Fields["credential_expires_at"] = ts(c.ExpiresAt)
		}
	}
	return e
}

// LeaseRenewed records that l's expiry moved to l.ExpiresAt. c is the new
// credential when the holder had to switch to one (kind and expiry only),
// or nil.
func LeaseRenewed(l *lease.Lease, c *issuer.Credential) Event {
	e := leaseEvent(TypeLeaseRenewed, l)
	e.Actor = l.Subject
	e.Fields = fields("expires_at", ts(l.ExpiresAt), "hard_end", ts(l.HardEnd))
	if c != nil {
		e.Fields["credential_kind"] = string(c.Kind)
		e.Fields["new_credential"] = "true"
		if !c.ExpiresAt.IsZero() {
			e.Fields["credential_expires_at"] = ts(c.ExpiresAt)
		}
	}
	return e
}

// LeaseRevokeRequested records that by asked for l to end early, and why
// (explicit, kill_switch, grant_ended, shutdown, ...).
func LeaseRevokeRequested(l *lease.Lease, how lease.Reason, by string) Event {
	e := leaseEvent(TypeLeaseRevokeRequested, l)
	e.Actor, e.How = by, string(how)
	e.Fields = fields("requested_at", ts(l.RevokeRequestedAt))
	return e
}

// LeaseRevoked records that the backend confirmed l's credential is gone:
// How is l.RevokeReason (expired when none was asked for), with when it
// was due, when it ended and the lag between.
func LeaseRevoked(l *lease.Lease) Event {
	e := leaseEvent(TypeLeaseRevoked, l)
	e.How = string(l.RevokeReason)
	if e.How == "" {
		e.How = string(lease.ReasonExpired)
	}
	due := l.EndDue()
	lag := ""
	if !l.RevokedAt.IsZero() && !due.IsZero() {
		lag = l.RevokedAt.Sub(due).String()
	}
	e.Fields = fields("due_at", ts(due), "revoked_at", ts(l.RevokedAt), "lag", lag,
		"attempts", strconv.Itoa(l.Attempts))
	return e
}

// LeaseIrrevocable records that revocation of l was given up: the
// credential may live until its native expiry. The backend's last error is
// recorded unless it looks like a secret.
func LeaseIrrevocable(l *lease.Lease) Event {
	e := leaseEvent(TypeLeaseIrrevocable, l)
	e.How = string(l.RevokeReason)
	e.Fields = fields("expires_at", ts(l.ExpiresAt), "attempts", strconv.Itoa(l.Attempts),
		"last_error", sysText(l.LastError), "given_up_at", ts(l.RevokedAt))
	return e
}

// BreakGlassUsed records an emergency self-grant: who, what, the grant it
// made, the reason they gave, its TTL and the deadline of its review.
func BreakGlassUsed(subject, entitlement, grantID, reason string, ttl time.Duration, reviewBy time.Time) Event {
	return Event{Type: TypeBreakGlassUsed, Actor: subject, Subject: subject, Entitlement: entitlement,
		GrantID: grantID, Fields: fields("reason", reason, "ttl", dur(ttl), "review_by", ts(reviewBy))}
}

// ReviewCertified records that reviewer certified a grant until a date.
func ReviewCertified(grantID, reviewer string, until time.Time) Event {
	return Event{Type: TypeReviewCertified, Actor: reviewer, GrantID: grantID, Fields: fields("until", ts(until))}
}

// ReviewRevoked records that a review by reviewer ended a grant.
func ReviewRevoked(grantID, reviewer, why string) Event {
	return Event{Type: TypeReviewRevoked, Actor: reviewer, GrantID: grantID, How: "review", Fields: fields("why", why)}
}

// ReviewOverdue records that a grant's review passed its deadline.
func ReviewOverdue(grantID string, due time.Time) Event {
	return Event{Type: TypeReviewOverdue, GrantID: grantID, Fields: fields("due", ts(due))}
}

// PolicyReloaded records a policy reload: Outcome ok with the new digest,
// or failed with the error (the last good policy, digest, stays).
func PolicyReloaded(digest string, loadErr error) Event {
	e := Event{Type: TypePolicyReloaded, Outcome: "ok", PolicyDigest: digest}
	if loadErr != nil {
		e.Outcome = "failed"
		e.Fields = fields("error", sysText(loadErr.Error()))
	}
	return e
}
