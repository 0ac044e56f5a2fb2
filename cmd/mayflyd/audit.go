package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/audit"
)

// openAudit builds the audit trail the config asks for, or nil for none.
// With audit.redis the shared stream in the leases' Redis orders the
// events of every replica (the file then holds this replica's events);
// without it the file is the chain, resumed at start.
func openAudit(ctx context.Context, a auditConfig, client goredis.UniversalClient, actor string, log *slog.Logger) (*audit.Log, error) {
	if !a.enabled() {
		return nil, nil
	}
	signer, err := audit.LoadOrCreateSigningKey(a.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("config: audit.signing_key: %w", err)
	}
	cfg := audit.Config{
		Signer:             signer,
		Actor:              actor,
		CheckpointEvery:    a.CheckpointEvery,
		CheckpointInterval: time.Duration(a.CheckpointInterval),
		Logger:             log,
	}
	if a.Redis {
		rs, err := audit.NewRedisStreamSink(client, audit.RedisConfig{MaxLen: a.RedisMaxLen})
		if err != nil {
			return nil, fmt.Errorf("config: audit.redis: %w", err)
		}
		cfg.Chain = rs
	}
	if a.File != "" {
		sync := audit.SyncAlways
		switch a.Fsync {
		case "periodic":
			sync = audit.SyncPeriodic
		case "never":
			sync = audit.SyncNever
		}
		fs, err := audit.NewFileSink(audit.FileConfig{Path: a.File, Sync: sync, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("config: audit.file: %w", err)
		}
		cfg.Sinks = append(cfg.Sinks, audit.SinkConfig{Sink: fs})
	}
	if a.Stdout {
		cfg.Sinks = append(cfg.Sinks, audit.SinkConfig{Sink: &audit.StdoutSink{}, Mode: audit.Buffered})
	}
	l, err := audit.NewLog(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return l, nil
}
