package redis

import (
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// TestPackRoundTrip: what pack writes, unpack reads back (names in their
// slots, as Create sends them), for every length class of string and
// number MessagePack has.
func TestPackRoundTrip(t *testing.T) {
	at := time.Date(2031, 3, 4, 5, 6, 7, 8_000_000, time.UTC)
	full := &lease.Lease{
		ID: "01r5sdjtgrc7kv0zf9g9fw055t", Subject: "spiffe://prod.example.org/ns/payments/sa/api",
		Entitlement: "db-read", GrantID: strings.Repeat("g", 300), Issuer: "vault",
		ExternalRef: strings.Repeat("x", 70000), RequestID: "req-1", State: lease.StateRevoking,
		IssuedAt: at, ExpiresAt: at.Add(time.Hour), HardEnd: at.Add(4 * time.Hour), DueAt: at.Add(-time.Second),
		Renewable: false, Revocable: false, RevocableReason: "a bearer token cannot be revoked",
		Attempts: 3, LastError: "backend: 503", RevokeReason: lease.ReasonKillSwitch,
		RevokeRequestedAt: at.Add(-24 * time.Hour), RevokedAt: at.Add(90 * 24 * time.Hour), Fence: 1 << 40,
	}
	minimal := &lease.Lease{
		ID: "x", Subject: "s", Entitlement: "e", Issuer: "i", State: lease.StatePending,
		IssuedAt: time.UnixMilli(-5).UTC(), ExpiresAt: time.UnixMilli(0).UTC(), HardEnd: time.UnixMilli(maxMillis).UTC(),
		Renewable: true, Revocable: true,
	}
	minimal.DueAt = minimal.ExpiresAt
	for _, l := range []*lease.Lease{full, minimal} {
		got, err := unpack(l.ID, pack(l), "", "", "")
		if err != nil {
			t.Fatalf("unpack(pack(%s)): %v", l.ID, err)
		}
		if *got != *l {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", l.ID, got, l)
		}
	}
	if n := len(pack(minimal)); n > 24 {
		t.Errorf("a minimal record packs into %d bytes", n)
	}
}

// TestUnpackDamaged: a record that is not what pack writes is an error,
// not a panic or a zero lease.
func TestUnpackDamaged(t *testing.T) {
	l := &lease.Lease{ID: "x", Subject: "s", Entitlement: "e", Issuer: "i", State: lease.StateActive,
		IssuedAt: time.UnixMilli(1).UTC(), ExpiresAt: time.UnixMilli(2).UTC(), HardEnd: time.UnixMilli(3).UTC()}
	good := pack(l)
	for _, b := range [][]byte{nil, good[:len(good)-1], append(append([]byte{}, good...), 0xc1), {0xa1, 'z'}} {
		if got, err := unpack("x", b, "", "", ""); err == nil {
			t.Errorf("unpack(%x) = %+v, want an error", b, got)
		}
	}
}

// FuzzUnpack: unpack never panics, and what it accepts it packs back to
// the same lease.
func FuzzUnpack(f *testing.F) {
	at := time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)
	f.Add(pack(&lease.Lease{ID: "x", Subject: "s", Entitlement: "e", Issuer: "i", State: lease.StatePending,
		IssuedAt: at, ExpiresAt: at.Add(time.Hour), HardEnd: at.Add(2 * time.Hour), DueAt: at.Add(time.Minute)}))
	f.Add([]byte{0xa1, 'a', 0xa1, 's', 0x01, 0xa0, 0x02, 0xcf, 0, 0, 1, 0xb8, 0xda, 0xc5, 0xb4, 0, 0xce, 0, 0x36, 0xee, 0x80, 0x05, 0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := unpack("x", b, "ent", "iss", "why")
		if err != nil {
			return
		}
		if l.IssuedAt.UnixMilli() > maxMillis || l.IssuedAt.UnixMilli() < -maxMillis {
			return // outside what a store writes; offsets could overflow
		}
		again, err := unpack("x", pack(l), "", "", "")
		if err != nil {
			t.Fatalf("unpack(pack(%+v)): %v", l, err)
		}
		if *again != *l {
			t.Fatalf("round trip:\n got %+v\nwant %+v", again, l)
		}
	})
}
