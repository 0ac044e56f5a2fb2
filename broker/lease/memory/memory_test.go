package memory_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/leasetest"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
)

func TestConformance(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) lease.Store { return memory.New() })
}

var base = time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)

func newLease(at time.Time) *lease.Lease {
	return &lease.Lease{
		ID:          lease.NewID(at),
		Subject:     "spiffe://example.org/app",
		Entitlement: "db-read",
		GrantID:     "grant-1",
		Issuer:      "jwt",
		IssuedAt:    at,
		ExpiresAt:   at.Add(time.Hour),
		HardEnd:     at.Add(4 * time.Hour),
		DueAt:       at.Add(time.Minute),
	}
}

func TestCreateErrors(t *testing.T) {
	s := memory.New()
	if _, err := s.Create(t.Context(), nil); err == nil || err.Error() != "memory: nil lease" {
		t.Errorf("Create(nil): %v", err)
	}
	l := newLease(base)
	l.Issuer = ""
	_, err := s.Create(t.Context(), l)
	if want := fmt.Sprintf("memory: lease %q has no Issuer", l.ID); err == nil || err.Error() != want {
		t.Errorf("Create without Issuer: %v, want %q", err, want)
	}
}

func TestTimesKeptToTheMillisecondInUTC(t *testing.T) {
	s := memory.New()
	loc := time.FixedZone("X", 5*3600)
	l := newLease(base.In(loc).Add(1234567 * time.Nanosecond))
	got, err := s.Create(t.Context(), l)
	if err != nil {
		t.Fatal(err)
	}
	want := base.Add(time.Millisecond)
	if got.IssuedAt != want || got.IssuedAt.Location() != time.UTC {
		t.Errorf("IssuedAt = %v, want %v in UTC", got.IssuedAt, want)
	}
}

func TestArgumentErrors(t *testing.T) {
	ctx := t.Context()
	s := memory.New()
	l, err := s.Create(ctx, newLease(base))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, base, 1, 0); err == nil || err.Error() != "memory: claim hold 0s is not positive" {
		t.Errorf("Claim with hold 0: %v", err)
	}
	if cs, err := s.Claim(ctx, l.DueAt, 0, time.Second); err != nil || len(cs) != 0 {
		t.Errorf("Claim with max 0 = %d, %v; want nothing", len(cs), err)
	}
	if _, err := s.Revoke(ctx, l.ID, "", base); err == nil || err.Error() != "memory: revoke without a reason" {
		t.Errorf("Revoke without reason: %v", err)
	}
	if _, _, err := s.List(ctx, lease.Query{PageSize: -1}); err == nil {
		t.Error("List with a negative page size: no error")
	}
	cs, err := s.Claim(ctx, l.DueAt, 1, time.Second)
	if err != nil || len(cs) != 1 {
		t.Fatalf("Claim = %d, %v", len(cs), err)
	}
	for _, tc := range []struct {
		out  lease.Outcome
		want string
	}{
		{lease.Outcome{At: base, Revoked: true, Irrevocable: true}, "memory: outcome is both revoked and irrevocable"},
		{lease.Outcome{At: base, Err: "x"}, "memory: retry outcome has no RetryAt"},
		{lease.Outcome{Revoked: true}, "memory: outcome has no At"},
	} {
		if err := s.Finish(ctx, cs[0], tc.out); err == nil || err.Error() != tc.want {
			t.Errorf("Finish(%+v): %v, want %q", tc.out, err, tc.want)
		}
	}
	if err := s.Finish(ctx, lease.Claim{}, lease.Outcome{At: base, Revoked: true}); err == nil {
		t.Error("Finish of a claim without a lease: no error")
	}
}

func TestCanceledContext(t *testing.T) {
	s := memory.New()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Create(ctx, newLease(base)); !errors.Is(err, context.Canceled) {
		t.Errorf("Create with a canceled context: %v", err)
	}
	if _, _, err := s.NextDue(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("NextDue with a canceled context: %v", err)
	}
	if s.Len() != 0 {
		t.Errorf("Len = %d after a refused Create", s.Len())
	}
}

func TestSentinelMessages(t *testing.T) {
	s := memory.New()
	_, err := s.Get(t.Context(), "01abc")
	if err == nil || err.Error() != "memory: lease 01abc: lease: not found" || !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("Get(unknown) = %v", err)
	}
}

// TestClaimManyDue claims a large due backlog in batches: every lease once,
// earliest due first.
func TestClaimManyDue(t *testing.T) {
	ctx := t.Context()
	s := memory.New()
	const n = 20_000
	for i := range n {
		l := newLease(base.Add(time.Duration(i) * time.Millisecond))
		l.DueAt = base.Add(time.Duration(n-i) * time.Millisecond) // due in reverse order of creation
		if _, err := s.Create(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	now := base.Add(time.Hour)
	seen := make(map[string]bool, n)
	var last time.Time
	for {
		cs, err := s.Claim(ctx, now, 256, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 0 {
			break
		}
		for _, c := range cs {
			if seen[c.Lease.ID] {
				t.Fatalf("lease %s claimed twice", c.Lease.ID)
			}
			seen[c.Lease.ID] = true
			if c.Lease.DueAt.Before(last) {
				t.Fatalf("claimed due %v after %v: not earliest first", c.Lease.DueAt, last)
			}
			last = c.Lease.DueAt
		}
	}
	if len(seen) != n {
		t.Fatalf("claimed %d, want %d", len(seen), n)
	}
}

func ExampleNew() {
	ctx := context.Background()
	now := time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)
	s := memory.New()

	l, _ := s.Create(ctx, &lease.Lease{
		ID:          lease.NewID(now),
		Subject:     "spiffe://example.org/ns/prod/sa/billing",
		Entitlement: "payments-db-read",
		Issuer:      "vault",
		IssuedAt:    now,
		ExpiresAt:   now.Add(15 * time.Minute),
		HardEnd:     now.Add(time.Hour),
		DueAt:       now.Add(30 * time.Second), // pending deadline
	})
	_ = s.Bind(ctx, l.ID, "accessor-123") // before the secret is read
	l, _ = s.Activate(ctx, l.ID, "")
	fmt.Println(l.State, l.DueAt.Sub(now))

	// The revoker claims it once it is due.
	claims, _ := s.Claim(ctx, now.Add(15*time.Minute), 256, 30*time.Second)
	c := claims[0]
	fmt.Println(c.Lease.State, c.Lease.RevokeReason, c.Lease.ExternalRef)
	_ = s.Finish(ctx, c, lease.Outcome{At: now.Add(15*time.Minute + time.Second), Revoked: true})
	l, _ = s.Get(ctx, l.ID)
	fmt.Println(l.State, l.RevokedAt.Sub(l.EndDue()))
	// Output:
	// active 15m0s
	// revoking expired accessor-123
	// revoked 1s
}

// TestEveryFieldKept fills every field of a lease (so a field added to
// lease.Lease later is caught) and checks that Create keeps all of them but
// State, which a new lease always starts in.
func TestEveryFieldKept(t *testing.T) {
	in := newLease(base)
	v := reflect.ValueOf(in).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			if f.String() == "" {
				f.SetString("x-" + v.Type().Field(i).Name)
			}
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i) + 1)
		case reflect.Struct:
			if f.Type() != reflect.TypeFor[time.Time]() {
				t.Fatalf("lease.Lease.%s is a %s; teach this test and the store about it", v.Type().Field(i).Name, f.Type())
			}
			if f.Interface().(time.Time).IsZero() {
				f.Set(reflect.ValueOf(base.Add(time.Duration(i) * time.Hour)))
			}
		default:
			t.Fatalf("lease.Lease.%s is a %s; teach this test and the store about it", v.Type().Field(i).Name, f.Type())
		}
	}
	s := memory.New()
	created, err := s.Create(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(t.Context(), in.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := *in
	want.State = lease.StatePending
	for _, l := range []*lease.Lease{created, got} {
		if !reflect.DeepEqual(*l, want) {
			t.Errorf("stored lease\n%+v\nwant\n%+v", *l, want)
		}
	}
}

func TestCounter(t *testing.T) {
	leasetest.RunCounter(t, func(t *testing.T) lease.Store { return memory.New() })
}
