package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mayflyhq/mayfly/broker"
	"github.com/mayflyhq/mayfly/broker/access"
	accessredis "github.com/mayflyhq/mayfly/broker/access/redis"
	"github.com/mayflyhq/mayfly/broker/devca"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
	leaseredis "github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/broker/revoker"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

const trustDomain = "mayfly.test"

var (
	td       = spiffeid.RequireTrustDomainFromString(trustDomain)
	brokerID = spiffeid.RequireFromString("spiffe://" + trustDomain + "/mayfly")
)

// Entitlements of the bench policy: callers issue issueEntitlement; the
// leases written straight into the store (b, c, d, f) spread over
// seedEntitlements, held by cfg.subjects() workloads.
const issueEntitlement = "bench-issue"

// leasesPerSubject is how many of the -leases active leases one workload
// holds on average (10,000 workloads at full scale).
const leasesPerSubject = 100

var seedEntitlements = []string{"svc-orders-read", "svc-payments-write", "svc-billing-read", "svc-inventory-read"}

// benchPolicy grants every workload of the trust domain the bench
// entitlements by a standing grant (one segment after /workload/).
var benchPolicy = func() string {
	var b strings.Builder
	b.WriteString(`version: 1
trust_domains: [mayfly.test]
groups:
  platform: ["spiffe://mayfly.test/admin/*"]
admins: ["group:platform"]
entitlements:
`)
	for _, name := range append([]string{issueEntitlement}, seedEntitlements...) {
		fmt.Fprintf(&b, `  %s:
    description: mayfly-bench load
    owner: group:platform
    issuer: jwt
    jwt: { audience: https://%s.mayfly.test, scopes: [bench] }
    ttl: 15m
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/*
        purpose: load test
        until: 2099-12-31
`, name, name)
	}
	return b.String()
}()

// env is what every scenario shares: Redis, the dev CA, the policy file,
// the callers' SVIDs, and what earlier scenarios learned.
type env struct {
	cfg      config
	progress io.Writer
	logger   *slog.Logger

	dir        string
	policyPath string
	ca         *devca.CA
	redisSrv   *testenv.RedisServer // nil with -redis
	redisAddr  string
	admin      *goredis.Client // INFO, cleanup
	runID      string
	prefixes   atomic.Int64

	mu        sync.Mutex
	callerTLS []*tls.Config

	// seedRate is the last measured rate of writing leases (leases/s).
	seedRate float64
	// capacity is the Redis-backed closed-loop issuance rate (issues/s),
	// once measured.
	capacity float64
}

func newEnv(ctx context.Context, cfg config, progress io.Writer) (e *env, err error) {
	e = &env{cfg: cfg, progress: progress}
	e.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if cfg.verbose {
		e.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.dir, err = os.MkdirTemp("", "mayfly-bench-"); err != nil {
		return nil, err
	}
	if e.ca, err = devca.Open(filepath.Join(e.dir, "ca"), td); err != nil {
		return nil, err
	}
	e.policyPath = filepath.Join(e.dir, "policy.yaml")
	if err = os.WriteFile(e.policyPath, []byte(benchPolicy), 0o600); err != nil {
		return nil, err
	}
	e.runID = strings.ToLower(rand.Text()[:6])
	e.redisAddr = cfg.redisAddr
	if e.redisAddr == "" {
		e.logf("starting redis-server")
		if e.redisSrv, err = testenv.NewRedisServer(testenv.RedisConfig{AppendOnly: cfg.aof}); err != nil {
			return nil, err
		}
		e.redisAddr = e.redisSrv.Addr()
	}
	e.admin = goredis.NewClient(&goredis.Options{Addr: e.redisAddr, ContextTimeoutEnabled: true, ReadTimeout: time.Minute})
	if err = e.admin.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", e.redisAddr, err)
	}
	return e, nil
}

func (e *env) close() {
	if e.admin != nil {
		_ = e.admin.Close()
	}
	if e.redisSrv != nil {
		_ = e.redisSrv.Close()
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// logf reports progress on stderr (never per call).
func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.progress, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// newPrefix returns a key prefix of its own for one broker group: no
// prefix of this run is a prefix of another, and all start with the run's.
func (e *env) newPrefix() string {
	return fmt.Sprintf("%s%03d", e.runPrefix(), e.prefixes.Add(1))
}

func (e *env) runPrefix() string { return "mfbench-" + e.runID + "-" }

// cleanup deletes every key this run wrote and waits until Redis has
// freed them, so that the next scenario (and a memory measurement)
// starts from the same Redis.
func (e *env) cleanup(ctx context.Context) error {
	return e.deleteKeys(ctx, e.runPrefix())
}

func (e *env) deleteKeys(ctx context.Context, prefix string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	if e.redisSrv != nil && prefix == e.runPrefix() {
		// Our own server holds nothing else.
		if err := e.admin.FlushAllAsync(ctx).Err(); err != nil {
			return err
		}
	} else {
		var cursor uint64
		for {
			keys, next, err := e.admin.Scan(ctx, cursor, prefix+"*", 5000).Result()
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				if err := e.admin.Unlink(ctx, keys...).Err(); err != nil {
					return err
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	// UNLINK and FLUSHALL ASYNC free in the background.
	for {
		info, err := e.info(ctx, "memory")
		if err != nil {
			return err
		}
		if info["lazyfree_pending_objects"] == "0" || info["lazyfree_pending_objects"] == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// info returns one INFO section as fields.
func (e *env) info(ctx context.Context, section string) (map[string]string, error) {
	s, err := e.admin.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

// redisCPU is Redis's user+system CPU time so far.
func (e *env) redisCPU(ctx context.Context) time.Duration {
	info, err := e.info(ctx, "cpu")
	if err != nil {
		return 0
	}
	var total float64
	for _, k := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, _ := strconv.ParseFloat(info[k], 64)
		total += v
	}
	return time.Duration(total * float64(time.Second))
}

// storeKind says where a broker keeps its state.
type storeKind int

const (
	// memoryStore: leases and access state in the broker's memory.
	memoryStore storeKind = iota
	// redisStore: leases, access state and the JWT issuer's shared public
	// keys in Redis, as `mayflyd serve` wires a broker whose leases.store
	// is redis (audit and quota off, their defaults).
	redisStore
	// redisLeasesOnly: leases in Redis, access state in memory.
	redisLeasesOnly
)

func (k storeKind) String() string {
	return [...]string{"memory", "redis", "redis-leases-only"}[k]
}

// brokerSpec describes one broker replica.
type brokerSpec struct {
	kind   storeKind
	prefix string       // Redis key prefix (a group of replicas shares it)
	rec    *lagRecorder // receives the revoker's outcomes; may be nil
}

// runningBroker is a broker serving in this process.
type runningBroker struct {
	b     *broker.Broker
	addr  string
	store *observedStore // what the broker was given
	redis *goredis.Client
	stop  context.CancelFunc
	done  chan error
}

// startBroker builds and runs a broker; it is serving (or about to, the
// listener is open) when this returns.
func (e *env) startBroker(ctx context.Context, spec brokerSpec) (*runningBroker, error) {
	rb := &runningBroker{done: make(chan error, 1)}
	var inner lease.Store
	var accessStore access.Store
	jwtCfg := jwt.Config{IssuerURL: "https://broker.mayfly.test"}
	switch spec.kind {
	case memoryStore:
		inner = memory.New()
	case redisStore, redisLeasesOnly:
		rb.redis = e.newRedisClient()
		s, err := leaseredis.New(rb.redis, leaseredis.Options{Prefix: spec.prefix})
		if err != nil {
			_ = rb.redis.Close()
			return nil, err
		}
		inner = s
		if spec.kind == redisStore {
			if accessStore, err = accessredis.New(rb.redis, accessredis.Options{Prefix: spec.prefix + "-access"}); err != nil {
				_ = rb.redis.Close()
				return nil, err
			}
			// The replicas of a group share their JWT public keys.
			if jwtCfg.Peers, err = jwt.NewRedisPeers(rb.redis, spec.prefix); err != nil {
				_ = rb.redis.Close()
				return nil, err
			}
		}
	}
	rb.store = &observedStore{Store: inner}
	rb.store.rec.Store(spec.rec)
	svid, err := e.ca.MintX509SVIDWithDNS(brokerID, 24*time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		rb.closeRedis()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		rb.closeRedis()
		return nil, err
	}
	b, err := broker.New(broker.Config{
		GRPCListener: ln,
		TrustDomains: []spiffeid.TrustDomain{td},
		SVIDs:        svid,
		Bundles:      e.ca.X509Bundle(),
		PolicyPath:   e.policyPath,
		Store:        rb.store,
		AccessStore:  accessStore,
		Revoker:      revoker.Config{Batch: e.cfg.batch},
		JWT:          jwtCfg,
		Logger:       e.logger,
	})
	if err != nil {
		_ = ln.Close()
		rb.closeRedis()
		return nil, err
	}
	rb.b, rb.addr = b, ln.Addr().String()
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	rb.stop = cancel
	go func() { rb.done <- b.Run(rctx) }()
	return rb, nil
}

// newRedisClient is a client with the options of cmd/mayflyd's openStore.
func (e *env) newRedisClient() *goredis.Client {
	return goredis.NewClient(&goredis.Options{
		Addr:                  e.redisAddr,
		DialTimeout:           2 * time.Second,
		ReadTimeout:           2 * time.Second,
		WriteTimeout:          2 * time.Second,
		MaxRetries:            2,
		DialerRetries:         1,
		PoolSize:              64,
		ContextTimeoutEnabled: true,
	})
}

func (rb *runningBroker) closeRedis() {
	if rb.redis != nil {
		_ = rb.redis.Close()
	}
}

// close stops the broker (graceful, as on SIGTERM) and its Redis client.
func (rb *runningBroker) close() error {
	rb.stop()
	var err error
	select {
	case err = <-rb.done:
	case <-time.After(30 * time.Second):
		err = errors.New("broker did not stop within 30s")
	}
	rb.closeRedis()
	return err
}

// callerConfig is the mTLS client config of caller i, a workload with its
// own X.509-SVID that authorises the broker by its SPIFFE ID. TLS session
// resumption is off (no session cache): every new connection does a full
// handshake.
func (e *env) callerConfig(i int) (*tls.Config, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.callerTLS) <= i {
		id := spiffeid.RequireFromPath(td, fmt.Sprintf("/workload/bench-%03d", len(e.callerTLS)))
		svid, err := e.ca.MintX509SVID(id, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		tc := tlsconfig.MTLSClientConfig(svid, e.ca.X509Bundle(), tlsconfig.AuthorizeID(brokerID))
		tc.MinVersion = tls.VersionTLS13
		e.callerTLS = append(e.callerTLS, tc)
	}
	return e.callerTLS[i], nil
}

// dialCaller opens a connection to addr as caller i, with the receive
// windows the SDK sets (sdk.Dial).
func (e *env) dialCaller(addr string, i int) (*grpc.ClientConn, error) {
	tc, err := e.callerConfig(i)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<20))
}

// callers are n workloads, each with its own connection to one broker.
type callers struct {
	conns   []*grpc.ClientConn
	clients []mayflyv1.CredentialServiceClient
}

// dialCallers connects n callers to addr and makes one call on each, so
// that the handshakes are done before anything is measured.
func (e *env) dialCallers(ctx context.Context, addr string, n int) (*callers, error) {
	c := &callers{}
	for i := range n {
		cc, err := e.dialCaller(addr, i)
		if err != nil {
			c.close()
			return nil, err
		}
		c.conns = append(c.conns, cc)
		c.clients = append(c.clients, mayflyv1.NewCredentialServiceClient(cc))
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, cl := range c.clients {
		wg.Go(func() {
			_, errs[i] = cl.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: issueEntitlement})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.close()
		return nil, fmt.Errorf("first issuance: %w", err)
	}
	return c, nil
}

func (c *callers) close() {
	for _, cc := range c.conns {
		_ = cc.Close()
	}
}
