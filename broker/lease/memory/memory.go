package memory

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

const (
	// defaultPageSize is List's page size when Query.PageSize is 0.
	defaultPageSize = 100
	// maxPageSize caps Query.PageSize.
	maxPageSize = 1000
)

// Store is an in-memory lease.Store. The zero value is not usable; call New.
// It is safe for concurrent use.
type Store struct {
	mu sync.RWMutex

	leases map[string]*entry
	// ids holds every lease id in ascending order (List without filters).
	ids []string
	// bySubject, byEntitlement and byGrant hold sorted lease ids per key
	// (RevokeMatching and filtered List).
	bySubject     map[string][]string
	byEntitlement map[string][]string
	byGrant       map[string][]string
	// byRequest maps (subject, request id) to the lease that used it.
	byRequest map[requestKey]string
	// due holds every non-terminal lease, keyed by when a revoker must next
	// look at it.
	due dueHeap
}

var _ lease.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		leases:        make(map[string]*entry),
		bySubject:     make(map[string][]string),
		byEntitlement: make(map[string][]string),
		byGrant:       make(map[string][]string),
		byRequest:     make(map[requestKey]string),
	}
}

type requestKey struct{ subject, requestID string }

// entry is one stored lease and its place in the due heap.
type entry struct {
	l lease.Lease
	// prior is the state the lease had before its current claim (pending or
	// active); a retry puts it back there.
	prior lease.State
	// at is the heap key: DueAt, or the claim deadline while revoking.
	at time.Time
	// index is the position in the due heap, -1 once terminal.
	index int
}

func (e *entry) clone() *lease.Lease {
	c := e.l
	return &c
}

// Create records a new pending lease. See lease.Store.
func (s *Store) Create(ctx context.Context, l *lease.Lease) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	if err := validate(l); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.RequestID != "" {
		if id, ok := s.byRequest[requestKey{l.Subject, l.RequestID}]; ok {
			return s.leases[id].clone(), fmt.Errorf("memory: request id of lease %s: %w", l.ID, lease.ErrDuplicate)
		}
	}
	if _, ok := s.leases[l.ID]; ok {
		return nil, fmt.Errorf("memory: lease %s: %w", l.ID, lease.ErrExists)
	}
	e := &entry{l: *l, index: -1}
	e.l.State = lease.StatePending
	normalize(&e.l)
	e.at = e.l.DueAt
	s.leases[l.ID] = e
	heap.Push(&s.due, e)
	s.ids = insertSorted(s.ids, l.ID)
	s.bySubject[l.Subject] = insertSorted(s.bySubject[l.Subject], l.ID)
	s.byEntitlement[l.Entitlement] = insertSorted(s.byEntitlement[l.Entitlement], l.ID)
	if l.GrantID != "" {
		s.byGrant[l.GrantID] = insertSorted(s.byGrant[l.GrantID], l.ID)
	}
	if l.RequestID != "" {
		s.byRequest[requestKey{l.Subject, l.RequestID}] = l.ID
	}
	return e.clone(), nil
}

func validate(l *lease.Lease) error {
	if l == nil {
		return errors.New("memory: nil lease")
	}
	var missing string
	switch {
	case l.ID == "":
		missing = "ID"
	case l.Subject == "":
		missing = "Subject"
	case l.Entitlement == "":
		missing = "Entitlement"
	case l.Issuer == "":
		missing = "Issuer"
	case l.IssuedAt.IsZero():
		missing = "IssuedAt"
	case l.ExpiresAt.IsZero():
		missing = "ExpiresAt"
	case l.HardEnd.IsZero():
		missing = "HardEnd"
	case l.DueAt.IsZero():
		missing = "DueAt"
	default:
		return nil
	}
	return fmt.Errorf("memory: lease %q has no %s", l.ID, missing)
}

// Bind records the backend handle of a pending lease. See lease.Store.
func (s *Store) Bind(ctx context.Context, id, ref string) error {
	if err := live(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.get(id)
	if err != nil {
		return err
	}
	if e.l.State != lease.StatePending {
		return wrongState(id, e.l.State)
	}
	e.l.ExternalRef = ref
	return nil
}

// Activate moves a pending lease to active. See lease.Store.
func (s *Store) Activate(ctx context.Context, id, ref string) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.get(id)
	if err != nil {
		return nil, err
	}
	if e.l.State != lease.StatePending {
		return nil, wrongState(id, e.l.State)
	}
	if e.l.RevokeReason != "" {
		return nil, fmt.Errorf("memory: lease %s: revocation asked for (%s): %w", id, e.l.RevokeReason, lease.ErrWrongState)
	}
	e.l.State = lease.StateActive
	if ref != "" {
		e.l.ExternalRef = ref
	}
	s.setDue(e, e.l.ExpiresAt)
	return e.clone(), nil
}

// Get returns a copy of the lease. See lease.Store.
func (s *Store) Get(ctx context.Context, id string) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := s.get(id)
	if err != nil {
		return nil, err
	}
	return e.clone(), nil
}

// List returns the leases matching q in ascending id order. The page token
// is the last id of the page. See lease.Store.
func (s *Store) List(ctx context.Context, q lease.Query) ([]*lease.Lease, string, error) {
	if err := live(ctx); err != nil {
		return nil, "", err
	}
	size := q.PageSize
	switch {
	case size < 0:
		return nil, "", fmt.Errorf("memory: negative page size %d", size)
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	s.mu.RLock()
	defer s.mu.RUnlock()

	// Walk the shortest id list that every match must be in; matches
	// checks every filter anyway.
	cand := s.ids
	for _, f := range []struct {
		key string
		idx map[string][]string
	}{{q.Subject, s.bySubject}, {q.Entitlement, s.byEntitlement}, {q.GrantID, s.byGrant}} {
		if ids := f.idx[f.key]; f.key != "" && len(ids) < len(cand) {
			cand = ids
		}
	}
	start := 0
	if q.PageToken != "" {
		i, found := slices.BinarySearch(cand, q.PageToken)
		if found {
			i++
		}
		start = i
	}
	var out []*lease.Lease
	for _, id := range cand[start:] {
		e := s.leases[id]
		if !matches(&e.l, q) {
			continue
		}
		if len(out) == size {
			return out, out[len(out)-1].ID, nil
		}
		out = append(out, e.clone())
	}
	return out, "", nil
}

func matches(l *lease.Lease, q lease.Query) bool {
	if q.Subject != "" && l.Subject != q.Subject ||
		q.Entitlement != "" && l.Entitlement != q.Entitlement ||
		q.GrantID != "" && l.GrantID != q.GrantID {
		return false
	}
	return len(q.States) == 0 || slices.Contains(q.States, l.State)
}

// Renew moves the expiry of an active lease. See lease.Store.
func (s *Store) Renew(ctx context.Context, id string, expiresAt time.Time) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	expiresAt = ms(expiresAt)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.get(id)
	if err != nil {
		return nil, err
	}
	if e.l.State != lease.StateActive {
		return nil, wrongState(id, e.l.State)
	}
	if e.l.RevokeReason != "" {
		return nil, fmt.Errorf("memory: lease %s: revocation asked for (%s): %w", id, e.l.RevokeReason, lease.ErrWrongState)
	}
	if expiresAt.After(e.l.HardEnd) {
		return nil, fmt.Errorf("memory: lease %s: renew to %s: %w", id, expiresAt.Format(time.RFC3339Nano), lease.ErrPastHardEnd)
	}
	e.l.ExpiresAt = expiresAt
	s.setDue(e, expiresAt)
	return e.clone(), nil
}

// Revoke asks for revocation of one lease. See lease.Store and revoke.
func (s *Store) Revoke(ctx context.Context, id string, reason lease.Reason, at time.Time) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	if reason == "" {
		return nil, errors.New("memory: revoke without a reason")
	}
	at = ms(at)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.get(id)
	if err != nil {
		return nil, err
	}
	s.revoke(e, reason, at)
	return e.clone(), nil
}

// revoke records a revocation request and reports whether it changed the
// lease. Only pending and active leases change. The first request is
// recorded; a later one only when it asks for an earlier time (a kill
// switch overtaking a scheduled revocation). DueAt never moves later: a
// request after the lease is already due leaves DueAt alone.
func (s *Store) revoke(e *entry, reason lease.Reason, at time.Time) bool {
	l := &e.l
	if l.State != lease.StatePending && l.State != lease.StateActive {
		return false
	}
	if l.RevokeReason != "" && (l.RevokeRequestedAt.IsZero() || !at.Before(l.RevokeRequestedAt)) {
		return false
	}
	l.RevokeReason = reason
	l.RevokeRequestedAt = at
	if at.Before(l.DueAt) {
		s.setDue(e, at)
	}
	return true
}

// RevokeMatching asks for revocation of every pending or active lease the
// selector matches. See lease.Store.
func (s *Store) RevokeMatching(ctx context.Context, sel lease.Selector, reason lease.Reason, at time.Time) (int, error) {
	if err := live(ctx); err != nil {
		return 0, err
	}
	if reason == "" {
		return 0, errors.New("memory: revoke without a reason")
	}
	var (
		set  int
		key  string
		from map[string][]string
	)
	if sel.Subject != "" {
		set, key, from = set+1, sel.Subject, s.bySubject
	}
	if sel.Entitlement != "" {
		set, key, from = set+1, sel.Entitlement, s.byEntitlement
	}
	if sel.GrantID != "" {
		set, key, from = set+1, sel.GrantID, s.byGrant
	}
	if set != 1 {
		return 0, fmt.Errorf("memory: selector must set exactly one of Subject, Entitlement, GrantID (has %d)", set)
	}
	at = ms(at)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, id := range from[key] {
		if s.revoke(s.leases[id], reason, at) {
			n++
		}
	}
	return n, nil
}

// Claim takes up to max due leases, earliest first. See lease.Store.
//
// A claimed lease that had no RevokeReason gets one: ReasonPendingTimeout
// (with RevokeRequestedAt set to the pending deadline) for a pending lease,
// ReasonExpired for an active one. That keeps a reaped lease from being
// activated or renewed even if its revocation has to be retried.
func (s *Store) Claim(ctx context.Context, now time.Time, max int, hold time.Duration) ([]lease.Claim, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	if hold <= 0 {
		return nil, fmt.Errorf("memory: claim hold %s is not positive", hold)
	}
	if max <= 0 {
		return nil, nil
	}
	// Not truncated: the deadline must stay after now so that a lease
	// claimed in this call is not seen again by the loop below.
	deadline := now.Add(hold).UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []lease.Claim
	for len(out) < max && len(s.due) > 0 {
		e := s.due[0]
		if e.at.After(now) {
			break
		}
		l := &e.l
		if l.State != lease.StateRevoking {
			e.prior = l.State
		}
		if l.RevokeReason == "" {
			if l.State == lease.StatePending {
				l.RevokeReason = lease.ReasonPendingTimeout
				l.RevokeRequestedAt = l.DueAt
			} else {
				l.RevokeReason = lease.ReasonExpired
			}
		}
		l.State = lease.StateRevoking
		l.Fence++
		e.at = deadline
		heap.Fix(&s.due, e.index)
		out = append(out, lease.Claim{Lease: e.clone(), Fence: l.Fence, Deadline: deadline})
	}
	return out, nil
}

// Finish records a claim's outcome. See lease.Store.
//
// A claim that was already finished cannot be finished again
// (ErrWrongState). A claim whose deadline passed but that nobody claimed
// again can still be finished: the work was done.
func (s *Store) Finish(ctx context.Context, c lease.Claim, out lease.Outcome) error {
	if err := live(ctx); err != nil {
		return err
	}
	if c.Lease == nil {
		return errors.New("memory: claim without a lease")
	}
	retry := !out.Revoked && !out.Irrevocable
	switch {
	case out.Revoked && out.Irrevocable:
		return errors.New("memory: outcome is both revoked and irrevocable")
	case retry && out.RetryAt.IsZero():
		return errors.New("memory: retry outcome has no RetryAt")
	case !retry && out.At.IsZero():
		return errors.New("memory: outcome has no At")
	}
	id := c.Lease.ID
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.get(id)
	if err != nil {
		return err
	}
	l := &e.l
	if l.Fence != c.Fence {
		return fmt.Errorf("memory: lease %s: fence %d, now %d: %w", id, c.Fence, l.Fence, lease.ErrFenced)
	}
	if l.State != lease.StateRevoking {
		return wrongState(id, l.State)
	}
	switch {
	case out.Revoked:
		l.State = lease.StateRevoked
		l.RevokedAt = ms(out.At)
		heap.Remove(&s.due, e.index)
	case out.Irrevocable:
		l.State = lease.StateIrrevocable
		l.RevokedAt = ms(out.At)
		l.Attempts++
		l.LastError = out.Err
		heap.Remove(&s.due, e.index)
	default:
		l.State = e.prior
		l.Attempts++
		l.LastError = out.Err
		s.setDue(e, ms(out.RetryAt))
	}
	return nil
}

// NextDue returns the earliest due time or claim deadline. See lease.Store.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	if err := live(ctx); err != nil {
		return time.Time{}, false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.due) == 0 {
		return time.Time{}, false, nil
	}
	return s.due[0].at, true, nil
}

// Len returns how many leases the store holds, in any state.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.leases)
}

func (s *Store) get(id string) (*entry, error) {
	e, ok := s.leases[id]
	if !ok {
		return nil, fmt.Errorf("memory: lease %s: %w", id, lease.ErrNotFound)
	}
	return e, nil
}

// setDue sets DueAt and, unless the lease is held by a claim, its heap key.
func (s *Store) setDue(e *entry, at time.Time) {
	e.l.DueAt = at
	if e.l.State == lease.StateRevoking {
		return
	}
	e.at = at
	heap.Fix(&s.due, e.index)
}

func wrongState(id string, st lease.State) error {
	return fmt.Errorf("memory: lease %s is %s: %w", id, st, lease.ErrWrongState)
}

func live(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	return nil
}

// ms keeps the precision every store keeps: whole milliseconds, in UTC.
func ms(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Truncate(time.Millisecond).UTC()
}

func normalize(l *lease.Lease) {
	for _, t := range []*time.Time{&l.IssuedAt, &l.ExpiresAt, &l.HardEnd, &l.DueAt, &l.RevokeRequestedAt, &l.RevokedAt} {
		*t = ms(*t)
	}
}

func insertSorted(ids []string, id string) []string {
	i, _ := slices.BinarySearch(ids, id)
	return slices.Insert(ids, i, id)
}

// dueHeap is a min-heap of entries ordered by (at, id).
type dueHeap []*entry

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if c := h[i].at.Compare(h[j].at); c != 0 {
		return c < 0
	}
	return h[i].l.ID < h[j].l.ID
}
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *dueHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*h = old[:len(old)-1]
	return e
}
