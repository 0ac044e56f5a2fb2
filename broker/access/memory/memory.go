package memory

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly/broker/access"
)

// Store is an in-memory access.Store. The zero value is not usable; call
// New.
type Store struct {
	mu       sync.Mutex
	requests map[string][]byte
	grants   map[string][]byte
	certs    map[string]*access.Certification // id -> certification
	marks    map[string]time.Time
	records  map[string][]byte
	recAt    map[string]time.Time
	gen      uint64 // bumped by every grant or certification change
}

var (
	_ access.Store       = (*Store)(nil)
	_ access.Generations = (*Store)(nil)
)

// Generation implements access.Generations.
func (s *Store) Generation(ctx context.Context) (string, error) {
	if err := checkCtx(ctx); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return strconv.FormatUint(s.gen, 10), nil
}

// New returns an empty store.
func New() *Store {
	return &Store{
		requests: map[string][]byte{},
		grants:   map[string][]byte{},
		certs:    map[string]*access.Certification{},
		marks:    map[string]time.Time{},
		records:  map[string][]byte{},
		recAt:    map[string]time.Time{},
	}
}

func encode(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("memory: encode: %w", err)
	}
	return data, nil
}

func decode[T any](data []byte) *T {
	v := new(T)
	if err := json.Unmarshal(data, v); err != nil {
		panic(fmt.Sprintf("memory: stored value does not decode: %v", err)) // we wrote it
	}
	return v
}

func checkCtx(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	return nil
}

// CreateRequest implements access.Store.
func (s *Store) CreateRequest(ctx context.Context, r *access.Request) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	if r.ID == "" {
		return fmt.Errorf("memory: request without id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.requests[r.ID]; ok {
		return access.ErrExists
	}
	c := *r
	c.Version = 1
	data, err := encode(&c)
	if err != nil {
		return err
	}
	s.requests[r.ID] = data
	r.Version = 1
	return nil
}

// GetRequest implements access.Store.
func (s *Store) GetRequest(ctx context.Context, id string) (*access.Request, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.requests[id]
	if !ok {
		return nil, access.ErrNotFound
	}
	return decode[access.Request](data), nil
}

// UpdateRequest implements access.Store.
func (s *Store) UpdateRequest(ctx context.Context, r *access.Request) (*access.Request, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.requests[r.ID]
	if !ok {
		return nil, access.ErrNotFound
	}
	if decode[access.Request](data).Version != r.Version {
		return nil, access.ErrConflict
	}
	c := *r
	c.Version++
	data, err := encode(&c)
	if err != nil {
		return nil, err
	}
	s.requests[r.ID] = data
	return decode[access.Request](data), nil
}

// ListRequests implements access.Store.
func (s *Store) ListRequests(ctx context.Context, q access.RequestQuery) ([]*access.Request, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := access.PageLimit(q.Limit)
	var out []*access.Request
	for _, id := range sortedKeys(s.requests, q.After) {
		r := decode[access.Request](s.requests[id])
		if (q.Requester != "" && r.Requester.ID != q.Requester) ||
			(q.Entitlement != "" && r.Entitlement != q.Entitlement) ||
			(len(q.States) > 0 && !slices.Contains(q.States, r.State)) {
			continue
		}
		out = append(out, r)
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

// CreateGrant implements access.Store.
func (s *Store) CreateGrant(ctx context.Context, g *access.Grant) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	if g.ID == "" {
		return fmt.Errorf("memory: grant without id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.grants[g.ID]; ok {
		return access.ErrExists
	}
	c := *g
	c.Version = 1
	data, err := encode(&c)
	if err != nil {
		return err
	}
	s.grants[g.ID] = data
	s.gen++
	g.Version = 1
	return nil
}

// GetGrant implements access.Store.
func (s *Store) GetGrant(ctx context.Context, id string) (*access.Grant, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.grants[id]
	if !ok {
		return nil, access.ErrNotFound
	}
	return decode[access.Grant](data), nil
}

// UpdateGrant implements access.Store.
func (s *Store) UpdateGrant(ctx context.Context, g *access.Grant) (*access.Grant, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.grants[g.ID]
	if !ok {
		return nil, access.ErrNotFound
	}
	if decode[access.Grant](data).Version != g.Version {
		return nil, access.ErrConflict
	}
	c := *g
	c.Version++
	data, err := encode(&c)
	if err != nil {
		return nil, err
	}
	s.grants[g.ID] = data
	s.gen++
	return decode[access.Grant](data), nil
}

// ListGrants implements access.Store.
func (s *Store) ListGrants(ctx context.Context, q access.GrantQuery) ([]*access.Grant, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := access.PageLimit(q.Limit)
	var out []*access.Grant
	for _, id := range sortedKeys(s.grants, q.After) {
		g := decode[access.Grant](s.grants[id])
		if (q.Subject != "" && g.Subject != q.Subject) ||
			(q.Entitlement != "" && g.Entitlement != q.Entitlement) ||
			(q.Kind != "" && g.Kind != q.Kind) ||
			(len(q.States) > 0 && !slices.Contains(q.States, g.State)) {
			continue
		}
		out = append(out, g)
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

// AddCertification implements access.Store.
func (s *Store) AddCertification(ctx context.Context, c *access.Certification) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	if c.ID == "" || c.GrantID == "" {
		return fmt.Errorf("memory: certification without id or grant id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.certs[c.ID]; ok {
		return access.ErrExists
	}
	cp := *c
	s.certs[c.ID] = &cp
	s.gen++
	return nil
}

// LatestCertifications implements access.Store.
func (s *Store) LatestCertifications(ctx context.Context) (map[string]*access.Certification, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*access.Certification{}
	for _, c := range s.certs {
		cur := out[c.GrantID]
		if cur == nil || c.At.After(cur.At) || (c.At.Equal(cur.At) && c.ID > cur.ID) {
			cp := *c
			out[c.GrantID] = &cp
		}
	}
	return out, nil
}

// Mark implements access.Store.
func (s *Store) Mark(ctx context.Context, key string, at time.Time) (time.Time, bool, error) {
	if err := checkCtx(ctx); err != nil {
		return time.Time{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.marks[key]; ok {
		return t, false, nil
	}
	s.marks[key] = at
	return at, true, nil
}

// Unmark implements access.Store.
func (s *Store) Unmark(ctx context.Context, key string) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.marks, key)
	return nil
}

// AppendRecord implements access.Store.
func (s *Store) AppendRecord(ctx context.Context, rec *access.DecisionRecord) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	if rec.ID == "" {
		return fmt.Errorf("memory: record without id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.records[rec.ID]; ok {
		return access.ErrExists
	}
	data, err := encode(rec)
	if err != nil {
		return err
	}
	s.records[rec.ID] = data
	s.recAt[rec.ID] = rec.At
	return nil
}

// Records implements access.Store.
func (s *Store) Records(ctx context.Context, q access.RecordQuery) ([]*access.DecisionRecord, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := access.PageLimit(q.Limit)
	var out []*access.DecisionRecord
	for _, id := range sortedKeys(s.records, q.After) {
		if s.recAt[id].Before(q.Since) {
			continue
		}
		out = append(out, decode[access.DecisionRecord](s.records[id]))
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

// sortedKeys returns the keys greater than after, sorted.
func sortedKeys[V any](m map[string]V, after string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k > after {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}
