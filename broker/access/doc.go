// Package access is the request side of Mayfly's governance: access
// requests and their approvals, the dynamic grants they create,
// break-glass self-grants whose review is enforced, certification of
// standing grants with usage data, and the record of every decision.
//
// Policy decides (broker/policy: DecideRequest, CheckApproval,
// DecideBreakGlass, Decide); this package keeps the state those decisions
// need and act on, in a Store (memory here; the same accesstest suite
// holds any other store to the same contract).
//
//	svc, err := access.New(access.Config{
//		Store:        memory.New(),
//		Policy:       holder.Current,
//		RevokeLeases: func(ctx context.Context, grantID string) (int, error) {
//			return leases.RevokeMatching(ctx, lease.Selector{GrantID: grantID}, lease.ReasonGrantEnded, time.Now())
//		},
//		Notify: sender.Send, // notify.Sender
//	})
//	go svc.Run(ctx) // expiry, grant ends, lapses, escalation, notifications
//
//	r, err := svc.Create(ctx, alice, access.RequestSpec{Entitlement: "orders-db-admin", Reason: "fix index", Ticket: "INC-42", Duration: time.Hour})
//	r, err = svc.Review(ctx, lead, r.ID, true, "ok", r.Digest) // the digest the approver saw
//
//	// Issuance: policy decides with what the service knows.
//	st, err := svc.State(ctx, caller)
//	in := policy.Input{Principal: caller, Entitlement: name, Now: now}
//	st.Fill(&in)
//	d := holder.Current().Decide(in)
//	svc.RecordIssue(ctx, in, d) // for what-if
//
// # Rules the service enforces
//
//   - Requests are decided by policy when made; a refusal stores nothing
//     and returns a *DeniedError with every reason (ErrInvalid for a bad
//     request, ErrDenied when policy refuses).
//   - A review carries the request's Digest as the reviewer saw it; a
//     request that changed, or an approval replayed on another request,
//     is refused (ErrChanged). Nobody reviews their own request under any
//     identity (ErrSelfApproval); only approvers review (ErrNotApprover);
//     one approver counts once, even when two calls race
//     (ErrAlreadyDecided: updates are compare-and-set on a version);
//     distinct_groups needs a different approvers entry per approval
//     (ErrNotCounted); closed or expired requests take no reviews
//     (ErrClosed). The last approval re-checks the request under the
//     policy in force.
//   - A grant starts at approval or at the requested start, whichever is
//     later, and ends Duration after. Asking again while holding one is
//     an extension, approved like a new request.
//   - Break-glass grants are capped to break_glass.max_ttl, notified at
//     once, and must be reviewed within review_within by the owner (never
//     the user); an overdue review blocks the user's further break-glass
//     until it is completed.
//   - Standing grants with review_every lapse unless their owner certifies
//     them in time; Run revokes their leases once per lapse, and Decide
//     denies them. Revoking at certification does both at once.
//   - Every decision and refused attempt appends a DecisionRecord; those
//     holding a policy decision replay under a new policy (WhatIf).
//
// Errors are sentinels in errors.go, prefixed "access:"; the API chooses
// status codes from them. Time comes from Config.Now, never the wall
// clock, so tests and replays are deterministic.
package access
