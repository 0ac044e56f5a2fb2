package access

import (
	"context"
	"fmt"
	"sync"
)

// maxCachedSubjects bounds the grants the state cache keeps; past it the
// cache starts again empty.
const maxCachedSubjects = 10_000

// stateCache keeps, for a store that implements Generations, what State
// last read: each subject's grants and the latest certifications, valid
// while the store's generation is the one they were read at.
//
// A value is cached under the generation read before it was, and used
// only by a decision that read the same generation: a change that lands
// between the reads moves the generation past it (tokens are random, so
// it never comes back), so a decision never uses a value older than the
// state it observed. Concurrent decisions that read different
// generations may take the cache from each other; that costs reads, not
// correctness.
type stateCache struct {
	mu     sync.Mutex
	gen    string
	grants map[string][]*Grant // subject -> every grant of it
	certs  map[string]*Certification
}

// view is the store's generation as one decision read it; the zero view
// reads the store itself, bypassing the cache.
type view struct {
	gen string
	ok  bool
}

// view reads the store's generation (one cheap call) and drops what the
// cache holds if it moved. Without Generations it is the zero view.
func (s *Service) view(ctx context.Context) (view, error) {
	g, ok := s.store.(Generations)
	if !ok {
		return view{}, nil
	}
	gen, err := g.Generation(ctx)
	if err != nil {
		return view{}, fmt.Errorf("access: read the store's generation: %w", err)
	}
	c := &s.cache
	c.mu.Lock()
	if c.gen != gen || c.grants == nil || len(c.grants) > maxCachedSubjects {
		c.gen, c.grants, c.certs = gen, map[string][]*Grant{}, nil
	}
	c.mu.Unlock()
	return view{gen: gen, ok: true}, nil
}

// subjectGrants returns every grant of subject. The slice and the grants
// are shared with the cache: callers only read them.
func (s *Service) subjectGrants(ctx context.Context, v view, subject string) ([]*Grant, error) {
	c := &s.cache
	if v.ok {
		c.mu.Lock()
		gs, hit := c.grants[subject]
		hit = hit && c.gen == v.gen
		c.mu.Unlock()
		if hit {
			return gs, nil
		}
	}
	gs, err := s.listGrants(ctx, GrantQuery{Subject: subject})
	if err != nil {
		return nil, err
	}
	if v.ok {
		c.mu.Lock()
		if c.gen == v.gen {
			c.grants[subject] = gs
		}
		c.mu.Unlock()
	}
	return gs, nil
}

// latestCertifications is Store.LatestCertifications through the cache.
// The map is shared with the cache: callers only read it.
func (s *Service) latestCertifications(ctx context.Context, v view) (map[string]*Certification, error) {
	c := &s.cache
	if v.ok {
		c.mu.Lock()
		certs := c.certs
		if c.gen != v.gen {
			certs = nil
		}
		c.mu.Unlock()
		if certs != nil {
			return certs, nil
		}
	}
	certs, err := s.store.LatestCertifications(ctx)
	if err != nil {
		return nil, fmt.Errorf("access: read certifications: %w", err)
	}
	if v.ok {
		c.mu.Lock()
		if c.gen == v.gen {
			c.certs = certs
		}
		c.mu.Unlock()
	}
	return certs, nil
}
