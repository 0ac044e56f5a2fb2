package chaos

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// Probe is an issuer.Issuer for fault and attack cases. It mints an opaque
// credential whose native expiry is the lease's, and records, on the real
// clock of the machine, every call the broker makes: what expiry each
// issuance and renewal asked for, and each Revoke with the claim's fence.
// A Revoke may be made slow (Delay), so that a revoker holds its claims
// long enough to be killed in the middle of a batch.
type Probe struct {
	// IssuerName is the name the policy uses (default "probe").
	IssuerName string
	// MaxTTL, when set, is the backend's longest credential lifetime
	// (policy.TTLBounder): the policy loader refuses a longer max_ttl.
	MaxTTL time.Duration
	// Delay, when set, is how long each Revoke takes.
	Delay func() time.Duration
	// Out, when set, gets one line per Revoke call as it starts:
	// "revoke <lease id> <fence> <unix nanoseconds>" (a replica process
	// reports its calls to the test this way).
	Out io.Writer

	mu      sync.Mutex
	revokes []RevokeCall
	issues  []ExpiryCall
}

// RevokeCall is one Revoke the broker made.
type RevokeCall struct {
	LeaseID string
	Fence   int64
	At      time.Time
	By      string // the replica, when reported by one
}

// ExpiryCall is one Issue or Renew and the expiry it was asked for.
type ExpiryCall struct {
	LeaseID   string
	Renew     bool
	IssuedAt  time.Time // the lease's, on the broker's clock
	ExpiresAt time.Time
	HardEnd   time.Time
}

// probeParams are an entitlement's probe parameters: none, only the
// backend's bounds.
type probeParams struct{ max time.Duration }

// TTLBounds implements policy.TTLBounder.
func (p probeParams) TTLBounds() (minTTL, maxTTL time.Duration) { return 0, p.max }

// Name implements issuer.Issuer.
func (p *Probe) Name() string {
	if p.IssuerName == "" {
		return "probe"
	}
	return p.IssuerName
}

// DecodeParams implements issuer.Issuer; the section may be absent.
func (p *Probe) DecodeParams(node *yaml.Node) (any, error) {
	if node != nil && node.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("want a mapping")
	}
	return probeParams{max: p.MaxTTL}, nil
}

// Revocability implements issuer.Issuer.
func (p *Probe) Revocability(any) (bool, string) { return true, "" }

// Issue implements issuer.Issuer.
func (p *Probe) Issue(ctx context.Context, req issuer.Request) (*issuer.Credential, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("probe: %w: %w", issuer.ErrUnavailable, err)
	}
	l := req.Lease
	p.mu.Lock()
	p.issues = append(p.issues, ExpiryCall{LeaseID: l.ID, IssuedAt: l.IssuedAt, ExpiresAt: l.ExpiresAt, HardEnd: l.HardEnd})
	p.mu.Unlock()
	return &issuer.Credential{Kind: issuer.KindRaw, ExternalRef: "probe-" + l.ID, ExpiresAt: l.ExpiresAt,
		Fields: map[string]string{"lease": l.ID}}, nil
}

// Renew implements issuer.Issuer: a new credential with the new expiry.
func (p *Probe) Renew(ctx context.Context, l *lease.Lease, _ any, expiresAt time.Time) (*issuer.Credential, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("probe: %w: %w", issuer.ErrUnavailable, err)
	}
	p.mu.Lock()
	p.issues = append(p.issues, ExpiryCall{LeaseID: l.ID, Renew: true, IssuedAt: l.IssuedAt, ExpiresAt: expiresAt, HardEnd: l.HardEnd})
	p.mu.Unlock()
	return &issuer.Credential{Kind: issuer.KindRaw, ExternalRef: "probe-" + l.ID, ExpiresAt: expiresAt,
		Fields: map[string]string{"lease": l.ID}}, nil
}

// Revoke implements issuer.Issuer. It is idempotent, as the contract says.
func (p *Probe) Revoke(ctx context.Context, l *lease.Lease) error {
	now := time.Now()
	p.mu.Lock()
	p.revokes = append(p.revokes, RevokeCall{LeaseID: l.ID, Fence: l.Fence, At: now})
	if p.Out != nil {
		fmt.Fprintf(p.Out, "revoke %s %d %d\n", l.ID, l.Fence, now.UnixNano())
	}
	p.mu.Unlock()
	if p.Delay != nil {
		t := time.NewTimer(p.Delay())
		defer t.Stop()
		select {
		case <-ctx.Done():
			return fmt.Errorf("probe: %w: %w", issuer.ErrUnavailable, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Revokes returns the Revoke calls so far.
func (p *Probe) Revokes() []RevokeCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]RevokeCall(nil), p.revokes...)
}

// Expiries returns the Issue and Renew calls so far.
func (p *Probe) Expiries() []ExpiryCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ExpiryCall(nil), p.issues...)
}

var _ issuer.Issuer = (*Probe)(nil)
