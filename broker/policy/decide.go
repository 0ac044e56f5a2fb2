package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/authn"
)

// Input is one question to the policy: may this principal use this
// entitlement now, and for how long. Besides the question it carries what
// the broker knows about the principal (its grants, what it holds, the
// certification of standing grants), so that Decide stays a pure function
// that can be replayed (what-if) from a recorded Input.
type Input struct {
	// Principal is the authenticated caller.
	Principal authn.Principal
	// Entitlement is the name asked for.
	Entitlement string
	// TTL is the lifetime asked for; 0 means the entitlement's default.
	TTL time.Duration
	// Reason and Ticket are what the caller said with the issue call.
	// Conditions see them as request.reason and request.ticket; when they
	// are empty and the caller holds an access-request grant, conditions
	// see the reason and ticket of that request instead. Require is not
	// checked again at issuance (see DecideRequest).
	Reason string
	Ticket string
	// Grants are the dynamic grants the principal holds (approved access
	// requests and break-glass), any entitlement, as the access service
	// keeps them. Grants for another subject are ignored.
	Grants []Grant
	// Held are the entitlements the principal currently holds through any
	// active grant or lease, for conflicts_with. Decide adds the
	// entitlements of active Grants and of usable standing grants itself.
	Held []string
	// Certified maps a standing grant id to the start of its current
	// review period: its last certification, or, for a grant never
	// certified, when the broker first saw it in a loaded policy (the
	// access service fills both in). A zero time means the owner revoked
	// the grant at its last certification: it lapses at once. A standing
	// grant with review_every that is missing from a non-nil map has
	// lapsed (fail closed). A nil map means the caller tracks no
	// certification (tools, tests): review_every is not enforced.
	Certified map[string]time.Time
	// BreakGlassBlocked says the principal has a break-glass use whose
	// review is overdue: break-glass grants give nothing until it is
	// reviewed, and DecideBreakGlass refuses.
	BreakGlassBlocked bool
	// Now is the time of the decision. Decide reads no clock: the caller
	// passes it, so decisions can be replayed.
	Now time.Time
}

// GrantKind says what a grant rests on.
type GrantKind string

const (
	// GrantStanding is a standing grant from the policy file.
	GrantStanding GrantKind = "standing"
	// GrantRequest is an approved access request.
	GrantRequest GrantKind = "request"
	// GrantBreakGlass is a break-glass self-grant.
	GrantBreakGlass GrantKind = "break_glass"
)

// Grant is a dynamic grant as the policy sees it: an approved access
// request or a break-glass use, valid in [Start, End).
type Grant struct {
	// ID names the grant in leases and audit events.
	ID string
	// Entitlement is the entitlement granted.
	Entitlement string
	// Subject is the principal id the grant is for.
	Subject string
	// Kind is GrantRequest or GrantBreakGlass.
	Kind GrantKind
	// Start and End bound the grant: it holds from Start until just
	// before End.
	Start time.Time
	End   time.Time
	// Reason and Ticket are what the request or break-glass carried.
	Reason string
	Ticket string
}

// activeAt reports whether g holds at now.
func (g *Grant) activeAt(now time.Time) bool {
	return !now.Before(g.Start) && now.Before(g.End)
}

// Outcome is what a Decision says to do.
type Outcome int

const (
	// Deny refuses; it is the zero value, so a forgotten Decision denies.
	Deny Outcome = iota
	// Allow lets the caller have a credential now.
	Allow
	// NeedsApproval means the caller may ask and others must approve.
	NeedsApproval
)

// String returns "deny", "allow" or "needs_approval".
func (o Outcome) String() string {
	switch o {
	case Deny:
		return "deny"
	case Allow:
		return "allow"
	case NeedsApproval:
		return "needs_approval"
	default:
		return fmt.Sprintf("outcome(%d)", int(o))
	}
}

// Reason codes. Codes are stable (the CLI, audit trail and what-if key on
// them); messages are for people and may change.
const (
	// ReasonNotGranted: nothing lets the caller use the entitlement. Also
	// given for an entitlement that does not exist, so a caller cannot
	// probe which entitlements exist.
	ReasonNotGranted = "not_granted"
	// ReasonGrantEnded: a grant for the caller exists but its end passed.
	ReasonGrantEnded = "grant_ended"
	// ReasonGrantNotStarted: a dynamic grant for the caller starts later.
	ReasonGrantNotStarted = "grant_not_started"
	// ReasonStandingGrant: the allow rests on a standing grant.
	ReasonStandingGrant = "standing_grant"
	// ReasonRequestGrant: the allow rests on an approved access request.
	ReasonRequestGrant = "request_grant"
	// ReasonBreakGlassGrant: the allow rests on a break-glass use.
	ReasonBreakGlassGrant = "break_glass_grant"
	// ReasonTTLClamped: the TTL was reduced to max_ttl or to the grant end.
	ReasonTTLClamped = "ttl_clamped"
	// ReasonInvalidTTL: the requested TTL was negative (a caller bug).
	ReasonInvalidTTL = "invalid_ttl"
	// ReasonInvalidTime: Input.Now was not set (a caller bug); deciding at
	// the zero time would treat every ended grant as live.
	ReasonInvalidTime = "invalid_time"
	// ReasonCertificationLapsed: a standing grant was not certified within
	// its review period, or its owner revoked it at certification.
	ReasonCertificationLapsed = "certification_lapsed"
	// ReasonConditionFailed: the entitlement's `when` condition is false.
	ReasonConditionFailed = "condition_failed"
	// ReasonConditionError: the condition could not be evaluated; the
	// decision fails closed.
	ReasonConditionError = "condition_error"
	// ReasonConflictingEntitlement: the caller holds an entitlement this
	// one conflicts with (segregation of duties).
	ReasonConflictingEntitlement = "conflicting_entitlement"
	// ReasonApprovalRequired: the caller may ask for the entitlement with
	// an access request; Decision.Approval says who approves.
	ReasonApprovalRequired = "approval_required"
	// ReasonBreakGlassAvailable: the caller holds no grant but may break
	// glass (informational, with a deny).
	ReasonBreakGlassAvailable = "break_glass_available"
	// ReasonBreakGlassBlocked: a break-glass review by the caller is
	// overdue, so break-glass gives nothing until it is completed.
	ReasonBreakGlassBlocked = "break_glass_blocked"
)

// Reason is one structured reason for a decision.
type Reason struct {
	// Code is one of the Reason* constants.
	Code string `json:"code"`
	// Message explains it to a person.
	Message string `json:"message"`
}

// ApprovalRule says who must approve a request and how many approvals it
// still needs.
type ApprovalRule struct {
	// Needed is how many approvals are (still) needed; 0 means a request
	// is approved as soon as it is made.
	Needed int
	// Approvers are the subjects (as written in the policy) whose
	// approvals count; never the requester.
	Approvers []string
	// DistinctGroups says each approval must count under a different
	// Approvers entry.
	DistinctGroups bool
}

// Decision is the answer to an Input. It is a value: the broker acts on
// it, audits it, and Explain shows it without acting.
type Decision struct {
	// Outcome is allow, deny or needs_approval.
	Outcome Outcome
	// Entitlement is the entitlement asked for; nil when it is unknown.
	// For the broker only: the API answers unknown and not granted alike.
	Entitlement *Entitlement
	// GrantID is the grant the allow rests on.
	GrantID string
	// GrantKind is what the grant is: standing, request or break_glass.
	GrantKind GrantKind
	// TTL is the effective lifetime of the credential.
	TTL time.Duration
	// ExpiresAt is Now+TTL.
	ExpiresAt time.Time
	// HardEnd is the latest any renewal may reach: the earlier of
	// Now+MaxTTL and the grant's end.
	HardEnd time.Time
	// Clamped says the requested (or default) TTL was reduced.
	Clamped bool
	// Approval is set with NeedsApproval: who approves an access request
	// for the entitlement, and how many approvals it needs.
	Approval *ApprovalRule
	// Reasons explain the outcome, most important first.
	Reasons []Reason
}

// GrantCheck is how one grant of the entitlement fared in a decision.
type GrantCheck struct {
	// GrantID is the grant's id.
	GrantID string
	// Kind is standing, request or break_glass.
	Kind GrantKind
	// Subject is the grant's subject as written (standing) or the
	// principal id it is for (dynamic).
	Subject string
	// Matches says the caller is, or belongs to, the subject.
	Matches bool
	// Ended says the grant's end has passed (or, for a dynamic grant,
	// that it has not started yet).
	Ended bool
	// Lapsed says a standing grant lapsed for want of certification.
	Lapsed bool
	// TTL is the effective TTL the grant would give (0 unless it matches
	// and holds now).
	TTL time.Duration
}

// Explanation is a decision with the working shown: every grant that was
// considered. It is for operators (mayfly policy explain, what-if), never
// for the caller, since it shows grants the caller does not hold.
type Explanation struct {
	// Decision is exactly what Decide returns for the same input.
	Decision Decision
	// Grants are the entitlement's standing grants in file order, then
	// the caller's dynamic grants for it in the order given.
	Grants []GrantCheck
}

// Decide answers in. It is pure: it reads no clock, does no I/O and does
// not change the policy, so the same input always gives the same decision.
//
// The order of the checks: an unknown entitlement, or one the caller has
// no relation to (no grant, not requestable, no break-glass), is
// not_granted. Otherwise a conflict with something the caller holds
// denies; standing grants that ended or lapsed give nothing; the `when`
// condition must hold for standing and request grants (break-glass is
// exempt: it is for when normal rules do not fit); of the grants left,
// the one giving the longest TTL (then the smallest id) is used. With no
// grant left, a caller who may request the entitlement gets NeedsApproval.
func (p *Policy) Decide(in Input) Decision {
	return p.decide(in, nil)
}

// Explain is Decide with every grant it considered.
func (p *Policy) Explain(in Input) Explanation {
	var checks []GrantCheck
	d := p.decide(in, &checks)
	return Explanation{Decision: d, Grants: checks}
}

// notGranted is the one public answer for "no such entitlement" and "not
// yours", so that answers leak nothing.
func notGranted(in Input) Reason {
	return Reason{
		Code:    ReasonNotGranted,
		Message: fmt.Sprintf("no grant allows %s to use entitlement %q", in.Principal.ID, in.Entitlement),
	}
}

// candidate is a grant that lets the caller use the entitlement now.
type candidate struct {
	id      string
	kind    GrantKind
	ttl     time.Duration
	end     time.Time
	subject string // as written (standing) or the principal (dynamic)
	purpose string // standing only
	reason  string // dynamic only: the request's reason and ticket
	ticket  string
}

func kindLabel(k GrantKind) string {
	switch k {
	case GrantRequest:
		return "access request grant"
	case GrantBreakGlass:
		return "break-glass grant"
	default:
		return "standing grant"
	}
}

func (p *Policy) decide(in Input, checks *[]GrantCheck) Decision {
	ent := p.Entitlements[in.Entitlement]
	d := Decision{Outcome: Deny, Entitlement: ent}
	switch {
	case in.TTL < 0:
		d.Reasons = []Reason{{ReasonInvalidTTL, fmt.Sprintf("requested TTL %s is negative", fmtDuration(in.TTL))}}
		return d
	case in.Now.IsZero():
		d.Reasons = []Reason{{ReasonInvalidTime, "the decision time is not set"}}
		return d
	case ent == nil:
		d.Reasons = []Reason{notGranted(in)}
		return d
	}

	c := newCaller(in.Principal)
	requested := in.TTL
	if requested == 0 {
		requested = ent.TTL
	}
	related := false
	var cands []candidate
	var lapsed, ended []Reason
	for _, g := range ent.Standing {
		check := GrantCheck{GrantID: g.ID, Kind: GrantStanding, Subject: g.Subject}
		check.Matches = p.match(g.subject, c)
		check.Ended = !in.Now.Before(g.Until)
		if check.Matches {
			related = true
			switch why := certificationLapsed(g, in); {
			case check.Ended:
				ended = append(ended, Reason{
					Code:    ReasonGrantEnded,
					Message: fmt.Sprintf("standing grant %q for entitlement %q ended at %s", g.ID, ent.Name, g.Until.Format(time.RFC3339)),
				})
			case why != "":
				check.Lapsed = true
				lapsed = append(lapsed, Reason{
					Code:    ReasonCertificationLapsed,
					Message: fmt.Sprintf("standing grant %q for entitlement %q %s", g.ID, ent.Name, why),
				})
			default:
				check.TTL = effectiveTTL(requested, ent.MaxTTL, g.Until.Sub(in.Now))
				cands = append(cands, candidate{id: g.ID, kind: GrantStanding, ttl: check.TTL, end: g.Until, subject: g.Subject, purpose: g.Purpose})
			}
		}
		if checks != nil {
			*checks = append(*checks, check)
		}
	}
	for i := range in.Grants {
		g := &in.Grants[i]
		if g.Entitlement != ent.Name || g.Subject != in.Principal.ID || (g.Kind != GrantRequest && g.Kind != GrantBreakGlass) {
			continue
		}
		related = true
		check := GrantCheck{GrantID: g.ID, Kind: g.Kind, Subject: g.Subject, Matches: true}
		switch {
		case !in.Now.Before(g.End):
			check.Ended = true
			ended = append(ended, Reason{
				Code:    ReasonGrantEnded,
				Message: fmt.Sprintf("%s %q for entitlement %q ended at %s", kindLabel(g.Kind), g.ID, ent.Name, g.End.Format(time.RFC3339)),
			})
		case in.Now.Before(g.Start):
			check.Ended = true
			ended = append(ended, Reason{
				Code:    ReasonGrantNotStarted,
				Message: fmt.Sprintf("%s %q for entitlement %q starts at %s", kindLabel(g.Kind), g.ID, ent.Name, g.Start.Format(time.RFC3339)),
			})
		default:
			check.TTL = effectiveTTL(requested, ent.MaxTTL, g.End.Sub(in.Now))
			cands = append(cands, candidate{id: g.ID, kind: g.Kind, ttl: check.TTL, end: g.End, subject: g.Subject, reason: g.Reason, ticket: g.Ticket})
		}
		if checks != nil {
			*checks = append(*checks, check)
		}
	}
	requestable := ent.Approval != nil && p.matchAny(ent.requestable, c)
	breakGlass := ent.BreakGlass != nil && p.matchAny(ent.BreakGlass.allowed, c)
	if !related && !requestable && !breakGlass {
		d.Reasons = []Reason{notGranted(in)}
		return d
	}

	if conflicts := p.conflicts(ent, c, in); len(conflicts) > 0 {
		d.Reasons = conflicts
		return d
	}

	sort.SliceStable(ended, func(i, j int) bool { return ended[i].Message < ended[j].Message })
	sort.SliceStable(lapsed, func(i, j int) bool { return lapsed[i].Message < lapsed[j].Message })
	reasons := append(lapsed, ended...)

	if in.BreakGlassBlocked {
		n := len(cands)
		cands = slices.DeleteFunc(cands, func(c candidate) bool { return c.kind == GrantBreakGlass })
		if len(cands) < n || (breakGlass && len(cands) == 0) {
			reasons = append(reasons, Reason{ReasonBreakGlassBlocked, fmt.Sprintf("a break-glass review by %s is overdue; break-glass gives nothing until it is completed", in.Principal.ID)})
		}
	}

	conditionOK := true
	nonBG := slices.ContainsFunc(cands, func(c candidate) bool { return c.kind != GrantBreakGlass })
	if ent.when != nil && (nonBG || (len(cands) == 0 && requestable)) {
		rv := requestVar{Entitlement: ent.Name, Reason: in.Reason, Ticket: in.Ticket, Duration: requested, Time: in.Now.UTC()}
		if rv.Reason == "" && rv.Ticket == "" {
			for _, cd := range sortedCands(cands) {
				if cd.kind == GrantRequest {
					rv.Reason, rv.Ticket = cd.reason, cd.ticket
					break
				}
			}
		}
		if r, ok := p.checkCondition(ent, in.Principal, rv); !ok {
			conditionOK = false
			reasons = append(reasons, r)
			cands = slices.DeleteFunc(cands, func(c candidate) bool { return c.kind != GrantBreakGlass })
		}
	}

	if len(cands) == 0 {
		if requestable && conditionOK {
			d.Outcome = NeedsApproval
			d.Approval = ent.Approval.rule(ent.Approval.Approvals)
			d.Reasons = append(reasons, Reason{ReasonApprovalRequired, approvalMessage(ent, d.Approval)})
			return d
		}
		if len(reasons) == 0 {
			reasons = []Reason{notGranted(in)}
		}
		if breakGlass && !in.BreakGlassBlocked {
			reasons = append(reasons, Reason{ReasonBreakGlassAvailable, fmt.Sprintf("%s may break glass for entitlement %q (up to %s, reviewed within %s)", in.Principal.ID, ent.Name, fmtDuration(ent.BreakGlass.MaxTTL), fmtDuration(ent.BreakGlass.ReviewWithin))})
		}
		d.Reasons = reasons
		return d
	}

	best := sortedCands(cands)[0]
	d.Outcome = Allow
	d.GrantID = best.id
	d.GrantKind = best.kind
	d.TTL = best.ttl
	d.ExpiresAt = in.Now.Add(best.ttl)
	d.HardEnd = in.Now.Add(ent.MaxTTL)
	if best.end.Before(d.HardEnd) {
		d.HardEnd = best.end
	}
	switch best.kind {
	case GrantStanding:
		d.Reasons = []Reason{{
			Code:    ReasonStandingGrant,
			Message: fmt.Sprintf("standing grant %q lets %s use entitlement %q until %s (purpose: %s)", best.id, best.subject, ent.Name, best.end.Format(time.RFC3339), best.purpose),
		}}
	case GrantRequest:
		d.Reasons = []Reason{{
			Code:    ReasonRequestGrant,
			Message: fmt.Sprintf("access request grant %q lets %s use entitlement %q until %s", best.id, best.subject, ent.Name, best.end.Format(time.RFC3339)),
		}}
	case GrantBreakGlass:
		d.Reasons = []Reason{{
			Code:    ReasonBreakGlassGrant,
			Message: fmt.Sprintf("break-glass grant %q lets %s use entitlement %q until %s", best.id, best.subject, ent.Name, best.end.Format(time.RFC3339)),
		}}
	}
	if best.ttl < requested {
		d.Clamped = true
		var why string
		if best.ttl == ent.MaxTTL {
			why = fmt.Sprintf("max_ttl of entitlement %q is %s", ent.Name, fmtDuration(ent.MaxTTL))
		} else {
			why = fmt.Sprintf("%s %q ends at %s", kindLabel(best.kind), best.id, best.end.Format(time.RFC3339))
		}
		d.Reasons = append(d.Reasons, Reason{
			Code:    ReasonTTLClamped,
			Message: fmt.Sprintf("TTL reduced from %s to %s: %s", fmtDuration(requested), fmtDuration(best.ttl), why),
		})
	}
	return d
}

// sortedCands orders candidates best first: longest TTL, then smallest id.
func sortedCands(cands []candidate) []candidate {
	out := slices.Clone(cands)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].ttl != out[j].ttl {
			return out[i].ttl > out[j].ttl
		}
		return out[i].id < out[j].id
	})
	return out
}

// certificationLapsed says why a standing grant has lapsed, or "".
func certificationLapsed(g *StandingGrant, in Input) string {
	if in.Certified == nil {
		return ""
	}
	since, ok := in.Certified[g.ID]
	switch {
	case ok && since.IsZero():
		return "was revoked by its owner at certification"
	case g.ReviewEvery == 0:
		return ""
	case !ok:
		return "has no certification record"
	}
	if due := since.Add(g.ReviewEvery); !in.Now.Before(due) {
		return fmt.Sprintf("lapsed at %s: not certified within its review period of %s", due.UTC().Format(time.RFC3339), fmtDuration(g.ReviewEvery))
	}
	return ""
}

// checkCondition evaluates the entitlement's condition; on false or error
// it returns the reason to deny with.
func (p *Policy) checkCondition(ent *Entitlement, pr authn.Principal, rv requestVar) (Reason, bool) {
	ok, err := ent.when.eval(p, pr, rv)
	if err != nil {
		return Reason{ReasonConditionError, fmt.Sprintf("the condition of entitlement %q could not be evaluated: %v", ent.Name, err)}, false
	}
	if !ok {
		return Reason{ReasonConditionFailed, fmt.Sprintf("the condition of entitlement %q is not met", ent.Name)}, false
	}
	return Reason{}, true
}

// holds reports the entitlements the caller holds besides ent: in.Held,
// active dynamic grants, and usable standing grants.
func (p *Policy) holds(name string, c *caller, in Input) bool {
	if slices.Contains(in.Held, name) {
		return true
	}
	for i := range in.Grants {
		g := &in.Grants[i]
		if g.Entitlement == name && g.Subject == in.Principal.ID && g.activeAt(in.Now) {
			return true
		}
	}
	other := p.Entitlements[name]
	if other == nil {
		return false
	}
	for _, g := range other.Standing {
		if in.Now.Before(g.Until) && p.match(g.subject, c) && certificationLapsed(g, in) == "" {
			return true
		}
	}
	return false
}

// conflicts lists a reason for each conflicting entitlement the caller
// holds.
func (p *Policy) conflicts(ent *Entitlement, c *caller, in Input) []Reason {
	var out []Reason
	for _, other := range ent.ConflictsWith {
		if p.holds(other, c, in) {
			out = append(out, Reason{
				Code:    ReasonConflictingEntitlement,
				Message: fmt.Sprintf("entitlement %q conflicts with %q, which %s holds (segregation of duties)", ent.Name, other, in.Principal.ID),
			})
		}
	}
	return out
}

// matchAny reports whether the caller is, or belongs to, any subject.
func (p *Policy) matchAny(subjects []*subject, c *caller) bool {
	for _, s := range subjects {
		if p.match(s, c) {
			return true
		}
	}
	return false
}

// rule is the ApprovalRule with needed approvals still to come.
func (a *ApprovalPolicy) rule(needed int) *ApprovalRule {
	return &ApprovalRule{Needed: needed, Approvers: slices.Clone(a.Approvers), DistinctGroups: a.DistinctGroups}
}

func approvalMessage(ent *Entitlement, r *ApprovalRule) string {
	if r.Needed == 0 {
		return fmt.Sprintf("entitlement %q is granted on request without approval: create an access request", ent.Name)
	}
	each := ""
	if r.DistinctGroups {
		each = ", each from a different entry"
	}
	n := "approval"
	if r.Needed > 1 {
		n = "approvals"
	}
	return fmt.Sprintf("entitlement %q needs an approved access request: %d %s from %s%s", ent.Name, r.Needed, n, strings.Join(r.Approvers, ", "), each)
}

// effectiveTTL is the requested TTL bounded by max_ttl and by the time
// left on the grant.
func effectiveTTL(requested, maxTTL, left time.Duration) time.Duration {
	return min(requested, maxTTL, left)
}

// Usable is an entitlement the caller may use now without asking.
type Usable struct {
	// Entitlement is the entitlement.
	Entitlement *Entitlement
	// GrantID is the grant that allows it (as Decide would choose).
	GrantID string
	// TTL is the effective default TTL a request with TTL 0 would get.
	TTL time.Duration
	// HardEnd is the latest a lease of it could last.
	HardEnd time.Time
}

// Usable lists, sorted by entitlement name, the entitlements pr may use at
// now with no request, each with the grant and TTL Decide would give for
// the default TTL. It is what `mayfly ls` shows a caller about itself.
func (p *Policy) Usable(pr authn.Principal, now time.Time) []Usable {
	var out []Usable
	for _, name := range p.names {
		d := p.Decide(Input{Principal: pr, Entitlement: name, Now: now})
		if d.Outcome != Allow {
			continue
		}
		out = append(out, Usable{Entitlement: d.Entitlement, GrantID: d.GrantID, TTL: d.TTL, HardEnd: d.HardEnd})
	}
	return out
}

// fmtDuration prints 1h rather than 1h0m0s, and whole days as 30d, the
// way the policy file writes them.
func fmtDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
