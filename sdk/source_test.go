package sdk

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fastSource shortens the backoffs and timeouts so failure tests finish in
// well under a second; the renewal schedule itself is unchanged.
var fastSource = withSourceConfig(func(c *sourceConfig) {
	c.transient = retryPolicy{base: 50 * time.Millisecond, limit: 200 * time.Millisecond}
	c.permanent = retryPolicy{base: 300 * time.Millisecond, limit: time.Second}
	c.attemptTimeout = 3 * time.Second
	c.closeTimeout = 3 * time.Second
})

// newTestSource starts a source on c and closes it when the test ends.
func newTestSource(t *testing.T, c *Client, opts ...SourceOption) *CredentialSource {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	src, err := c.Credential(ctx, "orders-db-ro", opts...)
	if err != nil {
		t.Fatalf("Credential: %v", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitUpdated waits for one Updated signal.
func waitUpdated(t *testing.T, src *CredentialSource, timeout time.Duration) {
	t.Helper()
	select {
	case <-src.Updated():
	case <-time.After(timeout):
		t.Fatalf("no Updated signal within %v", timeout)
	}
}

// nextError waits for one error on Errors.
func nextError(t *testing.T, src *CredentialSource, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-src.Errors():
		return err
	case <-time.After(timeout):
		t.Fatalf("no error reported within %v", timeout)
		return nil
	}
}

// TestSourceRenewsAtTwoThirds measures the schedule in real time. The
// other behaviour tests use a fake clock so that a loaded machine cannot
// make them flaky; this one keeps wide bounds for the same reason.
func TestSourceRenewsAtTwoThirds(t *testing.T) {
	t.Parallel()
	const ttl = 1500 * time.Millisecond
	pki := newTestPKI(t, testTrustDomain)
	broker, addr := startFakeBroker(t, pki, testBrokerID, nil)
	c := dialTestClient(t, pki, addr)
	src := newTestSource(t, c, WithTTL(ttl))

	first := src.Current()
	if first == nil {
		t.Fatal("Current() = nil right after Credential")
	}
	select {
	case <-src.Updated():
		t.Fatal("Updated signalled for the first credential")
	default:
	}

	waitUpdated(t, src, 3*ttl)
	second := src.Current()
	if second == nil || second.Lease.ID != first.Lease.ID || second.Token != first.Token || !second.ExpiresAt.After(first.ExpiresAt) {
		t.Fatalf("after renewal: %v; want lease %s and token unchanged, expiry later than %v", second, first.Lease.ID, first.ExpiresAt)
	}

	issued := broker.callsOf("issue")[0].at
	renew := broker.callsOf("renew")[0]
	// Expected: 2/3 of the lifetime ±10%, i.e. 0.6–0.73 of the TTL, plus
	// scheduling and RPC latency. Early is a bug; late is the machine.
	if ratio := float64(renew.at.Sub(issued)) / float64(ttl); ratio < 0.55 || ratio >= 1 {
		t.Errorf("renewed %v after issuance (%.2f of the TTL), want about 2/3", renew.at.Sub(issued), ratio)
	}
	if got := renew.req.(*mayflyv1.RenewLeaseRequest).GetTtl().AsDuration(); got != ttl {
		t.Errorf("renewal asked for %v, want %v", got, ttl)
	}
	if n := broker.leaseCount(); n != 1 {
		t.Errorf("leases minted = %d, want 1", n)
	}
}

var fakeStart = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

// startFakeSource starts a broker and a source that share a fake clock, with
// jitter switched off (rand fixed at 0.5), a 60s default TTL, and the
// source's default backoffs.
func startFakeSource(t *testing.T, configure func(*fakeBroker)) (*fakeBroker, *CredentialSource, *fakeClock) {
	t.Helper()
	clk := newFakeClock(fakeStart)
	pki := newTestPKI(t, testTrustDomain)
	broker, addr := startFakeBroker(t, pki, testBrokerID, func(b *fakeBroker) {
		b.now = clk.Now
		b.defaultTTL = time.Minute
		if configure != nil {
			configure(b)
		}
	})
	c := dialTestClient(t, pki, addr)
	src := newTestSource(t, c, withFakeClock(clk))
	return broker, src, clk
}

func withFakeClock(clk *fakeClock) SourceOption {
	return withSourceConfig(func(c *sourceConfig) {
		c.clock = clk
		c.rand = func() float64 { return 0.5 }
	})
}

// nextSleep waits until the source goes to sleep and returns for how long.
func (c *fakeClock) nextSleep(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.timers:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("the source did not go to sleep")
		return 0
	}
}

// expectSleep checks the next sleep's length and lets it pass.
func (c *fakeClock) expectSleep(t *testing.T, want time.Duration) {
	t.Helper()
	if d := c.nextSleep(t); d != want {
		t.Fatalf("the source slept %v, want %v", d, want)
	}
	c.Advance(want)
}

func TestSourceSwitchesToRenewedValue(t *testing.T) {
	t.Parallel()
	_, src, clk := startFakeSource(t, func(b *fakeBroker) { b.renewNewValue = true })
	first := src.Current()

	clk.expectSleep(t, 40*time.Second) // two thirds of 60s
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := src.WaitUntilUpdated(ctx); err != nil {
		t.Fatal(err)
	}
	got := src.Current()
	if got.Lease.ID != first.Lease.ID || got.Token != "token-lease001-1" || first.Token != "token-lease001-0" {
		t.Errorf("after renewal: lease %s token %q; want lease %s with token-lease001-1", got.Lease.ID, got.Token, first.Lease.ID)
	}
	if want := fakeStart.Add(100 * time.Second); !got.ExpiresAt.Equal(want) {
		t.Errorf("expires at %v, want %v", got.ExpiresAt, want)
	}
	clk.expectSleep(t, 40*time.Second) // two thirds of the renewed 60s
	waitUpdated(t, src, 5*time.Second)
	if got := src.Current(); got.Token != "token-lease001-2" {
		t.Errorf("after the second renewal the token is %q", got.Token)
	}
}

func TestSourceReplacesLeaseBeforeHardEnd(t *testing.T) {
	t.Parallel()
	broker, src, clk := startFakeSource(t, func(b *fakeBroker) { b.maxTTL = 100 * time.Second })
	first := src.Current()

	// At 40s the hard end is still a full TTL away: renew (clamped to it).
	clk.expectSleep(t, 40*time.Second)
	waitUpdated(t, src, 5*time.Second)
	renewed := src.Current()
	if renewed.Lease.ID != first.Lease.ID || !renewed.ExpiresAt.Equal(first.Lease.HardEnd) {
		t.Fatalf("after the first renewal: %v, want lease %s expiring at its hard end %v", renewed, first.Lease.ID, first.Lease.HardEnd)
	}

	// At 80s the hard end is 20s away: replace the lease.
	clk.expectSleep(t, 40*time.Second)
	waitUpdated(t, src, 5*time.Second)
	cur := src.Current()
	if cur == nil || cur.Lease.ID == first.Lease.ID {
		t.Fatalf("Current() = %v, want a new lease", cur)
	}
	if !cur.Lease.IssuedAt.Before(first.Lease.HardEnd) || !cur.Lease.IssuedAt.Equal(fakeStart.Add(80*time.Second)) {
		t.Errorf("new lease issued at %v, want 80s in, before the old hard end %v", cur.Lease.IssuedAt, first.Lease.HardEnd)
	}
	eventually(t, 5*time.Second, "the old lease revoked", func() bool {
		return broker.lease(first.Lease.ID).GetState() == mayflyv1.LeaseState_LEASE_STATE_REVOKED
	})
	if reason := broker.lease(first.Lease.ID).GetRevokeReason(); reason != "explicit" {
		t.Errorf("old lease revoke reason = %q, want explicit", reason)
	}
	if n := len(broker.callsOf("renew")); n != 1 {
		t.Errorf("renew calls = %d, want 1", n)
	}
	clk.expectSleep(t, 40*time.Second) // the new lease's schedule
}

func TestSourceReplacesRevokedLease(t *testing.T) {
	t.Parallel()
	broker, src, clk := startFakeSource(t, nil)
	first := src.Current()

	broker.revokeBehindBack(first.Lease.ID)
	clk.expectSleep(t, 40*time.Second)

	err := nextError(t, src, 5*time.Second)
	if status.Code(err) != codes.FailedPrecondition || !strings.HasPrefix(err.Error(), "sdk: renew lease "+first.Lease.ID+": ") {
		t.Errorf("reported error = %v, want FailedPrecondition from the renewal", err)
	}
	waitUpdated(t, src, 5*time.Second)
	cur := src.Current()
	if cur == nil || cur.Lease.ID == first.Lease.ID {
		t.Fatalf("Current() = %v, want a new lease", cur)
	}
	if n := broker.leaseCount(); n != 2 {
		t.Errorf("leases minted = %d, want 2", n)
	}
	clk.expectSleep(t, 40*time.Second)
	if reason := broker.lease(first.Lease.ID).GetRevokeReason(); reason != "kill_switch" {
		t.Errorf("old lease revoke reason = %q, want it left as kill_switch", reason)
	}
}

func TestSourceReplacesUnrenewableLease(t *testing.T) {
	t.Parallel()
	broker, src, clk := startFakeSource(t, func(b *fakeBroker) { b.notRenewable = true })
	first := src.Current()

	clk.expectSleep(t, 40*time.Second)
	waitUpdated(t, src, 5*time.Second)
	if cur := src.Current(); cur == nil || cur.Lease.ID == first.Lease.ID {
		t.Fatalf("Current() = %v, want a new lease", cur)
	}
	eventually(t, 5*time.Second, "the old lease revoked", func() bool {
		return broker.lease(first.Lease.ID).GetState() == mayflyv1.LeaseState_LEASE_STATE_REVOKED
	})
	if n := len(broker.callsOf("renew")); n != 0 {
		t.Errorf("renewed an unrenewable lease %d times", n)
	}
	// Each replacement is a new issuance with its own idempotency key.
	if issues := broker.callsOf("issue"); issues[0].requestID == issues[1].requestID {
		t.Error("the replacement reused the first issuance's request id")
	}
}

func TestSourceRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	broker, src, clk := startFakeSource(t, func(b *fakeBroker) {
		b.failRenew = []codes.Code{codes.Unavailable, codes.DeadlineExceeded, codes.Unavailable,
			codes.Unavailable, codes.Unavailable, codes.Unavailable, codes.Unavailable}
	})
	first := src.Current()

	clk.expectSleep(t, 40*time.Second)
	// Exponential backoff from 200ms, but never more than half of what is
	// left of the credential: at 52.6s only 7.4s are left.
	for _, d := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 3700 * time.Millisecond} {
		clk.expectSleep(t, d)
		if src.Current() != first {
			t.Fatal("Current() changed while renewals failed")
		}
	}
	waitUpdated(t, src, 5*time.Second)
	cur := src.Current()
	if cur == nil || cur.Lease.ID != first.Lease.ID || !cur.ExpiresAt.Equal(fakeStart.Add(56300*time.Millisecond+time.Minute)) {
		t.Fatalf("Current() = %v, want the first lease renewed at 56.3s", cur)
	}
	for i, want := range []codes.Code{codes.Unavailable, codes.DeadlineExceeded, codes.Unavailable} {
		if err := nextError(t, src, time.Second); status.Code(err) != want {
			t.Errorf("error %d = %v, want code %v", i, err, want)
		}
	}
	if n := broker.leaseCount(); n != 1 {
		t.Errorf("leases minted = %d, want 1", n)
	}
	clk.expectSleep(t, 40*time.Second) // back on schedule
}

func TestSourceRetriesPermanentFailuresSlowly(t *testing.T) {
	t.Parallel()
	_, src, clk := startFakeSource(t, func(b *fakeBroker) {
		b.failRenew = []codes.Code{codes.PermissionDenied}
	})
	first := src.Current()

	clk.expectSleep(t, 40*time.Second)
	if err := nextError(t, src, 5*time.Second); status.Code(err) != codes.PermissionDenied {
		t.Errorf("reported %v, want PermissionDenied", err)
	}
	clk.expectSleep(t, 10*time.Second) // the slow backoff
	waitUpdated(t, src, 5*time.Second)
	if cur := src.Current(); cur == nil || cur.Lease.ID != first.Lease.ID {
		t.Fatalf("Current() = %v, want the first lease renewed", cur)
	}
}

func TestSourceFirstCredential(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)

	t.Run("permanent error returns at once", func(t *testing.T) {
		broker, addr := startFakeBroker(t, pki, testBrokerID, func(b *fakeBroker) {
			b.failIssue = []codes.Code{codes.PermissionDenied}
		})
		c := dialTestClient(t, pki, addr)
		_, err := c.Credential(testContext(t), "orders-db-ro", fastSource)
		const want = `sdk: issue "orders-db-ro": rpc error: code = PermissionDenied desc = test broker: injected failure`
		if err == nil || err.Error() != want || status.Code(err) != codes.PermissionDenied {
			t.Fatalf("err = %v, want %q", err, want)
		}
		if n := len(broker.callsOf("issue")); n != 1 {
			t.Errorf("issue calls = %d, want 1", n)
		}
	})

	t.Run("transient errors are retried with one request id", func(t *testing.T) {
		broker, addr := startFakeBroker(t, pki, testBrokerID, func(b *fakeBroker) {
			b.failIssue = []codes.Code{codes.Unavailable}
			b.loseIssue = 1
		})
		c := dialTestClient(t, pki, addr)
		src, err := c.Credential(testContext(t), "orders-db-ro", fastSource, WithReason("export"), WithTicket("INC-1"))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		issues := broker.callsOf("issue")
		if len(issues) != 3 {
			t.Fatalf("issue calls = %d, want 3", len(issues))
		}
		for _, call := range issues {
			if call.requestID != issues[0].requestID {
				t.Errorf("request ids differ across retries: %q vs %q", call.requestID, issues[0].requestID)
			}
			req := call.req.(*mayflyv1.IssueCredentialRequest)
			if req.GetReason() != "export" || req.GetTicket() != "INC-1" {
				t.Errorf("request = %v, want the reason and ticket", req)
			}
		}
		if n := broker.leaseCount(); n != 1 {
			t.Errorf("leases minted = %d, want 1", n)
		}
		if src.Current() == nil {
			t.Error("Current() = nil")
		}
	})

	t.Run("context ends", func(t *testing.T) {
		clk := newFakeClock(fakeStart)
		_, addr := startFakeBroker(t, pki, testBrokerID, func(b *fakeBroker) {
			b.failIssue = []codes.Code{codes.Unavailable, codes.Unavailable}
		})
		c := dialTestClient(t, pki, addr)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := c.Credential(ctx, "orders-db-ro", withFakeClock(clk))
			errc <- err
		}()
		clk.expectSleep(t, 200*time.Millisecond) // after the first failure
		if d := clk.nextSleep(t); d != 400*time.Millisecond {
			t.Fatalf("second backoff = %v, want 400ms", d)
		}
		cancel() // while backing off after the second failure
		err := <-errc
		if !errors.Is(err, context.Canceled) || status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v; want it to wrap both the cancellation and the last Unavailable", err)
		}
		const want = `sdk: first credential for "orders-db-ro": context canceled (last error: sdk: issue "orders-db-ro": rpc error: code = Unavailable desc = test broker: injected failure)`
		if err.Error() != want {
			t.Errorf("err = %q, want %q", err, want)
		}
	})
}

// TestSourceCurrentNeverExpired lets time pass the credential's expiry while
// the broker is stuck: Current must then return nil until a replacement
// arrives, and Get must wait for it.
func TestSourceCurrentNeverExpired(t *testing.T) {
	t.Parallel()
	broker, src, clk := startFakeSource(t, nil)
	first := src.Current()
	if first == nil {
		t.Fatal("Current() = nil at the start")
	}

	if d := clk.nextSleep(t); d != 40*time.Second {
		t.Fatalf("first renewal scheduled in %v, want 40s", d)
	}
	gate := make(chan struct{})
	broker.set(func(b *fakeBroker) { b.gate = gate })
	clk.Advance(40 * time.Second) // the renewal starts and hangs at the broker
	if src.Current() != first {
		t.Fatal("Current() changed before anything happened")
	}
	clk.Advance(20 * time.Second) // exactly at expiry: no longer valid
	if got := src.Current(); got != nil {
		t.Fatalf("Current() = %v after expiry, want nil", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := src.Get(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), `sdk: wait for credential "orders-db-ro": `) {
		t.Fatalf("Get() while expired: err = %v, want a deadline error", err)
	}

	// The broker recovers: the expired lease cannot be renewed, so the
	// source issues a new one.
	close(gate)
	got, err := src.Get(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if got.Lease.ID == first.Lease.ID || !got.ExpiresAt.Equal(clk.Now().Add(time.Minute)) {
		t.Errorf("Get() = %v, want a new lease expiring a minute from now", got)
	}
	eventually(t, 5*time.Second, "the expired lease revoked", func() bool {
		return broker.lease(first.Lease.ID).GetState() == mayflyv1.LeaseState_LEASE_STATE_REVOKED
	})
}

func TestSourceClose(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	broker, addr := startFakeBroker(t, pki, testBrokerID, nil)
	c := dialTestClient(t, pki, addr)
	src := newTestSource(t, c)
	lease := src.Current().Lease

	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if got := broker.lease(lease.ID); got.GetState() != mayflyv1.LeaseState_LEASE_STATE_REVOKED || got.GetRevokeReason() != "explicit" {
		t.Errorf("after Close the lease is %v, want revoked explicitly", got)
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if n := len(broker.callsOf("revoke")); n != 1 {
		t.Errorf("revoke calls = %d, want 1", n)
	}
	if got := src.Current(); got != nil {
		t.Errorf("Current() after Close = %v, want nil", got)
	}
	if _, err := src.Get(testContext(t)); !errors.Is(err, ErrSourceClosed) {
		t.Errorf("Get after Close: %v", err)
	}
	if err := src.WaitUntilUpdated(testContext(t)); !errors.Is(err, ErrSourceClosed) {
		t.Errorf("WaitUntilUpdated after Close: %v", err)
	}
}

func TestSourceCloseReportsRevokeFailure(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	_, addr := startFakeBroker(t, pki, testBrokerID, nil)
	c := dialTestClient(t, pki, addr)
	src := newTestSource(t, c)
	id := src.Current().Lease.ID
	if err := c.Close(); err != nil { // the broker becomes unreachable
		t.Fatal(err)
	}
	err := src.Close()
	want := "sdk: close credential source: sdk: revoke lease " + id + ": rpc error: code = Canceled"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Close = %v, want prefix %q", err, want)
	}
}

// TestSourceNoGoroutineLeak is not parallel: it counts goroutines.
func TestSourceNoGoroutineLeak(t *testing.T) {
	clk := newFakeClock(fakeStart)
	pki := newTestPKI(t, testTrustDomain)
	broker, addr := startFakeBroker(t, pki, testBrokerID, func(b *fakeBroker) {
		b.now = clk.Now
		b.renewNewValue = true
	})
	before := runtime.NumGoroutine()

	c := dialTestClient(t, pki, addr)
	src := newTestSource(t, c, withFakeClock(clk))
	clk.Advance(clk.nextSleep(t))
	waitUpdated(t, src, 5*time.Second)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if len(broker.callsOf("renew")) != 1 || len(broker.callsOf("revoke")) != 1 {
		t.Fatal("want one renewal and one revocation")
	}

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReportDropsOldest(t *testing.T) {
	t.Parallel()
	s := &CredentialSource{errs: make(chan error, 2)}
	for i := 1; i <= 3; i++ {
		s.report(fmt.Errorf("error %d", i))
	}
	for _, want := range []string{"error 2", "error 3"} {
		if got := (<-s.Errors()).Error(); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestMustReplace(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := newFakeClock(now)
	s := &CredentialSource{cfg: sourceConfig{clock: clk}}
	lease := func(expiresIn, hardEndIn time.Duration, renewable bool) *Credential {
		l := Lease{ExpiresAt: now.Add(expiresIn), Renewable: renewable}
		if hardEndIn > 0 {
			l.HardEnd = now.Add(hardEndIn)
		}
		return &Credential{Lease: l, ExpiresAt: l.ExpiresAt}
	}
	const ttl = 30 * time.Minute
	for _, tc := range []struct {
		name string
		cred *Credential
		want bool
	}{
		{"renewable, no hard end", lease(10*time.Minute, 0, true), false},
		{"hard end far away", lease(10*time.Minute, 2*time.Hour, true), false},
		{"hard end exactly a TTL away", lease(10*time.Minute, 30*time.Minute, true), false},
		{"hard end less than a TTL away", lease(10*time.Minute, 29*time.Minute, true), true},
		{"at the hard end", lease(10*time.Minute, 10*time.Minute, true), true},
		{"not renewable", lease(10*time.Minute, 0, false), true},
		{"expired", lease(0, 0, true), true},
	} {
		if got := s.mustReplace(tc.cred, ttl); got != tc.want {
			t.Errorf("%s: mustReplace = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestBackoffAndJitter(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]time.Duration{1: 200 * time.Millisecond, 2: 400 * time.Millisecond, 8: 25600 * time.Millisecond, 9: 30 * time.Second, 50: 30 * time.Second} {
		if got := backoff(200*time.Millisecond, 30*time.Second, n); got != want {
			t.Errorf("backoff(%d) = %v, want %v", n, got, want)
		}
	}
	if got := jitter(time.Second, 0); got != 900*time.Millisecond {
		t.Errorf("jitter(1s, 0) = %v", got)
	}
	if got := jitter(time.Second, 0.999999); got < 1099*time.Millisecond || got > 1100*time.Millisecond {
		t.Errorf("jitter(1s, ~1) = %v", got)
	}
}
