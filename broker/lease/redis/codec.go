package redis

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// Hash field names of a lease: one byte each to keep the hash small. A
// field whose value is empty, zero or false is not stored.
const (
	fSubject         = "s"
	fEntitlement     = "e"
	fGrant           = "g"
	fIssuer          = "n"
	fRef             = "x"
	fRequest         = "q"
	fState           = "t" // a state code, see stateCodes
	fBefore          = "b" // state code before the current claim (p or a)
	fIssued          = "I"
	fExpires         = "E"
	fHardEnd         = "H"
	fDue             = "D" // absent when DueAt == ExpiresAt
	fFlags           = "f" // flagNotRenewable | flagNotRevocable; absent when both hold
	fRevocableReason = "y"
	fAttempts        = "A"
	fLastError       = "L"
	fRevokeReason    = "R"
	fRevokeAsked     = "Q"
	fRevokedAt       = "V"
	fFence           = "F"
)

const (
	flagNotRenewable = 1
	flagNotRevocable = 2
)

// stateCodes are the one-letter state codes stored in the hash.
var stateCodes = map[lease.State]string{
	lease.StatePending:     "p",
	lease.StateActive:      "a",
	lease.StateRevoking:    "c",
	lease.StateRevoked:     "r",
	lease.StateIrrevocable: "i",
}

var codeStates = func() map[string]lease.State {
	m := make(map[string]lease.State, len(stateCodes))
	for st, c := range stateCodes {
		m[c] = st
	}
	return m
}()

// maxMillis bounds stored times: Lua compares them as doubles, exact up to
// 2^53.
const maxMillis = 1<<53 - 1

// millis is t as whole milliseconds since the epoch, as Redis stores it.
func millis(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// checkTime refuses a time that cannot be stored exactly.
func checkTime(what string, t time.Time) error {
	if ms := t.UnixMilli(); ms > maxMillis || ms < -maxMillis {
		return fmt.Errorf("redis: %s %s is out of range", what, t.Format(time.RFC3339))
	}
	return nil
}

// encode returns the hash fields of l (field, value, ...), leaving out
// empty values.
func encode(l *lease.Lease) []any {
	f := make([]any, 0, 40)
	str := func(name, v string) {
		if v != "" {
			f = append(f, name, v)
		}
	}
	tm := func(name string, t time.Time) {
		if !t.IsZero() {
			f = append(f, name, millis(t))
		}
	}
	str(fSubject, l.Subject)
	str(fEntitlement, l.Entitlement)
	str(fGrant, l.GrantID)
	str(fIssuer, l.Issuer)
	str(fRef, l.ExternalRef)
	str(fRequest, l.RequestID)
	str(fState, stateCodes[l.State])
	tm(fIssued, l.IssuedAt)
	tm(fExpires, l.ExpiresAt)
	tm(fHardEnd, l.HardEnd)
	if !l.DueAt.Equal(l.ExpiresAt) {
		tm(fDue, l.DueAt)
	}
	flags := 0
	if !l.Renewable {
		flags |= flagNotRenewable
	}
	if !l.Revocable {
		flags |= flagNotRevocable
	}
	if flags != 0 {
		f = append(f, fFlags, strconv.Itoa(flags))
	}
	str(fRevocableReason, l.RevocableReason)
	if l.Attempts != 0 {
		f = append(f, fAttempts, strconv.Itoa(l.Attempts))
	}
	str(fLastError, l.LastError)
	str(fRevokeReason, string(l.RevokeReason))
	tm(fRevokeAsked, l.RevokeRequestedAt)
	tm(fRevokedAt, l.RevokedAt)
	if l.Fence != 0 {
		f = append(f, fFence, strconv.FormatInt(l.Fence, 10))
	}
	return f
}

// decodeFlat decodes a lease from a flat HGETALL reply as a script returns
// it: field, value, field, value, ...
func decodeFlat(id string, v any) (*lease.Lease, error) {
	flat, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("redis: lease %s: unexpected reply %T", id, v)
	}
	m := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, ok1 := flat[i].(string)
		val, ok2 := flat[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("redis: lease %s: unexpected field types %T, %T", id, flat[i], flat[i+1])
		}
		m[k] = val
	}
	return decode(id, m)
}

// decode builds a lease from its hash fields.
func decode(id string, m map[string]string) (*lease.Lease, error) {
	l := &lease.Lease{
		ID:              id,
		Subject:         m[fSubject],
		Entitlement:     m[fEntitlement],
		GrantID:         m[fGrant],
		Issuer:          m[fIssuer],
		ExternalRef:     m[fRef],
		RequestID:       m[fRequest],
		RevocableReason: m[fRevocableReason],
		LastError:       m[fLastError],
		RevokeReason:    lease.Reason(m[fRevokeReason]),
	}
	st, ok := codeStates[m[fState]]
	if !ok {
		return nil, fmt.Errorf("redis: lease %s: unknown state code %q", id, m[fState])
	}
	l.State = st
	var errs []error
	tm := func(name string, dst *time.Time) {
		s, ok := m[name]
		if !ok {
			return
		}
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s: %w", name, err))
			return
		}
		*dst = time.UnixMilli(ms).UTC()
	}
	num := func(name string) int64 {
		s, ok := m[name]
		if !ok {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s: %w", name, err))
		}
		return n
	}
	tm(fIssued, &l.IssuedAt)
	tm(fExpires, &l.ExpiresAt)
	tm(fHardEnd, &l.HardEnd)
	l.DueAt = l.ExpiresAt
	tm(fDue, &l.DueAt)
	tm(fRevokeAsked, &l.RevokeRequestedAt)
	tm(fRevokedAt, &l.RevokedAt)
	flags := num(fFlags)
	l.Renewable = flags&flagNotRenewable == 0
	l.Revocable = flags&flagNotRevocable == 0
	attempts := num(fAttempts)
	if attempts > math.MaxInt32 || attempts < 0 {
		errs = append(errs, fmt.Errorf("field %s: %d out of range", fAttempts, attempts))
	}
	l.Attempts = int(attempts)
	l.Fence = num(fFence)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("redis: lease %s is damaged: %w", id, err)
	}
	return l, nil
}

// normalize keeps times as the store keeps them: whole milliseconds, UTC.
func normalize(l *lease.Lease) {
	for _, t := range []*time.Time{&l.IssuedAt, &l.ExpiresAt, &l.HardEnd, &l.DueAt, &l.RevokeRequestedAt, &l.RevokedAt} {
		*t = ms(*t)
	}
}

func ms(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}
