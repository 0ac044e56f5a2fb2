package vault_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/revoker"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// figuresCallers is the concurrency of every measurement.
const figuresCallers = 8

// TestFigures measures and prints (go test -v -run TestFigures):
//
//   - the issuance rate of database/creds/orders-15m (a role whose
//     default TTL is the entitlement's ttl) and database/creds/orders-ro
//     (default TTL 1h, which the broker aligns) with 8 concurrent callers,
//     through the broker (gRPC over mTLS, lease store, per-lease token,
//     Vault) and straight from Vault with one token;
//   - the revocation lag (due -> role gone from pg_roles, polled every
//     25ms from before the first role exists) of credentials that fall due
//     together: leases through the broker whose TTLs all end at one moment
//     (Vault's per-lease token and lease TTLs end them, the revoker
//     confirms), leases revoked explicitly through the broker (the broker
//     alone does the work) over one second and all at once, and secrets
//     read straight from Vault whose Vault leases are renewed to end at
//     one moment (Vault's own expiry, no broker). Vault counts whole
//     seconds, so those fall due within a second of that moment: the
//     explicit revocations spread over one second are the broker's
//     like-for-like figure, the ones all at once its worst case.
//
// It uses 200 credentials per measurement; MAYFLY_VAULT_FIGURES=N uses N
// (2000 takes a few minutes). -short skips it.
func TestFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: figures skipped")
	}
	n := 200
	if s := os.Getenv("MAYFLY_VAULT_FIGURES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 8 {
			t.Fatalf("MAYFLY_VAULT_FIGURES=%q: want a number of credentials, at least 8", s)
		}
	}
	f := newFixture(t)
	f.writeRole(t, "orders-lag", "10m", "1h")
	if err := f.v.Client.Sys().PutPolicy("orders-lag", `path "database/creds/orders-lag" { capabilities = ["read", "update"] }
path "sys/leases/renew" { capabilities = ["update"] }`); err != nil {
		t.Fatal(err)
	}
	// A revoker sized for a database backend: each revocation waits for
	// PostgreSQL to drop a role, so more of them in flight (revoker.concurrency).
	b := startBroker(t, f, brokerOpts{revoker: revoker.Config{MaxIdle: 100 * time.Millisecond, Concurrency: 64}})
	conns := make([]mayflyv1.CredentialServiceClient, figuresCallers)
	for k := range conns {
		conns[k] = mayflyv1.NewCredentialServiceClient(b.env.Dial(t, workloadID))
	}

	// Issuance rate through the broker.
	brokerIssueAs := func(ent string, until time.Time, w *lagWatch) ([]issued, time.Duration) {
		out := make([]issued, n)
		start := time.Now()
		run(t, n, func(caller, k int) error {
			req := &mayflyv1.IssueCredentialRequest{Entitlement: ent}
			if !until.IsZero() { // every lease ends then
				req.Ttl = durationpb.New(max(time.Until(until), time.Second))
			}
			resp, err := conns[caller].IssueCredential(context.Background(), req)
			if err != nil {
				return err
			}
			out[k] = issued{resp.GetCredential().GetUsernamePassword().GetUsername(), resp.GetLease().GetExpiresAt().AsTime(), resp.GetLease().GetId()}
			w.add(out[k].user, out[k].due)
			return nil
		})
		return out, time.Since(start)
	}
	brokerIssue := func(until time.Time, w *lagWatch) ([]issued, time.Duration) {
		return brokerIssueAs("orders-db-ro", until, w)
	}
	_, brokerDur := brokerIssue(time.Time{}, nil)
	_, broker15Dur := brokerIssueAs("orders-db-ro-15m", time.Time{}, nil)

	// Issuance rate straight from Vault, same secret, same concurrency.
	direct := func(role string, until time.Time, w *lagWatch) ([]issued, time.Duration) {
		tok, err := f.v.Client.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{role}, TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		c, err := f.v.Client.Clone()
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(tok.Auth.ClientToken)
		out := make([]issued, n)
		start := time.Now()
		run(t, n, func(_, k int) error {
			at := time.Now()
			s, err := c.Logical().Read("database/creds/" + role)
			if err != nil {
				return err
			}
			user, _ := s.Data["username"].(string)
			out[k] = issued{user: user, due: at.Add(time.Duration(s.LeaseDuration) * time.Second)}
			if !until.IsZero() { // make the Vault lease end then
				inc := max(int(time.Until(until).Seconds()+0.5), 1)
				at := time.Now()
				r, err := c.Sys().Renew(s.LeaseID, inc)
				if err != nil {
					return err
				}
				out[k].due = at.Add(time.Duration(r.LeaseDuration) * time.Second)
			}
			w.add(out[k].user, out[k].due)
			return nil
		})
		return out, time.Since(start)
	}
	_, vaultDur := direct("orders-ro", time.Time{}, nil)
	_, vault15Dur := direct("orders-15m", time.Time{}, nil)

	// Revocation lag: leases expiring through the broker, all at about
	// the same time: each asks for the TTL that ends it at a common
	// moment after the last should have been issued.
	horizon := func(d time.Duration) time.Time { return time.Now().Add(d*3/2 + 3*time.Second) }
	w := f.watchLags(t)
	expiring, _ := brokerIssue(horizon(brokerDur), w)
	expLag := w.wait(t, 2*time.Minute)
	expRec := b.recorded(t, leaseIDs(expiring))

	// Revocation lag: explicit revocation through the broker, all at once
	// (as fast as the callers can ask), then spread evenly over a second,
	// the way Vault's own expiries below fall due: Vault counts whole
	// seconds, so leases renewed to end at one moment end within a second
	// of it.
	explicit := func(over time.Duration) (lagStats, string) {
		held, _ := brokerIssue(time.Time{}, nil)
		w := f.watchLags(t)
		start := time.Now()
		run(t, n, func(caller, k int) error {
			time.Sleep(time.Until(start.Add(over * time.Duration(k) / time.Duration(n))))
			w.add(held[k].user, time.Now())
			_, err := conns[caller].RevokeLease(context.Background(), &mayflyv1.RevokeLeaseRequest{LeaseId: held[k].leaseID})
			return err
		})
		lag := w.wait(t, 2*time.Minute)
		return lag, b.recorded(t, leaseIDs(held))
	}
	burstLag, burstRec := explicit(0)
	revLag, revRec := explicit(time.Second)

	// Revocation lag: Vault's own expiry, no broker: each secret's Vault
	// lease is renewed to end at a common moment.
	w = f.watchLags(t)
	direct("orders-lag", horizon(vaultDur*2), w)
	ownLag := w.wait(t, 5*time.Minute)

	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	t.Logf("figures: %d credentials, %d concurrent callers, PostgreSQL %s, Vault dev server", n, figuresCallers, f.pgVersion(t))
	t.Logf("issuance database/creds/orders-15m (role default_ttl = the entitlement's 15m; 2 Vault calls): broker %.0f/s, Vault direct %.0f/s (broker/direct %.2f)",
		rate(broker15Dur), rate(vault15Dur), rate(broker15Dur)/rate(vault15Dur))
	t.Logf("issuance database/creds/orders-ro (role default_ttl 1h, aligned to 15m: 3 Vault calls): broker %.0f/s, Vault direct %.0f/s (broker/direct %.2f)",
		rate(brokerDur), rate(vaultDur), rate(brokerDur)/rate(vaultDur))
	t.Logf("revocation lag (due -> role gone from pg_roles):")
	t.Logf("  broker, leases expiring:        %s", expLag)
	t.Logf("    as the broker recorded it:    %s", expRec)
	t.Logf("  broker, explicit, over 1 s:     %s", revLag)
	t.Logf("    as the broker recorded it:    %s", revRec)
	t.Logf("  broker, explicit, all at once:  %s", burstLag)
	t.Logf("    as the broker recorded it:    %s", burstRec)
	t.Logf("  Vault's own expiry:             %s", ownLag)
}

// recorded is the revocation lag the broker recorded (RevokedAt -
// EndDue) for the leases, waiting until each is terminal, and how many
// needed more than one attempt.
func (b *brokerEnv) recorded(t *testing.T, ids []string) string {
	t.Helper()
	var lags []time.Duration
	retried := 0
	for _, id := range ids {
		l := b.waitState(t, id, lease.StateRevoked, time.Minute)
		lags = append(lags, l.RevokedAt.Sub(l.EndDue()))
		if l.Attempts > 0 {
			retried++
		}
	}
	slices.Sort(lags)
	q := func(p float64) time.Duration {
		return lags[min(len(lags)-1, int(p*float64(len(lags))))].Round(time.Millisecond)
	}
	return fmt.Sprintf("lag p50 %v, p95 %v, max %v; %d of %d needed a retry", q(0.5), q(0.95), lags[len(lags)-1].Round(time.Millisecond), retried, len(ids))
}

// issued is one credential of a measurement.
type issued struct {
	user    string
	due     time.Time
	leaseID string
}

func leaseIDs(xs []issued) []string {
	out := make([]string, len(xs))
	for k, x := range xs {
		out[k] = x.leaseID
	}
	return out
}

// run calls fn n times from figuresCallers goroutines; the first error
// fails t.
func run(t *testing.T, n int, fn func(caller, k int) error) {
	t.Helper()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for caller := range figuresCallers {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= n {
					return
				}
				if err := fn(caller, k); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d callers failed; first: %v", len(errs), errs[0])
	}
}

// lagStats summarises revocation lags.
type lagStats struct {
	n                  int
	window             time.Duration // last due - first due
	p50, p95, p99, max time.Duration
	total              time.Duration // first due -> last role gone
}

func (s lagStats) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	return fmt.Sprintf("%d due within %v: lag p50 %v, p95 %v, p99 %v, max %v; all gone %v after the first was due",
		s.n, r(s.window), r(s.p50), r(s.p95), r(s.p99), r(s.max), r(s.total))
}

// lagWatch polls pg_roles every 25ms and notes when each added role
// disappears. Add roles as they are created, then wait.
type lagWatch struct {
	f    *fixture
	mu   sync.Mutex
	due  map[string]time.Time
	gone map[string]time.Time
	err  error
	stop chan struct{}
	done chan struct{}
}

func (f *fixture) watchLags(t *testing.T) *lagWatch {
	w := &lagWatch{f: f, due: map[string]time.Time{}, gone: map[string]time.Time{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go w.poll()
	t.Cleanup(w.close)
	return w
}

// add watches the role, due to disappear at due. A nil watcher ignores it.
func (w *lagWatch) add(user string, due time.Time) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.due[user] = due
}

func (w *lagWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *lagWatch) poll() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		case <-time.After(25 * time.Millisecond):
		}
		w.mu.Lock()
		var names []string
		for u := range w.due {
			if _, ok := w.gone[u]; !ok {
				names = append(names, u)
			}
		}
		w.mu.Unlock()
		if len(names) == 0 {
			continue
		}
		present, err := w.f.present(names)
		now := time.Now()
		w.mu.Lock()
		if err != nil {
			w.err = err
		}
		for _, u := range names {
			if err == nil && !present[u] {
				w.gone[u] = now
			}
		}
		w.mu.Unlock()
	}
}

// wait waits until every added role is gone (or fails t after within)
// and returns the statistics of gone - due.
func (w *lagWatch) wait(t *testing.T, within time.Duration) lagStats {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		w.mu.Lock()
		left, err := len(w.due)-len(w.gone), w.err
		w.mu.Unlock()
		if err != nil {
			t.Fatalf("query pg_roles: %v", err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d roles still exist %v later", left, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.close()
	var (
		lags        []time.Duration
		first, last time.Time
		end         time.Time
	)
	for u, d := range w.due {
		g := w.gone[u]
		lags = append(lags, g.Sub(d))
		if first.IsZero() || d.Before(first) {
			first = d
		}
		if d.After(last) {
			last = d
		}
		if g.After(end) {
			end = g
		}
	}
	slices.Sort(lags)
	q := func(p float64) time.Duration { return lags[min(len(lags)-1, int(p*float64(len(lags))))] }
	return lagStats{n: len(lags), window: last.Sub(first), p50: q(0.50), p95: q(0.95), p99: q(0.99), max: lags[len(lags)-1], total: end.Sub(first)}
}

// present returns which of the roles exist. The query is planned for
// the names at hand (pgx.QueryExecModeExec: no prepared statement): as a
// prepared statement its generic plan may compare every role with every
// name (PostgreSQL picks it by the size of pg_authid): 16-23 ms per poll
// with 2,000 names, every 25 ms, on the machine whose revocations are
// being measured. Planned each time it takes about 3 ms.
func (f *fixture) present(names []string) (map[string]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := f.super.Query(ctx, "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)", pgx.QueryExecModeExec, names)
	if err != nil {
		return nil, err
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(found))
	for _, s := range found {
		out[s] = true
	}
	return out, nil
}

func (f *fixture) pgVersion(t *testing.T) string {
	v, err := f.pg.Psql("SHOW server_version")
	if err != nil {
		t.Fatal(err)
	}
	return v
}
