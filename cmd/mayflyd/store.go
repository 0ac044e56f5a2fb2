package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
	leaseredis "github.com/mayflyhq/mayfly/broker/lease/redis"
)

// redisLog routes go-redis's own messages (reconnect attempts, pool
// errors) to the broker's structured log instead of stderr.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.log.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "redis")
}

// openStore builds the lease store the config names. The returned close
// function releases its connections.
// onDataLoss reports that Redis lost the leases (FLUSHALL, a restart
// without persistence): to the broker once it runs (an alert metric, the
// audit trail), and to the log in any case.
func openStore(ctx context.Context, c *fileConfig, log *slog.Logger, onDataLoss func(detail string)) (lease.Store, goredis.UniversalClient, func(), error) {
	if c.Leases.Store == "memory" {
		return memory.New(), nil, func() {}, nil
	}
	goredis.SetLogger(redisLog{log})
	rc := c.Leases.Redis
	opts := &goredis.UniversalOptions{
		Addrs:                 rc.Addrs,
		IsClusterMode:         rc.Cluster,
		Username:              rc.Username,
		DB:                    rc.DB,
		DialTimeout:           2 * time.Second,
		ReadTimeout:           2 * time.Second,
		WriteTimeout:          2 * time.Second,
		MaxRetries:            2,
		DialerRetries:         1, // fail fast (Unavailable within a second) while Redis is down
		PoolSize:              64,
		ContextTimeoutEnabled: true,
	}
	if rc.PasswordEnv != "" {
		pw, ok := os.LookupEnv(rc.PasswordEnv)
		if !ok {
			return nil, nil, nil, fmt.Errorf("leases.redis.password_env: environment variable %s is not set", rc.PasswordEnv)
		}
		opts.Password = pw
	}
	if rc.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if rc.CAFile != "" {
			pem, err := os.ReadFile(rc.CAFile)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("leases.redis.ca_file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, nil, nil, fmt.Errorf("leases.redis.ca_file: no certificate in %s", rc.CAFile)
			}
		}
		opts.TLSConfig = tc
	}
	client := goredis.NewUniversalClient(opts)
	// Say early if Redis is unreachable, but do not refuse to start: the
	// broker fails closed (Unavailable) until Redis answers, and recovers
	// by itself.
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	pingErr := client.Ping(pctx).Err()
	store, err := leaseredis.New(client, leaseredis.Options{
		Shards:       rc.Shards,
		Prefix:       rc.Prefix,
		Retain:       time.Duration(rc.Retain),
		WaitReplicas: rc.WaitReplicas,
		WaitTimeout:  time.Duration(rc.WaitTimeout),
		OnDataLoss:   onDataLoss,
	})
	if err != nil {
		_ = client.Close()
		return nil, nil, nil, err
	}
	if pingErr != nil {
		log.Warn("Redis does not answer yet; issuance fails closed until it does", "addrs", rc.Addrs, "error", pingErr)
	}
	return store, client, func() { _ = client.Close() }, nil
}
