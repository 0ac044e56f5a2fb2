package access

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/notify"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// State is what the access service knows about a principal that policy
// decisions need (see policy.Input).
type State struct {
	// Grants are the principal's active dynamic grants (including ones
	// that start later), as policy sees them.
	Grants []policy.Grant
	// Held are the entitlements the principal holds through active grants
	// and (with Config.Held) active leases.
	Held []string
	// Certified maps every standing grant id of the policy in force to
	// the start of its review period: the last certification, the first
	// time the broker saw the grant if it was never certified, or the
	// zero time if its owner revoked it.
	Certified map[string]time.Time
	// BreakGlassBlocked says a break-glass review by the principal is
	// overdue.
	BreakGlassBlocked bool
}

// Fill copies the state into a policy input, keeping the question
// (principal, entitlement, TTL, reason, ticket, time) as it is.
func (st State) Fill(in *policy.Input) {
	in.Grants = st.Grants
	in.Held = st.Held
	in.Certified = st.Certified
	in.BreakGlassBlocked = st.BreakGlassBlocked
}

// State gathers what policy needs to decide for pr now. The API calls it
// before policy.Decide so that issuance honours grants, certification,
// conflicts and break-glass blocks.
func (s *Service) State(ctx context.Context, pr authn.Principal) (State, error) {
	now := s.now()
	var st State
	v, err := s.view(ctx)
	if err != nil {
		return State{}, err
	}
	grants, err := s.subjectGrants(ctx, v, pr.ID)
	if err != nil {
		return State{}, err
	}
	held := map[string]bool{}
	for _, g := range grants {
		if g.ReviewOverdue(now) {
			st.BreakGlassBlocked = true
		}
		if g.State != GrantActive || !now.Before(g.End) {
			continue
		}
		st.Grants = append(st.Grants, policyGrant(g))
		if g.ActiveAt(now) {
			held[g.Entitlement] = true
		}
	}
	if s.cfg.Held != nil {
		ents, err := s.cfg.Held(ctx, pr.ID)
		if err != nil {
			return State{}, fmt.Errorf("access: entitlements held through leases: %w", err)
		}
		for _, e := range ents {
			held[e] = true
		}
	}
	for e := range held {
		st.Held = append(st.Held, e)
	}
	sort.Strings(st.Held)
	st.Certified, err = s.certified(ctx, v, s.cfg.Policy(), now)
	if err != nil {
		return State{}, err
	}
	return st, nil
}

func policyGrant(g *Grant) policy.Grant {
	return policy.Grant{ID: g.ID, Entitlement: g.Entitlement, Subject: g.Subject, Kind: g.Kind, Start: g.Start, End: g.End, Reason: g.Reason, Ticket: g.Ticket}
}

// certified builds policy.Input.Certified for every standing grant of p.
// A grant never certified counts from when the broker first saw it: the
// first call that finds it marks it (once for all replicas).
func (s *Service) certified(ctx context.Context, v view, p *policy.Policy, now time.Time) (map[string]time.Time, error) {
	certs, err := s.latestCertifications(ctx, v)
	if err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	for _, name := range p.Names() {
		for _, g := range p.Entitlement(name).Standing {
			if c := certs[g.ID]; c != nil {
				if c.Decision == Revoke {
					out[g.ID] = time.Time{}
				} else {
					out[g.ID] = c.At
				}
				continue
			}
			seen, err := s.firstSeen(ctx, g.ID, now)
			if err != nil {
				return nil, err
			}
			out[g.ID] = seen
		}
	}
	return out, nil
}

func (s *Service) firstSeen(ctx context.Context, id string, now time.Time) (time.Time, error) {
	s.seenMu.Lock()
	t, ok := s.seen[id]
	s.seenMu.Unlock()
	if ok {
		return t, nil
	}
	t, _, err := s.store.Mark(ctx, "seen/"+id, now)
	if err != nil {
		return time.Time{}, fmt.Errorf("access: mark standing grant: %w", err)
	}
	s.seenMu.Lock()
	s.seen[id] = t
	s.seenMu.Unlock()
	return t, nil
}

// listGrants reads every page of a grant query.
func (s *Service) listGrants(ctx context.Context, q GrantQuery) ([]*Grant, error) {
	q.Limit = MaxLimit
	var out []*Grant
	for {
		page, err := s.store.ListGrants(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("access: list grants: %w", err)
		}
		out = append(out, page...)
		if len(page) < q.Limit {
			return out, nil
		}
		q.After = page[len(page)-1].ID
	}
}

// BreakGlass grants pr the entitlement at once, for ttl (0: the maximum;
// longer: capped), if policy allows it (policy.DecideBreakGlass). The
// grant's review is due within break_glass.review_within; its webhooks
// hear of the use at once. A refusal is a *DeniedError (ErrDenied, or
// ErrInvalid without a reason); it is recorded like the use.
func (s *Service) BreakGlass(ctx context.Context, pr authn.Principal, entitlement string, ttl time.Duration, reason string) (*Grant, error) {
	if err := s.gate(ctx); err != nil {
		return nil, err
	}
	p := s.cfg.Policy()
	now := s.now()
	st, err := s.State(ctx, pr)
	if err != nil {
		return nil, err
	}
	in := policy.BreakGlassInput{
		Principal: pr, Entitlement: entitlement, TTL: ttl, Reason: reason,
		Grants: st.Grants, Held: st.Held, Certified: st.Certified, Blocked: st.BreakGlassBlocked, Now: now,
	}
	d := p.DecideBreakGlass(in)
	rec := &DecisionRecord{
		Action: ActionBreakGlass, Actor: pr.ID, Entitlement: entitlement, Outcome: d.Outcome.String(), Reasons: d.Reasons,
		Decision: &policy.Record{Kind: policy.RecordBreakGlass, At: now, PolicyDigest: p.Digest, BreakGlass: &in, Result: policy.ResultOf(d)},
	}
	if d.Outcome != policy.Allow {
		err := denied(d.Reasons)
		rec.Error = errors.Unwrap(err).Error()
		s.record(ctx, p, rec)
		return nil, err
	}
	g := &Grant{
		ID: s.ids.next(now), Kind: policy.GrantBreakGlass, Subject: pr.ID, Entitlement: entitlement, Reason: reason,
		Start: now, End: d.End, State: GrantActive, CreatedAt: now, ReviewDue: d.ReviewDue,
	}
	if err := s.store.CreateGrant(ctx, g); err != nil {
		return nil, fmt.Errorf("access: store break-glass grant: %w", err)
	}
	rec.GrantID = g.ID
	s.record(ctx, p, rec)
	end, due := g.End, g.ReviewDue
	s.enqueue(d.Notify, notify.Event{
		ID: s.ids.next(now), Type: notify.EventBreakGlassUsed, At: now, Entitlement: entitlement, Subject: pr.ID, Actor: pr.ID,
		GrantID: g.ID, Reason: reason, Duration: fmtDur(d.TTL), Until: &end, Due: &due,
		Message: fmt.Sprintf("BREAK-GLASS: %s granted themselves %s until %s; review due by %s. Reason: %s", pr.ID, entitlement, end.UTC().Format(time.RFC3339), due.UTC().Format(time.RFC3339), reason),
	})
	return g, nil
}

// GrantFilter filters and pages Grants.
type GrantFilter struct {
	// Subject, Entitlement and Kind filter when not empty.
	Subject     string
	Entitlement string
	Kind        policy.GrantKind
	// States filters to these states when not empty.
	States []GrantState
	// ReviewPending keeps only break-glass grants not yet reviewed.
	ReviewPending bool
	// PageSize and PageToken page as in ListOptions.
	PageSize  int
	PageToken string
}

// canSeeGrant: the subject (any identity), the entitlement's owner and
// approvers, admins.
func (s *Service) canSeeGrant(p *policy.Policy, pr authn.Principal, g *Grant) bool {
	return p.SameIdentity(pr, subjectPrincipal(g.Subject)) || p.Owns(pr, g.Entitlement) || p.CanApprove(pr, g.Entitlement) || p.IsAdmin(pr)
}

// subjectPrincipal is the principal a grant subject names.
func subjectPrincipal(id string) authn.Principal {
	if strings.HasPrefix(id, "spiffe://") {
		return authn.Principal{Kind: authn.KindWorkload, ID: id}
	}
	return authn.Principal{Kind: authn.KindHuman, ID: id}
}

// Grants lists the dynamic grants the caller may see, in ascending id
// order, and the next page token.
func (s *Service) Grants(ctx context.Context, pr authn.Principal, f GrantFilter) ([]*Grant, string, error) {
	p := s.cfg.Policy()
	limit := PageLimit(f.PageSize)
	q := GrantQuery{Subject: f.Subject, Entitlement: f.Entitlement, Kind: f.Kind, States: f.States, After: f.PageToken, Limit: MaxLimit}
	if f.ReviewPending {
		q.Kind = policy.GrantBreakGlass
	}
	var out []*Grant
	for {
		page, err := s.store.ListGrants(ctx, q)
		if err != nil {
			return nil, "", fmt.Errorf("access: list grants: %w", err)
		}
		for _, g := range page {
			q.After = g.ID
			if !s.canSeeGrant(p, pr, g) || (f.ReviewPending && !g.ReviewedAt.IsZero()) {
				continue
			}
			out = append(out, g)
			if len(out) == limit {
				return out, g.ID, nil
			}
		}
		if len(page) < q.Limit {
			return out, "", nil
		}
	}
}

// GetGrant returns a grant the caller may see; otherwise ErrNotFound.
func (s *Service) GetGrant(ctx context.Context, pr authn.Principal, id string) (*Grant, error) {
	g, err := s.getGrant(ctx, id)
	if err != nil {
		return nil, err
	}
	if !s.canSeeGrant(s.cfg.Policy(), pr, g) {
		return nil, ErrNotFound
	}
	return g, nil
}

func (s *Service) getGrant(ctx context.Context, id string) (*Grant, error) {
	if !lease.ValidID(id) {
		return nil, ErrNotFound
	}
	g, err := s.store.GetGrant(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("access: read grant: %w", err)
	}
	return g, nil
}

// RevokeGrant ends an active grant early (Teleport users ask for this
// without locking the whole user) and revokes the leases minted under it
// through Config.RevokeLeases, returning how many. Its subject (giving
// access back), the entitlement's owner and approvers, and admins may.
// ErrNotFound if the caller may not see it; ErrForbidden if it may see
// but not revoke; ErrClosed if it already ended. If revoking the leases
// fails, the grant stays revoked (it gives nothing) and Run retries.
func (s *Service) RevokeGrant(ctx context.Context, by authn.Principal, id, reason string) (*Grant, int, error) {
	if err := s.gate(ctx); err != nil {
		return nil, 0, err
	}
	for attempt := 0; ; attempt++ {
		p := s.cfg.Policy()
		now := s.now()
		rec := &DecisionRecord{Action: ActionRevokeGrant, Actor: by.ID, GrantID: id, Outcome: OutcomeRefused}
		g, err := s.getGrant(ctx, id)
		if err == nil && !s.canSeeGrant(p, by, g) {
			err = ErrNotFound
		}
		if err == nil {
			rec.Entitlement, rec.RequestID = g.Entitlement, g.RequestID
			switch {
			case len(reason) > policy.MaxReasonLen:
				err = &DeniedError{Err: ErrInvalid, Reasons: []policy.Reason{{Code: policy.ReasonInvalidRequest, Message: fmt.Sprintf("reason is longer than %d bytes", policy.MaxReasonLen)}}}
			case g.State != GrantActive:
				err = fmt.Errorf("%w: grant %s is %s", ErrClosed, g.ID, g.State)
			case !now.Before(g.End):
				err = fmt.Errorf("%w: grant %s ended at %s", ErrClosed, g.ID, g.End.UTC().Format(time.RFC3339))
			}
		}
		if err != nil {
			rec.Error = sentinelText(err)
			s.record(ctx, p, rec)
			return nil, 0, err
		}
		g.State, g.RevokedBy, g.RevokedAt, g.RevokeReason = GrantRevoked, by.ID, now, reason
		updated, err := s.store.UpdateGrant(ctx, g)
		if errors.Is(err, ErrConflict) && attempt < maxAttempts-1 {
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("access: store grant: %w", err)
		}
		rec.Outcome = OutcomeDone
		s.record(ctx, p, rec)
		n, updated, err := s.revokeLeases(ctx, updated)
		return updated, n, err
	}
}

// revokeLeases revokes the leases of a grant that no longer holds and
// marks it done.
func (s *Service) revokeLeases(ctx context.Context, g *Grant) (int, *Grant, error) {
	n, err := s.cfg.RevokeLeases(ctx, g.ID)
	if err != nil {
		s.logger.Error("cannot revoke the leases of a grant; will retry", "grant", g.ID, "error", err.Error())
		return 0, g, fmt.Errorf("access: grant %s ended but revoking its leases failed (will retry): %w", g.ID, err)
	}
	g.LeasesRevoked = true
	updated, err := s.store.UpdateGrant(ctx, g)
	if err != nil {
		// The leases are revoked; Run will call RevokeLeases again, which
		// is idempotent.
		return n, g, nil
	}
	return n, updated, nil
}

// CompleteBreakGlassReview records the after-the-fact review of a
// break-glass use, which lifts the block an overdue review puts on its
// user. The entitlement's owner or an admin may, never the user (under
// any identity): ErrSelfApproval. ErrNotApprover for anyone else,
// ErrNotFound if not a break-glass grant, ErrAlreadyDecided if reviewed.
func (s *Service) CompleteBreakGlassReview(ctx context.Context, reviewer authn.Principal, grantID, comment string) (*Grant, error) {
	if err := s.gate(ctx); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		p := s.cfg.Policy()
		now := s.now()
		rec := &DecisionRecord{Action: ActionCompleteReview, Actor: reviewer.ID, GrantID: grantID, Outcome: OutcomeRefused}
		g, err := s.getGrant(ctx, grantID)
		if err == nil && g.Kind != policy.GrantBreakGlass {
			err = ErrNotFound
		}
		if err == nil {
			rec.Entitlement = g.Entitlement
			switch {
			case p.SameIdentity(reviewer, subjectPrincipal(g.Subject)):
				err = &DeniedError{Err: ErrSelfApproval, Reasons: []policy.Reason{{Code: policy.ReasonSelfApproval, Message: fmt.Sprintf("%s may not review their own break-glass use", reviewer.ID)}}}
			case !p.Owns(reviewer, g.Entitlement) && !p.IsAdmin(reviewer):
				err = &DeniedError{Err: ErrNotApprover, Reasons: []policy.Reason{{Code: policy.ReasonNotApprover, Message: fmt.Sprintf("%s is not the owner of entitlement %q", reviewer.ID, g.Entitlement)}}}
			case !g.ReviewedAt.IsZero():
				err = fmt.Errorf("%w: break-glass grant %s was reviewed by %s", ErrAlreadyDecided, g.ID, g.ReviewedBy)
			case len(comment) > policy.MaxReasonLen:
				err = &DeniedError{Err: ErrInvalid, Reasons: []policy.Reason{{Code: policy.ReasonInvalidRequest, Message: fmt.Sprintf("comment is longer than %d bytes", policy.MaxReasonLen)}}}
			}
		}
		if err != nil {
			rec.Error, rec.Reasons = sentinelText(err), Reasons(err)
			s.record(ctx, p, rec)
			return nil, err
		}
		g.ReviewedBy, g.ReviewedAt, g.ReviewNote = reviewer.ID, now, comment
		updated, err := s.store.UpdateGrant(ctx, g)
		if errors.Is(err, ErrConflict) && attempt < maxAttempts-1 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("access: store grant: %w", err)
		}
		rec.Outcome = OutcomeDone
		s.record(ctx, p, rec)
		return updated, nil
	}
}

// ReviewKind says what a Review is about.
type ReviewKind string

const (
	// ReviewCertification is a standing grant to certify.
	ReviewCertification ReviewKind = "certification"
	// ReviewBreakGlass is a break-glass use to review.
	ReviewBreakGlass ReviewKind = "break_glass"
)

// Review is one item of an owner's review queue.
type Review struct {
	// Kind is certification or break_glass.
	Kind ReviewKind
	// Item is the standing grant and where its certification stands
	// (certification reviews).
	Item policy.ReviewItem
	// LastCertifiedBy is who certified it last, if anyone.
	LastCertifiedBy string
	// LastIssued and Leases30d are its use (Config.Usage): the last lease
	// issued under it and how many in the last 30 days. UsageKnown is
	// false without the hook or if it failed (UsageError says why).
	LastIssued time.Time
	Leases30d  int
	UsageKnown bool
	UsageError string
	// Suggestion is "revoke" for a grant unused in 30 days, else
	// "certify"; it is advice, the owner decides.
	Suggestion CertifyDecision
	// Grant is the break-glass grant (break-glass reviews).
	Grant *Grant
}

// ListReviews returns the caller's review queue: the standing grants with
// review_every (and those revoked at certification) of the entitlements
// it owns, soonest due first, each with usage data; then the break-glass
// uses of those entitlements not yet reviewed, oldest first. Admins see
// every entitlement's.
func (s *Service) ListReviews(ctx context.Context, owner authn.Principal) ([]Review, error) {
	p := s.cfg.Policy()
	now := s.now()
	certified, err := s.certified(ctx, view{}, p, now)
	if err != nil {
		return nil, err
	}
	certs, err := s.store.LatestCertifications(ctx)
	if err != nil {
		return nil, fmt.Errorf("access: read certifications: %w", err)
	}
	admin := p.IsAdmin(owner)
	mine := func(ent string) bool { return admin || p.Owns(owner, ent) }
	var out []Review
	for _, it := range p.Reviews(certified, now) {
		if !mine(it.Entitlement) {
			continue
		}
		r := Review{Kind: ReviewCertification, Item: it, Suggestion: Certify}
		if c := certs[it.GrantID]; c != nil {
			r.LastCertifiedBy = c.By
		}
		if s.cfg.Usage != nil {
			last, n, err := s.cfg.Usage(ctx, it.GrantID)
			if err != nil {
				r.UsageError = err.Error()
			} else {
				r.LastIssued, r.Leases30d, r.UsageKnown = last, n, true
				if n == 0 {
					r.Suggestion = Revoke
				}
			}
		}
		out = append(out, r)
	}
	bgs, err := s.listGrants(ctx, GrantQuery{Kind: policy.GrantBreakGlass})
	if err != nil {
		return nil, err
	}
	for _, g := range bgs {
		if g.ReviewedAt.IsZero() && mine(g.Entitlement) {
			out = append(out, Review{Kind: ReviewBreakGlass, Grant: g})
		}
	}
	return out, nil
}

// Certify records an owner's decision on a standing grant. Certify keeps
// it for another review_every; Revoke ends it at once (policy.Decide
// denies it, certification_lapsed) and revokes its leases through
// Config.RevokeLeases, until it is certified again. The entitlement's
// owner or an admin may (ErrNotApprover otherwise), never the grant's own
// subject (ErrSelfApproval). ErrNotFound for an unknown standing grant id.
func (s *Service) Certify(ctx context.Context, owner authn.Principal, grantID string, decision CertifyDecision, comment string) (*Certification, error) {
	if err := s.gate(ctx); err != nil {
		return nil, err
	}
	p := s.cfg.Policy()
	now := s.now()
	rec := &DecisionRecord{Action: ActionCertify, Actor: owner.ID, GrantID: grantID, Outcome: OutcomeRefused}
	ent, g := p.StandingGrant(grantID)
	var err error
	switch {
	case g == nil:
		err = ErrNotFound
	case decision != Certify && decision != Revoke:
		err = &DeniedError{Err: ErrInvalid, Reasons: []policy.Reason{{Code: policy.ReasonInvalidRequest, Message: fmt.Sprintf("decision %q is neither certify nor revoke", decision)}}}
	case len(comment) > policy.MaxReasonLen:
		err = &DeniedError{Err: ErrInvalid, Reasons: []policy.Reason{{Code: policy.ReasonInvalidRequest, Message: fmt.Sprintf("comment is longer than %d bytes", policy.MaxReasonLen)}}}
	case p.SameIdentity(owner, subjectPrincipal(g.Subject)):
		err = &DeniedError{Err: ErrSelfApproval, Reasons: []policy.Reason{{Code: policy.ReasonSelfApproval, Message: fmt.Sprintf("%s may not certify their own standing grant", owner.ID)}}}
	case !p.Owns(owner, ent.Name) && !p.IsAdmin(owner):
		err = &DeniedError{Err: ErrNotApprover, Reasons: []policy.Reason{{Code: policy.ReasonNotApprover, Message: fmt.Sprintf("%s is not the owner of entitlement %q", owner.ID, ent.Name)}}}
	}
	if err != nil {
		if ent != nil {
			rec.Entitlement = ent.Name
		}
		rec.Error, rec.Reasons = sentinelText(err), Reasons(err)
		s.record(ctx, p, rec)
		return nil, err
	}
	c := &Certification{ID: s.ids.next(now), GrantID: grantID, Entitlement: ent.Name, By: owner.ID, At: now, Decision: decision, Comment: comment}
	if err := s.store.AddCertification(ctx, c); err != nil {
		return nil, fmt.Errorf("access: store certification: %w", err)
	}
	rec.Entitlement, rec.Outcome = ent.Name, OutcomeDone
	rec.Reasons = []policy.Reason{{Code: string(decision), Message: fmt.Sprintf("%s decided %s for standing grant %q: %s", owner.ID, decision, grantID, comment)}}
	s.record(ctx, p, rec)
	if decision == Revoke {
		if _, err := s.cfg.RevokeLeases(ctx, grantID); err != nil {
			s.logger.Error("cannot revoke the leases of a revoked standing grant; Run retries", "grant", grantID, "error", err.Error())
			return c, fmt.Errorf("access: standing grant %s revoked but revoking its leases failed (will retry): %w", grantID, err)
		}
		if _, _, err := s.store.Mark(ctx, revokedKey(c.ID), now); err != nil {
			s.logger.Warn("cannot mark revoked standing grant", "grant", grantID, "error", err.Error())
		}
	}
	return c, nil
}

// lapseKey marks that the lapse of a standing grant's review period that
// began at since was acted on (its leases revoked).
func lapseKey(grantID string, since time.Time) string {
	return fmt.Sprintf("lapsed/%s/%d", grantID, since.UnixNano())
}

// revokedKey marks that a revoke certification was acted on.
func revokedKey(certID string) string { return "revoked/" + certID }

// dueKey marks that review.due was sent for a review period.
func dueKey(grantID string, since time.Time) string {
	return fmt.Sprintf("due/%s/%d", grantID, since.UnixNano())
}
