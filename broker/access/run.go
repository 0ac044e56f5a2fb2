package access

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/notify"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// Run does the background work until ctx ends, then returns nil: every
// Config.Interval it calls Tick, and it delivers queued notifications as
// they come. Start it once per replica from the composition root; every
// step is safe to run on several replicas at once (compare-and-set and
// marks make each one-time action happen once).
func (s *Service) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.deliver(ctx)
	}()
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("background pass failed; will try again", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			<-done
			return nil
		case <-tick.C:
		}
	}
}

// deliver sends queued notifications until ctx ends.
func (s *Service) deliver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case q := <-s.queue:
			if s.cfg.Notify == nil {
				continue
			}
			if err := s.cfg.Notify(ctx, q.targets, q.ev); err != nil && ctx.Err() == nil {
				s.logger.Error("notification not delivered", "event", q.ev.Type, "event_id", q.ev.ID, "targets", strings.Join(q.targets, ","), "error", err.Error())
			}
		}
	}
}

// enqueue queues an event for Run to deliver; without targets or a
// notifier it does nothing, and a full queue drops it with an error log.
func (s *Service) enqueue(targets []string, ev notify.Event) {
	if len(targets) == 0 || s.cfg.Notify == nil {
		return
	}
	select {
	case s.queue <- queued{targets: append([]string(nil), targets...), ev: ev}:
	default:
		s.logger.Error("notification queue full; event dropped", "event", ev.Type, "event_id", ev.ID)
	}
}

func (s *Service) requestEvent(typ string, r *Request, actor string, now time.Time, msg string) notify.Event {
	ev := notify.Event{
		ID: s.ids.next(now), Type: typ, At: now, Entitlement: r.Entitlement, Subject: r.Requester.ID, Actor: actor,
		RequestID: r.ID, GrantID: r.GrantID, Reason: r.Reason, Ticket: r.Ticket, Duration: fmtDur(r.Duration), Message: msg,
	}
	if typ == notify.EventRequestCreated {
		ev.Needed, ev.Approvers = r.Needed, r.Approvers
		due := r.ExpiresAt
		ev.Due = &due
	}
	return ev
}

// Tick does one background pass at the current time: it expires pending
// requests past their pending_ttl, ends grants at their End and revokes
// their leases (retrying grants whose leases could not be revoked), acts
// on standing grants whose certification lapsed (revokes their leases,
// once per review period), sends review.due ahead of a review, and
// escalates overdue break-glass reviews (the user is blocked from further
// break-glass until the review is completed). It returns every error it
// met; the parts that failed are tried again on the next pass.
func (s *Service) Tick(ctx context.Context) error {
	p := s.cfg.Policy()
	now := s.now()
	return errors.Join(
		s.expireRequests(ctx, p, now),
		s.endGrants(ctx, p, now),
		s.standingReviews(ctx, p, now),
		s.escalateBreakGlass(ctx, p, now),
	)
}

func (s *Service) expireRequests(ctx context.Context, p *policy.Policy, now time.Time) error {
	q := RequestQuery{States: []RequestState{RequestPending}, Limit: MaxLimit}
	var errs []error
	for {
		page, err := s.store.ListRequests(ctx, q)
		if err != nil {
			return fmt.Errorf("access: list pending requests: %w", err)
		}
		for _, r := range page {
			if now.Before(r.ExpiresAt) {
				continue
			}
			if _, err := s.expire(ctx, p, r, now); err != nil && !errors.Is(err, ErrConflict) {
				errs = append(errs, err)
			}
		}
		if len(page) < q.Limit {
			return errors.Join(errs...)
		}
		q.After = page[len(page)-1].ID
	}
}

// expire closes a pending request whose time ran out. ErrConflict means
// someone else changed it first.
func (s *Service) expire(ctx context.Context, p *policy.Policy, r *Request, now time.Time) (*Request, error) {
	r.State, r.ClosedAt = RequestExpired, now
	updated, err := s.store.UpdateRequest(ctx, r)
	if err != nil {
		return nil, err
	}
	s.broadcast(r.ID)
	s.record(ctx, p, &DecisionRecord{Action: ActionExpire, Actor: actorSystem, RequestID: r.ID, Entitlement: r.Entitlement, Outcome: OutcomeDone,
		Reasons: []policy.Reason{{Code: "expired", Message: fmt.Sprintf("request %s was not decided by %s", r.ID, r.ExpiresAt.UTC().Format(time.RFC3339))}}})
	if ent := p.Entitlement(r.Entitlement); ent != nil {
		s.enqueue(ent.Notify, s.requestEvent(notify.EventRequestExpired, r, "", now,
			fmt.Sprintf("%s's request for %s expired undecided", r.Requester.ID, r.Entitlement)))
	}
	return updated, nil
}

func (s *Service) endGrants(ctx context.Context, p *policy.Policy, now time.Time) error {
	grants, err := s.listGrants(ctx, GrantQuery{})
	if err != nil {
		return err
	}
	var errs []error
	for _, g := range grants {
		switch {
		case g.State == GrantActive && !now.Before(g.End):
			g.State = GrantEnded
			updated, err := s.store.UpdateGrant(ctx, g)
			if errors.Is(err, ErrConflict) {
				continue // changed by someone else; the next pass sees it
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("access: end grant %s: %w", g.ID, err))
				continue
			}
			s.record(ctx, p, &DecisionRecord{Action: ActionEndGrant, Actor: actorSystem, GrantID: g.ID, RequestID: g.RequestID, Entitlement: g.Entitlement, Outcome: OutcomeDone})
			if _, _, err := s.revokeLeases(ctx, updated); err != nil {
				errs = append(errs, err)
			}
		case g.State != GrantActive && !g.LeasesRevoked:
			if _, _, err := s.revokeLeases(ctx, g); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// standingReviews acts on the certification of standing grants.
func (s *Service) standingReviews(ctx context.Context, p *policy.Policy, now time.Time) error {
	certs, err := s.store.LatestCertifications(ctx)
	if err != nil {
		return fmt.Errorf("access: read certifications: %w", err)
	}
	certified, err := s.certified(ctx, view{}, p, now)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range p.Names() {
		ent := p.Entitlement(name)
		for _, g := range ent.Standing {
			if !now.Before(g.Until) {
				continue
			}
			since := certified[g.ID]
			if c := certs[g.ID]; c != nil && c.Decision == Revoke {
				if err := s.once(ctx, revokedKey(c.ID), now, func() error {
					_, err := s.cfg.RevokeLeases(ctx, g.ID)
					return err
				}); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			if g.ReviewEvery == 0 {
				continue
			}
			due := since.Add(g.ReviewEvery)
			dueAt := due
			switch {
			case !now.Before(due):
				err := s.once(ctx, lapseKey(g.ID, since), now, func() error {
					n, err := s.cfg.RevokeLeases(ctx, g.ID)
					if err != nil {
						return fmt.Errorf("access: revoke the leases of lapsed standing grant %s: %w", g.ID, err)
					}
					s.record(ctx, p, &DecisionRecord{Action: ActionLapse, Actor: actorSystem, GrantID: g.ID, Entitlement: ent.Name, Outcome: OutcomeDone,
						Reasons: []policy.Reason{{Code: policy.ReasonCertificationLapsed, Message: fmt.Sprintf("standing grant %q lapsed at %s: not certified within %s; %d lease(s) revoked", g.ID, due.UTC().Format(time.RFC3339), g.ReviewEvery, n)}}})
					s.enqueue(ent.Notify, notify.Event{ID: s.ids.next(now), Type: notify.EventReviewOverdue, At: now, Entitlement: ent.Name, Subject: g.Subject, GrantID: g.ID, Due: &dueAt,
						Message: fmt.Sprintf("standing grant %s (%s on %s) lapsed at %s for want of certification by %s; its leases were revoked", g.ID, g.Subject, ent.Name, due.UTC().Format(time.RFC3339), ent.Owner)})
					return nil
				})
				if err != nil {
					errs = append(errs, err)
				}
			case !now.Before(due.Add(-min(s.cfg.ReviewNotice, g.ReviewEvery/2))):
				if err := s.once(ctx, dueKey(g.ID, since), now, func() error {
					s.enqueue(ent.Notify, notify.Event{ID: s.ids.next(now), Type: notify.EventReviewDue, At: now, Entitlement: ent.Name, Subject: g.Subject, GrantID: g.ID, Due: &dueAt,
						Message: fmt.Sprintf("standing grant %s (%s on %s) must be certified by %s by %s", g.ID, g.Subject, ent.Name, ent.Owner, due.UTC().Format(time.RFC3339))})
					return nil
				}); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// once runs f unless key is marked, claiming the key first so that of
// several replicas only one acts. If f fails the claim is dropped, so the
// next pass tries again.
func (s *Service) once(ctx context.Context, key string, now time.Time, f func() error) error {
	_, first, err := s.store.Mark(ctx, key, now)
	if err != nil {
		return fmt.Errorf("access: mark %s: %w", key, err)
	}
	if !first {
		return nil
	}
	if err := f(); err != nil {
		if uerr := s.store.Unmark(ctx, key); uerr != nil {
			s.logger.Error("cannot drop a mark; the action will not be retried", "key", key, "error", uerr.Error())
		}
		return err
	}
	return nil
}

func (s *Service) escalateBreakGlass(ctx context.Context, p *policy.Policy, now time.Time) error {
	grants, err := s.listGrants(ctx, GrantQuery{Kind: policy.GrantBreakGlass})
	if err != nil {
		return err
	}
	var errs []error
	for _, g := range grants {
		if !g.ReviewOverdue(now) || g.Escalated {
			continue
		}
		g.Escalated = true
		if _, err := s.store.UpdateGrant(ctx, g); err != nil {
			if !errors.Is(err, ErrConflict) {
				errs = append(errs, fmt.Errorf("access: escalate grant %s: %w", g.ID, err))
			}
			continue
		}
		s.record(ctx, p, &DecisionRecord{Action: ActionEscalate, Actor: actorSystem, GrantID: g.ID, Entitlement: g.Entitlement, Outcome: OutcomeDone,
			Reasons: []policy.Reason{{Code: policy.ReasonBreakGlassBlocked, Message: fmt.Sprintf("the review of %s's break-glass use %s was due at %s; %s may not break glass again until it is completed", g.Subject, g.ID, g.ReviewDue.UTC().Format(time.RFC3339), g.Subject)}}})
		var targets []string
		if ent := p.Entitlement(g.Entitlement); ent != nil {
			if ent.BreakGlass != nil {
				targets = append(targets, ent.BreakGlass.Notify...)
			}
			for _, t := range ent.Notify {
				if !containsStr(targets, t) {
					targets = append(targets, t)
				}
			}
		}
		due, end := g.ReviewDue, g.End
		s.enqueue(targets, notify.Event{ID: s.ids.next(now), Type: notify.EventReviewOverdue, At: now, Entitlement: g.Entitlement, Subject: g.Subject, GrantID: g.ID,
			Reason: g.Reason, Until: &end, Due: &due,
			Message: fmt.Sprintf("OVERDUE: the review of %s's break-glass use of %s (%s) was due at %s; %s is blocked from break-glass until it is completed", g.Subject, g.Entitlement, g.ID, due.UTC().Format(time.RFC3339), g.Subject)})
	}
	return errors.Join(errs...)
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Stats counts what operators watch: requests waiting for approval, and
// reviews past their deadline (standing grants that lapsed for want of
// certification, break-glass uses whose review is overdue).
func (s *Service) Stats(ctx context.Context) (pending, overdueReviews int, err error) {
	p := s.cfg.Policy()
	now := s.now()
	q := RequestQuery{States: []RequestState{RequestPending}, Limit: MaxLimit}
	for {
		page, err := s.store.ListRequests(ctx, q)
		if err != nil {
			return 0, 0, fmt.Errorf("access: list pending requests: %w", err)
		}
		for _, r := range page {
			if now.Before(r.ExpiresAt) {
				pending++
			}
		}
		if len(page) < q.Limit {
			break
		}
		q.After = page[len(page)-1].ID
	}
	certified, err := s.certified(ctx, view{}, p, now)
	if err != nil {
		return 0, 0, err
	}
	for _, it := range p.Reviews(certified, now) {
		if it.Lapsed && !it.Revoked {
			overdueReviews++
		}
	}
	bgs, err := s.listGrants(ctx, GrantQuery{Kind: policy.GrantBreakGlass})
	if err != nil {
		return 0, 0, err
	}
	for _, g := range bgs {
		if g.ReviewOverdue(now) {
			overdueReviews++
		}
	}
	return pending, overdueReviews, nil
}
