package policy

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/authn"
)

// Input is one question to the policy: may this principal use this
// entitlement now, and for how long.
type Input struct {
	// Principal is the authenticated caller.
	Principal authn.Principal
	// Entitlement is the name asked for.
	Entitlement string
	// TTL is the lifetime asked for; 0 means the entitlement's default.
	TTL time.Duration
	// Now is the time of the decision. Decide reads no clock: the caller
	// passes it, so decisions can be replayed.
	Now time.Time
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
	// ReasonGrantEnded: a grant for the caller exists but its until passed.
	ReasonGrantEnded = "grant_ended"
	// ReasonStandingGrant: the allow rests on a standing grant.
	ReasonStandingGrant = "standing_grant"
	// ReasonTTLClamped: the TTL was reduced to max_ttl or to the grant end.
	ReasonTTLClamped = "ttl_clamped"
	// ReasonInvalidTTL: the requested TTL was negative (a caller bug).
	ReasonInvalidTTL = "invalid_ttl"
	// ReasonInvalidTime: Input.Now was not set (a caller bug); deciding at
	// the zero time would treat every ended grant as live.
	ReasonInvalidTime = "invalid_time"
)

// Reason is one structured reason for a decision.
type Reason struct {
	// Code is one of the Reason* constants.
	Code string
	// Message explains it to a person.
	Message string
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
	// TTL is the effective lifetime of the credential.
	TTL time.Duration
	// ExpiresAt is Now+TTL.
	ExpiresAt time.Time
	// HardEnd is the latest any renewal may reach: the earlier of
	// Now+MaxTTL and the grant's end.
	HardEnd time.Time
	// Clamped says the requested (or default) TTL was reduced.
	Clamped bool
	// Reasons explain the outcome, most important first.
	Reasons []Reason
}

// GrantCheck is how one grant of the entitlement fared in a decision.
type GrantCheck struct {
	// GrantID is the grant's id.
	GrantID string
	// Subject is the grant's subject as written.
	Subject string
	// Matches says the caller is, or belongs to, the subject.
	Matches bool
	// Ended says the grant's until has passed.
	Ended bool
	// TTL is the effective TTL the grant would give (0 unless it matches
	// and has not ended).
	TTL time.Duration
}

// Explanation is a decision with the working shown: every grant that was
// considered. It is for operators (mayfly policy explain, what-if), never
// for the caller, since it shows grants the caller does not hold.
type Explanation struct {
	// Decision is exactly what Decide returns for the same input.
	Decision Decision
	// Grants are the entitlement's grants in file order.
	Grants []GrantCheck
}

// Decide answers in. It is pure: it reads no clock, does no I/O and does
// not change the policy, so the same input always gives the same decision.
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
	var best *StandingGrant
	var bestTTL time.Duration
	var ended []*StandingGrant
	for _, g := range ent.Standing {
		check := GrantCheck{GrantID: g.ID, Subject: g.Subject}
		check.Matches = p.match(g.subject, c)
		check.Ended = !in.Now.Before(g.Until)
		if check.Matches && check.Ended {
			ended = append(ended, g)
		}
		if check.Matches && !check.Ended {
			check.TTL = effectiveTTL(requested, ent.MaxTTL, g.Until.Sub(in.Now))
			if best == nil || check.TTL > bestTTL || (check.TTL == bestTTL && g.ID < best.ID) {
				best, bestTTL = g, check.TTL
			}
		}
		if checks != nil {
			*checks = append(*checks, check)
		}
	}

	if best == nil {
		if len(ended) == 0 {
			d.Reasons = []Reason{notGranted(in)}
			return d
		}
		sort.Slice(ended, func(i, j int) bool { return ended[i].ID < ended[j].ID })
		for _, g := range ended {
			d.Reasons = append(d.Reasons, Reason{
				Code:    ReasonGrantEnded,
				Message: fmt.Sprintf("standing grant %q for entitlement %q ended at %s", g.ID, ent.Name, g.Until.Format(time.RFC3339)),
			})
		}
		return d
	}

	d.Outcome = Allow
	d.GrantID = best.ID
	d.TTL = bestTTL
	d.ExpiresAt = in.Now.Add(bestTTL)
	d.HardEnd = in.Now.Add(ent.MaxTTL)
	if best.Until.Before(d.HardEnd) {
		d.HardEnd = best.Until
	}
	d.Reasons = []Reason{{
		Code:    ReasonStandingGrant,
		Message: fmt.Sprintf("standing grant %q lets %s use entitlement %q until %s (purpose: %s)", best.ID, best.Subject, ent.Name, best.Until.Format(time.RFC3339), best.Purpose),
	}}
	if bestTTL < requested {
		d.Clamped = true
		var why string
		if bestTTL == ent.MaxTTL {
			why = fmt.Sprintf("max_ttl of entitlement %q is %s", ent.Name, fmtDuration(ent.MaxTTL))
		} else {
			why = fmt.Sprintf("standing grant %q ends at %s", best.ID, best.Until.Format(time.RFC3339))
		}
		d.Reasons = append(d.Reasons, Reason{
			Code:    ReasonTTLClamped,
			Message: fmt.Sprintf("TTL reduced from %s to %s: %s", fmtDuration(requested), fmtDuration(bestTTL), why),
		})
	}
	return d
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

// fmtDuration prints 1h rather than 1h0m0s.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
