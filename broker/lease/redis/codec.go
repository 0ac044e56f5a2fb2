package redis

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// A lease is stored as one packed record: a stream of MessagePack values
// (what Redis's built-in cmsgpack.pack writes and cmsgpack.unpack reads),
// one per slot below, in this order. Go packs a record once, at Create;
// every later change is made by a script, which unpacks, changes and packs
// it again. Strings are MessagePack str, numbers int, and an absent time
// false. Times are whole milliseconds: IssuedAt as is, every other time as
// its offset from IssuedAt (a few bytes instead of nine). Trailing slots at
// their default are left out.
//
// Entitlement, issuer and revocable reason are few and named by
// configuration, so each shard interns them: the record holds a small
// number, and the shard's symbol hash holds the name ("#<code>" -> name,
// "e"/"n"/"y" + name -> code). Create passes the names in their slots; the
// create script swaps them for codes. Scripts that return a lease return
// the record with the three names looked up.
const (
	slotState        = iota // state code: p a c r i
	slotSubject             // string
	slotEntitlement         // code (a string before interning)
	slotGrant               // string, "" for none
	slotIssuer              // code (a string before interning)
	slotIssued              // ms since the epoch
	slotExpires             // ms after IssuedAt
	slotHardEnd             // ms after IssuedAt
	slotRef                 // external ref, "" for none
	slotFlags               // flagNotRenewable | flagNotRevocable
	slotDue                 // ms after IssuedAt; false when due at expiry
	slotRequest             // request id, "" for none
	slotReason              // revocable reason code, 0 for none (a string before interning)
	slotFence               // fence of the latest claim
	slotBefore              // state code before the current claim (p or a), "" otherwise
	slotRevokeReason        // string, "" for none
	slotRevokeAsked         // ms after IssuedAt, or false
	slotAttempts            // failed revocation attempts
	slotLastError           // string
	slotRevokedAt           // ms after IssuedAt, or false
	numSlots
)

// minSlots is how many slots a packed record always has (the scripts trim
// defaults only after it).
const minSlots = slotFlags

const (
	flagNotRenewable = 1
	flagNotRevocable = 2
)

// stateCodes are the one-letter state codes stored in a record.
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

// maxMillis bounds stored times: scripts compute with doubles, exact up to
// 2^53, and a time is kept as an offset from another, so each time stays
// within 2^52 ms (about 142,000 years) of the epoch.
const maxMillis = 1<<52 - 1

// millis is t as whole milliseconds since the epoch, as Redis stores it.
func millis(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// checkTime refuses a time that cannot be stored exactly.
func checkTime(what string, t time.Time) error {
	if ms := t.UnixMilli(); ms > maxMillis || ms < -maxMillis {
		return fmt.Errorf("redis: %s %s is out of range", what, t.Format(time.RFC3339))
	}
	return nil
}

// pack returns the record Create writes for l: the names of entitlement,
// issuer and revocable reason in their slots (the script interns them).
func pack(l *lease.Lease) []byte {
	b := make([]byte, 0, 128+len(l.Subject)+len(l.GrantID)+len(l.ExternalRef)+len(l.RevocableReason))
	issued := l.IssuedAt.UnixMilli()
	rel := func(t time.Time) int64 { return t.UnixMilli() - issued }
	vals := make([]any, numSlots)
	vals[slotState] = stateCodes[l.State]
	vals[slotSubject] = l.Subject
	vals[slotEntitlement] = l.Entitlement
	vals[slotGrant] = l.GrantID
	vals[slotIssuer] = l.Issuer
	vals[slotIssued] = issued
	vals[slotExpires] = rel(l.ExpiresAt)
	vals[slotHardEnd] = rel(l.HardEnd)
	vals[slotRef] = l.ExternalRef
	flags := int64(0)
	if !l.Renewable {
		flags |= flagNotRenewable
	}
	if !l.Revocable {
		flags |= flagNotRevocable
	}
	vals[slotFlags] = flags
	vals[slotDue] = false
	if !l.DueAt.Equal(l.ExpiresAt) {
		vals[slotDue] = rel(l.DueAt)
	}
	vals[slotRequest] = l.RequestID
	vals[slotReason] = int64(0)
	if l.RevocableReason != "" {
		vals[slotReason] = l.RevocableReason
	}
	vals[slotFence] = l.Fence
	vals[slotBefore] = ""
	vals[slotRevokeReason] = string(l.RevokeReason)
	opt := func(t time.Time) any {
		if t.IsZero() {
			return false
		}
		return rel(t)
	}
	vals[slotRevokeAsked] = opt(l.RevokeRequestedAt)
	vals[slotAttempts] = int64(l.Attempts)
	vals[slotLastError] = l.LastError
	vals[slotRevokedAt] = opt(l.RevokedAt)
	n := numSlots
	for n > minSlots && isDefault(n-1, vals[n-1]) {
		n--
	}
	for _, v := range vals[:n] {
		switch v := v.(type) {
		case string:
			b = appendStr(b, v)
		case int64:
			b = appendInt(b, v)
		case bool:
			b = append(b, 0xc2) // only false is used
		}
	}
	return b
}

// isDefault reports whether v is the value slot i has when left out.
func isDefault(i int, v any) bool {
	switch i {
	case slotDue, slotRevokeAsked, slotRevokedAt:
		return v == false
	case slotFlags, slotReason, slotFence, slotAttempts:
		return v == int64(0)
	default:
		return v == ""
	}
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = append(b, 0xda, byte(n>>8), byte(n))
	default:
		b = append(b, 0xdb)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	}
	return append(b, s...)
}

func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0 && v < 128:
		return append(b, byte(v))
	case v < 0 && v >= -32:
		return append(b, byte(v))
	case v >= 0 && v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v >= 0 && v <= math.MaxUint16:
		return append(b, 0xcd, byte(v>>8), byte(v))
	case v >= 0 && v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	case v >= 0:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), uint64(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	}
}

var errShort = errors.New("truncated")

// unpackValues reads a stream of MessagePack values: strings, integers,
// false, true and nil (as nil), and integral doubles (as integers).
func unpackValues(b []byte) ([]any, error) {
	var out []any
	for len(b) > 0 {
		c := b[0]
		b = b[1:]
		need := func(n int) ([]byte, error) {
			if len(b) < n {
				return nil, errShort
			}
			p := b[:n]
			b = b[n:]
			return p, nil
		}
		str := func(n int) error {
			p, err := need(n)
			if err != nil {
				return err
			}
			out = append(out, string(p))
			return nil
		}
		var err error
		switch {
		case c < 0x80:
			out = append(out, int64(c))
		case c >= 0xe0:
			out = append(out, int64(int8(c)))
		case c&0xe0 == 0xa0:
			err = str(int(c & 0x1f))
		case c == 0xc0:
			out = append(out, nil)
		case c == 0xc2:
			out = append(out, false)
		case c == 0xc3:
			out = append(out, true)
		case c == 0xd9 || c == 0xc4:
			var p []byte
			if p, err = need(1); err == nil {
				err = str(int(p[0]))
			}
		case c == 0xda || c == 0xc5:
			var p []byte
			if p, err = need(2); err == nil {
				err = str(int(binary.BigEndian.Uint16(p)))
			}
		case c == 0xdb || c == 0xc6:
			var p []byte
			if p, err = need(4); err == nil {
				n := binary.BigEndian.Uint32(p)
				if uint64(n) > uint64(len(b)) {
					err = errShort
				} else {
					err = str(int(n))
				}
			}
		case c >= 0xcc && c <= 0xd3:
			size := 1 << ((c - 0xcc) & 3)
			var p []byte
			if p, err = need(size); err != nil {
				break
			}
			var u uint64
			for _, x := range p {
				u = u<<8 | uint64(x)
			}
			if c >= 0xd0 { // signed: sign-extend
				shift := 64 - 8*size
				out = append(out, int64(u<<shift)>>shift)
			} else if u > math.MaxInt64 {
				err = fmt.Errorf("integer %d out of range", u)
			} else {
				out = append(out, int64(u))
			}
		case c == 0xcb:
			var p []byte
			if p, err = need(8); err != nil {
				break
			}
			f := math.Float64frombits(binary.BigEndian.Uint64(p))
			if f != math.Trunc(f) || math.Abs(f) > 1<<53 {
				err = fmt.Errorf("number %v is not a whole millisecond count", f)
			} else {
				out = append(out, int64(f))
			}
		default:
			err = fmt.Errorf("unexpected MessagePack type 0x%02x", c)
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// unpack decodes a packed record. ent, issuer and reason are the names the
// script looked up for the codes in those slots; a slot that holds a
// string (not yet interned) is taken as is.
func unpack(id string, b []byte, ent, issuer, reason string) (*lease.Lease, error) {
	vals, err := unpackValues(b)
	if err != nil {
		return nil, fmt.Errorf("redis: lease %s is damaged: %w", id, err)
	}
	if len(vals) < minSlots || len(vals) > numSlots {
		return nil, fmt.Errorf("redis: lease %s is damaged: %d slots", id, len(vals))
	}
	var errs []error
	get := func(i int) any {
		if i < len(vals) {
			return vals[i]
		}
		return nil
	}
	str := func(i int) string {
		switch v := get(i).(type) {
		case string:
			return v
		case nil:
			return ""
		}
		errs = append(errs, fmt.Errorf("slot %d: %T, want a string", i, get(i)))
		return ""
	}
	num := func(i int) int64 {
		switch v := get(i).(type) {
		case int64:
			return v
		case nil:
			return 0
		}
		errs = append(errs, fmt.Errorf("slot %d: %T, want a number", i, get(i)))
		return 0
	}
	named := func(i int, name string) string {
		switch v := get(i).(type) {
		case string:
			return v
		case int64:
			return name
		case nil:
			return ""
		}
		errs = append(errs, fmt.Errorf("slot %d: %T, want a code or a name", i, get(i)))
		return ""
	}
	issued := num(slotIssued)
	at := func(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
	opt := func(i int) time.Time {
		switch v := get(i).(type) {
		case int64:
			return at(issued + v)
		case nil, bool:
			return time.Time{}
		}
		errs = append(errs, fmt.Errorf("slot %d: %T, want a time", i, get(i)))
		return time.Time{}
	}
	l := &lease.Lease{
		ID:                id,
		Subject:           str(slotSubject),
		Entitlement:       named(slotEntitlement, ent),
		GrantID:           str(slotGrant),
		Issuer:            named(slotIssuer, issuer),
		ExternalRef:       str(slotRef),
		RequestID:         str(slotRequest),
		RevocableReason:   named(slotReason, reason),
		LastError:         str(slotLastError),
		RevokeReason:      lease.Reason(str(slotRevokeReason)),
		IssuedAt:          at(issued),
		ExpiresAt:         at(issued + num(slotExpires)),
		HardEnd:           at(issued + num(slotHardEnd)),
		RevokeRequestedAt: opt(slotRevokeAsked),
		RevokedAt:         opt(slotRevokedAt),
		Fence:             num(slotFence),
	}
	l.DueAt = l.ExpiresAt
	if due := opt(slotDue); !due.IsZero() {
		l.DueAt = due
	}
	st, ok := codeStates[str(slotState)]
	if !ok {
		errs = append(errs, fmt.Errorf("unknown state code %q", get(slotState)))
	}
	l.State = st
	flags := num(slotFlags)
	l.Renewable = flags&flagNotRenewable == 0
	l.Revocable = flags&flagNotRevocable == 0
	attempts := num(slotAttempts)
	if attempts > math.MaxInt32 || attempts < 0 {
		errs = append(errs, fmt.Errorf("attempts %d out of range", attempts))
	}
	l.Attempts = int(attempts)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("redis: lease %s is damaged: %w", id, err)
	}
	return l, nil
}

// unpackReply decodes a lease as a script returns it: {record, entitlement,
// issuer, revocable reason}.
func unpackReply(id string, v any) (*lease.Lease, error) {
	r, ok := v.([]any)
	if !ok || len(r) != 4 {
		return nil, fmt.Errorf("redis: lease %s: unexpected reply %T", id, v)
	}
	var s [4]string
	for i, x := range r {
		switch x := x.(type) {
		case string:
			s[i] = x
		case nil:
		default:
			return nil, fmt.Errorf("redis: lease %s: unexpected reply part %T", id, x)
		}
	}
	return unpack(id, []byte(s[0]), s[1], s[2], s[3])
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
