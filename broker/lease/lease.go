package lease

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// State is where a lease is in its life:
//
//	pending ─► active ─► revoking ─► revoked
//	   │                    │    └──► irrevocable
//	   └────────────────────┘ (pending deadline passed: reaped like an expiry)
type State string

const (
	// StatePending: written before the backend is called; the credential may
	// or may not exist. DueAt is the pending deadline.
	StatePending State = "pending"
	// StateActive: the credential was handed out. DueAt is ExpiresAt, or
	// earlier once revocation was asked for.
	StateActive State = "active"
	// StateRevoking: a revoker replica holds a claim on the lease.
	StateRevoking State = "revoking"
	// StateRevoked: the backend confirmed the credential is gone (terminal).
	StateRevoked State = "revoked"
	// StateIrrevocable: revocation failed MaxAttempts times (terminal,
	// counted and alerted).
	StateIrrevocable State = "irrevocable"
)

// Valid reports whether s is one of the five states.
func (s State) Valid() bool {
	switch s {
	case StatePending, StateActive, StateRevoking, StateRevoked, StateIrrevocable:
		return true
	}
	return false
}

// Terminal reports whether no further transition can happen.
func (s State) Terminal() bool { return s == StateRevoked || s == StateIrrevocable }

// Reason says why a lease ended (or is being ended).
type Reason string

const (
	// ReasonExpired: the lease reached ExpiresAt.
	ReasonExpired Reason = "expired"
	// ReasonExplicit: the holder or an operator revoked this lease.
	ReasonExplicit Reason = "explicit"
	// ReasonKillSwitch: revoked by a selector (subject, entitlement, grant).
	ReasonKillSwitch Reason = "kill_switch"
	// ReasonGrantEnded: the grant the lease rests on ended or lapsed.
	ReasonGrantEnded Reason = "grant_ended"
	// ReasonPendingTimeout: issuance never completed; reaped at the pending deadline.
	ReasonPendingTimeout Reason = "pending_timeout"
	// ReasonIssueFailed: the backend call or activation failed; whatever
	// the backend may have minted is revoked.
	ReasonIssueFailed Reason = "issue_failed"
	// ReasonShutdown: the holder revoked its leases as it shut down.
	ReasonShutdown Reason = "shutdown"
)

// Lease is the record that guarantees a credential ends.
type Lease struct {
	// ID is unique, time-ordered, and is the credential's handle where the
	// backend lets the broker choose one (JWT jti, STS session name).
	ID string
	// Subject is the Principal ID the credential was issued to.
	Subject string
	// Entitlement is the policy entitlement name.
	Entitlement string
	// GrantID is the grant the issuance rests on (standing grant, approved
	// request, break-glass).
	GrantID string
	// Issuer is the name of the backend that minted the credential.
	Issuer string
	// ExternalRef is the backend's handle for revocation (Vault token
	// accessor, ...). Empty until bound or activated.
	ExternalRef string
	// RequestID is the caller's idempotency key (may be empty).
	RequestID string
	// State is the lifecycle state.
	State State
	// IssuedAt is when the lease was created.
	IssuedAt time.Time
	// ExpiresAt is when the credential stops being valid.
	ExpiresAt time.Time
	// HardEnd is the latest ExpiresAt any renewal may set.
	HardEnd time.Time
	// DueAt is when a revoker must act: the pending deadline, ExpiresAt,
	// the time revocation was asked for, or the next retry.
	DueAt time.Time
	// Renewable reports whether RenewLease may extend the lease.
	Renewable bool
	// Revocable is false when the backend cannot end the credential early
	// (then RevocableReason says why and what is done instead).
	Revocable bool
	// RevocableReason explains Revocable == false.
	RevocableReason string
	// Attempts counts failed revocation attempts.
	Attempts int
	// LastError is the last revocation error, free of secrets.
	LastError string
	// RevokeReason says why revocation was asked for (set with DueAt when
	// revocation is requested early, or by the revoker at expiry).
	RevokeReason Reason
	// RevokeRequestedAt is when revocation was asked for before expiry
	// (zero for a lease that simply expired). Revocation lag is measured
	// from min(ExpiresAt, RevokeRequestedAt).
	RevokeRequestedAt time.Time
	// RevokedAt is when the lease reached a terminal state.
	RevokedAt time.Time
	// Fence is the fencing token of the latest claim; a revoker's Finish
	// with an older fence is refused.
	Fence int64
}

// Clone returns a copy that shares nothing with l.
func (l *Lease) Clone() *Lease {
	if l == nil {
		return nil
	}
	c := *l
	return &c
}

// Active reports whether the credential is usable at now: the lease is
// active and has not reached its expiry or a requested revocation.
func (l *Lease) Active(now time.Time) bool {
	return l.State == StateActive && now.Before(l.ExpiresAt) && l.RevokeReason == ""
}

// EndDue is when the lease should have ended: its expiry, or the moment
// revocation was asked for if that came first. Revocation lag is
// RevokedAt - EndDue.
func (l *Lease) EndDue() time.Time {
	if !l.RevokeRequestedAt.IsZero() && l.RevokeRequestedAt.Before(l.ExpiresAt) {
		return l.RevokeRequestedAt
	}
	return l.ExpiresAt
}

// Selector picks the leases a kill switch revokes. Exactly one field is set.
type Selector struct {
	Subject     string
	Entitlement string
	GrantID     string
}

// Query filters and pages List.
type Query struct {
	// Subject, Entitlement and GrantID filter when not empty (all must match).
	Subject     string
	Entitlement string
	GrantID     string
	// States filters to these states when not empty.
	States []State
	// PageSize caps the page (0 means the store's default, at most 1000).
	PageSize int
	// PageToken continues a previous List; opaque.
	PageToken string
}

// Claim is a due lease held by one revoker replica until Deadline.
type Claim struct {
	// Lease is the lease as it was when claimed (State revoking).
	Lease *Lease
	// Fence is the fencing token of this claim.
	Fence int64
	// Deadline is when the claim returns to the due queue if not finished.
	Deadline time.Time
}

// Outcome is what a revoker learned from the backend for one claim.
type Outcome struct {
	// At is when the outcome was observed.
	At time.Time
	// Revoked: the backend confirmed the credential is gone.
	Revoked bool
	// Irrevocable: give up; the lease ends irrevocable.
	Irrevocable bool
	// RetryAt: when not Revoked or Irrevocable, the lease is due again then.
	RetryAt time.Time
	// Err is the failure, free of secrets (empty on success).
	Err string
}

// NewID returns a new lease id: 26 characters of Crockford base32, a 48-bit
// millisecond timestamp followed by 80 random bits, so ids sort by creation.
func NewID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:]) // never fails (crypto/rand, Go 1.24+)
	// 128 bits -> 26 base32 characters (the first carries 3 bits).
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

// ValidID reports whether id has the shape NewID produces. Handlers use it
// to refuse malformed ids before touching the store.
func ValidID(id string) bool {
	if len(id) != 26 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') || c == 'i' || c == 'l' || c == 'o' || c == 'u' {
			return false
		}
	}
	return id[0] <= '7'
}
