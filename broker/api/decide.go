package api

import (
	"context"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly/broker/policy"
)

// decide evaluates policy for in with what the access service knows about
// the principal (dynamic grants, certifications, break-glass blocks,
// entitlements held). If that state cannot be read, it fails closed.
func (s *Server) decide(ctx context.Context, in policy.Input) (policy.Decision, error) {
	if err := s.fillState(ctx, &in); err != nil {
		return policy.Decision{}, err
	}
	d := s.cfg.Policy().Decide(in)
	s.cfg.Metrics.Decision(d.Outcome.String())
	if s.cfg.Access != nil && s.records.due(in, d, s.cfg.Now()) {
		s.cfg.Access.RecordIssue(ctx, in, d)
	}
	return d, nil
}

// fillState adds to in what the access service knows about its principal.
func (s *Server) fillState(ctx context.Context, in *policy.Input) error {
	if s.cfg.Access == nil {
		return nil
	}
	st, err := s.cfg.Access.State(ctx, in.Principal)
	if err != nil {
		s.log.Warn("access state unavailable; refusing rather than deciding without it", "subject", in.Principal.ID, "error", err)
		return accessStatus(err)
	}
	st.Fill(in)
	return nil
}

// recordEvery is how often the same issuance decision (subject,
// entitlement, outcome, grant) is recorded for what-if: a workload that
// renews every few minutes would otherwise fill the record store with
// identical entries, while one record per window replays the same.
const recordEvery = 10 * time.Minute

// recordSampler remembers when each distinct issuance decision was last
// recorded.
type recordSampler struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (r *recordSampler) due(in policy.Input, d policy.Decision, now time.Time) bool {
	key := in.Principal.ID + "\x00" + in.Entitlement + "\x00" + d.Outcome.String() + "\x00" + d.GrantID
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]time.Time{}
	}
	if t, ok := r.last[key]; ok && now.Sub(t) < recordEvery {
		return false
	}
	if len(r.last) > 100_000 { // bound memory: forget old entries wholesale
		for k, t := range r.last {
			if now.Sub(t) >= recordEvery {
				delete(r.last, k)
			}
		}
	}
	r.last[key] = now
	return true
}
