package memory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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
//
// The store holds every lease it was given for as long as it lives, so its
// layout is chosen for the garbage collector, which would otherwise walk all
// of it on every cycle: the leases sit in large slabs of records that hold
// no pointers at all (the collector does not look inside them), with
// subject, entitlement, grant, issuer and reasons as symbol numbers (one
// shared copy of each string), states as small numbers and times as
// seconds and nanoseconds; every index holds slot numbers rather than
// pointers or strings. What the collector still walks per lease is its id
// and the few strings that are seldom set (external ref, request id, last
// error), in a parallel slab.
type Store struct {
	mu sync.RWMutex

	slabs    [][]rec         // slot n is slabs[n/slabSize][n%slabSize]
	strSlabs [][]recStrings  // and its strings strSlabs[n/slabSize][n%slabSize]
	n        slot            // slots in use
	byID     map[string]slot // lease id -> slot
	// ids holds every slot in ascending id order (List without filters).
	ids []slot
	// bySubject, byEntitlement and byGrant hold slots in ascending id order
	// per symbol (RevokeMatching and filtered List).
	bySubject, byEntitlement, byGrant map[sym][]slot
	// byRequest maps (subject, request id) to the lease that used it.
	byRequest map[requestKey]slot
	// due holds every non-terminal lease, keyed by when a revoker must next
	// look at it.
	due dueHeap

	// syms interns subjects, entitlements, grant ids and issuers.
	syms  []string
	symOf map[string]sym
}

var _ lease.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	s := &Store{
		byID:          make(map[string]slot),
		bySubject:     make(map[sym][]slot),
		byEntitlement: make(map[sym][]slot),
		byGrant:       make(map[sym][]slot),
		byRequest:     make(map[requestKey]slot),
		symOf:         make(map[string]sym),
	}
	s.due.s = s
	s.intern("") // sym 0 is the empty string
	return s
}

// slabSize is the number of records per slab.
const slabSize = 1024

type (
	slot int32  // a record's position in the slabs
	sym  uint32 // an interned string
)

type requestKey struct {
	subject   sym
	requestID string
}

// rec is one stored lease without its strings (see recStrings), and its
// place in the due heap. It must hold no pointers.
type rec struct {
	self                          slot
	subject, entitlement, grantID sym
	issuer, revocableReason       sym
	revokeReason                  sym
	state, prior                  state // prior: the state before the current claim (pending or active)
	renewable, revocable          bool
	issuedAt, expiresAt, hardEnd  stamp
	dueAt, revokeRequestedAt      stamp
	revokedAt                     stamp
	at                            stamp // heap key: DueAt, or the claim deadline while revoking
	fence                         int64
	attempts                      int
	index                         int32 // position in the due heap, -1 once terminal
}

// recStrings are the strings of a lease that are its own.
type recStrings struct {
	id, externalRef, requestID, lastError string
}

func (s *Store) rec(n slot) *rec { return &s.slabs[n/slabSize][n%slabSize] }

func (s *Store) strs(r *rec) *recStrings { return &s.strSlabs[r.self/slabSize][r.self%slabSize] }

func (s *Store) id(n slot) string { return s.strSlabs[n/slabSize][n%slabSize].id }

// state is a lease.State as a number.
type state uint8

const (
	stNone state = iota // the prior state of a lease never claimed
	stPending
	stActive
	stRevoking
	stRevoked
	stIrrevocable
)

var states = [...]lease.State{"", lease.StatePending, lease.StateActive, lease.StateRevoking, lease.StateRevoked, lease.StateIrrevocable}

func (st state) State() lease.State { return states[st] }

// stamp is a time.Time without its location (the store keeps UTC): Unix
// seconds and nanoseconds. The zero stamp is the zero time.
type stamp struct {
	sec  int64 // t.Unix() - zeroUnix, so that the zero time is zero
	nsec int32
}

// zeroUnix is time.Time{}.Unix().
const zeroUnix = -62135596800

func stampOf(t time.Time) stamp { return stamp{t.Unix() - zeroUnix, int32(t.Nanosecond())} }

func (t stamp) time() time.Time {
	if t == (stamp{}) {
		return time.Time{}
	}
	return time.Unix(t.sec+zeroUnix, int64(t.nsec)).UTC()
}

func (t stamp) isZero() bool { return t == stamp{} }

func (t stamp) compare(u stamp) int {
	switch {
	case t.sec != u.sec:
		return cmp.Compare(t.sec, u.sec)
	default:
		return cmp.Compare(t.nsec, u.nsec)
	}
}

func (s *Store) intern(str string) sym {
	if n, ok := s.symOf[str]; ok {
		return n
	}
	n := sym(len(s.syms))
	str = strings.Clone(str) // do not keep the caller's larger buffer alive
	s.syms = append(s.syms, str)
	s.symOf[str] = n
	return n
}

// lookup returns the symbol of str, if it was ever interned.
func (s *Store) lookup(str string) (sym, bool) {
	n, ok := s.symOf[str]
	return n, ok
}

// lease returns a copy of the stored lease.
func (s *Store) lease(r *rec) *lease.Lease {
	str := s.strs(r)
	return &lease.Lease{
		ID:                str.id,
		Subject:           s.syms[r.subject],
		Entitlement:       s.syms[r.entitlement],
		GrantID:           s.syms[r.grantID],
		Issuer:            s.syms[r.issuer],
		ExternalRef:       str.externalRef,
		RequestID:         str.requestID,
		State:             r.state.State(),
		IssuedAt:          r.issuedAt.time(),
		ExpiresAt:         r.expiresAt.time(),
		HardEnd:           r.hardEnd.time(),
		DueAt:             r.dueAt.time(),
		Renewable:         r.renewable,
		Revocable:         r.revocable,
		RevocableReason:   s.syms[r.revocableReason],
		Attempts:          r.attempts,
		LastError:         str.lastError,
		RevokeReason:      lease.Reason(s.syms[r.revokeReason]),
		RevokeRequestedAt: r.revokeRequestedAt.time(),
		RevokedAt:         r.revokedAt.time(),
		Fence:             r.fence,
	}
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
	subject, known := s.lookup(l.Subject)
	if l.RequestID != "" && known {
		if n, ok := s.byRequest[requestKey{subject, l.RequestID}]; ok {
			return s.lease(s.rec(n)), fmt.Errorf("memory: request id of lease %s: %w", l.ID, lease.ErrDuplicate)
		}
	}
	if _, ok := s.byID[l.ID]; ok {
		return nil, fmt.Errorf("memory: lease %s: %w", l.ID, lease.ErrExists)
	}
	if !known {
		subject = s.intern(l.Subject)
	}
	n := s.n
	if int(n/slabSize) == len(s.slabs) {
		s.slabs = append(s.slabs, make([]rec, slabSize))
		s.strSlabs = append(s.strSlabs, make([]recStrings, slabSize))
	}
	s.n++
	r := s.rec(n)
	*r = rec{
		self:              n,
		subject:           subject,
		entitlement:       s.intern(l.Entitlement),
		grantID:           s.intern(l.GrantID),
		issuer:            s.intern(l.Issuer),
		revocableReason:   s.intern(l.RevocableReason),
		revokeReason:      s.intern(string(l.RevokeReason)),
		state:             stPending,
		renewable:         l.Renewable,
		revocable:         l.Revocable,
		issuedAt:          ms(l.IssuedAt),
		expiresAt:         ms(l.ExpiresAt),
		hardEnd:           ms(l.HardEnd),
		dueAt:             ms(l.DueAt),
		revokeRequestedAt: ms(l.RevokeRequestedAt),
		revokedAt:         ms(l.RevokedAt),
		fence:             l.Fence,
		attempts:          l.Attempts,
		index:             -1,
	}
	r.at = r.dueAt
	*s.strs(r) = recStrings{id: l.ID, externalRef: l.ExternalRef, requestID: l.RequestID, lastError: l.LastError}
	s.byID[l.ID] = n
	s.due.push(n)
	s.ids = s.insertSorted(s.ids, n)
	s.bySubject[r.subject] = s.insertSorted(s.bySubject[r.subject], n)
	s.byEntitlement[r.entitlement] = s.insertSorted(s.byEntitlement[r.entitlement], n)
	if l.GrantID != "" {
		s.byGrant[r.grantID] = s.insertSorted(s.byGrant[r.grantID], n)
	}
	if l.RequestID != "" {
		s.byRequest[requestKey{subject, l.RequestID}] = n
	}
	return s.lease(r), nil
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
	r, err := s.get(id)
	if err != nil {
		return err
	}
	if r.state != stPending {
		return wrongState(id, r.state)
	}
	s.strs(r).externalRef = ref
	return nil
}

// Activate moves a pending lease to active. See lease.Store.
func (s *Store) Activate(ctx context.Context, id, ref string) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.get(id)
	if err != nil {
		return nil, err
	}
	if r.state != stPending {
		return nil, wrongState(id, r.state)
	}
	if r.revokeReason != 0 {
		return nil, fmt.Errorf("memory: lease %s: revocation asked for (%s): %w", id, s.syms[r.revokeReason], lease.ErrWrongState)
	}
	r.state = stActive
	if ref != "" {
		s.strs(r).externalRef = ref
	}
	s.setDue(r, r.expiresAt)
	return s.lease(r), nil
}

// Get returns a copy of the lease. See lease.Store.
func (s *Store) Get(ctx context.Context, id string) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, err := s.get(id)
	if err != nil {
		return nil, err
	}
	return s.lease(r), nil
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

	// Walk the shortest slot list that every match must be in; matches
	// checks every filter anyway. A filter naming a string the store never
	// saw matches nothing.
	cand := s.ids
	for _, f := range []struct {
		key string
		idx map[sym][]slot
	}{{q.Subject, s.bySubject}, {q.Entitlement, s.byEntitlement}, {q.GrantID, s.byGrant}} {
		if f.key == "" {
			continue
		}
		k, ok := s.lookup(f.key)
		if !ok {
			return nil, "", nil
		}
		if slots := f.idx[k]; len(slots) < len(cand) {
			cand = slots
		}
	}
	start := 0
	if q.PageToken != "" {
		i, found := s.search(cand, q.PageToken)
		if found {
			i++
		}
		start = i
	}
	var out []*lease.Lease
	for _, n := range cand[start:] {
		r := s.rec(n)
		if !s.matches(r, q) {
			continue
		}
		if len(out) == size {
			return out, out[len(out)-1].ID, nil
		}
		out = append(out, s.lease(r))
	}
	return out, "", nil
}

func (s *Store) matches(r *rec, q lease.Query) bool {
	if q.Subject != "" && s.syms[r.subject] != q.Subject ||
		q.Entitlement != "" && s.syms[r.entitlement] != q.Entitlement ||
		q.GrantID != "" && s.syms[r.grantID] != q.GrantID {
		return false
	}
	return len(q.States) == 0 || slices.Contains(q.States, r.state.State())
}

// Renew moves the expiry of an active lease. See lease.Store.
func (s *Store) Renew(ctx context.Context, id string, expiresAt time.Time) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	exp := ms(expiresAt)
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.get(id)
	if err != nil {
		return nil, err
	}
	if r.state != stActive {
		return nil, wrongState(id, r.state)
	}
	if r.revokeReason != 0 {
		return nil, fmt.Errorf("memory: lease %s: revocation asked for (%s): %w", id, s.syms[r.revokeReason], lease.ErrWrongState)
	}
	if exp.compare(r.hardEnd) > 0 {
		return nil, fmt.Errorf("memory: lease %s: renew to %s: %w", id, exp.time().Format(time.RFC3339Nano), lease.ErrPastHardEnd)
	}
	r.expiresAt = exp
	s.setDue(r, exp)
	return s.lease(r), nil
}

// Revoke asks for revocation of one lease. See lease.Store and revoke.
func (s *Store) Revoke(ctx context.Context, id string, reason lease.Reason, at time.Time) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	if reason == "" {
		return nil, errors.New("memory: revoke without a reason")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.get(id)
	if err != nil {
		return nil, err
	}
	s.revoke(r, s.intern(string(reason)), ms(at))
	return s.lease(r), nil
}

// revoke records a revocation request and reports whether it changed the
// lease. Only pending and active leases change. The first request is
// recorded; a later one only when it asks for an earlier time (a kill
// switch overtaking a scheduled revocation). DueAt never moves later: a
// request after the lease is already due leaves DueAt alone.
func (s *Store) revoke(r *rec, reason sym, at stamp) bool {
	if r.state != stPending && r.state != stActive {
		return false
	}
	if r.revokeReason != 0 && (r.revokeRequestedAt == (stamp{}) || at.compare(r.revokeRequestedAt) >= 0) {
		return false
	}
	r.revokeReason = reason
	r.revokeRequestedAt = at
	if at.compare(r.dueAt) < 0 {
		s.setDue(r, at)
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
		from *map[sym][]slot
	)
	if sel.Subject != "" {
		set, key, from = set+1, sel.Subject, &s.bySubject
	}
	if sel.Entitlement != "" {
		set, key, from = set+1, sel.Entitlement, &s.byEntitlement
	}
	if sel.GrantID != "" {
		set, key, from = set+1, sel.GrantID, &s.byGrant
	}
	if set != 1 {
		return 0, fmt.Errorf("memory: selector must set exactly one of Subject, Entitlement, GrantID (has %d)", set)
	}
	when := ms(at)
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.lookup(key)
	if !ok {
		return 0, nil
	}
	why := s.intern(string(reason))
	n := 0
	for _, sl := range (*from)[k] {
		if s.revoke(s.rec(sl), why, when) {
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
	nowAt, deadlineAt := stampOf(now), stampOf(deadline)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []lease.Claim
	for len(out) < max && len(s.due.slots) > 0 {
		r := s.rec(s.due.slots[0])
		if r.at.compare(nowAt) > 0 {
			break
		}
		if r.state != stRevoking {
			r.prior = r.state
		}
		if r.revokeReason == 0 {
			if r.state == stPending {
				r.revokeReason = s.intern(string(lease.ReasonPendingTimeout))
				r.revokeRequestedAt = r.dueAt
			} else {
				r.revokeReason = s.intern(string(lease.ReasonExpired))
			}
		}
		r.state = stRevoking
		r.fence++
		r.at = deadlineAt
		s.due.fix(int(r.index))
		out = append(out, lease.Claim{Lease: s.lease(r), Fence: r.fence, Deadline: deadline})
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
	r, err := s.get(id)
	if err != nil {
		return err
	}
	if r.fence != c.Fence {
		return fmt.Errorf("memory: lease %s: fence %d, now %d: %w", id, c.Fence, r.fence, lease.ErrFenced)
	}
	if r.state != stRevoking {
		return wrongState(id, r.state)
	}
	switch {
	case out.Revoked:
		r.state = stRevoked
		r.revokedAt = ms(out.At)
		s.due.remove(int(r.index))
	case out.Irrevocable:
		r.state = stIrrevocable
		r.revokedAt = ms(out.At)
		r.attempts++
		s.strs(r).lastError = out.Err
		s.due.remove(int(r.index))
	default:
		r.state = r.prior
		r.attempts++
		s.strs(r).lastError = out.Err
		s.setDue(r, ms(out.RetryAt))
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
	if len(s.due.slots) == 0 {
		return time.Time{}, false, nil
	}
	return s.rec(s.due.slots[0]).at.time(), true, nil
}

// Len returns how many leases the store holds, in any state.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byID)
}

func (s *Store) get(id string) (*rec, error) {
	n, ok := s.byID[id]
	if !ok {
		return nil, fmt.Errorf("memory: lease %s: %w", id, lease.ErrNotFound)
	}
	return s.rec(n), nil
}

// setDue sets DueAt and, unless the lease is held by a claim, its heap key.
func (s *Store) setDue(r *rec, at stamp) {
	r.dueAt = at
	if r.state == stRevoking {
		return
	}
	r.at = at
	s.due.fix(int(r.index))
}

func wrongState(id string, st state) error {
	return fmt.Errorf("memory: lease %s is %s: %w", id, st.State(), lease.ErrWrongState)
}

func live(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	return nil
}

// ms keeps the precision every store keeps: whole milliseconds, in UTC.
func ms(t time.Time) stamp {
	if t.IsZero() {
		return stamp{}
	}
	return stampOf(t.Truncate(time.Millisecond))
}

// search finds id in slots (ascending id order) as slices.BinarySearch does.
func (s *Store) search(slots []slot, id string) (int, bool) {
	return slices.BinarySearchFunc(slots, id, func(n slot, id string) int {
		return strings.Compare(s.id(n), id)
	})
}

// insertSorted adds slot n to slots (ascending id order). Ids from
// lease.NewID arrive nearly in order, so this is mostly an append.
func (s *Store) insertSorted(slots []slot, n slot) []slot {
	id := s.id(n)
	if len(slots) == 0 || s.id(slots[len(slots)-1]) < id {
		return append(slots, n)
	}
	i, _ := s.search(slots, id)
	return slices.Insert(slots, i, n)
}

// dueHeap is a min-heap of slots ordered by (at, id); each record knows its
// position (rec.index). It is container/heap's algorithm without boxing a
// slot into an interface on every push.
type dueHeap struct {
	s     *Store
	slots []slot
}

func (h *dueHeap) less(i, j int) bool {
	a, b := h.s.rec(h.slots[i]), h.s.rec(h.slots[j])
	if c := a.at.compare(b.at); c != 0 {
		return c < 0
	}
	return h.s.strs(a).id < h.s.strs(b).id
}

func (h *dueHeap) swap(i, j int) {
	h.slots[i], h.slots[j] = h.slots[j], h.slots[i]
	h.s.rec(h.slots[i]).index = int32(i)
	h.s.rec(h.slots[j]).index = int32(j)
}

func (h *dueHeap) push(n slot) {
	h.s.rec(n).index = int32(len(h.slots))
	h.slots = append(h.slots, n)
	h.up(len(h.slots) - 1)
}

// fix restores the order after the key of the record at position i changed.
func (h *dueHeap) fix(i int) {
	if !h.down(i, len(h.slots)) {
		h.up(i)
	}
}

// remove takes the record at position i out of the heap.
func (h *dueHeap) remove(i int) {
	last := len(h.slots) - 1
	if last != i {
		h.swap(i, last)
		if !h.down(i, last) {
			h.up(i)
		}
	}
	h.s.rec(h.slots[last]).index = -1
	h.slots = h.slots[:last]
}

func (h *dueHeap) up(j int) {
	for {
		i := (j - 1) / 2 // parent
		if i == j || !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h *dueHeap) down(i0, n int) bool {
	i := i0
	for {
		j1 := 2*i + 1
		if j1 >= n || j1 < 0 { // j1 < 0 after int overflow
			break
		}
		j := j1 // left child
		if j2 := j1 + 1; j2 < n && h.less(j2, j1) {
			j = j2 // = 2*i + 2  // right child
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}

var _ lease.Counter = (*Store)(nil)

// Count implements lease.Counter: one pass over the leases not yet over.
func (s *Store) Count(ctx context.Context, overdueBefore time.Time) (lease.Counts, error) {
	if err := live(ctx); err != nil {
		return lease.Counts{}, err
	}
	before := stampOf(overdueBefore)
	var c lease.Counts
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, n := range s.due.slots {
		r := s.rec(n)
		switch r.state {
		case stPending:
			c.Pending++
		case stActive:
			c.Active++
		case stRevoking:
			c.Revoking++
		}
		if overdue(r, before) {
			c.Overdue++
		}
	}
	return c, nil
}

// overdue: the lease should have ended before `before` (its expiry, or a
// revocation asked for earlier) or, still pending, should have been reaped
// (its pending deadline passed, or reaping it has failed before). A lease
// waiting to retry a failed revocation stays overdue whatever its next
// retry time.
func overdue(r *rec, before stamp) bool {
	end := r.expiresAt
	if !r.revokeRequestedAt.isZero() && r.revokeRequestedAt.compare(end) < 0 {
		end = r.revokeRequestedAt
	}
	if end.compare(before) < 0 {
		return true
	}
	pending := r.state == stPending || (r.state == stRevoking && r.prior == stPending)
	return pending && r.revokeRequestedAt.isZero() && (r.attempts > 0 || r.dueAt.compare(before) < 0)
}
