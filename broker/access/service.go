package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/notify"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// Config wires a Service. Store, Policy and RevokeLeases are required.
type Config struct {
	// Store keeps requests, grants, certifications and records.
	Store Store
	// Policy returns the policy in force (policy.Holder.Current). It is
	// called once per operation, so a reload mid-operation cannot mix
	// two policies.
	Policy func() *policy.Policy
	// RevokeLeases revokes every lease minted under a grant (dynamic or
	// standing) and returns how many it changed; the broker wires it to
	// lease.Store.RevokeMatching(ctx, lease.Selector{GrantID: id}, ...).
	// It must be idempotent: Run calls it again until it succeeds.
	RevokeLeases func(ctx context.Context, grantID string) (int, error)
	// Held, if set, returns the entitlements a subject holds through
	// active leases, for conflicts_with (the broker wires it to the lease
	// store). Without it only grants count as held.
	Held func(ctx context.Context, subject string) ([]string, error)
	// Usage, if set, reports a grant's use for certification reviews: the
	// last lease issued under it and how many in the last 30 days.
	Usage func(ctx context.Context, grantID string) (last time.Time, count30d int, err error)
	// Notify, if set, delivers an event to webhook targets
	// ("webhook:NAME"); notify.Sender.Send fits. Run delivers queued
	// events one by one; a failure is logged, never retried here (the
	// sender retries).
	Notify func(ctx context.Context, targets []string, ev notify.Event) error
	// Audit, if set, hears of every decision record once it is stored
	// (AuditEvents turns one into audit events). It must not block: the
	// broker queues what its audit log cannot take at once.
	Audit func(ctx context.Context, rec *DecisionRecord)
	// Gate, if set, is asked before every action a caller takes (create,
	// review, cancel, break-glass, revoke, review, certify); an error
	// refuses the action with ErrUnavailable before anything changes. The
	// broker wires it to its audit log, so nothing happens that could not
	// be audited. Background work (expiry, ends, lapses) is never gated:
	// ending access is always allowed.
	Gate func(ctx context.Context) error
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Logger is the logger; slog.Default if nil. Secrets never reach it.
	Logger *slog.Logger
	// Interval is how often Run does its background pass; 15s if zero.
	Interval time.Duration
	// ReviewNotice is how long before a standing grant's review is due
	// that review.due is sent; 7 days if zero.
	ReviewNotice time.Duration
	// WatchPoll is how often Watch re-reads a request changed by another
	// replica; 2s if zero.
	WatchPoll time.Duration
	// QueueSize bounds the notification queue; 1024 if zero. When it is
	// full, events are dropped and logged.
	QueueSize int
}

// Service is access requests, approvals, grants, break-glass and reviews.
// It is safe for concurrent use; its state is in the Store, so several
// replicas may share one.
type Service struct {
	cfg    Config
	store  Store
	now    func() time.Time
	logger *slog.Logger
	queue  chan queued
	ids    idGen

	seenMu sync.Mutex
	seen   map[string]time.Time // standing grant id -> first seen (cache of Store.Mark)

	cache stateCache // what State read, while the store's generation stands

	watchMu  sync.Mutex
	watchers map[string]map[chan struct{}]struct{}
}

type queued struct {
	targets []string
	ev      notify.Event
}

// maxAttempts bounds retries of an optimistic update.
const maxAttempts = 8

// actorSystem is the Actor of records written by Run.
const actorSystem = "mayfly"

// New validates cfg and returns a Service. Start Run for expiry, lapses,
// escalation and notifications.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("access: Config.Store is required")
	case cfg.Policy == nil:
		return nil, errors.New("access: Config.Policy is required")
	case cfg.RevokeLeases == nil:
		return nil, errors.New("access: Config.RevokeLeases is required")
	case cfg.Interval < 0, cfg.ReviewNotice < 0, cfg.WatchPoll < 0, cfg.QueueSize < 0:
		return nil, errors.New("access: Config.Interval, ReviewNotice, WatchPoll and QueueSize must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Interval == 0 {
		cfg.Interval = 15 * time.Second
	}
	if cfg.ReviewNotice == 0 {
		cfg.ReviewNotice = 7 * 24 * time.Hour
	}
	if cfg.WatchPoll == 0 {
		cfg.WatchPoll = 2 * time.Second
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 1024
	}
	return &Service{
		cfg:      cfg,
		store:    cfg.Store,
		now:      cfg.Now,
		logger:   cfg.Logger.With("component", "access"),
		queue:    make(chan queued, cfg.QueueSize),
		seen:     map[string]time.Time{},
		watchers: map[string]map[chan struct{}]struct{}{},
	}, nil
}

// RequestSpec is what a requester asks for.
type RequestSpec struct {
	// Entitlement is the entitlement asked for.
	Entitlement string
	// Reason and Ticket justify it (the entitlement may require them).
	Reason string
	Ticket string
	// Duration is how long the grant should last; 0 means the default
	// (see policy.RequestInput).
	Duration time.Duration
	// StartAt is the earliest start; zero means at approval.
	StartAt time.Time
}

// snapshot is the part of a principal kept with a request or approval.
func snapshot(pr authn.Principal) authn.Principal {
	return authn.Principal{Kind: pr.Kind, ID: pr.ID, TrustDomain: pr.TrustDomain, Groups: slices.Clone(pr.Groups), Method: pr.Method}
}

// Create makes an access request. Policy decides it at once
// (policy.DecideRequest): a refusal returns a *DeniedError (ErrInvalid or
// ErrDenied) and stores no request; an entitlement with approvals: 0 is
// approved at once and its grant created; otherwise the request waits,
// and the entitlement's webhooks hear of it. Every outcome is recorded.
func (s *Service) Create(ctx context.Context, pr authn.Principal, spec RequestSpec) (*Request, error) {
	if err := s.gate(ctx); err != nil {
		return nil, err
	}
	p := s.cfg.Policy()
	now := s.now()
	st, err := s.State(ctx, pr)
	if err != nil {
		return nil, err
	}
	in := policy.RequestInput{
		Principal: pr, Entitlement: spec.Entitlement, Duration: spec.Duration, StartAt: spec.StartAt,
		Reason: spec.Reason, Ticket: spec.Ticket, Grants: st.Grants, Held: st.Held, Certified: st.Certified, Now: now,
	}
	d := p.DecideRequest(in)
	rec := &DecisionRecord{
		Action: ActionCreate, Actor: pr.ID, Entitlement: spec.Entitlement, Outcome: d.Outcome.String(), Reasons: d.Reasons,
		Decision: &policy.Record{Kind: policy.RecordRequest, At: now, PolicyDigest: p.Digest, Request: &in, Result: policy.ResultOf(d)},
	}
	if d.Outcome == policy.Deny {
		err := denied(d.Reasons)
		rec.Error = errors.Unwrap(err).Error()
		s.record(ctx, p, rec)
		return nil, err
	}
	r := &Request{
		ID: s.ids.next(now), Requester: snapshot(pr), Entitlement: spec.Entitlement, Reason: spec.Reason, Ticket: spec.Ticket,
		Duration: d.Duration, StartAt: spec.StartAt, CreatedAt: now, ExpiresAt: d.ExpiresAt, State: RequestPending,
		Extends: d.Extends, PolicyDigest: p.Digest,
	}
	if d.Approval != nil {
		r.Needed, r.Approvers, r.DistinctGroups = d.Approval.Needed, d.Approval.Approvers, d.Approval.DistinctGroups
	}
	r.Digest = Digest(r)
	rec.RequestID = r.ID
	if err := s.store.CreateRequest(ctx, r); err != nil {
		return nil, fmt.Errorf("access: store request: %w", err)
	}
	ent := d.Entitlement
	if d.Outcome == policy.NeedsApproval {
		s.record(ctx, p, rec)
		s.enqueue(ent.Notify, s.requestEvent(notify.EventRequestCreated, r, "", now,
			fmt.Sprintf("%s requests %s for %s (%d approval(s) from %s): %s", r.Requester.ID, r.Entitlement, fmtDur(r.Duration), r.Needed, strings.Join(r.Approvers, ", "), r.Reason)))
		return r, nil
	}
	// Approved at once.
	r, g, err := s.approve(ctx, r, now)
	if err != nil {
		return nil, err
	}
	rec.GrantID = g.ID
	s.record(ctx, p, rec)
	s.enqueue(ent.Notify, s.requestEvent(notify.EventRequestApproved, r, "", now,
		fmt.Sprintf("%s was granted %s until %s (approved on request): %s", r.Requester.ID, r.Entitlement, g.End.UTC().Format(time.RFC3339), r.Reason)))
	return r, nil
}

// approve closes a pending request as approved and creates its grant. The
// request is written first: if the grant cannot be created the request
// says approved but nothing is usable (fail closed), and the error says so.
func (s *Service) approve(ctx context.Context, r *Request, now time.Time) (*Request, *Grant, error) {
	start := now
	if r.StartAt.After(start) {
		start = r.StartAt
	}
	g := &Grant{
		ID: s.ids.next(now), Kind: policy.GrantRequest, RequestID: r.ID, Subject: r.Requester.ID, Entitlement: r.Entitlement,
		Reason: r.Reason, Ticket: r.Ticket, Start: start, End: start.Add(r.Duration), State: GrantActive, CreatedAt: now,
	}
	r.State, r.GrantID, r.ClosedAt = RequestApproved, g.ID, now
	updated, err := s.store.UpdateRequest(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	err = s.store.CreateGrant(ctx, g)
	// Watchers hear of the approval once the grant is there: one that
	// issues as soon as it sees "approved" finds the grant.
	s.broadcast(r.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("access: request %s approved but its grant could not be stored: %w", r.ID, err)
	}
	return updated, g, nil
}

// Review approves (approve true) or denies a pending request. digest must
// be the Digest of the request as the reviewer saw it. Refusals, each
// recorded: ErrNotFound; ErrClosed (not pending, or expired); ErrChanged
// (digest differs); and, as *DeniedError, ErrSelfApproval, ErrNotApprover,
// ErrAlreadyDecided, ErrNotCounted. A denial closes the request. The
// approval that completes the rule re-checks the request under the policy
// in force (conflicts or conditions may have changed since it was made):
// if policy now refuses, the request is denied and ErrDenied returned.
// Concurrent reviews are safe: each is decided against the latest stored
// request, so one approver counts once however many calls race.
func (s *Service) Review(ctx context.Context, approver authn.Principal, id string, approve bool, comment, digest string) (*Request, error) {
	if err := s.gate(ctx); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		r, err := s.review(ctx, approver, id, approve, comment, digest)
		if !errors.Is(err, ErrConflict) || attempt == maxAttempts-1 {
			return r, err
		}
	}
}

func (s *Service) review(ctx context.Context, approver authn.Principal, id string, approve bool, comment, digest string) (*Request, error) {
	p := s.cfg.Policy()
	now := s.now()
	rec := &DecisionRecord{Action: ActionReview, Actor: approver.ID, RequestID: id, Outcome: OutcomeRefused}
	refuse := func(err error) (*Request, error) {
		rec.Error = sentinelText(err)
		rec.Reasons = Reasons(err)
		s.record(ctx, p, rec)
		return nil, err
	}
	if len(comment) > policy.MaxReasonLen {
		return refuse(&DeniedError{Err: ErrInvalid, Reasons: []policy.Reason{{Code: policy.ReasonInvalidRequest, Message: fmt.Sprintf("comment is longer than %d bytes", policy.MaxReasonLen)}}})
	}
	r, err := s.getRequest(ctx, id)
	if err != nil {
		return refuse(err)
	}
	rec.Entitlement = r.Entitlement
	if r.State == RequestPending && !now.Before(r.ExpiresAt) {
		if _, err := s.expire(ctx, p, r, now); err != nil && !errors.Is(err, ErrConflict) {
			return nil, err
		}
		return refuse(fmt.Errorf("%w: request %s expired at %s", ErrClosed, r.ID, r.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	if r.State != RequestPending {
		return refuse(fmt.Errorf("%w: request %s is %s", ErrClosed, r.ID, r.State))
	}
	if digest == "" || digest != Digest(r) {
		return refuse(fmt.Errorf("%w: request %s does not have digest %q; get it again and review what it asks now", ErrChanged, r.ID, digest))
	}
	prior := make([]authn.Principal, len(r.Approvals))
	for i, a := range r.Approvals {
		prior[i] = a.Approver
	}
	in := policy.ApprovalInput{Approver: approver, Requester: r.Requester, Entitlement: r.Entitlement, Approve: approve, Prior: prior, Now: now}
	ad := p.CheckApproval(in)
	rec.Decision = &policy.Record{Kind: policy.RecordApproval, At: now, PolicyDigest: p.Digest, Approval: &in, Result: policy.ResultOf(ad)}
	if ad.Outcome != policy.Allow {
		return refuse(approvalError(ad.Reasons))
	}
	rec.Reasons = ad.Reasons
	ent := p.Entitlement(r.Entitlement)
	review := Approval{Approver: snapshot(approver), Comment: comment, At: now, Digest: digest}
	if !approve {
		r.State, r.Denial, r.ClosedAt = RequestDenied, &review, now
		updated, err := s.store.UpdateRequest(ctx, r)
		if err != nil {
			return nil, err
		}
		s.broadcast(r.ID)
		rec.Outcome = policy.Deny.String()
		s.record(ctx, p, rec)
		s.enqueue(ent.Notify, s.requestEvent(notify.EventRequestDenied, r, approver.ID, now,
			fmt.Sprintf("%s denied %s's request for %s: %s", approver.ID, r.Requester.ID, r.Entitlement, comment)))
		return updated, nil
	}
	review.CountedAs = ad.CountedAs
	r.Approvals = append(r.Approvals, review)
	for i := range r.Approvals {
		r.Approvals[i].CountedAs = ad.Counted[i]
	}
	if !ad.Approved {
		updated, err := s.store.UpdateRequest(ctx, r)
		if err != nil {
			return nil, err
		}
		s.broadcast(r.ID)
		rec.Outcome = policy.NeedsApproval.String()
		s.record(ctx, p, rec)
		return updated, nil
	}

	// The last approval: decide the request again under today's policy
	// and the requester's current state.
	st, err := s.State(ctx, r.Requester)
	if err != nil {
		return nil, err
	}
	rin := policy.RequestInput{
		Principal: r.Requester, Entitlement: r.Entitlement, Duration: r.Duration, StartAt: r.StartAt, Reason: r.Reason, Ticket: r.Ticket,
		Grants: st.Grants, Held: st.Held, Certified: st.Certified, Now: now,
	}
	if rd := p.DecideRequest(rin); rd.Outcome == policy.Deny {
		r.Approvals = r.Approvals[:len(r.Approvals)-1]
		r.State, r.ClosedAt = RequestDenied, now
		r.Denial = &Approval{Approver: authn.Principal{ID: actorSystem}, Comment: "policy refuses the request now: " + reasonText(rd.Reasons), At: now}
		updated, err := s.store.UpdateRequest(ctx, r)
		if err != nil {
			return nil, err
		}
		s.broadcast(r.ID)
		rec.Outcome, rec.Error, rec.Reasons = policy.Deny.String(), ErrDenied.Error(), rd.Reasons
		rec.Decision = &policy.Record{Kind: policy.RecordRequest, At: now, PolicyDigest: p.Digest, Request: &rin, Result: policy.ResultOf(rd)}
		s.record(ctx, p, rec)
		s.enqueue(ent.Notify, s.requestEvent(notify.EventRequestDenied, r, "", now,
			fmt.Sprintf("%s's request for %s was denied at its last approval: %s", r.Requester.ID, r.Entitlement, reasonText(rd.Reasons))))
		return updated, &DeniedError{Err: ErrDenied, Reasons: rd.Reasons}
	}
	updated, g, err := s.approve(ctx, r, now)
	if err != nil {
		return nil, err
	}
	rec.Outcome, rec.GrantID = policy.Allow.String(), g.ID
	s.record(ctx, p, rec)
	s.enqueue(ent.Notify, s.requestEvent(notify.EventRequestApproved, updated, approver.ID, now,
		fmt.Sprintf("%s approved %s's request for %s, granted until %s", approver.ID, r.Requester.ID, r.Entitlement, g.End.UTC().Format(time.RFC3339))))
	return updated, nil
}

// Cancel withdraws a pending request; only its requester may (under any
// identity they hold). ErrNotFound if the caller may not see it,
// ErrForbidden if it may see but not cancel it, ErrClosed if not pending.
func (s *Service) Cancel(ctx context.Context, pr authn.Principal, id string) (*Request, error) {
	if err := s.gate(ctx); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		p := s.cfg.Policy()
		now := s.now()
		rec := &DecisionRecord{Action: ActionCancel, Actor: pr.ID, RequestID: id, Outcome: OutcomeRefused}
		r, err := s.getRequest(ctx, id)
		if err == nil && !s.canSee(p, pr, r) {
			err = ErrNotFound
		}
		if err == nil {
			rec.Entitlement = r.Entitlement
			switch {
			case !p.SameIdentity(pr, r.Requester):
				err = fmt.Errorf("%w: only the requester may cancel request %s", ErrForbidden, r.ID)
			case r.State != RequestPending:
				err = fmt.Errorf("%w: request %s is %s", ErrClosed, r.ID, r.State)
			}
		}
		if err != nil {
			rec.Error = sentinelText(err)
			s.record(ctx, p, rec)
			return nil, err
		}
		r.State, r.ClosedAt = RequestCancelled, now
		updated, err := s.store.UpdateRequest(ctx, r)
		if errors.Is(err, ErrConflict) && attempt < maxAttempts-1 {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.broadcast(r.ID)
		rec.Outcome = OutcomeDone
		s.record(ctx, p, rec)
		return updated, nil
	}
}

// Get returns a request the caller may see: its own (under any identity),
// one it may approve, or any for an admin. Otherwise ErrNotFound.
func (s *Service) Get(ctx context.Context, pr authn.Principal, id string) (*Request, error) {
	r, err := s.getRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	if !s.canSee(s.cfg.Policy(), pr, r) {
		return nil, ErrNotFound
	}
	return r, nil
}

func (s *Service) getRequest(ctx context.Context, id string) (*Request, error) {
	if !lease.ValidID(id) {
		return nil, ErrNotFound
	}
	r, err := s.store.GetRequest(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("access: read request: %w", err)
	}
	return r, nil
}

// canSee: the requester (any identity), approvers of the entitlement, the
// entitlement's owner, admins.
func (s *Service) canSee(p *policy.Policy, pr authn.Principal, r *Request) bool {
	return p.SameIdentity(pr, r.Requester) || p.CanApprove(pr, r.Entitlement) || p.Owns(pr, r.Entitlement) || p.IsAdmin(pr)
}

// ListOptions filters and pages List.
type ListOptions struct {
	// Requester and Entitlement filter when not empty.
	Requester   string
	Entitlement string
	// States filters to these states when not empty.
	States []RequestState
	// ToReview keeps only pending requests the caller may approve and did
	// not make (its review queue).
	ToReview bool
	// PageSize caps the page (0: 100, at most 1000); PageToken continues
	// a previous List.
	PageSize  int
	PageToken string
}

// List returns the requests the caller may see (as Get), in ascending id
// order, and the token of the next page ("" when there is none).
func (s *Service) List(ctx context.Context, pr authn.Principal, opt ListOptions) ([]*Request, string, error) {
	p := s.cfg.Policy()
	limit := PageLimit(opt.PageSize)
	q := RequestQuery{Requester: opt.Requester, Entitlement: opt.Entitlement, States: opt.States, After: opt.PageToken, Limit: MaxLimit}
	if opt.ToReview {
		q.States = []RequestState{RequestPending}
	}
	var out []*Request
	for {
		page, err := s.store.ListRequests(ctx, q)
		if err != nil {
			return nil, "", fmt.Errorf("access: list requests: %w", err)
		}
		for _, r := range page {
			q.After = r.ID
			ok := s.canSee(p, pr, r)
			if opt.ToReview {
				ok = p.CanApprove(pr, r.Entitlement) && !p.SameIdentity(pr, r.Requester) &&
					!slices.ContainsFunc(r.Approvals, func(a Approval) bool { return p.SameIdentity(a.Approver, pr) })
			}
			if !ok {
				continue
			}
			out = append(out, r)
			if len(out) == limit {
				return out, r.ID, nil
			}
		}
		if len(page) < q.Limit {
			return out, "", nil
		}
	}
}

// Watch returns a channel that yields the request now and after every
// change, until it leaves pending (that state is sent, then the channel
// closes) or ctx ends. Changes made through this Service arrive at once;
// changes by other replicas within Config.WatchPoll. A slow reader sees
// the latest state, not every one. ErrNotFound as Get.
func (s *Service) Watch(ctx context.Context, pr authn.Principal, id string) (<-chan Request, error) {
	r, err := s.Get(ctx, pr, id)
	if err != nil {
		return nil, err
	}
	wake := make(chan struct{}, 1)
	s.watchMu.Lock()
	if s.watchers[id] == nil {
		s.watchers[id] = map[chan struct{}]struct{}{}
	}
	s.watchers[id][wake] = struct{}{}
	s.watchMu.Unlock()
	out := make(chan Request)
	go func() {
		defer close(out)
		defer func() {
			s.watchMu.Lock()
			delete(s.watchers[id], wake)
			if len(s.watchers[id]) == 0 {
				delete(s.watchers, id)
			}
			s.watchMu.Unlock()
		}()
		poll := time.NewTicker(s.cfg.WatchPoll)
		defer poll.Stop()
		last := int64(-1)
		for {
			if r.Version != last {
				select {
				case out <- *r:
					last = r.Version
				case <-ctx.Done():
					return
				}
				if r.State != RequestPending {
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-poll.C:
			}
			latest, err := s.store.GetRequest(ctx, id)
			if err != nil {
				if ctx.Err() == nil {
					s.logger.Warn("watch: cannot read request", "request", id, "error", err.Error())
				}
				continue
			}
			r = latest
		}
	}()
	return out, nil
}

// broadcast wakes the watchers of a request.
func (s *Service) broadcast(id string) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for ch := range s.watchers[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// record appends a decision record; a store failure is logged (the
// decision already stands, and refusing it now would not undo it).
func (s *Service) record(ctx context.Context, p *policy.Policy, rec *DecisionRecord) {
	now := s.now()
	rec.ID = s.ids.next(now)
	rec.At = now
	if rec.Decision != nil {
		rec.At = rec.Decision.At
		rec.Decision.ID = rec.ID
	}
	if p != nil {
		rec.PolicyDigest = p.Digest
	}
	if err := s.store.AppendRecord(ctx, rec); err != nil {
		s.logger.Error("cannot store decision record", "action", rec.Action, "actor", rec.Actor, "error", err.Error())
	}
	if s.cfg.Audit != nil {
		s.cfg.Audit(ctx, rec)
	}
}

// RecordIssue records an issuance decision made by the API (policy.Decide)
// so that what-if can replay it.
func (s *Service) RecordIssue(ctx context.Context, in policy.Input, d policy.Decision) {
	p := s.cfg.Policy()
	rec := &DecisionRecord{
		Action: ActionIssue, Actor: in.Principal.ID, GrantID: d.GrantID, Entitlement: in.Entitlement, Outcome: d.Outcome.String(), Reasons: d.Reasons,
		Decision: &policy.Record{Kind: policy.RecordIssue, At: in.Now, PolicyDigest: p.Digest, Issue: &in, Result: policy.ResultOf(d)},
	}
	s.record(ctx, p, rec)
}

// Records returns every decision record at or after since, oldest first.
func (s *Service) Records(ctx context.Context, since time.Time) ([]*DecisionRecord, error) {
	var out []*DecisionRecord
	q := RecordQuery{Since: since, Limit: MaxLimit}
	for {
		page, err := s.store.Records(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("access: read records: %w", err)
		}
		out = append(out, page...)
		if len(page) < q.Limit {
			return out, nil
		}
		q.After = page[len(page)-1].ID
	}
}

// WhatIf replays every policy decision recorded since `since` under the
// policy in force and under newP, and returns what would change (see
// policy.WhatIf) with a summary.
func (s *Service) WhatIf(ctx context.Context, newP *policy.Policy, since time.Time) ([]policy.Change, policy.Summary, error) {
	recs, err := s.Records(ctx, since)
	if err != nil {
		return nil, policy.Summary{}, err
	}
	decisions := PolicyRecords(recs)
	changes := policy.WhatIf(s.cfg.Policy(), newP, decisions)
	return changes, policy.Summarize(len(decisions), changes), nil
}

// PolicyRecords extracts the policy decisions from records, for
// policy.WhatIf.
func PolicyRecords(recs []*DecisionRecord) []policy.Record {
	var out []policy.Record
	for _, r := range recs {
		if r.Decision != nil {
			out = append(out, *r.Decision)
		}
	}
	return out
}

// sentinelText is the sentinel's text of err, for records.
func sentinelText(err error) string {
	for _, s := range []error{ErrNotFound, ErrDenied, ErrInvalid, ErrSelfApproval, ErrNotApprover, ErrAlreadyDecided, ErrNotCounted, ErrClosed, ErrChanged, ErrForbidden} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return err.Error()
}

func reasonText(rs []policy.Reason) string {
	msgs := make([]string, len(rs))
	for i, r := range rs {
		msgs[i] = r.Message
	}
	return strings.Join(msgs, "; ")
}

// fmtDur prints 1h rather than 1h0m0s.
func fmtDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
