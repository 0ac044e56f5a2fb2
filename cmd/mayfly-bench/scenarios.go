package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	leaseredis "github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// Goals.
const (
	goalRedisVsMemory = 70.0 // % of the memory-store issuance rate
	goalRedisVsVault  = 3.0  // × Vault auth/token/create
	goalLagP99Burst   = 1000.0
	goalLagMaxBurst   = 2000.0
	goalLagP99Sustain = 2000.0
	goalRestartReady  = 5000.0 // ms
	goalP99Rise       = 2.0    // ms
	goalNewConnRate   = 700.0  // issues/s
	goalBytesPerLease = 500.0
)

// revocationGrace is how long after the last lease fell due the bench
// waits for the revokers to end them all: at least 30s, the window, and
// the time to revoke n at 1,000/s.
func revocationGrace(n int, window time.Duration) time.Duration {
	return max(30*time.Second, window, time.Duration(n)*time.Millisecond)
}

// issuance measures closed-loop issuance against a fresh broker of kind.
func issuance(ctx context.Context, e *env, kind storeKind) (loadResult, error) {
	rb, err := e.startBroker(ctx, brokerSpec{kind: kind, prefix: e.newPrefix()})
	if err != nil {
		return loadResult{}, err
	}
	defer rb.close()
	cs, err := e.dialCallers(ctx, rb.addr, e.cfg.callers)
	if err != nil {
		return loadResult{}, err
	}
	defer cs.close()
	calls := make([]callFunc, len(cs.clients))
	for i, c := range cs.clients {
		calls[i] = issueCall(c)
	}
	return closedLoop(ctx, e, calls, e.cfg.warmup, e.cfg.duration, 0)
}

func latencyNote(r loadResult) string {
	s := fmt.Sprintf("p50 %.2f ms, p99 %.2f ms; CPU/op: %.0f µs this process (clients+broker), %.0f µs Redis",
		ms(r.p50()), ms(r.p99()), cpuPer(r.cpu.proc, len(r.lat)), cpuPer(r.cpu.redis, len(r.lat)))
	if n := r.cpu.noise(); n != "" {
		s += "; " + n
	}
	return s
}

// scenarioA: issuance rate and latency, memory store vs Redis store, and
// Vault's auth/token/create at the same concurrency.
func scenarioA(ctx context.Context, e *env, rep *report) error {
	e.logf("a: issuance, %d callers, %s each: memory store", e.cfg.callers, e.cfg.duration)
	mem, err := issuance(ctx, e, memoryStore)
	if err != nil {
		return fmt.Errorf("memory store: %w", err)
	}
	e.logf("a: issuance, Redis store (leases and access state in Redis, as mayflyd serve)")
	red, err := issuance(ctx, e, redisStore)
	if err != nil {
		return fmt.Errorf("Redis store: %w", err)
	}
	e.capacity = red.rate()
	e.logf("a: issuance, Redis lease store with access state in memory")
	leasesOnly, err := issuance(ctx, e, redisLeasesOnly)
	if err != nil {
		return fmt.Errorf("Redis lease store only: %w", err)
	}
	e.logf("a: Vault auth/token/create, %d callers", e.cfg.callers)
	vr, vaultErr := vaultTokenCreate(ctx, e)
	for _, x := range []struct {
		what string
		r    loadResult
	}{{"memory store", mem}, {"Redis store", red}, {"Redis lease store only", leasesOnly}, {"Vault auth/token/create", vr}} {
		if x.r.failed != nil {
			rep.fail("a", fmt.Errorf("%s: %w", x.what, x.r.failed))
		}
	}

	rep.info("a", "issuance rate, memory store", mem.rate(), "/s", latencyNote(mem))
	rep.last().noise(mem.cpu)
	rep.info("a", "issuance p50, memory store", ms(mem.p50()), "ms", "")
	rep.info("a", "issuance p99, memory store", ms(mem.p99()), "ms", "")
	rep.info("a", "issuance rate, Redis store", red.rate(), "/s", latencyNote(red))
	rep.last().noise(red.cpu)
	rep.info("a", "issuance p50, Redis store", ms(red.p50()), "ms", "")
	rep.info("a", "issuance p99, Redis store", ms(red.p99()), "ms", "")
	rep.goal("a", "Redis-store rate / memory-store rate", 100*red.rate()/mem.rate(), "%", ">=", goalRedisVsMemory,
		"leases and access state in Redis, as mayflyd serve runs with leases.store: redis")
	rep.last().noise(mem.cpu, red.cpu)
	rep.info("a", "issuance rate, Redis leases + access in memory", leasesOnly.rate(), "/s",
		fmt.Sprintf("%.0f %% of memory store; %s", 100*leasesOnly.rate()/mem.rate(), latencyNote(leasesOnly)))
	rep.last().noise(leasesOnly.cpu)
	if vaultErr != nil {
		rep.fail("a", fmt.Errorf("Vault auth/token/create: %w", vaultErr))
		return nil
	}
	vnote := fmt.Sprintf("dev server, in-memory storage, plain HTTP; p50 %.2f ms, p99 %.2f ms; CPU/op: %.0f µs Vault, %.0f µs client",
		ms(vr.p50()), ms(vr.p99()), cpuPer(vr.cpu.extra, len(vr.lat)), cpuPer(vr.cpu.proc, len(vr.lat)))
	if n := vr.cpu.noise(); n != "" {
		vnote += "; " + n
	}
	rep.info("a", "Vault auth/token/create rate", vr.rate(), "/s", vnote)
	rep.last().noise(vr.cpu)
	rep.info("a", "Vault auth/token/create p50", ms(vr.p50()), "ms", "")
	rep.info("a", "Vault auth/token/create p99", ms(vr.p99()), "ms", "")
	rep.goal("a", "Redis-store rate / Vault token create rate", red.rate()/vr.rate(), "x", ">=", goalRedisVsVault, "")
	rep.last().noise(red.cpu, vr.cpu)
	return nil
}

// vaultTokenCreate measures auth/token/create on a Vault dev server at the
// callers' concurrency: child tokens of the root token, policy default,
// TTL 15m (the bench entitlement's TTL).
func vaultTokenCreate(ctx context.Context, e *env) (loadResult, error) {
	v, err := testenv.NewVaultServer(func(format string, args ...any) { e.logf("  "+format, args...) })
	if err != nil {
		return loadResult{}, err
	}
	defer v.Close()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	if tr, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		// One kept-alive connection per caller, as each issuance caller has.
		tr.MaxIdleConnsPerHost = e.cfg.callers
		tr.MaxIdleConns = e.cfg.callers
	}
	client, err := vaultapi.NewClient(cfg)
	if err != nil {
		return loadResult{}, err
	}
	client.SetToken(v.RootToken)
	client.ClearNamespace()
	req := &vaultapi.TokenCreateRequest{Policies: []string{"default"}, TTL: "15m"}
	call := func(ctx context.Context) error {
		_, err := client.Auth().Token().CreateWithContext(ctx, req)
		return err
	}
	calls := make([]callFunc, e.cfg.callers)
	for i := range calls {
		calls[i] = call
	}
	return closedLoop(ctx, e, calls, e.cfg.warmup, e.cfg.duration, v.Pid())
}

// scenarioB: revocation lag when leases/10 leases fall due within one
// window, with 1 and with 2 replicas sharing Redis.
func scenarioB(ctx context.Context, e *env, rep *report) error {
	n, window := e.cfg.burstLeases(), e.cfg.windowB()
	for _, replicas := range []int{1, 2} {
		e.logf("b: %d leases due within %s, %d replica(s)", n, window, replicas)
		rr, err := revokeWindow(ctx, e, replicas, n, window)
		if err != nil {
			return fmt.Errorf("%d replica(s): %w", replicas, err)
		}
		name := fmt.Sprintf("%d replica", replicas)
		if replicas > 1 {
			name += "s"
		}
		rep.info("b", "revocation lag p50, "+name, ms(rr.st.p50), "ms", "")
		rep.goal("b", "revocation lag p99, "+name, ms(rr.st.p99), "ms", "<=", goalLagP99Burst, rr.note)
		rep.last().Ended = &rr.end
		rep.last().noise(rr.use)
		rep.goal("b", "revocation lag max, "+name, ms(rr.st.max), "ms", "<=", goalLagMaxBurst, "")
		rep.last().noise(rr.use)
		if err := e.cleanup(ctx); err != nil {
			return err
		}
	}
	return nil
}

// revokeWindow starts replicas brokers on one Redis prefix, writes n active
// leases whose expiries are spread evenly over window (starting once they
// are all written), and waits for the brokers' revokers to end them.
func revokeWindow(ctx context.Context, e *env, replicas, n int, window time.Duration) (revResult, error) {
	prefix := e.newPrefix()
	rec := newLagRecorder(n)
	var brokers []*runningBroker
	defer func() {
		for _, rb := range brokers {
			_ = rb.close()
		}
	}()
	for range replicas {
		rb, err := e.startBroker(ctx, brokerSpec{kind: redisStore, prefix: prefix, rec: rec})
		if err != nil {
			return revResult{}, err
		}
		brokers = append(brokers, rb)
	}
	pol, iss := brokers[0].b.Policy(), brokers[0].b.JWT()
	rc := e.newRedisClient()
	defer rc.Close()
	store, err := leaseredis.New(rc, leaseredis.Options{Prefix: prefix})
	if err != nil {
		return revResult{}, err
	}
	est, err := e.estimateSeed(ctx, n, pol, iss)
	if err != nil {
		return revResult{}, err
	}
	t0 := time.Now().Add(est)
	dueAt := func(i int) time.Time { return t0.Add(time.Duration(float64(window) * float64(i) / float64(n))) }
	res, err := seed(ctx, store, seedPlan{n: n, dueAt: dueAt, pol: pol, iss: iss, sample: 2000, subjects: e.cfg.subjects()})
	if err != nil {
		return revResult{}, fmt.Errorf("write leases: %w", err)
	}
	e.noteSeed(n, res)
	e.logf("  %d leases written in %s (%.0f/s); first due %s", n, res.elapsed.Round(10*time.Millisecond),
		float64(n)/res.elapsed.Seconds(), t0.Format("15:04:05.000"))
	return awaitRevocations(ctx, e, rec, store, res, t0, window)
}

// awaitRevocations waits until every seeded lease is revoked (or a grace
// period after the window ended), checks a sample of records, and
// summarises the lags.
// revResult is what awaitRevocations found.
type revResult struct {
	st   lagStats
	end  ended
	note string
	use  cpuUse // from the end of writing until the last revocation
}

func awaitRevocations(ctx context.Context, e *env, rec *lagRecorder, store *leaseredis.Store, res seedResult, t0 time.Time, window time.Duration) (revResult, error) {
	grace := revocationGrace(rec.want, window)
	snap0 := e.snap(ctx, 0)
	stop := make(chan struct{})
	progressEvery(e, 30*time.Second, stop, func() string { return fmt.Sprintf("%d of %d revoked", rec.count(), rec.want) })
	werr := rec.wait(ctx, t0.Add(window+grace))
	close(stop)
	if ctx.Err() != nil {
		return revResult{}, ctx.Err()
	}
	use := snap0.until(e.snap(ctx, 0))
	st := rec.stats()
	if st.n < rec.want {
		// Not revoked within the grace period: at least that late.
		st.p99, st.max = lowerBoundStats(rec, grace)
	}
	vr, verr := verify(ctx, store, res.ids)
	if verr != nil {
		return revResult{}, verr
	}
	end := ended{Leases: rec.want, Revoked: st.n, Irrevocable: int(rec.irrevocable.Load()), Retried: int(rec.retried.Load()),
		Sampled: vr.read, SampledRevoked: vr.revoked}
	rate := float64(st.n) / max(st.last.Sub(t0).Seconds(), 1e-3)
	note := fmt.Sprintf("%d leases due over %s, %d revoked (%.0f/s), %d irrevocable, %d retried; %s",
		rec.want, window, st.n, rate, end.Irrevocable, end.Retried, vr)
	if res.late > 0 {
		note += fmt.Sprintf("; %d leases were written after their due time", res.late)
	}
	note += fmt.Sprintf("; CPU/revocation: %.0f µs brokers, %.0f µs Redis", cpuPer(use.proc, st.n), cpuPer(use.redis, st.n))
	if n := use.noise(); n != "" {
		note += "; " + n
	}
	if st.neg > 0 {
		return revResult{}, fmt.Errorf("%d leases revoked before they were due", st.neg)
	}
	if !end.all() {
		note += "; " + errNotAllRevoked.Error()
		if werr != nil {
			note += ": " + werr.Error() + fmt.Sprintf(" (those count as %s late)", grace)
		}
	}
	return revResult{st: st, end: end, note: note, use: use}, nil
}

// lowerBoundStats is p99 and max counting every lease not yet revoked as
// grace late.
func lowerBoundStats(rec *lagRecorder, grace time.Duration) (p99, mx time.Duration) {
	rec.mu.Lock()
	lags := append([]time.Duration(nil), rec.lags...)
	rec.mu.Unlock()
	for len(lags) < rec.want {
		lags = append(lags, grace)
	}
	slices.Sort(lags)
	return pct(lags, 0.99), lags[len(lags)-1]
}

// scenarioCF: c. leases active leases fall due over 5 minutes, handled by
// a broker restarted with all of them in Redis; f. Redis memory per
// active lease, measured once they are written.
func scenarioCF(ctx context.Context, e *env, rep *report) error {
	doC, doF := e.cfg.has("c"), e.cfg.has("f")
	n, window := e.cfg.leases, e.cfg.windowC()
	prefix := e.newPrefix()
	rec := newLagRecorder(n)
	spec := brokerSpec{kind: redisStore, prefix: prefix, rec: rec}
	// The broker before the restart: it has issued (scripts loaded, access
	// state written) and runs while the leases are written.
	first, err := e.startBroker(ctx, spec)
	if err != nil {
		return err
	}
	firstOpen := true
	defer func() {
		if firstOpen {
			_ = first.close()
		}
	}()
	if err := issueOnce(ctx, e, first.addr); err != nil {
		return err
	}
	pol, iss := first.b.Policy(), first.b.JWT()
	rc := e.newRedisClient()
	defer rc.Close()
	store, err := leaseredis.New(rc, leaseredis.Options{Prefix: prefix})
	if err != nil {
		return err
	}
	// Warm the seeding client and the store's scripts outside the memory
	// measurement.
	if err := rc.Ping(ctx).Err(); err != nil {
		return err
	}

	est, err := e.estimateSeed(ctx, n, pol, iss)
	if err != nil {
		return err
	}
	// Leave time after writing for the memory reading and the restart.
	t0 := time.Now().Add(est + 5*time.Second)
	dueAt := func(i int) time.Time { return t0.Add(time.Duration(float64(window) * float64(i) / float64(n))) }
	if !doC {
		far := time.Now().Add(45 * time.Minute)
		dueAt = func(int) time.Time { return far }
	}
	before, err := e.memoryUse(ctx)
	if err != nil {
		return err
	}
	if doC {
		e.logf("c: writing %d active leases due over %s from %s (estimated %s to write)", n, window, t0.Format("15:04:05"), est.Round(time.Second))
	} else {
		e.logf("f: writing %d active leases", n)
	}
	res, err := seed(ctx, store, seedPlan{n: n, dueAt: dueAt, pol: pol, iss: iss, sample: 2000, subjects: e.cfg.subjects()})
	if err != nil {
		return fmt.Errorf("write leases: %w", err)
	}
	e.noteSeed(n, res)
	e.logf("  %d leases written in %s (%.0f/s)", n, res.elapsed.Round(10*time.Millisecond), float64(n)/res.elapsed.Seconds())
	after, err := e.memoryUse(ctx)
	if err != nil {
		return err
	}
	if doF {
		per := float64(after.used-before.used-(after.clients-before.clients)) / float64(n)
		note := fmt.Sprintf("INFO used_memory +%.1f MiB (client buffers excluded) for %d active leases held by %d workloads, %d entitlements, standing grants",
			float64(after.used-before.used-(after.clients-before.clients))/(1<<20), n, e.cfg.subjects(), len(seedEntitlements))
		if revoked := rec.count(); revoked > 0 {
			note += fmt.Sprintf("; %d were already revoked", revoked)
		}
		rep.goal("f", "Redis memory per active lease", per, "B", "<=", goalBytesPerLease, note)
	}
	if !doC {
		return nil
	}

	// Restart: stop the broker as on SIGTERM, start a new one on the same
	// Redis, time it until health says SERVING and an issuance succeeds.
	stopStart := time.Now()
	firstOpen = false
	if err := first.close(); err != nil {
		return fmt.Errorf("stop broker: %w", err)
	}
	stopTook := time.Since(stopStart)
	e.logf("c: restarting the broker with %d active leases in Redis", n)
	restartStart := time.Now()
	second, err := e.startBroker(ctx, spec)
	if err != nil {
		return err
	}
	defer second.close()
	serving, ready, err := waitReady(ctx, e, second.addr, restartStart)
	if err != nil {
		return fmt.Errorf("restarted broker: %w", err)
	}
	rep.goal("c", fmt.Sprintf("restart to ready, %d active leases", n), ms(ready), "ms", "<=", goalRestartReady,
		fmt.Sprintf("broker.New to health SERVING %.1f ms, to first issuance %.1f ms (in-process: no exec); graceful stop before it took %.1f ms",
			ms(serving), ms(ready), ms(stopTook)))

	if d := time.Until(t0); d > 0 {
		e.logf("c: first lease due in %s; the window lasts %s", d.Round(time.Second), window)
	}
	rr, err := awaitRevocations(ctx, e, rec, store, res, t0, window)
	if err != nil {
		return err
	}
	rep.info("c", "revocation lag p50, sustained expiries", ms(rr.st.p50), "ms", "")
	rep.goal("c", "revocation lag p99, sustained expiries", ms(rr.st.p99), "ms", "<=", goalLagP99Sustain, rr.note)
	rep.last().Ended = &rr.end
	rep.last().noise(rr.use)
	rep.info("c", "revocation lag max, sustained expiries", ms(rr.st.max), "ms", "")
	return nil
}

// memUse is Redis memory as INFO reports it.
type memUse struct{ used, clients int64 }

// memoryUse reads used_memory and the client buffers (mem_clients_normal)
// once Redis has freed what it was freeing.
func (e *env) memoryUse(ctx context.Context) (memUse, error) {
	for {
		info, err := e.info(ctx, "memory")
		if err != nil {
			return memUse{}, err
		}
		if p := info["lazyfree_pending_objects"]; p == "0" || p == "" {
			used, err1 := strconv.ParseInt(info["used_memory"], 10, 64)
			clients, err2 := strconv.ParseInt(info["mem_clients_normal"], 10, 64)
			if err := errors.Join(err1, err2); err != nil {
				return memUse{}, fmt.Errorf("INFO memory: %w", err)
			}
			return memUse{used: used, clients: clients}, nil
		}
		if !sleepUntil(ctx, time.Now().Add(20*time.Millisecond)) {
			return memUse{}, ctx.Err()
		}
	}
}

// issueOnce issues through a new connection as caller 0.
func issueOnce(ctx context.Context, e *env, addr string) error {
	cc, err := e.dialCaller(addr, 0)
	if err != nil {
		return err
	}
	defer cc.Close()
	_, err = mayflyv1.NewCredentialServiceClient(cc).IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: issueEntitlement})
	return err
}

// waitReady polls a new broker's gRPC health until SERVING, then issues
// until an issuance succeeds; it returns both times from start.
func waitReady(ctx context.Context, e *env, addr string, start time.Time) (serving, ready time.Duration, err error) {
	cc, err := e.dialCaller(addr, 0)
	if err != nil {
		return 0, 0, err
	}
	defer cc.Close()
	health := healthpb.NewHealthClient(cc)
	creds := mayflyv1.NewCredentialServiceClient(cc)
	deadline := start.Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := health.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			serving = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("not SERVING after a minute: %v %v", resp.GetStatus(), err)
		}
		if !sleepUntil(ctx, time.Now().Add(2*time.Millisecond)) {
			return 0, 0, ctx.Err()
		}
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := creds.IssueCredential(cctx, &mayflyv1.IssueCredentialRequest{Entitlement: issueEntitlement})
		cancel()
		if err == nil {
			return serving, time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("no issuance succeeded within a minute: %w", err)
		}
		if !sleepUntil(ctx, time.Now().Add(2*time.Millisecond)) {
			return 0, 0, ctx.Err()
		}
	}
}

// scenarioD: issuance p99 at a fixed offered load while a burst of
// leases/10 expiries is being revoked, against the same load without it.
func scenarioD(ctx context.Context, e *env, rep *report) error {
	n := e.cfg.burstLeases()
	prefix := e.newPrefix()
	rec := newLagRecorder(n)
	rb, err := e.startBroker(ctx, brokerSpec{kind: redisStore, prefix: prefix, rec: rec})
	if err != nil {
		return err
	}
	defer rb.close()
	cs, err := e.dialCallers(ctx, rb.addr, e.cfg.callers)
	if err != nil {
		return err
	}
	defer cs.close()
	calls := make([]callFunc, len(cs.clients))
	for i, c := range cs.clients {
		calls[i] = issueCall(c)
	}
	// The burst's leases are written first, all due at one instant after
	// the capacity measurement and the baseline, so that both phases see
	// the same Redis. The burst is planned with room to spare: writing may
	// be slower than estimated on a busy machine.
	rc := e.newRedisClient()
	defer rc.Close()
	store, err := leaseredis.New(rc, leaseredis.Options{Prefix: prefix})
	if err != nil {
		return err
	}
	pol, iss := rb.b.Policy(), rb.b.JWT()
	est, err := e.estimateSeed(ctx, n, pol, iss)
	if err != nil {
		return err
	}
	capDur := min(e.cfg.duration, 5*time.Second)
	tBurst := time.Now().Add(2*est + 2*e.cfg.warmup + capDur + e.cfg.duration + 2*time.Second)
	e.logf("d: writing %d leases, all due at %s", n, tBurst.Format("15:04:05.000"))
	res, err := seed(ctx, store, seedPlan{n: n, dueAt: func(int) time.Time { return tBurst }, pol: pol, iss: iss, sample: 2000, subjects: e.cfg.subjects()})
	if err != nil {
		return fmt.Errorf("write leases: %w", err)
	}
	e.noteSeed(n, res)

	// The offered load is a share of the capacity measured now, on this
	// broker: the machine's other load changes over a run.
	e.logf("d: measuring the closed-loop capacity for %s", capDur)
	capRun, err := closedLoop(ctx, e, calls, e.cfg.warmup, capDur, 0)
	if err != nil {
		return err
	}
	if capRun.failed != nil {
		rep.fail("d", fmt.Errorf("closed-loop capacity: %w", capRun.failed))
	}
	capacity := capRun.rate()
	rate := capacity * e.cfg.load / 100
	baseDur := min(e.cfg.duration, time.Until(tBurst)-e.cfg.warmup-500*time.Millisecond)
	if baseDur < 100*time.Millisecond {
		return fmt.Errorf("writing the burst took too long (%s) to leave room for the baseline", res.elapsed)
	}
	e.logf("d: baseline: %.0f issues/s offered (%.0f %% of %.0f/s) for %s", rate, e.cfg.load, capacity, baseDur.Round(time.Millisecond))
	var baseFail, burstFail failures
	before, err := baseline(ctx, e, calls, rate, baseDur, &baseFail)
	if err != nil {
		return fmt.Errorf("baseline before the burst: %w", err)
	}

	e.logf("d: the same load while %d expiries are revoked", n)
	grace := revocationGrace(n, e.cfg.duration)
	burstSnap := e.snapAt(ctx, tBurst)
	burst, err := openLoop(ctx, calls, rate, tBurst.Add(-e.cfg.warmup), rec.done, e.cfg.warmup+grace, &burstFail)
	if err != nil {
		return fmt.Errorf("during the burst: %w", err)
	}
	burstUse := (<-burstSnap).until(e.snap(ctx, 0))
	st := rec.stats()
	if st.n < n {
		return fmt.Errorf("only %d of %d burst leases revoked within %s", st.n, n, grace)
	}
	tDone := st.last
	burstLat := latenciesIn(burst, tBurst, tDone)
	if len(burstLat) == 0 {
		return fmt.Errorf("no issuance while the burst was revoked (it took %s)", tDone.Sub(tBurst))
	}

	// A second baseline once the burst is over: a busy machine can spoil
	// either, and the rise is measured from the lower (the conservative
	// choice: noise can make it look larger, never smaller).
	e.logf("d: baseline again after the burst, %s", baseDur.Round(time.Millisecond))
	after, err := baseline(ctx, e, calls, rate, baseDur, &baseFail)
	if err != nil {
		return fmt.Errorf("baseline after the burst: %w", err)
	}
	vr, err := verify(ctx, store, res.ids)
	if err != nil {
		return err
	}
	base := before
	if pct(after.lat, 0.99) < pct(before.lat, 0.99) {
		base = after
	}
	p99Base, p99Burst := ms(pct(base.lat, 0.99)), ms(pct(burstLat, 0.99))
	baseNote := fmt.Sprintf("open loop at %.0f/s (%.0f %% of the %.0f/s closed-loop capacity measured just before); p99 %.2f ms before the burst, %.2f ms after it (the lower counts); %d and %d calls, p50 %.2f and %.2f ms",
		rate, e.cfg.load, capacity, ms(pct(before.lat, 0.99)), ms(pct(after.lat, 0.99)), len(before.lat), len(after.lat),
		ms(pct(before.lat, 0.5)), ms(pct(after.lat, 0.5)))
	if pct(base.lat, 0.5) >= capRun.p50() {
		// Below capacity the median call does not queue; at or above it
		// the median waits as long as in the saturated closed loop.
		baseNote += fmt.Sprintf("; OVERLOADED: p50 at or above the closed loop's %.2f ms, the machine delivered less than the offered load", ms(capRun.p50()))
	}
	rep.info("d", "issuance p99 without burst", p99Base, "ms", baseNote)
	rep.last().noise(base.use)
	rep.info("d", "issuance p99 during burst", p99Burst, "ms",
		fmt.Sprintf("%d calls while %d expiries were revoked in %s (%.0f/s, lag p99 %.0f ms), p50 %.2f ms; %s",
			len(burstLat), n, tDone.Sub(tBurst).Round(time.Millisecond), float64(n)/max(tDone.Sub(tBurst).Seconds(), 1e-3),
			ms(st.p99), ms(pct(burstLat, 0.5)), vr))
	rep.last().Ended = &ended{Leases: n, Revoked: st.n, Irrevocable: int(rec.irrevocable.Load()), Retried: int(rec.retried.Load()),
		Sampled: vr.read, SampledRevoked: vr.revoked}
	rep.last().noise(burstUse)
	rep.goal("d", "issuance p99 rise during burst", p99Burst-p99Base, "ms", "<=", goalP99Rise,
		fmt.Sprintf("other processes kept %.1f (baseline) and %.1f (burst) cores busy", base.use.others(), burstUse.others()))
	rep.last().noise(base.use, burstUse)
	if err := baseFail.err(); err != nil {
		rep.fail("d", fmt.Errorf("issuance without the burst: %w", err))
	}
	if err := burstFail.err(); err != nil {
		rep.fail("d", fmt.Errorf("issuance while the burst was revoked: %w", err))
	}
	return nil
}

// baselineRun is an open-loop run without a burst.
type baselineRun struct {
	lat []time.Duration // sorted
	use cpuUse
}

// baseline offers rate for warmup+d and returns the latencies of the calls
// that arrived in the last d.
func baseline(ctx context.Context, e *env, calls []callFunc, rate float64, d time.Duration, fail *failures) (baselineRun, error) {
	start := time.Now().Add(e.cfg.warmup)
	snap := e.snapAt(ctx, start)
	samples, err := openLoop(ctx, calls, rate, time.Now(), nil, e.cfg.warmup+d, fail)
	if err != nil {
		return baselineRun{}, err
	}
	use := (<-snap).until(e.snap(ctx, 0))
	lat := latenciesIn(samples, start, start.Add(d))
	if len(lat) == 0 {
		return baselineRun{}, errors.New("no issuance in the measured window")
	}
	return baselineRun{lat: lat, use: use}, nil
}

// scenarioE: issuance with a new mTLS connection per request.
func scenarioE(ctx context.Context, e *env, rep *report) error {
	rb, err := e.startBroker(ctx, brokerSpec{kind: redisStore, prefix: e.newPrefix()})
	if err != nil {
		return err
	}
	defer rb.close()
	calls, err := newConnCalls(e, rb.addr, e.cfg.callers)
	if err != nil {
		return err
	}
	e.logf("e: issuance with a new mTLS connection per request, %d callers, %s", e.cfg.callers, e.cfg.duration)
	r, err := closedLoop(ctx, e, calls, e.cfg.warmup, e.cfg.duration, 0)
	if err != nil {
		return err
	}
	rep.goal("e", "issuance rate, new mTLS connection per request", r.rate(), "/s", ">=", goalNewConnRate,
		"Redis store; full TLS 1.3 handshake (ECDSA P-256 SVIDs, no resumption) + issuance + close; "+latencyNote(r))
	rep.last().noise(r.cpu)
	if r.failed != nil {
		rep.fail("e", r.failed)
	}
	rep.info("e", "issuance p50, new connection per request", ms(r.p50()), "ms", "")
	rep.info("e", "issuance p99, new connection per request", ms(r.p99()), "ms", "")
	return nil
}
