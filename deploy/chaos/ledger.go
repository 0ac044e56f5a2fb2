package chaos

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// Credential is one credential a client received, as the client saw it.
type Credential struct {
	// LeaseID is the lease the response named.
	LeaseID string
	// Subject and Entitlement are the lease's.
	Subject, Entitlement string
	// ExpiresAt and HardEnd are the lease's as the response said.
	ExpiresAt, HardEnd time.Time
	// Via names the broker (replica, process) that answered.
	Via string
	// RequestID is the idempotency key the client sent, if any.
	RequestID string
	// ReceivedAt is when the client had the response (the test's clock).
	ReceivedAt time.Time
	// JTI and Exp are the JWT's claims, for a JWT credential (zero
	// otherwise): the jti must be the lease id, exp never after the lease.
	JTI string
	Exp time.Time
}

// Ledger records every credential any client of a run received. It is
// safe for concurrent use.
type Ledger struct {
	mu    sync.Mutex
	creds []Credential
}

// Add records a successful IssueCredential response.
func (l *Ledger) Add(resp *mayflyv1.IssueCredentialResponse, via, requestID string) Credential {
	c := Credential{
		LeaseID:     resp.GetLease().GetId(),
		Subject:     resp.GetLease().GetSubject(),
		Entitlement: resp.GetLease().GetEntitlement(),
		ExpiresAt:   resp.GetLease().GetExpiresAt().AsTime(),
		HardEnd:     resp.GetLease().GetHardEnd().AsTime(),
		Via:         via,
		RequestID:   requestID,
		ReceivedAt:  time.Now(),
	}
	if tok := resp.GetCredential().GetJwt().GetToken(); tok != "" {
		if claims, err := JWTClaims(tok); err == nil {
			c.JTI, _ = claims["jti"].(string)
			if exp, ok := claims["exp"].(float64); ok {
				c.Exp = time.Unix(int64(exp), 0)
			}
		}
	}
	l.mu.Lock()
	l.creds = append(l.creds, c)
	l.mu.Unlock()
	return c
}

// All returns the credentials received so far.
func (l *Ledger) All() []Credential {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Credential(nil), l.creds...)
}

// Len is how many credentials were received.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.creds)
}

// Problem is a received credential that breaks the promise.
type Problem struct {
	Credential Credential
	What       string
}

// Audit checks every received credential against the lease store: it has a
// lease (lost otherwise), the lease was past pending when the response was
// given (it is not pending now, and was written before the response), its
// subject and entitlement match, a JWT's jti is the lease id, and a JWT's
// exp is not after the lease's expiry or hard end. It returns the
// problems and how many credentials had no lease at all.
func (l *Ledger) Audit(ctx context.Context, store lease.Store) (problems []Problem, lost int, err error) {
	for _, c := range l.All() {
		got, gerr := store.Get(ctx, c.LeaseID)
		switch {
		case errors.Is(gerr, lease.ErrNotFound):
			lost++
			problems = append(problems, Problem{c, "handed out without a lease in the store"})
			continue
		case gerr != nil:
			return problems, lost, gerr
		}
		switch {
		case got.State == lease.StatePending:
			problems = append(problems, Problem{c, "handed out while its lease is still pending"})
		case got.Subject != c.Subject || got.Entitlement != c.Entitlement:
			problems = append(problems, Problem{c, fmt.Sprintf("lease is for %s/%s", got.Subject, got.Entitlement)})
		case c.JTI != "" && c.JTI != c.LeaseID:
			problems = append(problems, Problem{c, "JWT jti " + c.JTI + " is not the lease id"})
		case !c.Exp.IsZero() && (c.Exp.After(got.HardEnd) || c.Exp.After(c.ExpiresAt)):
			problems = append(problems, Problem{c, fmt.Sprintf("JWT exp %s after the lease's expiry %s or hard end %s", c.Exp, c.ExpiresAt, got.HardEnd)})
		}
	}
	return problems, lost, nil
}

// JWTClaims decodes the claims of a compact JWS without verifying it (the
// tests verify what they need against the store).
func JWTClaims(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a compact JWS: %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		return nil, err
	}
	return claims, nil
}

// AllLeases reads every lease of store (every state), paging through List.
func AllLeases(ctx context.Context, store lease.Store) ([]*lease.Lease, error) {
	var all []*lease.Lease
	q := lease.Query{PageSize: 1000}
	for {
		page, next, err := store.List(ctx, q)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		q.PageToken = next
	}
}

// WaitTerminal polls store until every lease is revoked or irrevocable,
// or until deadline; it returns the leases as last read.
func WaitTerminal(ctx context.Context, store lease.Store, deadline time.Time) ([]*lease.Lease, error) {
	for {
		all, err := AllLeases(ctx, store)
		if err == nil {
			done := true
			for _, l := range all {
				if !l.State.Terminal() {
					done = false
					break
				}
			}
			if done || time.Now().After(deadline) {
				return all, nil
			}
		} else if time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return all, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
