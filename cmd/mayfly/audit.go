package main

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/mayflyhq/mayfly/broker/audit"
)

// trailFlags say where an audit trail is read from: a JSONL file (the
// broker's audit.file, or a copy of it) or the Redis stream that replicas
// share (audit.redis). Reading needs no broker: an auditor verifies the
// trail with the broker's public key alone.
type trailFlags struct {
	file         string
	redisAddrs   []string
	redisCluster bool
	redisPrefix  string
	redisPWEnv   string
	keys         []string
}

func (t *trailFlags) add(cmd *cobra.Command, withKeys bool) {
	f := cmd.Flags()
	f.StringVar(&t.file, "file", "", "audit trail JSONL file (with --dev: the dev broker's)")
	f.StringSliceVar(&t.redisAddrs, "redis", nil, "read the shared audit stream from this Redis (host:port; several with --redis-cluster)")
	f.BoolVar(&t.redisCluster, "redis-cluster", false, "the --redis addresses are a Redis Cluster")
	f.StringVar(&t.redisPrefix, "redis-prefix", "", "key prefix of the audit stream (the broker's default: mf)")
	f.StringVar(&t.redisPWEnv, "redis-password-env", "", "environment variable holding the Redis password")
	if withKeys {
		f.StringSliceVar(&t.keys, "key", nil, "public key file(s) (PEM) of the broker's checkpoint signing key (audit.signing_key + \".pub\"; with --dev: the dev broker's)")
	}
}

// reader opens the trail; the returned func releases it.
func (t *trailFlags) reader(g *globals) (audit.Reader, func(), error) {
	if g.dev && t.file == "" && len(t.redisAddrs) == 0 {
		c, err := g.devClient()
		if err != nil {
			return nil, nil, err
		}
		if c.Audit == "" {
			return nil, nil, errors.New("the dev broker's client file names no audit trail: restart mayflyd dev")
		}
		t.file = c.Audit
		if len(t.keys) == 0 && c.AuditKey != "" {
			t.keys = []string{c.AuditKey}
		}
	}
	switch {
	case t.file != "" && len(t.redisAddrs) > 0:
		return nil, nil, errors.New("--file and --redis name two trails: use one")
	case t.file != "":
		return audit.JSONLFile{Path: t.file}, func() {}, nil
	case len(t.redisAddrs) > 0:
		opts := &goredis.UniversalOptions{Addrs: t.redisAddrs, IsClusterMode: t.redisCluster, DialTimeout: 5 * time.Second}
		if t.redisPWEnv != "" {
			opts.Password = envOr(t.redisPWEnv, "")
		}
		client := goredis.NewUniversalClient(opts)
		rs, err := audit.NewRedisStreamSink(client, audit.RedisConfig{Prefix: t.redisPrefix})
		if err != nil {
			_ = client.Close()
			return nil, nil, err
		}
		return rs, func() { _ = client.Close() }, nil
	}
	return nil, nil, errors.New("say where the audit trail is: --file PATH or --redis HOST:PORT (or --dev)")
}

func (t *trailFlags) publicKeys() ([]crypto.PublicKey, error) {
	var out []crypto.PublicKey
	for _, k := range t.keys {
		ks, err := audit.LoadPublicKeys(k)
		if err != nil {
			return nil, err
		}
		out = append(out, ks...)
	}
	return out, nil
}

func newAudit(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify and search the broker's tamper-evident audit trail",
	}
	cmd.AddCommand(newAuditVerify(g), newAuditQuery(g))
	return cmd
}

// errTampered makes `mayfly audit verify` exit non-zero after printing
// its report.
var errTampered = errors.New("the audit trail does not verify")

func newAuditVerify(g *globals) *cobra.Command {
	var t trailFlags
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the hash chain and check every signed checkpoint",
		Long: `verify reads the whole trail, recomputes every event's hash and link, and
checks each checkpoint's signature with the broker's public key. It reports
the first event that was modified, deleted, inserted or reordered, and exits
with status 1 if there is one. Without --key, signatures are not checked
(a rewrite of the whole trail would go unnoticed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, done, err := t.reader(g)
			if err != nil {
				return err
			}
			defer done()
			keys, err := t.publicKeys()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), max(g.timeout, 5*time.Minute))
			defer cancel()
			rep, err := audit.Verify(ctx, r, keys...)
			if err != nil {
				return err
			}
			if g.output == "json" {
				out := map[string]any{"ok": rep.OK(), "records": rep.Records, "first": rep.First, "last": rep.Last,
					"last_hash": rep.LastHash, "checkpoints": rep.Checkpoints, "last_checkpoint": rep.LastCheckpoint,
					"unsealed": rep.Unsealed, "signatures_checked": rep.SignaturesChecked, "trimmed_through": rep.TrimmedThrough}
				if p := rep.Problem; p != nil {
					out["problem"] = map[string]any{"kind": string(p.Kind), "seq": p.Seq, "pos": p.Pos, "detail": p.Detail}
				}
				if err := writeJSON(g, out); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(g.stdout, rep.String())
				if rep.OK() && rep.Records > 0 {
					fmt.Fprintf(g.stdout, "last event %d, hash %s (keep it elsewhere to detect a later rewrite of the unsigned tail)\n", rep.Last, rep.LastHash)
				}
			}
			if !rep.OK() {
				return errTampered
			}
			return nil
		},
	}
	t.add(cmd, true)
	return cmd
}

func newAuditQuery(g *globals) *cobra.Command {
	var (
		t            trailFlags
		f            audit.Filter
		types        []string
		since, until string
	)
	cmd := &cobra.Command{
		Use:   "query",
		Short: "List audit events by subject, entitlement, request, grant, lease, type or time",
		Example: `  mayfly audit query --subject spiffe://example.org/ns/prod/sa/billing --since 24h
  mayfly audit query --request 01J... -o json
  mayfly audit query --type lease.revoked --since 2026-11-01T00:00:00Z`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			now := time.Now()
			if f.Since, err = parseWhen("since", since, now); err != nil {
				return err
			}
			if f.Until, err = parseWhen("until", until, now); err != nil {
				return err
			}
			for _, ty := range types {
				f.Types = append(f.Types, audit.Type(ty))
			}
			r, done, err := t.reader(g)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(cmd.Context(), max(g.timeout, 5*time.Minute))
			defer cancel()
			evs, err := audit.Query(ctx, r, f)
			if err != nil {
				return err
			}
			if g.output == "json" {
				if evs == nil {
					evs = []audit.Event{}
				}
				return writeJSON(g, evs)
			}
			rows := [][]string{{"SEQ", "TIME", "TYPE", "ACTOR", "SUBJECT", "ENTITLEMENT", "OUTCOME/HOW", "IDS"}}
			for _, e := range evs {
				rows = append(rows, []string{strconv.FormatUint(e.Seq, 10), e.Time.UTC().Format(time.RFC3339), string(e.Type),
					dash(e.Actor), dash(e.Subject), dash(e.Entitlement), dash(strings.Trim(e.Outcome+" "+e.How, " ")), dash(ids(e))})
			}
			printTable(g, rows)
			return nil
		},
	}
	t.add(cmd, false)
	fl := cmd.Flags()
	fl.StringVar(&f.Subject, "subject", "", "events about this subject (SPIFFE ID or user)")
	fl.StringVar(&f.Entitlement, "entitlement", "", "events about this entitlement")
	fl.StringVar(&f.RequestID, "request", "", "events of this access request")
	fl.StringVar(&f.GrantID, "grant", "", "events of this grant")
	fl.StringVar(&f.LeaseID, "lease", "", "events of this lease")
	fl.StringVar(&f.Actor, "actor", "", "events caused by this principal")
	fl.StringSliceVar(&types, "type", nil, "event types (lease.issued, lease.revoked, decision, request.approved, ...)")
	fl.StringVar(&since, "since", "", "from this time (RFC 3339) or this long ago (24h)")
	fl.StringVar(&until, "until", "", "before this time (RFC 3339) or this long ago")
	fl.IntVar(&f.Limit, "limit", 0, "at most this many events (0: all)")
	return cmd
}

func newLineage(g *globals) *cobra.Command {
	var (
		t    trailFlags
		root audit.Root
	)
	cmd := &cobra.Command{
		Use:   "lineage",
		Short: "Show the tree from request and approvals to every lease minted under it and how each ended",
		Example: `  mayfly lineage --request 01J...
  mayfly lineage --subject spiffe://example.org/ns/prod/sa/billing
  mayfly lineage --grant 01J... -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set := 0
			for _, v := range []string{root.Subject, root.Entitlement, root.RequestID, root.GrantID, root.LeaseID} {
				if v != "" {
					set++
				}
			}
			if set != 1 {
				return errors.New("give exactly one of --subject, --entitlement, --request, --grant or --lease")
			}
			r, done, err := t.reader(g)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(cmd.Context(), max(g.timeout, 5*time.Minute))
			defer cancel()
			n, err := audit.Lineage(ctx, r, root)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return writeJSON(g, n)
			}
			return n.WriteText(g.stdout)
		},
	}
	t.add(cmd, false)
	fl := cmd.Flags()
	fl.StringVar(&root.Subject, "subject", "", "every request, grant and lease of this subject")
	fl.StringVar(&root.Entitlement, "entitlement", "", "every request, grant and lease of this entitlement")
	fl.StringVar(&root.RequestID, "request", "", "one access request, its approvals, grant and leases")
	fl.StringVar(&root.GrantID, "grant", "", "one grant, its request and leases")
	fl.StringVar(&root.LeaseID, "lease", "", "one lease and what it rests on")
	return cmd
}

// parseWhen reads an RFC 3339 time or a duration ago.
func parseWhen(flag, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--%s: %q is neither an RFC 3339 time (2026-11-29T10:00:00Z) nor a duration ago (24h)", flag, v)
}

func ids(e audit.Event) string {
	var parts []string
	for _, kv := range [][2]string{{"request", e.RequestID}, {"grant", e.GrantID}, {"lease", e.LeaseID}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+kv[1])
		}
	}
	return strings.Join(parts, " ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSON(g *globals, v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
