package lease_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

var t0 = time.Date(2031, time.March, 4, 5, 6, 7, 8_000_000, time.UTC)

// decodeMillis reads the timestamp back out of the first 10 characters.
func decodeMillis(t *testing.T, id string) int64 {
	t.Helper()
	const alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
	var v int64
	for i := range 10 {
		d := strings.IndexByte(alphabet, id[i])
		if d < 0 {
			t.Fatalf("id %q: bad character %q", id, id[i])
		}
		v = v<<5 | int64(d)
	}
	return v
}

func TestNewIDShape(t *testing.T) {
	for range 1000 {
		id := lease.NewID(t0)
		if len(id) != 26 {
			t.Fatalf("NewID = %q, %d characters, want 26", id, len(id))
		}
		if !lease.ValidID(id) {
			t.Fatalf("ValidID(NewID()) = false for %q", id)
		}
		if got := decodeMillis(t, id); got != t0.UnixMilli() {
			t.Fatalf("id %q carries %d ms, want %d", id, got, t0.UnixMilli())
		}
	}
}

func TestNewIDUnique(t *testing.T) {
	seen := make(map[string]bool, 100_000)
	for range 100_000 {
		id := lease.NewID(t0)
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestNewIDSortsByTime(t *testing.T) {
	var ids []string
	for i := range 2000 {
		ids = append(ids, lease.NewID(t0.Add(time.Duration(i)*time.Millisecond)))
	}
	if !slices.IsSorted(ids) {
		t.Fatal("ids minted a millisecond apart do not sort in minting order")
	}
	// Same millisecond: same 10-character prefix (the timestamp).
	a, b := lease.NewID(t0), lease.NewID(t0.Add(999*time.Microsecond))
	if a[:10] != b[:10] {
		t.Fatalf("ids of one millisecond differ in the timestamp: %q, %q", a, b)
	}
	// Far apart in time, including the largest 48-bit value.
	late := time.UnixMilli(1<<48 - 1)
	if id := lease.NewID(late); !lease.ValidID(id) || decodeMillis(t, id) != 1<<48-1 || id <= lease.NewID(t0) {
		t.Fatalf("NewID(%v) = %q", late, id)
	}
}

func TestValidID(t *testing.T) {
	good := lease.NewID(t0)
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{good, true},
		{"00000000000000000000000000", true},
		{"7zzzzzzzzzzzzzzzzzzzzzzzzz", true},
		{"8zzzzzzzzzzzzzzzzzzzzzzzzz", false}, // first character carries 3 bits
		{"", false},
		{good[:25], false},
		{good + "0", false},
		{strings.ToUpper(good), good == strings.ToUpper(good)},
		{"0000000000000000000000000i", false},
		{"0000000000000000000000000l", false},
		{"0000000000000000000000000o", false},
		{"0000000000000000000000000u", false},
		{"0000000000000000000000000-", false},
		{"000000000000000000000000/0", false},
		{"0000000000000000000000000é"[:26], false},
	} {
		if got := lease.ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestEndDue(t *testing.T) {
	exp := t0.Add(time.Hour)
	for _, tc := range []struct {
		name      string
		requested time.Time
		want      time.Time
	}{
		{"simply expired", time.Time{}, exp},
		{"revoked early", t0.Add(10 * time.Minute), t0.Add(10 * time.Minute)},
		{"asked for after expiry", exp.Add(time.Minute), exp},
		{"asked for at expiry", exp, exp},
	} {
		l := &lease.Lease{ExpiresAt: exp, RevokeRequestedAt: tc.requested}
		if got := l.EndDue(); !got.Equal(tc.want) {
			t.Errorf("%s: EndDue = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestStates(t *testing.T) {
	for _, tc := range []struct {
		s               lease.State
		valid, terminal bool
	}{
		{lease.StatePending, true, false},
		{lease.StateActive, true, false},
		{lease.StateRevoking, true, false},
		{lease.StateRevoked, true, true},
		{lease.StateIrrevocable, true, true},
		{"", false, false},
		{"expired", false, false},
	} {
		if tc.s.Valid() != tc.valid || tc.s.Terminal() != tc.terminal {
			t.Errorf("%q: Valid %v Terminal %v, want %v %v", tc.s, tc.s.Valid(), tc.s.Terminal(), tc.valid, tc.terminal)
		}
	}
}

func TestActive(t *testing.T) {
	l := &lease.Lease{State: lease.StateActive, ExpiresAt: t0.Add(time.Hour)}
	if !l.Active(t0) {
		t.Error("Active before expiry = false")
	}
	if l.Active(t0.Add(time.Hour)) {
		t.Error("Active at expiry = true")
	}
	r := l.Clone()
	r.RevokeReason = lease.ReasonExplicit
	if r.Active(t0) {
		t.Error("Active after revocation was asked for = true")
	}
	if !l.Active(t0) {
		t.Error("Clone shares state with the original")
	}
	p := l.Clone()
	p.State = lease.StatePending
	if p.Active(t0) {
		t.Error("pending lease is Active")
	}
	if (*lease.Lease)(nil).Clone() != nil {
		t.Error("nil.Clone() != nil")
	}
}
