package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/mayflyhq/mayfly/broker/authn"
)

// More reason codes, for access requests, approvals and break-glass.
const (
	// ReasonNotRequestable: the caller may not request the entitlement.
	// Also given for an entitlement that does not exist.
	ReasonNotRequestable = "not_requestable"
	// ReasonAutoApprove: the entitlement approves requests at once
	// (approvals: 0).
	ReasonAutoApprove = "auto_approve"
	// ReasonExtendsGrant: the requester already holds an active grant for
	// the entitlement; the request extends it and needs approval like a
	// new one.
	ReasonExtendsGrant = "extends_grant"
	// ReasonDurationTooLong: the requested duration is over max_duration.
	ReasonDurationTooLong = "duration_too_long"
	// ReasonInvalidDuration: the requested duration is negative.
	ReasonInvalidDuration = "invalid_duration"
	// ReasonInvalidStart: the requested start is too far ahead.
	ReasonInvalidStart = "invalid_start"
	// ReasonInvalidRequest: the reason or ticket is too long or holds
	// control characters.
	ReasonInvalidRequest = "invalid_request"
	// ReasonReasonRequired: the entitlement requires a reason.
	ReasonReasonRequired = "reason_required"
	// ReasonTicketMismatch: the ticket is missing or does not match the
	// required pattern.
	ReasonTicketMismatch = "ticket_mismatch"
	// ReasonNotApprover: the caller is not among the approvers (also for
	// an entitlement that does not exist or takes no approvals).
	ReasonNotApprover = "not_approver"
	// ReasonSelfApproval: the approver is the requester, under some
	// identity they hold.
	ReasonSelfApproval = "self_approval"
	// ReasonAlreadyApproved: the approver (under some identity) already
	// approved the request; one approver counts once.
	ReasonAlreadyApproved = "already_approved"
	// ReasonApprovalNotCounted: with distinct_groups, the approval cannot
	// count under an approvers entry not already counted.
	ReasonApprovalNotCounted = "approval_not_counted"
	// ReasonApprovalCounted: the approval counts (informational).
	ReasonApprovalCounted = "approval_counted"
	// ReasonBreakGlass: break-glass is allowed (informational).
	ReasonBreakGlass = "break_glass"
	// ReasonBreakGlassNotAllowed: the caller may not break glass for the
	// entitlement (also for one that does not exist).
	ReasonBreakGlassNotAllowed = "break_glass_not_allowed"
)

// Limits on what a request carries.
const (
	// MaxReasonLen bounds a request's reason, in bytes.
	MaxReasonLen = 1024
	// MaxTicketLen bounds a request's ticket, in bytes.
	MaxTicketLen = 128
	// MaxScheduleAhead is how far ahead a request may ask its grant to
	// start.
	MaxScheduleAhead = 30 * 24 * time.Hour
)

// IsInvalidArgument reports whether a reason code means the caller sent a
// malformed or incomplete request (the API answers INVALID_ARGUMENT) rather
// than that policy refuses it (PERMISSION_DENIED).
func IsInvalidArgument(code string) bool {
	switch code {
	case ReasonInvalidTTL, ReasonInvalidTime, ReasonInvalidDuration, ReasonDurationTooLong,
		ReasonInvalidStart, ReasonInvalidRequest, ReasonReasonRequired, ReasonTicketMismatch:
		return true
	}
	return false
}

// RequestInput is an access request to decide: may this principal ask for
// this entitlement, for this long, with this reason and ticket.
type RequestInput struct {
	// Principal is the requester.
	Principal authn.Principal
	// Entitlement is the name asked for.
	Entitlement string
	// Duration is how long the grant should last once it starts; 0 means
	// the entitlement's max_ttl, capped to max_duration: one credential's
	// full life.
	Duration time.Duration
	// StartAt is when the grant should start at the earliest; zero means
	// at approval. The grant starts at approval or StartAt, whichever is
	// later.
	StartAt time.Time
	// Reason and Ticket are what the requester says.
	Reason string
	Ticket string
	// Grants, Held and Certified are as in Input: what the requester holds
	// (for conflicts_with, and to see that a request extends a grant).
	Grants    []Grant
	Held      []string
	Certified map[string]time.Time
	// Now is the time of the decision.
	Now time.Time
}

// RequestDecision is the answer to a RequestInput.
type RequestDecision struct {
	// Outcome is Allow (approved at once: approvals is 0),
	// NeedsApproval, or Deny.
	Outcome Outcome
	// Entitlement is the entitlement asked for; nil when it is unknown.
	Entitlement *Entitlement
	// Duration is the grant's length: what was asked for, or the default.
	Duration time.Duration
	// ExpiresAt is when the request expires if it is not decided:
	// Now + pending_ttl.
	ExpiresAt time.Time
	// Approval says who approves and how many approvals are needed
	// (Needed is 0 for an Allow).
	Approval *ApprovalRule
	// Extends is the id of the active grant for the same entitlement that
	// this request would extend, if any.
	Extends string
	// Reasons explain the outcome; a Deny lists every problem found.
	Reasons []Reason
}

// DecideRequest decides an access request. It is pure, like Decide. A
// request is refused for every problem found at once (not_requestable
// alone when the caller may not request the entitlement, so that nothing
// about it leaks): a duration over max_duration (refused, not shortened),
// a missing reason, a ticket not matching the pattern, a conflicting
// entitlement held, a false `when` condition. An acceptable request is
// approved at once when approvals is 0, and otherwise needs approval; a
// request by a principal who already holds an active grant for the
// entitlement extends it and needs approval like a new one.
func (p *Policy) DecideRequest(in RequestInput) RequestDecision {
	ent := p.Entitlements[in.Entitlement]
	d := RequestDecision{Outcome: Deny, Entitlement: ent}
	switch {
	case in.Now.IsZero():
		d.Reasons = []Reason{{ReasonInvalidTime, "the decision time is not set"}}
		return d
	case in.Duration < 0:
		d.Reasons = []Reason{{ReasonInvalidDuration, fmt.Sprintf("requested duration %s is negative", fmtDuration(in.Duration))}}
		return d
	}
	c := newCaller(in.Principal)
	if ent == nil || ent.Approval == nil || !p.matchAny(ent.requestable, c) {
		d.Reasons = []Reason{{ReasonNotRequestable, fmt.Sprintf("%s may not request entitlement %q", in.Principal.ID, in.Entitlement)}}
		return d
	}
	a := ent.Approval
	d.Duration = in.Duration
	if d.Duration == 0 {
		d.Duration = min(ent.MaxTTL, a.MaxDuration)
	}
	d.ExpiresAt = in.Now.Add(a.PendingTTL)

	var reasons []Reason
	if d.Duration > a.MaxDuration {
		reasons = append(reasons, Reason{ReasonDurationTooLong, fmt.Sprintf("requested duration %s is longer than the maximum of %s for entitlement %q", fmtDuration(d.Duration), fmtDuration(a.MaxDuration), ent.Name)})
	}
	if in.StartAt.After(in.Now.Add(MaxScheduleAhead)) {
		reasons = append(reasons, Reason{ReasonInvalidStart, fmt.Sprintf("requested start %s is more than %s ahead", in.StartAt.UTC().Format(time.RFC3339), fmtDuration(MaxScheduleAhead))})
	}
	reasons = append(reasons, checkText("reason", in.Reason, MaxReasonLen)...)
	reasons = append(reasons, checkText("ticket", in.Ticket, MaxTicketLen)...)
	if ent.Require.Reason && strings.TrimSpace(in.Reason) == "" {
		reasons = append(reasons, Reason{ReasonReasonRequired, fmt.Sprintf("entitlement %q requires a reason", ent.Name)})
	}
	if re := ent.Require.ticket; re != nil && !re.MatchString(in.Ticket) {
		msg := fmt.Sprintf("ticket %q does not match the pattern %q required by entitlement %q", in.Ticket, ent.Require.Ticket, ent.Name)
		if in.Ticket == "" {
			msg = fmt.Sprintf("entitlement %q requires a ticket matching %q", ent.Name, ent.Require.Ticket)
		}
		reasons = append(reasons, Reason{ReasonTicketMismatch, msg})
	}
	reasons = append(reasons, p.conflicts(ent, c, Input{Principal: in.Principal, Grants: in.Grants, Held: in.Held, Certified: in.Certified, Now: in.Now})...)
	if ent.when != nil {
		rv := requestVar{Entitlement: ent.Name, Reason: in.Reason, Ticket: in.Ticket, Duration: d.Duration, Time: in.Now.UTC()}
		if r, ok := p.checkCondition(ent, in.Principal, rv); !ok {
			reasons = append(reasons, r)
		}
	}
	if len(reasons) > 0 {
		d.Reasons = reasons
		return d
	}

	var extends *Grant
	for i := range in.Grants {
		g := &in.Grants[i]
		if g.Entitlement == ent.Name && g.Subject == in.Principal.ID && g.activeAt(in.Now) &&
			(extends == nil || g.End.After(extends.End) || (g.End.Equal(extends.End) && g.ID < extends.ID)) {
			extends = g
		}
	}
	if extends != nil {
		d.Extends = extends.ID
		reasons = append(reasons, Reason{ReasonExtendsGrant, fmt.Sprintf("extends %s %q, which ends at %s; an extension is approved like a new request", kindLabel(extends.Kind), extends.ID, extends.End.UTC().Format(time.RFC3339))})
	}
	d.Approval = a.rule(a.Approvals)
	if a.Approvals == 0 {
		d.Outcome = Allow
		d.Reasons = append([]Reason{{ReasonAutoApprove, fmt.Sprintf("entitlement %q approves requests at once (approvals: 0)", ent.Name)}}, reasons...)
		return d
	}
	d.Outcome = NeedsApproval
	d.Reasons = append([]Reason{{ReasonApprovalRequired, approvalMessage(ent, d.Approval)}}, reasons...)
	return d
}

// checkText refuses a reason or ticket that is too long or holds control
// characters (they would garble the CLI, logs and chat messages).
func checkText(field, s string, max int) []Reason {
	if len(s) > max {
		return []Reason{{ReasonInvalidRequest, fmt.Sprintf("%s is longer than %d bytes", field, max)}}
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return []Reason{{ReasonInvalidRequest, fmt.Sprintf("%s holds control characters", field)}}
	}
	return nil
}

// ApprovalInput is one review of an access request: an approval, or a
// denial (Approve false).
type ApprovalInput struct {
	// Approver is the reviewer.
	Approver authn.Principal
	// Requester is the requester as recorded with the request (id, kind
	// and groups when it asked).
	Requester authn.Principal
	// Entitlement is the entitlement requested.
	Entitlement string
	// Approve is true for an approval, false for a denial.
	Approve bool
	// Prior are the approvers who already approved, in order, as recorded
	// (id, kind and groups when they approved).
	Prior []authn.Principal
	// Now is the time of the review.
	Now time.Time
}

// ApprovalDecision is the answer to an ApprovalInput.
type ApprovalDecision struct {
	// Outcome is Allow when the review is accepted, Deny when refused.
	Outcome Outcome
	// Reasons explain a refusal (or say how the approval counted).
	Reasons []Reason
	// CountedAs is the approvers entry (as written) the new approval
	// counts under; empty for a denial or a refusal.
	CountedAs string
	// Counted gives, for Prior followed by the new approval, the entry
	// each counts under; "" where one does not count (a second approval
	// by one identity, or an approver the policy no longer names).
	Counted []string
	// Remaining is how many more approvals the request needs after this
	// one.
	Remaining int
	// Approved says the request now has all the approvals it needs.
	Approved bool
}

// CheckApproval decides whether a review of an access request is accepted.
// A reviewer must match an approvers entry and must not be the requester
// under any identity they hold (the same principal id, or two subjects of
// one identities set): this also stops a workload approving its own agent
// request. For an approval, one identity counts once however many of its
// identities approve; with distinct_groups each approval is assigned its
// own approvers entry by a maximum bipartite matching, so an approval that
// could count under two entries never blocks a later one. Prior approvals
// are counted under the current policy: an approver the policy no longer
// names does not count.
func (p *Policy) CheckApproval(in ApprovalInput) ApprovalDecision {
	d := ApprovalDecision{Outcome: Deny}
	if in.Now.IsZero() {
		d.Reasons = []Reason{{ReasonInvalidTime, "the decision time is not set"}}
		return d
	}
	ent := p.Entitlements[in.Entitlement]
	notApprover := []Reason{{ReasonNotApprover, fmt.Sprintf("%s is not an approver for entitlement %q", in.Approver.ID, in.Entitlement)}}
	if ent == nil || ent.Approval == nil || ent.Approval.Approvals == 0 {
		d.Reasons = notApprover
		return d
	}
	a := ent.Approval
	if p.SameIdentity(in.Approver, in.Requester) {
		d.Reasons = []Reason{{ReasonSelfApproval, fmt.Sprintf("%s may not review a request by %s: they are the same person or agent", in.Approver.ID, in.Requester.ID)}}
		return d
	}
	eligible := p.eligible(a, in.Approver)
	if len(eligible) == 0 {
		d.Reasons = notApprover
		return d
	}
	if !in.Approve {
		d.Outcome = Allow
		d.Remaining = a.Approvals
		return d
	}
	for _, prior := range in.Prior {
		if p.SameIdentity(prior, in.Approver) {
			d.Reasons = []Reason{{ReasonAlreadyApproved, fmt.Sprintf("%s has already approved this request (as %s); one approver counts once", in.Approver.ID, prior.ID)}}
			return d
		}
	}

	// Left side: each distinct identity among the approvers, in order.
	// Right side: the approvers entries.
	var people [][]int // eligible entries per approval; nil if it does not count
	for i, pr := range in.Prior {
		var el []int
		dup := false
		for _, earlier := range in.Prior[:i] {
			if p.SameIdentity(earlier, pr) {
				dup = true
				break
			}
		}
		if !dup && !p.SameIdentity(pr, in.Requester) {
			el = p.eligible(a, pr)
		}
		people = append(people, el)
	}
	people = append(people, eligible)
	assign := assignApprovals(people, len(a.approvers), a.DistinctGroups)
	count := 0
	d.Counted = make([]string, len(assign))
	for i, e := range assign {
		if e >= 0 {
			count++
			d.Counted[i] = a.Approvers[e]
		}
	}
	if assign[len(assign)-1] < 0 {
		d.Counted = nil
		var names []string
		for _, e := range eligible {
			names = append(names, a.Approvers[e])
		}
		d.Reasons = []Reason{{ReasonApprovalNotCounted, fmt.Sprintf("entitlement %q needs each approval from a different approvers entry (distinct_groups); %s approves as %s, which is already counted", ent.Name, in.Approver.ID, strings.Join(names, ", "))}}
		return d
	}
	d.Outcome = Allow
	d.CountedAs = d.Counted[len(d.Counted)-1]
	d.Remaining = max(a.Approvals-count, 0)
	d.Approved = d.Remaining == 0
	d.Reasons = []Reason{{ReasonApprovalCounted, fmt.Sprintf("%s approves as %s; %d of %d approvals", in.Approver.ID, d.CountedAs, min(count, a.Approvals), a.Approvals)}}
	return d
}

// eligible lists the approvers entries pr matches, in policy order.
func (p *Policy) eligible(a *ApprovalPolicy, pr authn.Principal) []int {
	c := newCaller(pr)
	var out []int
	for i, s := range a.approvers {
		if p.match(s, c) {
			out = append(out, i)
		}
	}
	return out
}

// assignApprovals gives each approval the entry it counts under (-1 for
// none). Without distinct entries, every approval with an eligible entry
// counts under its first. With them, it is a maximum bipartite matching
// (Kuhn's augmenting paths, in approval order), so the result depends only
// on the order of approvals and entries.
func assignApprovals(people [][]int, entries int, distinct bool) []int {
	assign := make([]int, len(people))
	for i := range assign {
		assign[i] = -1
	}
	if !distinct {
		for i, el := range people {
			if len(el) > 0 {
				assign[i] = el[0]
			}
		}
		return assign
	}
	owner := make([]int, entries) // entry -> approval
	for i := range owner {
		owner[i] = -1
	}
	var try func(i int, seen []bool) bool
	try = func(i int, seen []bool) bool {
		for _, e := range people[i] {
			if seen[e] {
				continue
			}
			seen[e] = true
			if owner[e] < 0 || try(owner[e], seen) {
				owner[e] = i
				return true
			}
		}
		return false
	}
	for i := range people {
		try(i, make([]bool, entries))
	}
	for e, i := range owner {
		if i >= 0 {
			assign[i] = e
		}
	}
	return assign
}

// BreakGlassInput is a break-glass attempt to decide.
type BreakGlassInput struct {
	// Principal is who breaks glass.
	Principal authn.Principal
	// Entitlement is the name asked for.
	Entitlement string
	// TTL is how long the grant should last; 0 means break_glass.max_ttl.
	TTL time.Duration
	// Reason is required: why the emergency.
	Reason string
	// Grants, Held and Certified are as in Input (for conflicts_with).
	Grants    []Grant
	Held      []string
	Certified map[string]time.Time
	// Blocked says a break-glass review by the principal is overdue.
	Blocked bool
	// Now is the time of the decision.
	Now time.Time
}

// BreakGlassDecision is the answer to a BreakGlassInput.
type BreakGlassDecision struct {
	// Outcome is Allow or Deny.
	Outcome Outcome
	// Entitlement is the entitlement asked for; nil when it is unknown.
	Entitlement *Entitlement
	// TTL is the grant's length: what was asked for, capped to max_ttl.
	TTL time.Duration
	// End is Now + TTL.
	End time.Time
	// ReviewDue is when the use must have been reviewed: Now +
	// review_within. Until then it is fine; after, the principal may not
	// break glass again until it is.
	ReviewDue time.Time
	// Notify are the webhooks (as "webhook:NAME") to tell at once:
	// break_glass.notify, then the entitlement's notify.
	Notify []string
	// Clamped says the TTL asked for was reduced to max_ttl.
	Clamped bool
	// Reasons explain the outcome.
	Reasons []Reason
}

// DecideBreakGlass decides a break-glass attempt. The subject must be in
// break_glass.allowed, must not be blocked by an overdue review, must say
// why, and must not hold a conflicting entitlement (segregation of duties
// holds in an emergency too); the `when` condition and approvals do not
// apply, which is what break-glass is for. The TTL is capped, not refused.
func (p *Policy) DecideBreakGlass(in BreakGlassInput) BreakGlassDecision {
	ent := p.Entitlements[in.Entitlement]
	d := BreakGlassDecision{Outcome: Deny, Entitlement: ent}
	switch {
	case in.Now.IsZero():
		d.Reasons = []Reason{{ReasonInvalidTime, "the decision time is not set"}}
		return d
	case in.TTL < 0:
		d.Reasons = []Reason{{ReasonInvalidTTL, fmt.Sprintf("requested TTL %s is negative", fmtDuration(in.TTL))}}
		return d
	}
	c := newCaller(in.Principal)
	if ent == nil || ent.BreakGlass == nil || !p.matchAny(ent.BreakGlass.allowed, c) {
		d.Reasons = []Reason{{ReasonBreakGlassNotAllowed, fmt.Sprintf("%s may not break glass for entitlement %q", in.Principal.ID, in.Entitlement)}}
		return d
	}
	bg := ent.BreakGlass
	var reasons []Reason
	if in.Blocked {
		reasons = append(reasons, Reason{ReasonBreakGlassBlocked, fmt.Sprintf("a break-glass review by %s is overdue; complete it before breaking glass again", in.Principal.ID)})
	}
	if strings.TrimSpace(in.Reason) == "" {
		reasons = append(reasons, Reason{ReasonReasonRequired, "break-glass requires a reason"})
	}
	reasons = append(reasons, checkText("reason", in.Reason, MaxReasonLen)...)
	reasons = append(reasons, p.conflicts(ent, c, Input{Principal: in.Principal, Grants: in.Grants, Held: in.Held, Certified: in.Certified, Now: in.Now})...)
	if len(reasons) > 0 {
		d.Reasons = reasons
		return d
	}
	d.Outcome = Allow
	d.TTL = in.TTL
	if d.TTL == 0 {
		d.TTL = bg.MaxTTL
	}
	if d.TTL > bg.MaxTTL {
		d.Clamped = true
		reasons = append(reasons, Reason{ReasonTTLClamped, fmt.Sprintf("TTL reduced from %s to %s: break_glass.max_ttl of entitlement %q is %s", fmtDuration(d.TTL), fmtDuration(bg.MaxTTL), ent.Name, fmtDuration(bg.MaxTTL))})
		d.TTL = bg.MaxTTL
	}
	d.End = in.Now.Add(d.TTL)
	d.ReviewDue = in.Now.Add(bg.ReviewWithin)
	d.Notify = slices.Clone(bg.Notify)
	for _, n := range ent.Notify {
		if !slices.Contains(d.Notify, n) {
			d.Notify = append(d.Notify, n)
		}
	}
	d.Reasons = append([]Reason{{ReasonBreakGlass, fmt.Sprintf("%s breaks glass for entitlement %q until %s; review due by %s", in.Principal.ID, ent.Name, d.End.UTC().Format(time.RFC3339), d.ReviewDue.UTC().Format(time.RFC3339))}}, reasons...)
	return d
}

// ReviewItem is a standing grant that must be certified, and where its
// certification stands.
type ReviewItem struct {
	// Entitlement and Owner are the grant's entitlement and who certifies.
	Entitlement string
	Owner       string
	// GrantID, Subject, Purpose, Until and ReviewEvery are the grant's.
	GrantID     string
	Subject     string
	Purpose     string
	Until       time.Time
	ReviewEvery time.Duration
	// PeriodStart is when the current review period began (the last
	// certification, or when the broker first saw the grant); zero if
	// unknown or revoked.
	PeriodStart time.Time
	// Due is when the grant lapses unless certified: PeriodStart +
	// ReviewEvery; zero if PeriodStart is.
	Due time.Time
	// Lapsed says Due has passed (or is unknown): the grant gives nothing.
	Lapsed bool
	// Revoked says the owner revoked the grant at its last certification.
	Revoked bool
}

// Reviews lists the standing grants that must be certified (those with
// review_every that have not ended) and those revoked at certification,
// with when each is due given certified (as in Input.Certified), soonest
// first (unknown and revoked first of all), then by grant id.
func (p *Policy) Reviews(certified map[string]time.Time, now time.Time) []ReviewItem {
	var out []ReviewItem
	for _, name := range p.names {
		ent := p.Entitlements[name]
		for _, g := range ent.Standing {
			since, known := certified[g.ID]
			revoked := known && since.IsZero()
			if !revoked && (g.ReviewEvery == 0 || !now.Before(g.Until)) {
				continue
			}
			it := ReviewItem{
				Entitlement: ent.Name, Owner: ent.Owner, GrantID: g.ID, Subject: g.Subject, Purpose: g.Purpose,
				Until: g.Until, ReviewEvery: g.ReviewEvery, Revoked: revoked, Lapsed: true,
			}
			if known && !revoked {
				it.PeriodStart = since
				if g.ReviewEvery > 0 {
					it.Due = since.Add(g.ReviewEvery)
					it.Lapsed = !now.Before(it.Due)
				} else {
					it.Lapsed = false
				}
			}
			out = append(out, it)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Due.Equal(out[j].Due) {
			return out[i].Due.Before(out[j].Due)
		}
		return out[i].GrantID < out[j].GrantID
	})
	return out
}

// StandingGrant returns the standing grant with the given id and its
// entitlement, or nils.
func (p *Policy) StandingGrant(id string) (*Entitlement, *StandingGrant) {
	for _, name := range p.names {
		ent := p.Entitlements[name]
		for _, g := range ent.Standing {
			if g.ID == id {
				return ent, g
			}
		}
	}
	return nil, nil
}

// SameIdentity reports whether a and b are one person or agent: the same
// principal id, or both matching subjects of one identities set.
func (p *Policy) SameIdentity(a, b authn.Principal) bool {
	if a.ID != "" && a.ID == b.ID {
		return true
	}
	ca, cb := newCaller(a), newCaller(b)
	for _, set := range p.identities {
		if p.matchAny(set, ca) && p.matchAny(set, cb) {
			return true
		}
	}
	return false
}

// CanRequest reports whether pr may request the entitlement.
func (p *Policy) CanRequest(pr authn.Principal, entitlement string) bool {
	ent := p.Entitlements[entitlement]
	return ent != nil && ent.Approval != nil && p.matchAny(ent.requestable, newCaller(pr))
}

// CanApprove reports whether pr is among the approvers of the
// entitlement's requests (it may still not approve its own).
func (p *Policy) CanApprove(pr authn.Principal, entitlement string) bool {
	ent := p.Entitlements[entitlement]
	return ent != nil && ent.Approval != nil && p.matchAny(ent.Approval.approvers, newCaller(pr))
}

// CanBreakGlass reports whether pr is in the entitlement's
// break_glass.allowed.
func (p *Policy) CanBreakGlass(pr authn.Principal, entitlement string) bool {
	ent := p.Entitlements[entitlement]
	return ent != nil && ent.BreakGlass != nil && p.matchAny(ent.BreakGlass.allowed, newCaller(pr))
}

// Owns reports whether pr is, or belongs to, the entitlement's owner: who
// certifies its standing grants and reviews its break-glass uses.
func (p *Policy) Owns(pr authn.Principal, entitlement string) bool {
	ent := p.Entitlements[entitlement]
	return ent != nil && ent.owner != nil && p.match(ent.owner, newCaller(pr))
}
