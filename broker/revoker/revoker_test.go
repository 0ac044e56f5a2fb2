package revoker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
)

var t0 = time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)

// ---- test doubles ----

// testIssuer is a fake issuer.Issuer that only revokes. fn decides each
// Revoke call (call counts from 1); nil means success.
type testIssuer struct {
	name string
	fn   func(ctx context.Context, l *lease.Lease, call int) error

	mu          sync.Mutex
	calls       int
	byLease     map[string]int
	inflight    int
	maxInflight int
}

func newIssuer(name string, fn func(ctx context.Context, l *lease.Lease, call int) error) *testIssuer {
	return &testIssuer{name: name, fn: fn, byLease: map[string]int{}}
}

func (ti *testIssuer) Name() string                                { return ti.name }
func (ti *testIssuer) DecodeParams(*yaml.Node) (any, error)        { return nil, nil }
func (ti *testIssuer) Revocability(any) (revocable bool, _ string) { return true, "" }
func (ti *testIssuer) Issue(context.Context, issuer.Request) (*issuer.Credential, error) {
	return nil, errors.New("test issuer: Issue not supported")
}
func (ti *testIssuer) Renew(context.Context, *lease.Lease, any, time.Time) (*issuer.Credential, error) {
	return nil, errors.New("test issuer: Renew not supported")
}

func (ti *testIssuer) Revoke(ctx context.Context, l *lease.Lease) error {
	ti.mu.Lock()
	ti.calls++
	n := ti.calls
	ti.byLease[l.ID]++
	ti.inflight++
	ti.maxInflight = max(ti.maxInflight, ti.inflight)
	ti.mu.Unlock()
	defer func() {
		ti.mu.Lock()
		ti.inflight--
		ti.mu.Unlock()
	}()
	if ti.fn == nil {
		return nil
	}
	return ti.fn(ctx, l, n)
}

func (ti *testIssuer) stats() (calls, inflight, maxInflight int) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return ti.calls, ti.inflight, ti.maxInflight
}

func issuers(list ...*testIssuer) func(string) (issuer.Issuer, bool) {
	return func(name string) (issuer.Issuer, bool) {
		for _, ti := range list {
			if ti.name == name {
				return ti, true
			}
		}
		return nil, false
	}
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// faultyStore wraps a store: it fails the first claimFails Claims, the
// first nextDueFails NextDues and the first finishFails Finishes, counts
// Claims, and signals each NextDue on nextDue (Run calls it just before
// it sleeps).
type faultyStore struct {
	lease.Store
	claimFails, nextDueFails, finishFails atomic.Int64
	claims                                atomic.Int64
	nextDue                               chan struct{}
}

func (f *faultyStore) Claim(ctx context.Context, now time.Time, max int, hold time.Duration) ([]lease.Claim, error) {
	f.claims.Add(1)
	if f.claimFails.Add(-1) >= 0 {
		return nil, errors.New("redis: connection refused")
	}
	return f.Store.Claim(ctx, now, max, hold)
}

func (f *faultyStore) NextDue(ctx context.Context) (time.Time, bool, error) {
	if f.nextDueFails.Add(-1) >= 0 {
		return time.Time{}, false, errors.New("redis: i/o timeout")
	}
	t, ok, err := f.Store.NextDue(ctx)
	if f.nextDue != nil {
		select {
		case f.nextDue <- struct{}{}:
		default:
		}
	}
	return t, ok, err
}

func (f *faultyStore) Finish(ctx context.Context, c lease.Claim, out lease.Outcome) error {
	if f.finishFails.Add(-1) >= 0 {
		return errors.New("redis: READONLY")
	}
	return f.Store.Finish(ctx, c, out)
}

// ---- helpers ----

// addLease creates and activates a lease of issuer iss expiring at exp.
func addLease(t *testing.T, s lease.Store, iss string, exp time.Time) *lease.Lease {
	t.Helper()
	issued := exp.Add(-time.Hour)
	l := &lease.Lease{
		ID:          lease.NewID(issued),
		Subject:     "spiffe://example.org/app",
		Entitlement: "db-read",
		GrantID:     "grant-1",
		Issuer:      iss,
		IssuedAt:    issued,
		ExpiresAt:   exp,
		HardEnd:     exp.Add(time.Hour),
		DueAt:       issued.Add(time.Minute),
		Revocable:   true,
	}
	if _, err := s.Create(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	got, err := s.Activate(t.Context(), l.ID, "accessor-"+l.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func get(t *testing.T, s lease.Store, id string) *lease.Lease {
	t.Helper()
	l, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustNew(t *testing.T, cfg Config) *Revoker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs r.Run in the background; the returned stop cancels it and
// returns Run's result (failing the test if Run does not return).
func start(t *testing.T, r *Revoker) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// waitFor polls cond every millisecond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recorder collects callback calls.
type recorder struct {
	mu          sync.Mutex
	revoked     []*lease.Lease
	lags        []time.Duration
	retried     []*lease.Lease
	retryErrs   []error
	irrevocable []*lease.Lease
	irrErrs     []error
	revokedCh   chan string
}

func newRecorder() *recorder { return &recorder{revokedCh: make(chan string, 10_000)} }

func (rec *recorder) hook(cfg *Config) {
	cfg.OnRevoked = func(l *lease.Lease, lag time.Duration) {
		rec.mu.Lock()
		rec.revoked = append(rec.revoked, l)
		rec.lags = append(rec.lags, lag)
		rec.mu.Unlock()
		rec.revokedCh <- l.ID
	}
	cfg.OnRetry = func(l *lease.Lease, err error) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.retried = append(rec.retried, l)
		rec.retryErrs = append(rec.retryErrs, err)
	}
	cfg.OnIrrevocable = func(l *lease.Lease, err error) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.irrevocable = append(rec.irrevocable, l)
		rec.irrErrs = append(rec.irrErrs, err)
	}
}

func (rec *recorder) counts() (revoked, retried, irrevocable int) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.revoked), len(rec.retried), len(rec.irrevocable)
}

// ---- New ----

func TestNewValidates(t *testing.T) {
	s := memory.New()
	is := issuers()
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Issuers: is}, "revoker: Config.Store is required"},
		{Config{Store: s}, "revoker: Config.Issuers is required"},
		{Config{Store: s, Issuers: is, Batch: -1}, "revoker: Config.Batch must not be negative"},
		{Config{Store: s, Issuers: is, Concurrency: -1}, "revoker: Config.Concurrency must not be negative"},
		{Config{Store: s, Issuers: is, Hold: -time.Second}, "revoker: Config.Hold must not be negative"},
		{Config{Store: s, Issuers: is, MaxAttempts: -1}, "revoker: Config.MaxAttempts must not be negative"},
		{Config{Store: s, Issuers: is, MaxIdle: -1}, "revoker: Config.MaxIdle must not be negative"},
		{Config{Store: s, Issuers: is, BackoffBase: 2 * time.Second, BackoffMax: time.Second},
			"revoker: Config.BackoffBase (2s) exceeds Config.BackoffMax (1s)"},
		{Config{Store: s, Issuers: is, BackoffBase: 10 * time.Minute},
			"revoker: Config.BackoffBase (10m0s) exceeds Config.BackoffMax (5m0s)"},
	} {
		if _, err := New(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v) error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestNewDefaults(t *testing.T) {
	r, err := New(Config{Store: memory.New(), Issuers: issuers()})
	if err != nil {
		t.Fatal(err)
	}
	c := r.cfg
	if c.Batch != 256 || c.Concurrency != 16 || c.Hold != 30*time.Second || c.MaxAttempts != 10 ||
		c.BackoffBase != time.Second || c.BackoffMax != 5*time.Minute || c.MaxIdle != time.Second ||
		c.BusyBatch != 32 || c.BusyConcurrency != 2 || c.Now == nil || c.Logger == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
}

// ---- outcomes (RunOnce, controlled clock) ----

func TestExpiryRevokedWithLag(t *testing.T) {
	s := memory.New()
	clk := &clock{t: t0.Add(time.Hour + 250*time.Millisecond)}
	var sawDeadline time.Duration
	iss := newIssuer("vault", func(ctx context.Context, l *lease.Lease, _ int) error {
		dl, ok := ctx.Deadline()
		if !ok {
			return errors.New("no deadline")
		}
		sawDeadline = time.Until(dl)
		if l.ExternalRef != "accessor-"+l.ID {
			return fmt.Errorf("issuer got ExternalRef %q", l.ExternalRef)
		}
		return nil
	})
	l := addLease(t, s, "vault", t0.Add(time.Hour))
	rec := newRecorder()
	cfg := Config{Store: s, Issuers: issuers(iss), Now: clk.Now, Hold: 8 * time.Second}
	rec.hook(&cfg)
	r := mustNew(t, cfg)

	n, err := r.RunOnce(t.Context())
	if n != 1 || err != nil {
		t.Fatalf("RunOnce = %d, %v; want 1, nil", n, err)
	}
	if sawDeadline <= 0 || sawDeadline > 6*time.Second {
		t.Errorf("Revoke ctx deadline %v away, want within three quarters of Hold (6s)", sawDeadline)
	}
	if len(rec.lags) != 1 || rec.lags[0] != 250*time.Millisecond {
		t.Fatalf("OnRevoked lags %v, want [250ms]", rec.lags)
	}
	got := get(t, s, l.ID)
	if got.State != lease.StateRevoked || !got.RevokedAt.Equal(clk.Now()) || got.RevokeReason != lease.ReasonExpired {
		t.Errorf("stored lease: state %s, revoked at %v, reason %s", got.State, got.RevokedAt, got.RevokeReason)
	}
	if cb := rec.revoked[0]; cb.State != lease.StateRevoked || cb.ID != l.ID || !cb.RevokedAt.Equal(clk.Now()) {
		t.Errorf("OnRevoked lease: %+v", cb)
	}
	if st := r.Stats(); st.Claimed != 1 || st.Revoked != 1 {
		t.Errorf("Stats = %+v", st)
	}
	if n, err := r.RunOnce(t.Context()); n != 0 || err != nil {
		t.Errorf("second RunOnce = %d, %v; want 0, nil", n, err)
	}
}

func TestPendingLeaseReaped(t *testing.T) {
	s := memory.New()
	l := &lease.Lease{
		ID: lease.NewID(t0), Subject: "user:alice", Entitlement: "prod-admin", Issuer: "jwt",
		IssuedAt: t0, ExpiresAt: t0.Add(time.Hour), HardEnd: t0.Add(time.Hour), DueAt: t0.Add(30 * time.Second),
	}
	if _, err := s.Create(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: t0.Add(30*time.Second + 10*time.Millisecond)}
	var got *lease.Lease
	iss := newIssuer("jwt", func(_ context.Context, l *lease.Lease, _ int) error { got = l; return nil })
	rec := newRecorder()
	cfg := Config{Store: s, Issuers: issuers(iss), Now: clk.Now}
	rec.hook(&cfg)
	r := mustNew(t, cfg)
	if n, err := r.RunOnce(t.Context()); n != 1 || err != nil {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	if got == nil || got.ID != l.ID || got.RevokeReason != lease.ReasonPendingTimeout {
		t.Fatalf("issuer got %+v, want the pending lease with reason pending_timeout", got)
	}
	if len(rec.lags) != 1 || rec.lags[0] != 10*time.Millisecond {
		t.Errorf("lag %v, want [10ms] (measured from the pending deadline)", rec.lags)
	}
	if st := get(t, s, l.ID).State; st != lease.StateRevoked {
		t.Errorf("state %s, want revoked", st)
	}
}

func TestRetryWithBackoffThenSuccess(t *testing.T) {
	s := memory.New()
	exp := t0.Add(time.Hour)
	clk := &clock{t: exp}
	iss := newIssuer("vault", func(_ context.Context, _ *lease.Lease, call int) error {
		if call <= 2 {
			return fmt.Errorf("vault: revoke accessor: %w", issuer.ErrUnavailable)
		}
		return nil
	})
	l := addLease(t, s, "vault", exp)
	rec := newRecorder()
	cfg := Config{Store: s, Issuers: issuers(iss), Now: clk.Now,
		BackoffBase: 100 * time.Millisecond, BackoffMax: 150 * time.Millisecond, MaxAttempts: 5}
	rec.hook(&cfg)
	r := mustNew(t, cfg)
	r.randN = func(n int64) int64 { return n - 1 } // the longest delay

	runOnce := func(want int) {
		t.Helper()
		if n, err := r.RunOnce(t.Context()); n != want || err != nil {
			t.Fatalf("RunOnce = %d, %v; want %d, nil", n, err, want)
		}
	}
	runOnce(1) // fails: retry after 100ms
	stored := get(t, s, l.ID)
	if stored.State != lease.StateActive || stored.Attempts != 1 || !stored.DueAt.Equal(exp.Add(100*time.Millisecond)) ||
		stored.LastError != "vault: revoke accessor: issuer: backend unavailable" {
		t.Fatalf("after first failure: state %s attempts %d due %v error %q",
			stored.State, stored.Attempts, stored.DueAt, stored.LastError)
	}
	if len(rec.retried) != 1 || rec.retried[0].Attempts != 1 || !rec.retried[0].DueAt.Equal(stored.DueAt) ||
		!errors.Is(rec.retryErrs[0], issuer.ErrUnavailable) {
		t.Fatalf("OnRetry: %+v %v", rec.retried, rec.retryErrs)
	}
	clk.Add(99 * time.Millisecond)
	runOnce(0) // not due yet
	clk.Add(time.Millisecond)
	runOnce(1) // fails again: 200ms capped at 150ms
	if due := get(t, s, l.ID).DueAt; !due.Equal(clk.Now().Add(150 * time.Millisecond)) {
		t.Fatalf("second retry due %v, want now+150ms", due)
	}
	clk.Add(150 * time.Millisecond)
	runOnce(1) // succeeds
	stored = get(t, s, l.ID)
	if stored.State != lease.StateRevoked || stored.Attempts != 2 {
		t.Fatalf("after success: state %s attempts %d", stored.State, stored.Attempts)
	}
	if len(rec.lags) != 1 || rec.lags[0] != 250*time.Millisecond {
		t.Errorf("lag %v, want [250ms]", rec.lags)
	}
	if calls, _, _ := iss.stats(); calls != 3 {
		t.Errorf("issuer called %d times, want 3", calls)
	}
	if st := r.Stats(); st.Retried != 2 || st.Revoked != 1 || st.Claimed != 3 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestBackoffJitter(t *testing.T) {
	r := mustNew(t, Config{Store: memory.New(), Issuers: issuers(),
		BackoffBase: time.Second, BackoffMax: 5 * time.Minute})
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second,
		9: 256 * time.Second, 10: 5 * time.Minute, 60: 5 * time.Minute, 1000: 5 * time.Minute} {
		lo, hi := want, time.Duration(0)
		for range 200 {
			d := r.backoff(n)
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo < want/2 || hi > want {
			t.Errorf("backoff(%d) in [%v, %v], want within [%v, %v]", n, lo, hi, want/2, want)
		}
		if hi-lo < want/10 {
			t.Errorf("backoff(%d) barely jittered: [%v, %v]", n, lo, hi)
		}
	}
}

func TestIrrevocableAfterMaxAttempts(t *testing.T) {
	s := memory.New()
	exp := t0.Add(time.Hour)
	clk := &clock{t: exp}
	iss := newIssuer("vault", func(context.Context, *lease.Lease, int) error {
		return fmt.Errorf("vault: %w: permission denied", issuer.ErrRejected)
	})
	l := addLease(t, s, "vault", exp)
	rec := newRecorder()
	cfg := Config{Store: s, Issuers: issuers(iss), Now: clk.Now,
		MaxAttempts: 3, BackoffBase: time.Millisecond, BackoffMax: 4 * time.Millisecond}
	rec.hook(&cfg)
	r := mustNew(t, cfg)
	for i := range 3 {
		if n, err := r.RunOnce(t.Context()); n != 1 || err != nil {
			t.Fatalf("RunOnce #%d = %d, %v", i+1, n, err)
		}
		clk.Add(4 * time.Millisecond)
	}
	stored := get(t, s, l.ID)
	if stored.State != lease.StateIrrevocable || stored.Attempts != 3 ||
		stored.LastError != "vault: issuer: backend rejected the request: permission denied" {
		t.Fatalf("stored: state %s attempts %d error %q", stored.State, stored.Attempts, stored.LastError)
	}
	_, retried, irrevocable := rec.counts()
	if retried != 2 || irrevocable != 1 || !errors.Is(rec.irrErrs[0], issuer.ErrRejected) ||
		rec.irrevocable[0].Attempts != 3 || rec.irrevocable[0].State != lease.StateIrrevocable {
		t.Fatalf("callbacks: %d retries, %d irrevocable (%+v, %v)", retried, irrevocable, rec.irrevocable, rec.irrErrs)
	}
	clk.Add(time.Hour)
	if n, _ := r.RunOnce(t.Context()); n != 0 {
		t.Errorf("an irrevocable lease was claimed again")
	}
	if calls, _, _ := iss.stats(); calls != 3 {
		t.Errorf("issuer called %d times, want 3", calls)
	}
}

// A backend that is down is retried for as long as it stays down, never
// given up, at most UnavailableBackoffMax apart; once it is back the lease
// is revoked at the next retry.
func TestUnavailableBackendNeverIrrevocable(t *testing.T) {
	s := memory.New()
	exp := t0.Add(time.Hour)
	clk := &clock{t: exp}
	var down atomic.Bool
	down.Store(true)
	iss := newIssuer("vault", func(context.Context, *lease.Lease, int) error {
		if down.Load() {
			return fmt.Errorf("vault: %w: connection refused", issuer.ErrUnavailable)
		}
		return nil
	})
	l := addLease(t, s, "vault", exp)
	rec := newRecorder()
	cfg := Config{Store: s, Issuers: issuers(iss), Now: clk.Now,
		MaxAttempts: 3, BackoffBase: time.Second, BackoffMax: 5 * time.Minute, UnavailableBackoffMax: 10 * time.Second}
	rec.hook(&cfg)
	r := mustNew(t, cfg)
	// Ten minutes of outage: every retry is due within 10s of the last.
	for i := 0; clk.Now().Before(exp.Add(10 * time.Minute)); i++ {
		if n, err := r.RunOnce(t.Context()); n != 1 || err != nil {
			t.Fatalf("RunOnce #%d at +%v = %d, %v", i+1, clk.Now().Sub(exp), n, err)
		}
		stored := get(t, s, l.ID)
		if stored.State == lease.StateIrrevocable {
			t.Fatalf("given up after %d attempts while the backend was only down", stored.Attempts)
		}
		if wait := stored.DueAt.Sub(clk.Now()); wait > 10*time.Second || wait <= 0 {
			t.Fatalf("retry #%d due in %v, want within 10s", i+1, wait)
		}
		clk.t = stored.DueAt
	}
	down.Store(false)
	if n, err := r.RunOnce(t.Context()); n != 1 || err != nil {
		t.Fatalf("RunOnce after the outage = %d, %v", n, err)
	}
	if stored := get(t, s, l.ID); stored.State != lease.StateRevoked {
		t.Fatalf("after the outage: %s", stored.State)
	}
	if _, _, irrevocable := rec.counts(); irrevocable != 0 {
		t.Fatalf("%d irrevocable", irrevocable)
	}
}

// An issuer missing on this replica (rolling deploy, config mistake) is a
// failure to retry, not an instant verdict: irrevocable only after
// MaxAttempts.
func TestUnknownIssuerRetriedThenIrrevocable(t *testing.T) {
	s := memory.New()
	exp := t0.Add(time.Hour)
	clk := &clock{t: exp}
	known := newIssuer("vault", nil)
	l := addLease(t, s, "gone", exp)
	rec := newRecorder()
	cfg := Config{Store: s, Issuers: issuers(known), Now: clk.Now, MaxAttempts: 3, BackoffBase: time.Second, BackoffMax: time.Second}
	rec.hook(&cfg)
	r := mustNew(t, cfg)
	const want = `revoker: issuer "gone" is not configured on this broker`
	for attempt := 1; attempt <= 3; attempt++ {
		if n, err := r.RunOnce(t.Context()); n != 1 || err != nil {
			t.Fatalf("attempt %d: RunOnce = %d, %v", attempt, n, err)
		}
		stored := get(t, s, l.ID)
		wantState := lease.StateActive
		if attempt == 3 {
			wantState = lease.StateIrrevocable
		}
		if stored.State != wantState || stored.LastError != want || stored.Attempts != attempt {
			t.Fatalf("attempt %d: state %s attempts %d error %q", attempt, stored.State, stored.Attempts, stored.LastError)
		}
		clk.Add(2 * time.Second)
	}
	if _, _, irr := rec.counts(); irr != 1 {
		t.Errorf("OnIrrevocable called %d times, want 1", irr)
	}
	if calls, _, _ := known.stats(); calls != 0 {
		t.Errorf("another issuer was called")
	}
}

func TestIssuerPanicIsRetried(t *testing.T) {
	s := memory.New()
	clk := &clock{t: t0.Add(time.Hour)}
	iss := newIssuer("vault", func(context.Context, *lease.Lease, int) error { panic("token=s3cr3t") })
	l := addLease(t, s, "vault", t0.Add(time.Hour))
	var logs bytes.Buffer
	r := mustNew(t, Config{Store: s, Issuers: issuers(iss), Now: clk.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if _, err := r.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	stored := get(t, s, l.ID)
	if stored.State != lease.StateActive || stored.Attempts != 1 || stored.LastError != `revoker: issuer "vault" panicked in Revoke` {
		t.Fatalf("stored: state %s attempts %d error %q", stored.State, stored.Attempts, stored.LastError)
	}
	if strings.Contains(logs.String(), "s3cr3t") {
		t.Errorf("the panic value reached the log:\n%s", logs.String())
	}
}

// A claim that waited so long for a free slot that it would lapse mid-call
// is not started; it lapses and is claimed again.
func TestClaimTooOldIsLeftToLapse(t *testing.T) {
	s := memory.New()
	exp := t0.Add(time.Hour)
	clk := &clock{t: exp}
	const hold = 10 * time.Second
	iss := newIssuer("vault", func(context.Context, *lease.Lease, int) error {
		clk.Add(9 * time.Second) // a slow backend
		return nil
	})
	addLease(t, s, "vault", exp)
	addLease(t, s, "vault", exp)
	r := mustNew(t, Config{Store: s, Issuers: issuers(iss), Now: clk.Now, Concurrency: 1, Hold: hold})
	if n, err := r.RunOnce(t.Context()); n != 2 || err != nil {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	if st := r.Stats(); st.Revoked != 1 || st.Abandoned != 1 {
		t.Fatalf("Stats = %+v, want 1 revoked, 1 abandoned", st)
	}
	clk.Add(hold)
	if n, err := r.RunOnce(t.Context()); n != 1 || err != nil {
		t.Fatalf("RunOnce after the lapse = %d, %v", n, err)
	}
	if st := r.Stats(); st.Revoked != 2 {
		t.Fatalf("Stats = %+v, want 2 revoked", st)
	}
}

// Two replicas: A's backend call outlives its claim, B claims the lease
// again and revokes it; A's late outcome is refused and nothing is
// recorded twice.
func TestSlowRevokeFencedAcrossReplicas(t *testing.T) {
	s := memory.New()
	exp := t0.Add(time.Hour)
	clk := &clock{t: exp}
	const hold = time.Minute
	started, release := make(chan struct{}), make(chan struct{})
	slow := newIssuer("vault", func(context.Context, *lease.Lease, int) error {
		close(started)
		<-release // ignores ctx: a backend that hangs
		return nil
	})
	fast := newIssuer("vault", nil)
	l := addLease(t, s, "vault", exp)
	recA, recB := newRecorder(), newRecorder()
	cfgA := Config{Store: s, Issuers: issuers(slow), Now: clk.Now, Hold: hold}
	cfgB := Config{Store: s, Issuers: issuers(fast), Now: clk.Now, Hold: hold}
	recA.hook(&cfgA)
	recB.hook(&cfgB)
	a, b := mustNew(t, cfgA), mustNew(t, cfgB)

	type result struct {
		n   int
		err error
	}
	doneA := make(chan result, 1)
	go func() {
		n, err := a.RunOnce(t.Context())
		doneA <- result{n, err}
	}()
	<-started
	clk.Add(hold) // A's claim lapses
	if n, err := b.RunOnce(t.Context()); n != 1 || err != nil {
		t.Fatalf("B.RunOnce = %d, %v", n, err)
	}
	close(release)
	if res := <-doneA; res.n != 1 || res.err != nil {
		t.Fatalf("A.RunOnce = %d, %v; want 1, nil (a fenced outcome is not an error)", res.n, res.err)
	}
	if st := a.Stats(); st.Fenced != 1 || st.Revoked != 0 {
		t.Errorf("A.Stats = %+v, want 1 fenced, 0 revoked", st)
	}
	if r1, _, _ := recA.counts(); r1 != 0 {
		t.Errorf("A reported %d revocations, want 0", r1)
	}
	if r2, _, _ := recB.counts(); r2 != 1 {
		t.Errorf("B reported %d revocations, want 1", r2)
	}
	if got := get(t, s, l.ID); got.State != lease.StateRevoked {
		t.Errorf("stored: state %s fence %d", got.State, got.Fence)
	}
}

// ---- Run (real clock) ----

func TestRunSleepsUntilNextDue(t *testing.T) {
	s := memory.New()
	iss := newIssuer("vault", nil)
	rec := newRecorder()
	cfg := Config{Store: s, Issuers: issuers(iss), MaxIdle: time.Minute}
	rec.hook(&cfg)
	r := mustNew(t, cfg)
	l := addLease(t, s, "vault", time.Now().Add(50*time.Millisecond))
	start(t, r)
	select {
	case id := <-rec.revokedCh:
		if id != l.ID {
			t.Fatalf("revoked %s, want %s", id, l.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lease was not revoked at its expiry (Run did not wake at NextDue)")
	}
	rec.mu.Lock()
	lag := rec.lags[0]
	rec.mu.Unlock()
	if lag < 0 || lag > 2*time.Second {
		t.Errorf("revocation lag %v", lag)
	}
}

func TestWakeOnEarlyRevoke(t *testing.T) {
	fs := &faultyStore{Store: memory.New(), nextDue: make(chan struct{}, 1)}
	iss := newIssuer("vault", nil)
	rec := newRecorder()
	cfg := Config{Store: fs, Issuers: issuers(iss), MaxIdle: time.Minute}
	rec.hook(&cfg)
	r := mustNew(t, cfg)
	l := addLease(t, fs, "vault", time.Now().Add(time.Hour))
	start(t, r)
	<-fs.nextDue // Run looked up the next due time and is going to sleep an idle minute

	began := time.Now()
	if _, err := fs.Revoke(t.Context(), l.ID, lease.ReasonExplicit, began); err != nil {
		t.Fatal(err)
	}
	r.Wake()
	select {
	case <-rec.revokedCh:
	case <-time.After(10 * time.Second):
		t.Fatal("Wake did not wake Run")
	}
	if took := time.Since(began); took > 100*time.Millisecond {
		t.Errorf("revoked %v after Revoke+Wake, want < 100ms", took)
	}
	if got := get(t, fs, l.ID); got.RevokeReason != lease.ReasonExplicit || got.State != lease.StateRevoked {
		t.Errorf("stored: state %s reason %s", got.State, got.RevokeReason)
	}
}

func TestRunDrainsMoreThanOneBatch(t *testing.T) {
	fs := &faultyStore{Store: memory.New()}
	iss := newIssuer("vault", nil)
	var revoked atomic.Int64
	r := mustNew(t, Config{Store: fs, Issuers: issuers(iss), Batch: 16, Concurrency: 4, MaxIdle: time.Minute,
		OnRevoked: func(*lease.Lease, time.Duration) { revoked.Add(1) }})
	const n = 1000
	past := time.Now().Add(-time.Minute)
	for range n {
		addLease(t, fs, "vault", past)
	}
	stop := start(t, r)
	waitFor(t, "all leases revoked", func() bool { return revoked.Load() == n })
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	ls, _, err := fs.List(t.Context(), lease.Query{States: []lease.State{lease.StateRevoked}, PageSize: 1000})
	if err != nil || len(ls) != n {
		t.Fatalf("List(revoked) = %d, %v; want %d", len(ls), err, n)
	}
	if claims := fs.claims.Load(); claims < n/16 {
		t.Errorf("%d Claim calls for %d leases with Batch 16", claims, n)
	}
	if st := r.Stats(); st.Claimed != n || st.Revoked != n {
		t.Errorf("Stats = %+v", st)
	}
	_, _, maxIn := iss.stats()
	if maxIn > 4 {
		t.Errorf("%d Revoke calls in flight, Concurrency 4", maxIn)
	}
}

func TestRunOnceTakesOneBatch(t *testing.T) {
	s := memory.New()
	clk := &clock{t: t0.Add(time.Hour)}
	for range 40 {
		addLease(t, s, "vault", t0.Add(time.Hour))
	}
	r := mustNew(t, Config{Store: s, Issuers: issuers(newIssuer("vault", nil)), Now: clk.Now, Batch: 16})
	for _, want := range []int{16, 16, 8, 0} {
		if n, err := r.RunOnce(t.Context()); n != want || err != nil {
			t.Fatalf("RunOnce = %d, %v; want %d", n, err, want)
		}
	}
}

// heldIssuer is an issuer named "vault" whose Revoke calls wait until
// release is closed (or their context ends).
func heldIssuer(release <-chan struct{}) *testIssuer {
	return newIssuer("vault", func(ctx context.Context, _ *lease.Lease, _ int) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

func TestConcurrencyBounded(t *testing.T) {
	s := memory.New()
	release := make(chan struct{})
	iss := heldIssuer(release)
	var revoked atomic.Int64
	r := mustNew(t, Config{Store: s, Issuers: issuers(iss), Concurrency: 5, Batch: 40,
		OnRevoked: func(*lease.Lease, time.Duration) { revoked.Add(1) }})
	for range 40 {
		addLease(t, s, "vault", time.Now().Add(-time.Minute))
	}
	start(t, r)
	waitFor(t, "5 calls in flight", func() bool { _, in, _ := iss.stats(); return in == 5 })
	close(release)
	waitFor(t, "all revoked", func() bool { return revoked.Load() == 40 })
	if _, _, maxIn := iss.stats(); maxIn != 5 {
		t.Errorf("at most %d calls in flight, want 5", maxIn)
	}
}

// TestSlowerWhileBusy: while Busy says issuance is being served the
// revoker claims BusyBatch leases at a time and keeps BusyConcurrency
// calls in flight; once it is not, Batch and Concurrency again. It never
// stops.
func TestSlowerWhileBusy(t *testing.T) {
	s := memory.New()
	clk := &clock{t: t0.Add(time.Hour)}
	for range 100 {
		addLease(t, s, "vault", t0.Add(time.Hour))
	}
	var busy atomic.Bool
	busy.Store(true)
	release := make(chan struct{})
	iss := heldIssuer(release)
	r := mustNew(t, Config{Store: s, Issuers: issuers(iss), Now: clk.Now, Batch: 40, Concurrency: 8,
		Busy: busy.Load, BusyBatch: 10, BusyConcurrency: 3})
	done := make(chan int)
	go func() { n, _ := r.RunOnce(t.Context()); done <- n }()
	waitFor(t, "3 calls in flight while busy", func() bool { _, in, _ := iss.stats(); return in == 3 })
	close(release)
	if n := <-done; n != 10 {
		t.Fatalf("RunOnce while busy claimed %d, want BusyBatch 10", n)
	}
	if _, _, maxIn := iss.stats(); maxIn != 3 {
		t.Fatalf("%d calls in flight while busy, want BusyConcurrency 3", maxIn)
	}
	busy.Store(false)
	if n, err := r.RunOnce(t.Context()); n != 40 || err != nil {
		t.Fatalf("RunOnce when idle = %d, %v; want Batch 40", n, err)
	}
}

// One replica alone: its backend call hangs past the claim; Run claims the
// lease again (the hung call holds only one slot), revokes it, and the
// hung call's late outcome is refused.
func TestSlowRevokeFencedInOneRun(t *testing.T) {
	s := memory.New()
	started, release := make(chan struct{}), make(chan struct{})
	iss := newIssuer("vault", func(_ context.Context, _ *lease.Lease, call int) error {
		if call == 1 {
			close(started)
			<-release // ignores ctx
		}
		return nil
	})
	rec := newRecorder()
	cfg := Config{Store: s, Issuers: issuers(iss), Hold: 60 * time.Millisecond}
	rec.hook(&cfg)
	r := mustNew(t, cfg)
	l := addLease(t, s, "vault", time.Now().Add(-time.Second))
	start(t, r)
	<-started
	select {
	case <-rec.revokedCh:
	case <-time.After(10 * time.Second):
		t.Fatal("the lease was not claimed again after its claim lapsed")
	}
	close(release)
	waitFor(t, "the late outcome to be refused", func() bool { return r.Stats().Fenced == 1 })
	if n, _, _ := rec.counts(); n != 1 {
		t.Errorf("OnRevoked called %d times, want 1", n)
	}
	if got := get(t, s, l.ID); got.State != lease.StateRevoked {
		t.Errorf("state %s, want revoked", got.State)
	}
}

func TestRunReturnsNilOnCancel(t *testing.T) {
	s := memory.New()
	started := make(chan struct{})
	iss := newIssuer("vault", func(ctx context.Context, _ *lease.Lease, _ int) error {
		close(started)
		<-ctx.Done()
		return fmt.Errorf("vault: %w: %w", issuer.ErrUnavailable, ctx.Err())
	})
	r := mustNew(t, Config{Store: s, Issuers: issuers(iss)})
	l := addLease(t, s, "vault", time.Now().Add(-time.Second))
	stop := start(t, r)
	<-started
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	// The outcome is unknown: nothing recorded, the claim lapses.
	if got := get(t, s, l.ID); got.State != lease.StateRevoking || got.Attempts != 0 {
		t.Errorf("stored: state %s attempts %d, want revoking 0", got.State, got.Attempts)
	}
	if st := r.Stats(); st.Abandoned != 1 {
		t.Errorf("Stats = %+v, want 1 abandoned", st)
	}

	idle := mustNew(t, Config{Store: memory.New(), Issuers: issuers(), MaxIdle: time.Hour})
	if err := start(t, idle)(); err != nil {
		t.Fatalf("idle Run = %v, want nil", err)
	}
}

func TestStoreErrorsDoNotStopRun(t *testing.T) {
	fs := &faultyStore{Store: memory.New()}
	fs.claimFails.Store(3)
	fs.nextDueFails.Store(2)
	fs.finishFails.Store(1)
	iss := newIssuer("vault", nil)
	rec := newRecorder()
	var logs syncBuffer
	cfg := Config{Store: fs, Issuers: issuers(iss), Hold: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	rec.hook(&cfg)
	r := mustNew(t, cfg)
	r.storeMin, r.storeMax = time.Millisecond, 4*time.Millisecond
	l := addLease(t, fs, "vault", time.Now().Add(-time.Second))
	start(t, r)
	select {
	case <-rec.revokedCh:
	case <-time.After(10 * time.Second):
		t.Fatal("not revoked after store errors")
	}
	if st := r.Stats(); st.StoreErrors < 6 {
		t.Errorf("Stats = %+v, want at least 6 store errors", st)
	}
	if got := get(t, fs, l.ID); got.State != lease.StateRevoked {
		t.Errorf("state %s", got.State)
	}
	for _, want := range []string{"op=claim", "redis: connection refused", "op=next_due", "redis: READONLY"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func TestRunOnceReportsStoreErrors(t *testing.T) {
	fs := &faultyStore{Store: memory.New()}
	clk := &clock{t: t0.Add(time.Hour)}
	addLease(t, fs, "vault", t0.Add(time.Hour))
	r := mustNew(t, Config{Store: fs, Issuers: issuers(newIssuer("vault", nil)), Now: clk.Now})
	fs.claimFails.Store(1)
	if _, err := r.RunOnce(t.Context()); err == nil || err.Error() != "revoker: claim: redis: connection refused" {
		t.Errorf("RunOnce with a failing Claim: %v", err)
	}
	fs.finishFails.Store(1)
	n, err := r.RunOnce(t.Context())
	if n != 1 || err == nil || !strings.HasSuffix(err.Error(), ": redis: READONLY") {
		t.Errorf("RunOnce with a failing Finish = %d, %v", n, err)
	}
}

func TestLogs(t *testing.T) {
	s := memory.New()
	clk := &clock{t: t0.Add(time.Hour)}
	l := addLease(t, s, "vault", t0.Add(time.Hour))
	iss := newIssuer("vault", func(context.Context, *lease.Lease, int) error {
		return errors.New("vault: 503 from https://vault.internal")
	})
	var logs bytes.Buffer
	r := mustNew(t, Config{Store: s, Issuers: issuers(iss), Now: clk.Now,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if _, err := r.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{`"component":"revoker"`, `"lease_id":"` + l.ID + `"`, `"entitlement":"db-read"`,
		`"issuer":"vault"`, `"error":"vault: 503 from https://vault.internal"`, `"level":"WARN"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, l.ExternalRef) {
		t.Errorf("log carries the backend handle %q:\n%s", l.ExternalRef, out)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
