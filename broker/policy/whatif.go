package policy

import (
	"fmt"
	"time"
)

// RecordKind is which decision a Record holds.
type RecordKind string

const (
	// RecordIssue is a Decide: a credential issuance.
	RecordIssue RecordKind = "issue"
	// RecordRequest is a DecideRequest: an access request.
	RecordRequest RecordKind = "request"
	// RecordApproval is a CheckApproval: an approval or a denial.
	RecordApproval RecordKind = "approval"
	// RecordBreakGlass is a DecideBreakGlass.
	RecordBreakGlass RecordKind = "break_glass"
)

// Result is the part of a decision that what-if compares.
type Result struct {
	// Outcome is the decision's outcome.
	Outcome Outcome `json:"outcome"`
	// TTL is the effective lifetime: the credential TTL (issue), the grant
	// duration (request), the break-glass TTL; 0 for approvals and for
	// decisions that did not allow.
	TTL time.Duration `json:"ttl,omitempty"`
	// Basis is what the outcome rests on: the grant id (issue), the
	// approvers entry the approval counted as (approval).
	Basis string `json:"basis,omitempty"`
	// Needed is how many approvals a request needs (request with
	// NeedsApproval) or still needs after an approval (approval).
	Needed int `json:"needed,omitempty"`
	// Reasons are the decision's reasons.
	Reasons []Reason `json:"reasons,omitempty"`
}

// Record is a decision as recorded: its kind, exactly one input (the one
// matching the kind), and its result. The access service keeps one for
// every decision it makes, refusals included, and the API records
// issuance; WhatIf replays them.
type Record struct {
	// ID identifies the record (for the caller; what-if does not read it).
	ID string `json:"id,omitempty"`
	// Kind says which input is set.
	Kind RecordKind `json:"kind"`
	// At is when the decision was made (the input's Now).
	At time.Time `json:"at"`
	// PolicyDigest is the digest of the policy it was made under.
	PolicyDigest string `json:"policy_digest,omitempty"`
	// Issue, Request, Approval and BreakGlass are the inputs; one is set.
	Issue      *Input           `json:"issue,omitempty"`
	Request    *RequestInput    `json:"request,omitempty"`
	Approval   *ApprovalInput   `json:"approval,omitempty"`
	BreakGlass *BreakGlassInput `json:"break_glass,omitempty"`
	// Result is the recorded outcome.
	Result Result `json:"result"`
}

// ResultOf returns the Result of a decision value (Decision,
// RequestDecision, ApprovalDecision or BreakGlassDecision), for recording.
func ResultOf(decision any) Result {
	switch d := decision.(type) {
	case Decision:
		r := Result{Outcome: d.Outcome, Reasons: d.Reasons}
		if d.Outcome == Allow {
			r.TTL, r.Basis = d.TTL, d.GrantID
		}
		if d.Approval != nil {
			r.Needed = d.Approval.Needed
		}
		return r
	case RequestDecision:
		r := Result{Outcome: d.Outcome, Reasons: d.Reasons}
		if d.Outcome != Deny {
			r.TTL = d.Duration
		}
		if d.Outcome == NeedsApproval && d.Approval != nil {
			r.Needed = d.Approval.Needed
		}
		return r
	case ApprovalDecision:
		return Result{Outcome: d.Outcome, Basis: d.CountedAs, Needed: d.Remaining, Reasons: d.Reasons}
	case BreakGlassDecision:
		r := Result{Outcome: d.Outcome, Reasons: d.Reasons}
		if d.Outcome == Allow {
			r.TTL = d.TTL
		}
		return r
	}
	return Result{Outcome: Deny}
}

// Replay decides r's input again under p.
func (p *Policy) Replay(r Record) (Result, error) {
	switch {
	case r.Kind == RecordIssue && r.Issue != nil:
		return ResultOf(p.Decide(*r.Issue)), nil
	case r.Kind == RecordRequest && r.Request != nil:
		return ResultOf(p.DecideRequest(*r.Request)), nil
	case r.Kind == RecordApproval && r.Approval != nil:
		return ResultOf(p.CheckApproval(*r.Approval)), nil
	case r.Kind == RecordBreakGlass && r.BreakGlass != nil:
		return ResultOf(p.DecideBreakGlass(*r.BreakGlass)), nil
	}
	return Result{}, fmt.Errorf("policy: record %q of kind %q carries no %s input", r.ID, r.Kind, r.Kind)
}

// What a Change says changed.
const (
	// ChangedOutcome: allow, deny or needs_approval differs.
	ChangedOutcome = "outcome"
	// ChangedTTL: the effective TTL or grant duration differs.
	ChangedTTL = "ttl"
	// ChangedApprovals: the number of approvals needed differs.
	ChangedApprovals = "approvals"
	// ChangedUnreplayable: the record cannot be replayed (see Err).
	ChangedUnreplayable = "unreplayable"
)

// Change is a recorded decision that the new policy would decide
// differently.
type Change struct {
	// Record is the recorded decision.
	Record Record
	// Old is the decision re-made under the old policy (the recorded one
	// when WhatIf is given no old policy): the baseline.
	Old Result
	// New is the decision under the new policy, with its reasons.
	New Result
	// Changed lists what differs between Old and New: ChangedOutcome,
	// ChangedTTL, ChangedApprovals (or ChangedUnreplayable).
	Changed []string
	// Tightens says the new policy is stricter here: an allow no longer
	// allows, approval becomes needed, a TTL is shorter, more approvals
	// are needed. Loosens says the opposite. A change may do neither
	// (say, a different grant with the same TTL) but never both.
	Tightens bool
	Loosens  bool
	// Drift says the old policy no longer reproduces the recorded outcome
	// or TTL: the record was made under another policy or state, so Old
	// is the better baseline and the recorded result is history.
	Drift bool
	// Err says why the record could not be replayed.
	Err string
}

// WhatIf replays records under oldP and newP and returns, in record order,
// every record whose outcome, effective TTL or approvals needed would
// change, with both results and the new reasons. It is pure: each record
// is replayed at its own time with its own recorded state (grants held,
// certifications, ...), so the answer is what the new policy would have
// said then. oldP may be nil: the recorded results are the baseline.
// Records that cannot be replayed are returned too (ChangedUnreplayable),
// so nothing is silently left out.
func WhatIf(oldP, newP *Policy, records []Record) []Change {
	var out []Change
	for _, r := range records {
		ch := Change{Record: r, Old: r.Result}
		if oldP != nil {
			old, err := oldP.Replay(r)
			if err != nil {
				ch.Err, ch.Changed = err.Error(), []string{ChangedUnreplayable}
				out = append(out, ch)
				continue
			}
			ch.Old = old
			ch.Drift = old.Outcome != r.Result.Outcome || old.TTL != r.Result.TTL
		}
		nw, err := newP.Replay(r)
		if err != nil {
			ch.Err, ch.Changed = err.Error(), []string{ChangedUnreplayable}
			out = append(out, ch)
			continue
		}
		ch.New = nw
		if ch.Old.Outcome != nw.Outcome {
			ch.Changed = append(ch.Changed, ChangedOutcome)
		}
		if ch.Old.TTL != nw.TTL {
			ch.Changed = append(ch.Changed, ChangedTTL)
		}
		if ch.Old.Needed != nw.Needed && ch.Old.Outcome == nw.Outcome {
			ch.Changed = append(ch.Changed, ChangedApprovals)
		}
		if len(ch.Changed) == 0 {
			continue
		}
		ch.Tightens, ch.Loosens = direction(r.Kind, ch.Old, nw)
		out = append(out, ch)
	}
	return out
}

// strictness ranks outcomes from most to least permissive for a kind.
func strictness(kind RecordKind, o Outcome) int {
	switch o {
	case Allow:
		return 0
	case NeedsApproval:
		return 1
	default:
		return 2
	}
}

// direction says whether going from old to nw tightens or loosens.
func direction(kind RecordKind, old, nw Result) (tightens, loosens bool) {
	so, sn := strictness(kind, old.Outcome), strictness(kind, nw.Outcome)
	switch {
	case sn > so:
		return true, false
	case sn < so:
		return false, true
	}
	if kind == RecordApproval {
		// The same approval leaving more approvals to find is stricter.
		switch {
		case nw.Needed > old.Needed:
			return true, false
		case nw.Needed < old.Needed:
			return false, true
		}
		return false, false
	}
	switch {
	case nw.TTL < old.TTL:
		return true, false
	case nw.TTL > old.TTL:
		return false, true
	case nw.Needed > old.Needed:
		return true, false
	case nw.Needed < old.Needed:
		return false, true
	}
	return false, false
}

// Summary counts what a what-if found.
type Summary struct {
	// Records is how many records were replayed.
	Records int
	// Changed is how many would be decided differently.
	Changed int
	// Tightened and Loosened count the changes each way.
	Tightened int
	Loosened  int
	// Drifted counts changes whose recorded result the old policy no
	// longer reproduces.
	Drifted int
	// Unreplayable counts records that could not be replayed.
	Unreplayable int
	// Transitions counts outcome changes by kind, e.g.
	// "issue: allow -> deny".
	Transitions map[string]int
}

// Summarize counts changes (from WhatIf over records replayed records).
func Summarize(records int, changes []Change) Summary {
	s := Summary{Records: records, Changed: len(changes), Transitions: map[string]int{}}
	for _, c := range changes {
		if c.Err != "" {
			s.Unreplayable++
			continue
		}
		if c.Tightens {
			s.Tightened++
		}
		if c.Loosens {
			s.Loosened++
		}
		if c.Drift {
			s.Drifted++
		}
		if c.Old.Outcome != c.New.Outcome {
			s.Transitions[fmt.Sprintf("%s: %s -> %s", c.Record.Kind, c.Old.Outcome, c.New.Outcome)]++
		}
	}
	return s
}

// MarshalText writes the outcome as allow, deny or needs_approval, so
// recorded decisions read well and survive reordering of the constants.
func (o Outcome) MarshalText() ([]byte, error) {
	switch o {
	case Deny, Allow, NeedsApproval:
		return []byte(o.String()), nil
	}
	return nil, fmt.Errorf("policy: unknown outcome %d", int(o))
}

// UnmarshalText reads what MarshalText writes.
func (o *Outcome) UnmarshalText(b []byte) error {
	switch string(b) {
	case "deny":
		*o = Deny
	case "allow":
		*o = Allow
	case "needs_approval":
		*o = NeedsApproval
	default:
		return fmt.Errorf("policy: unknown outcome %q", b)
	}
	return nil
}
