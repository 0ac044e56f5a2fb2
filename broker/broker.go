package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/access"
	accessmemory "github.com/mayflyhq/mayfly/broker/access/memory"
	"github.com/mayflyhq/mayfly/broker/api"
	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/metrics"
	"github.com/mayflyhq/mayfly/broker/notify"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/broker/revoker"
)

// Config is everything the broker needs. cmd/mayflyd builds it from the
// config file (serve) or from the dev trust domain (dev).
type Config struct {
	// GRPCAddr is the gRPC listen address (mTLS); ":0" picks a port.
	// Required unless GRPCListener is set.
	GRPCAddr string
	// GRPCListener and HTTPListener, when set, are used instead of
	// listening on GRPCAddr and HTTPAddr (tests, socket activation).
	GRPCListener, HTTPListener net.Listener
	// HTTPAddr is the HTTPS listen address for OIDC discovery, JWKS and
	// introspection. Empty disables it.
	HTTPAddr string
	// MetricsAddr is a plain-HTTP listen address for /metrics and /healthz
	// (keep it on loopback or a private network). Empty disables it.
	MetricsAddr string

	// TrustDomains are the SPIFFE trust domains whose workloads may call.
	TrustDomains []spiffeid.TrustDomain
	// SVIDs is the broker's own X.509-SVID source (rotation is live).
	SVIDs x509svid.Source
	// Bundles verifies callers' X.509-SVIDs.
	Bundles x509bundle.Source
	// JWTBundles verifies callers' JWT-SVIDs; nil disables JWT-SVID auth.
	JWTBundles jwtbundle.Source
	// Audience is the audience a JWT-SVID must carry to authenticate here.
	Audience string
	// Bearer are further bearer-token verifiers, tried after the JWT-SVID
	// verifier: an authn.OIDCVerifier for people.
	Bearer []authn.BearerVerifier
	// HTTPHandlers are extra handlers on the HTTPS listener, by
	// http.ServeMux pattern (dev mode: its OIDC provider under /dev-oidc/).
	HTTPHandlers map[string]http.Handler

	// PolicyPath is the governance policy file; it reloads on SIGHUP and
	// on change.
	PolicyPath string
	// Store holds the leases.
	Store lease.Store
	// AccessStore holds access requests, grants, certifications and
	// decision records (default: in memory, for one replica).
	AccessStore access.Store
	// JWT configures the broker's own JWT issuer.
	JWT jwt.Config
	// Issuers are further backends (vault, awssts, ...), by their Name.
	// The policy may name any of them and "jwt".
	Issuers []issuer.Issuer

	// PendingTimeout is how long a lease may stay pending (default 30s).
	PendingTimeout time.Duration
	// Revoker tunes the revoker; Store, Issuers, Now, Logger and the
	// callbacks are filled in by New.
	Revoker revoker.Config

	// Audit is the audit trail (nil: none). The broker owns it from New:
	// it runs its background work and closes it when Run returns.
	// Issuance, renewal and every access action are refused while it
	// cannot record them; revocations and refusals are kept and recorded
	// when it is back.
	Audit *audit.Log
	// QuotaRate and QuotaBurst limit each caller identity to QuotaRate
	// calls a second with bursts of QuotaBurst (ResourceExhausted past
	// it). QuotaRate 0: no quota.
	QuotaRate  float64
	QuotaBurst int
	// StatsInterval is how often the gauges of leases by state, overdue
	// revocations, pending requests and overdue reviews are refreshed
	// (default 15s).
	StatsInterval time.Duration

	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Registry receives the broker's metrics (default: a new registry).
	Registry *prometheus.Registry
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Broker is a running Mayfly broker.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics.Metrics
	audit   *auditor
	overdue *overdueRetries
	policy  *policy.Holder
	jwt     *jwt.Issuer
	issuers map[string]issuer.Issuer
	revoker *revoker.Revoker
	access  *access.Service
	api     *api.Server
	grpc    *grpc.Server
	health  *health.Server

	grpcLn, httpLn, metricsLn net.Listener
	httpSrv, metricsSrv       *http.Server
}

// New builds the broker and opens its listeners; Run serves.
func New(cfg Config) (*Broker, error) {
	switch {
	case cfg.GRPCAddr == "" && cfg.GRPCListener == nil:
		return nil, errors.New("broker: Config.GRPCAddr is required")
	case len(cfg.TrustDomains) == 0:
		return nil, errors.New("broker: Config.TrustDomains needs at least one trust domain")
	case cfg.SVIDs == nil:
		return nil, errors.New("broker: Config.SVIDs (the broker's own X.509-SVID) is required")
	case cfg.Bundles == nil:
		return nil, errors.New("broker: Config.Bundles is required")
	case cfg.PolicyPath == "":
		return nil, errors.New("broker: Config.PolicyPath is required")
	case cfg.Store == nil:
		return nil, errors.New("broker: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	b := &Broker{cfg: cfg, log: cfg.Logger.With("component", "broker")}
	b.metrics = metrics.New(cfg.Registry)
	b.audit = newAuditor(cfg.Audit, cfg.Logger, b.metrics, cfg.Now)
	if cfg.StatsInterval <= 0 {
		b.cfg.StatsInterval = 15 * time.Second
	}

	if cfg.JWT.Logger == nil {
		cfg.JWT.Logger = cfg.Logger
	}
	var err error
	if b.jwt, err = jwt.New(cfg.JWT); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	b.issuers = map[string]issuer.Issuer{b.jwt.Name(): b.jwt}
	for _, iss := range cfg.Issuers {
		if _, dup := b.issuers[iss.Name()]; dup {
			return nil, fmt.Errorf("broker: two issuers named %q", iss.Name())
		}
		b.issuers[iss.Name()] = iss
	}
	decoders := map[string]func(*yaml.Node) (any, error){}
	for name, iss := range b.issuers {
		decoders[name] = iss.DecodeParams
	}
	b.policy, err = policy.NewHolder(cfg.PolicyPath, policy.Options{Issuers: decoders}, cfg.Logger, func(p *policy.Policy, err error) {
		b.metrics.PolicyReload(err, cfg.Now())
		digest := ""
		if p != nil {
			digest = p.Digest
		}
		b.audit.Record(audit.PolicyReloaded(digest, err))
	})
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	b.metrics.PolicyReload(nil, cfg.Now())
	if err := b.checkTrustDomains(); err != nil {
		return nil, err
	}

	rc := cfg.Revoker
	rc.Store = cfg.Store
	rc.Issuers = func(name string) (issuer.Issuer, bool) { i, ok := b.issuers[name]; return i, ok }
	rc.Now = cfg.Now
	rc.Logger = cfg.Logger
	// Late revocations this replica retries, for the overdue gauge when
	// the store cannot count them: an entry lasts until the lease ends or
	// two retry intervals and a claim pass without another failure.
	b.overdue = newOverdueRetries(2*max(rc.UnavailableBackoffMax, revoker.DefaultUnavailableBackoffMax) + max(rc.Hold, revoker.DefaultHold))
	// The revoker slows down while callers wait for credentials.
	rc.Busy = func() bool { return b.api != nil && b.api.Issuing() }
	rc.OnRevoked = func(l *lease.Lease, lag time.Duration) {
		b.overdue.ended(l.ID)
		b.metrics.Revoked(string(l.RevokeReason), lag)
		b.audit.Record(audit.LeaseRevoked(l))
	}
	rc.OnRetry = func(l *lease.Lease, _ error) {
		b.metrics.Retry()
		b.overdue.failed(l, cfg.Now())
	}
	rc.OnIrrevocable = func(l *lease.Lease, _ error) {
		b.overdue.ended(l.ID)
		b.metrics.Irrevocable()
		b.audit.Record(audit.LeaseIrrevocable(l))
	}
	if b.revoker, err = revoker.New(rc); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}

	if err := b.newAccess(); err != nil {
		return nil, err
	}
	b.api, err = api.New(api.Config{
		Policy:         b.policy.Current,
		Store:          cfg.Store,
		Access:         b.access,
		Issuers:        b.issuers,
		JWT:            b.jwt,
		Wake:           b.revoker.Wake,
		Now:            cfg.Now,
		Logger:         cfg.Logger,
		Metrics:        b.metrics,
		Audit:          b.apiAuditor(),
		PendingTimeout: cfg.PendingTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	authenticator, err := authn.NewAuthenticator(authn.Config{
		TrustDomains: cfg.TrustDomains,
		JWTBundles:   cfg.JWTBundles,
		Audience:     cfg.Audience,
		Bearer:       cfg.Bearer,
		Now:          cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	icept := []api.InterceptorOption{api.OnRefused(b.refused), api.WithQuota(api.NewQuota(cfg.QuotaRate, cfg.QuotaBurst, cfg.Now))}
	b.grpc = grpc.NewServer(
		grpc.Creds(authn.ServerCredentials(cfg.SVIDs, cfg.Bundles)),
		grpc.ChainUnaryInterceptor(api.UnaryInterceptor(authenticator, cfg.Logger, icept...)),
		grpc.ChainStreamInterceptor(api.StreamInterceptor(authenticator, cfg.Logger, icept...)),
		grpc.MaxRecvMsgSize(1<<20),
		// Reuse warm handler goroutines instead of growing a fresh stack
		// for every call; grpc still spawns more when all are busy.
		grpc.NumStreamWorkers(uint32(4*runtime.GOMAXPROCS(0))),
		// Fixed receive windows turn off the server's BDP estimator, which
		// otherwise answers nearly every request (requests are small) with
		// a WINDOW_UPDATE and a PING the client must ack: half the control
		// frames of a call, each one a wake-up of the transport goroutines.
		// 1 MiB is MaxRecvMsgSize, so the largest request never waits for a
		// window update, and it caps what one connection can have buffered
		// (the estimator could grow that to 16 MiB).
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	b.api.Register(b.grpc)
	b.health = health.NewServer()
	healthpb.RegisterHealthServer(b.grpc, b.health)
	// Reflection, for grpcurl and friends; it answers authenticated
	// callers only, like every other service but health.
	reflection.Register(b.grpc)

	if err := b.listen(); err != nil {
		b.closeListeners()
		return nil, err
	}
	return b, nil
}

// newAccess builds the access-request service on the lease store: revoking
// a grant revokes its leases, conflicts count leases held, and reviews show
// each grant's use.
func (b *Broker) newAccess() error {
	store := b.cfg.AccessStore
	if store == nil {
		store = accessmemory.New()
	}
	sender, err := notify.New(notify.Config{
		Webhooks: func() map[string]*policy.Webhook { return b.policy.Current().Webhooks },
		Logger:   b.cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	ls := b.cfg.Store
	b.access, err = access.New(access.Config{
		Store:  store,
		Policy: b.policy.Current,
		RevokeLeases: func(ctx context.Context, grantID string) (int, error) {
			n, err := ls.RevokeMatching(ctx, lease.Selector{GrantID: grantID}, lease.ReasonGrantEnded, b.cfg.Now())
			if n > 0 {
				b.revoker.Wake()
			}
			return n, err
		},
		Held: func(ctx context.Context, subject string) ([]string, error) {
			return heldEntitlements(ctx, ls, b.policy.Current(), subject, b.cfg.Now())
		},
		Usage: func(ctx context.Context, grantID string) (time.Time, int, error) {
			return grantUsage(ctx, ls, grantID, b.cfg.Now())
		},
		Notify: sender.Send,
		Audit:  b.audit.accessEvents,
		Gate:   b.audit.Ready,
		Now:    b.cfg.Now,
		Logger: b.cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}

// heldEntitlements lists the entitlements a subject holds through active
// leases, for segregation of duties. Only entitlements some conflicts_with
// names can matter, so only those are looked up (one indexed query each):
// a policy without conflicts costs nothing on the issuance path.
func heldEntitlements(ctx context.Context, ls lease.Store, pol *policy.Policy, subject string, now time.Time) ([]string, error) {
	var out []string
	for _, ent := range pol.ConflictingEntitlements() {
		q := lease.Query{Subject: subject, Entitlement: ent, States: []lease.State{lease.StatePending, lease.StateActive}, PageSize: 100}
		for {
			page, next, err := ls.List(ctx, q)
			if err != nil {
				return nil, err
			}
			held := false
			for _, l := range page {
				if l.State == lease.StatePending || l.Active(now) {
					held = true
					break
				}
			}
			if held {
				out = append(out, ent)
				break
			}
			if next == "" {
				break
			}
			q.PageToken = next
		}
	}
	return out, nil
}

// grantUsage reports the last lease issued under a grant and how many in
// the last 30 days, for certification reviews.
func grantUsage(ctx context.Context, ls lease.Store, grantID string, now time.Time) (time.Time, int, error) {
	var last time.Time
	n := 0
	since := now.Add(-30 * 24 * time.Hour)
	q := lease.Query{GrantID: grantID, PageSize: 1000}
	for {
		page, next, err := ls.List(ctx, q)
		if err != nil {
			return time.Time{}, 0, err
		}
		for _, l := range page {
			if l.IssuedAt.After(last) {
				last = l.IssuedAt
			}
			if !l.IssuedAt.Before(since) {
				n++
			}
		}
		if next == "" {
			return last, n, nil
		}
		q.PageToken = next
	}
}

// checkTrustDomains refuses a policy whose trust domains the broker does
// not accept: its grants could never match.
func (b *Broker) checkTrustDomains() error {
	accepted := map[string]bool{}
	for _, td := range b.cfg.TrustDomains {
		accepted[td.Name()] = true
	}
	for _, td := range b.policy.Current().TrustDomains {
		if !accepted[td] {
			b.log.Warn("policy names a trust domain the broker does not accept; its workloads cannot authenticate", "trust_domain", td)
		}
	}
	return nil
}

func (b *Broker) listen() error {
	var err error
	b.grpcLn, b.httpLn = b.cfg.GRPCListener, b.cfg.HTTPListener
	if b.grpcLn == nil {
		if b.grpcLn, err = net.Listen("tcp", b.cfg.GRPCAddr); err != nil {
			return fmt.Errorf("broker: gRPC listener: %w", err)
		}
	}
	if b.httpLn == nil && b.cfg.HTTPAddr != "" {
		if b.httpLn, err = net.Listen("tcp", b.cfg.HTTPAddr); err != nil {
			return fmt.Errorf("broker: HTTPS listener: %w", err)
		}
	}
	if b.httpLn != nil {
		b.httpSrv = &http.Server{
			Handler:           b.httpHandler(),
			TLSConfig:         b.httpTLS(),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(b.cfg.Logger.Handler(), slog.LevelWarn),
		}
	}
	if b.cfg.MetricsAddr != "" {
		if b.metricsLn, err = net.Listen("tcp", b.cfg.MetricsAddr); err != nil {
			return fmt.Errorf("broker: metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(b.cfg.Registry, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		b.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	return nil
}

func (b *Broker) closeListeners() {
	for _, ln := range []net.Listener{b.grpcLn, b.httpLn, b.metricsLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// httpHandler serves the JWT issuer's endpoints and any extra handlers.
func (b *Broker) httpHandler() http.Handler {
	h := b.jwt.Handler(b.api.LeaseActive, b.authorizeHTTP)
	if len(b.cfg.HTTPHandlers) == 0 {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	for pattern, extra := range b.cfg.HTTPHandlers {
		mux.Handle(pattern, extra)
	}
	return mux
}

// httpTLS serves the broker's SVID and asks for (but does not require) a
// client SVID: discovery and JWKS are public, introspection is not.
func (b *Broker) httpTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12, // cloud providers fetching JWKS may not speak 1.3
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			svid, err := b.cfg.SVIDs.GetX509SVID()
			if err != nil {
				return nil, err
			}
			return svidCertificate(svid)
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
}

// authorizeHTTP admits an introspection call that presented an X.509-SVID
// from an accepted trust domain.
func (b *Broker) authorizeHTTP(r *http.Request) error {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return errors.New("broker: introspection requires a client X.509-SVID")
	}
	id, _, err := x509svid.Verify(r.TLS.PeerCertificates, b.cfg.Bundles)
	if err != nil {
		return fmt.Errorf("broker: introspection caller: %w", err)
	}
	for _, td := range b.cfg.TrustDomains {
		if id.MemberOf(td) {
			return nil
		}
	}
	return fmt.Errorf("broker: trust domain %q is not accepted", id.TrustDomain().Name())
}

// GRPCAddr is the address the gRPC server listens on.
func (b *Broker) GRPCAddr() net.Addr { return b.grpcLn.Addr() }

// HTTPAddr is the HTTPS address, or nil when disabled.
func (b *Broker) HTTPAddr() net.Addr {
	if b.httpLn == nil {
		return nil
	}
	return b.httpLn.Addr()
}

// MetricsAddr is the metrics address, or nil when disabled.
func (b *Broker) MetricsAddr() net.Addr {
	if b.metricsLn == nil {
		return nil
	}
	return b.metricsLn.Addr()
}

// Policy returns the policy in force.
func (b *Broker) Policy() *policy.Policy { return b.policy.Current() }

// JWT returns the broker's JWT issuer.
func (b *Broker) JWT() *jwt.Issuer { return b.jwt }

// Run serves until ctx ends, then stops accepting calls, lets in-flight
// calls finish (bounded), and returns. A task that fails stops the others.
func (b *Broker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	task := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				b.log.Error("task failed; stopping the broker", "task", name, "error", err)
				cancel(fmt.Errorf("broker: %s: %w", name, err))
			}
		}()
	}
	task("policy", b.policy.Run)
	task("revoker", b.revoker.Run)
	task("jwt-keys", b.jwt.Run)
	task("access", b.access.Run)
	task("stats", b.runStats)
	if b.audit != nil {
		task("audit", b.audit.Run)
	}
	for _, iss := range b.cfg.Issuers {
		// Backends with background work (Vault keeps its own token alive).
		if r, ok := iss.(interface{ Run(context.Context) error }); ok {
			task("issuer-"+iss.Name(), r.Run)
		}
	}
	task("grpc", func(ctx context.Context) error {
		b.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		errc := make(chan error, 1)
		go func() { errc <- b.grpc.Serve(b.grpcLn) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		b.health.Shutdown()
		stopped := make(chan struct{})
		go func() { b.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			b.grpc.Stop()
		}
		return nil
	})
	if b.httpSrv != nil {
		task("https", func(ctx context.Context) error {
			return serveHTTP(ctx, b.httpSrv, func() error { return b.httpSrv.ServeTLS(b.httpLn, "", "") })
		})
	}
	if b.metricsSrv != nil {
		task("metrics", func(ctx context.Context) error {
			return serveHTTP(ctx, b.metricsSrv, func() error { return b.metricsSrv.Serve(b.metricsLn) })
		})
	}
	b.log.Info("broker serving", "grpc", b.GRPCAddr().String(), "https", addrString(b.HTTPAddr()), "metrics", addrString(b.MetricsAddr()))
	<-ctx.Done()
	wg.Wait()
	// Every call and revocation has ended: the audit trail gets their
	// events and a last checkpoint.
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	if err := b.audit.Close(cctx); err != nil {
		b.log.Error("closing the audit trail", "error", err)
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// refused records a call refused before its handler ran.
func (b *Broker) refused(method string, p *authn.Principal, err error) {
	code := status.Code(err)
	label := strings.ToLower(code.String())
	if code == codes.ResourceExhausted {
		label = "resource_exhausted"
	}
	b.metrics.Refused(label)
	e := audit.Event{Type: audit.TypeCallRefused, Outcome: label, Fields: map[string]string{"method": method, "error": status.Convert(err).Message()}}
	if p != nil {
		e.Actor, e.Subject = p.ID, p.ID
	}
	b.audit.Record(e)
}

// ReportStoreDataLoss is for the lease store to call when it finds it
// has lost its data (Redis flushed, or restarted without persistence):
// the leases of credentials minted before are gone, so those credentials
// end only at their native expiry. It raises the alert metric, logs, and
// records it in the audit trail.
func (b *Broker) ReportStoreDataLoss(detail string) {
	b.metrics.StoreDataLoss()
	b.log.Error("the lease store lost its data: credentials issued before end only at their native expiry", "detail", detail)
	b.audit.Record(audit.Event{Type: audit.TypeStoreDataLoss, Outcome: "detected", Fields: map[string]string{"detail": detail}})
}

// runStats refreshes the gauges that need counting: leases by state,
// overdue revocations (more than 2 s late), pending requests and overdue
// reviews.
func (b *Broker) runStats(ctx context.Context) error {
	t := time.NewTicker(b.cfg.StatsInterval)
	defer t.Stop()
	for {
		b.refreshStats(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (b *Broker) refreshStats(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.StatsInterval)
	defer cancel()
	if c, ok := b.cfg.Store.(lease.Counter); ok {
		n, err := c.Count(ctx, b.cfg.Now().Add(-2*time.Second))
		if err != nil {
			b.log.Warn("cannot count leases for metrics", "error", err)
		} else {
			b.metrics.Leases(n.Pending, n.Active, n.Revoking, n.Overdue)
		}
	} else {
		// A store that cannot count (Redis): the late revocations this
		// replica is retrying.
		b.metrics.Overdue(b.overdue.count(b.cfg.Now()))
	}
	pending, overdue, err := b.access.Stats(ctx)
	if err != nil {
		b.log.Warn("cannot count requests and reviews for metrics", "error", err)
		return
	}
	b.metrics.Access(pending, overdue)
}

func serveHTTP(ctx context.Context, srv *http.Server, serve func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// apiAuditor is the API's auditor: none (a nil interface) without a trail.
func (b *Broker) apiAuditor() api.Auditor {
	if b.audit == nil {
		return nil
	}
	return b.audit
}
