package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mayflyhq/mayfly/broker"
	accessredis "github.com/mayflyhq/mayfly/broker/access/redis"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/revoker"
)

func newServe() *cobra.Command {
	var path, listen, httpListen, policyPath, logLevel string
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run the broker from a config file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return fmt.Errorf("--config is required (see deploy/ for an example)")
			}
			c, err := loadConfig(path)
			if err != nil {
				return err
			}
			override := func(flag string, dst *string, v string) {
				if cmd.Flags().Changed(flag) {
					*dst = v
				}
			}
			override("listen", &c.Listen, listen)
			override("http-listen", &c.HTTPListen, httpListen)
			override("policy", &c.Policy, policyPath)
			override("log-level", &c.Log.Level, logLevel)
			log, err := newLogger(c.Log.Level, c.Log.Format)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			cfg := broker.Config{
				GRPCAddr:    c.Listen,
				HTTPAddr:    c.HTTPListen,
				MetricsAddr: c.MetricsListen,
				Audience:    c.JWTSVIDAudience,
				PolicyPath:  c.Policy,
				JWT: jwt.Config{
					IssuerURL:   c.JWT.IssuerURL,
					Algorithm:   c.JWT.Algorithm,
					KeyDir:      c.JWT.KeyDir,
					RotateEvery: time.Duration(c.JWT.RotateEvery),
					Retain:      time.Duration(c.JWT.Retain),
				},
				PendingTimeout: time.Duration(c.Leases.PendingTimeout),
				Revoker: revoker.Config{
					Batch:                 c.Revoker.Batch,
					Concurrency:           c.Revoker.Concurrency,
					BusyBatch:             c.Revoker.BusyBatch,
					BusyConcurrency:       c.Revoker.BusyConcurrency,
					MaxAttempts:           c.Revoker.MaxAttempts,
					Hold:                  time.Duration(c.Revoker.Hold),
					BackoffBase:           time.Duration(c.Revoker.BackoffBase),
					BackoffMax:            time.Duration(c.Revoker.BackoffMax),
					UnavailableBackoffMax: time.Duration(c.Revoker.UnavailableBackoffMax),
				},
				Logger: log,
			}
			for _, s := range c.TrustDomains {
				td, err := spiffeid.TrustDomainFromString(s)
				if err != nil {
					return fmt.Errorf("config: trust_domains: %q: %w", s, err)
				}
				cfg.TrustDomains = append(cfg.TrustDomains, td)
			}
			var running atomic.Pointer[broker.Broker]
			store, client, closeStore, err := openStore(ctx, c, log, func(detail string) {
				if b := running.Load(); b != nil {
					b.ReportStoreDataLoss(detail)
					return
				}
				log.Error("the lease store lost its data: credentials issued before end only at their native expiry", "detail", detail)
			})
			if err != nil {
				return err
			}
			defer closeStore()
			cfg.Store = store
			if client != nil {
				// Access requests, grants and decision records live in the
				// same Redis, so every replica sees the same approvals.
				as, err := accessredis.New(client, accessredis.Options{
					WaitReplicas: c.Leases.Redis.WaitReplicas,
					WaitTimeout:  time.Duration(c.Leases.Redis.WaitTimeout),
				})
				if err != nil {
					return fmt.Errorf("config: leases.redis: %w", err)
				}
				cfg.AccessStore = as
				// Replicas behind one issuer URL share their JWT public
				// keys, so every replica's JWKS verifies every token.
				if cfg.JWT.Peers, err = jwt.NewRedisPeers(client, c.Leases.Redis.Prefix); err != nil {
					return fmt.Errorf("config: leases.redis: %w", err)
				}
			}
			closeID, err := identity(ctx, c, &cfg)
			if err != nil {
				return err
			}
			defer closeID()
			actor := ""
			if svid, err := cfg.SVIDs.GetX509SVID(); err == nil {
				actor = svid.ID.String()
			}
			if cfg.Audit, err = openAudit(ctx, c.Audit, client, actor, log); err != nil {
				return err
			}
			cfg.QuotaRate, cfg.QuotaBurst = c.Quota.Rate, c.Quota.Burst
			src := &jwtSource{}
			if cfg.Issuers, err = cloudIssuers(c.Issuers, src, log); err != nil {
				return err
			}
			b, err := broker.New(cfg)
			if err != nil {
				return err
			}
			src.iss = b.JWT()
			running.Store(b)
			return b.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "config", "", "config file (YAML)")
	f.StringVar(&listen, "listen", "", "override listen (gRPC address)")
	f.StringVar(&httpListen, "http-listen", "", "override http_listen (HTTPS address)")
	f.StringVar(&policyPath, "policy", "", "override policy (policy file)")
	f.StringVar(&logLevel, "log-level", "", "override log.level")
	return cmd
}

// identity fills the broker's SVID and bundle sources from the SPIFFE
// Workload API or from files.
func identity(ctx context.Context, c *fileConfig, cfg *broker.Config) (func(), error) {
	id := c.Identity
	if id.WorkloadAPI != "" {
		opt := workloadapi.WithClientOptions(workloadapi.WithAddr(id.WorkloadAPI))
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		x509src, err := workloadapi.NewX509Source(wctx, opt)
		if err != nil {
			return nil, fmt.Errorf("identity: SPIFFE Workload API %s: %w", id.WorkloadAPI, err)
		}
		bundles, err := workloadapi.NewBundleSource(wctx, opt)
		if err != nil {
			x509src.Close()
			return nil, fmt.Errorf("identity: SPIFFE Workload API %s: %w", id.WorkloadAPI, err)
		}
		cfg.SVIDs, cfg.Bundles = x509src, x509src
		if c.JWTSVIDAudience != "" { // JWT-SVIDs are accepted only with an audience to check
			cfg.JWTBundles = bundles
		}
		return func() { x509src.Close(); bundles.Close() }, nil
	}
	// Files are watched: an SVID rotated on disk is served from the next
	// handshake on.
	src, err := authn.NewFileSource(id.Cert, id.Key, id.Bundle)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	cfg.SVIDs, cfg.Bundles = src, src
	if id.JWTBundle != "" {
		jb, err := jwtbundle.Load(svid.ID.TrustDomain(), id.JWTBundle)
		if err != nil {
			return nil, fmt.Errorf("identity: jwt_bundle: %w", err)
		}
		cfg.JWTBundles = jb
	}
	wctx, cancel := context.WithCancel(ctx)
	go func() { _ = src.Run(wctx) }()
	return cancel, nil
}
