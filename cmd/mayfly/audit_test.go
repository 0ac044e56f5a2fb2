package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// runCLI runs mayfly without a broker connection (audit commands read the
// trail directly).
func runCLI(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// auditedBroker runs a broker whose trail is a JSONL file with its
// checkpoint key on disk, as mayflyd writes them.
func auditedBroker(t *testing.T) (env *brokertest.Env, trail, pubKey string) {
	t.Helper()
	dir := t.TempDir()
	trail, keyPath := filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "audit-key.pem")
	signer, err := audit.LoadOrCreateSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := audit.NewFileSink(audit.FileConfig{Path: trail})
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.NewLog(context.Background(), audit.Config{Sinks: []audit.SinkConfig{{Sink: fs}}, Signer: signer, CheckpointEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	env = brokertest.Start(t, brokertest.Options{Policy: policy.ExamplePolicy, Audit: l})
	return env, trail, keyPath + ".pub"
}

func TestAuditVerifyQueryLineage(t *testing.T) {
	env, trail, pub := auditedBroker(t)
	out, stderr, code := cli(t, env, "issue", "demo-api-write", "-o", "json")
	if code != 0 {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	var resp struct {
		Lease struct {
			ID string `json:"id"`
		} `json:"lease"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatal(err)
	}
	id := resp.Lease.ID
	if _, stderr, code := cli(t, env, "revoke", id); code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, stderr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _, _ := runCLI("audit", "query", "--file", trail, "--lease", id, "--type", "lease.revoked")
		if strings.Contains(out, "lease.revoked") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lease.revoked event for %s:\n%s", id, out)
		}
		time.Sleep(20 * time.Millisecond)
	}

	out, stderr, code = runCLI("audit", "verify", "--file", trail, "--key", pub)
	if code != 0 || !strings.HasPrefix(out, "ok: seq 1..") || strings.Contains(out, "not checked") {
		t.Fatalf("verify: exit %d:\n%s%s", code, out, stderr)
	}
	out, _, code = runCLI("audit", "query", "--file", trail, "--lease", id)
	for _, want := range []string{"decision", "lease.issued", "lease.revoke_requested", "lease.revoked", "explicit"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("query --lease lacks %q (exit %d):\n%s", want, code, out)
		}
	}
	out, _, code = runCLI("audit", "query", "--file", trail, "--subject", "spiffe://mayfly.test/cli/dev", "--since", "1h", "-o", "json")
	var evs []audit.Event
	if err := json.Unmarshal([]byte(out), &evs); code != 0 || err != nil || len(evs) < 4 {
		t.Fatalf("query -o json: exit %d, %v, %d events:\n%s", code, err, len(evs), out)
	}
	out, _, code = runCLI("lineage", "--file", trail, "--lease", id)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "revoked") {
		t.Fatalf("lineage: exit %d:\n%s", code, out)
	}
	if _, stderr, code := runCLI("lineage", "--file", trail); code == 0 || !strings.Contains(stderr, "exactly one") {
		t.Fatalf("lineage without a root: exit %d: %s", code, stderr)
	}

	// Each kind of tampering, on a copy, is reported at the event it hit.
	data, err := os.ReadFile(trail)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) < 5 {
		t.Fatalf("only %d events", len(lines))
	}
	for _, tc := range []struct {
		name, kind string
		edit       func([]string) []string
	}{
		{"modified", "modified at seq 2", func(l []string) []string {
			l[1] = strings.Replace(l[1], `"type":"`, `"type":"x`, 1)
			return l
		}},
		{"deleted", "deleted at seq 2", func(l []string) []string { return append(l[:1:1], l[2:]...) }},
		{"inserted", "inserted", func(l []string) []string {
			return append(append(l[:2:2], l[1]), l[2:]...)
		}},
		{"reordered", "reordered", func(l []string) []string {
			l[1], l[2] = l[2], l[1]
			return l
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edited := tc.edit(append([]string(nil), lines...))
			p := filepath.Join(t.TempDir(), "trail.jsonl")
			if err := os.WriteFile(p, []byte(strings.Join(edited, "")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			out, stderr, code := runCLI("audit", "verify", "--file", p, "--key", pub)
			if code != 1 || !strings.Contains(out, "FAILED: "+tc.kind) || !strings.Contains(stderr, "does not verify") {
				t.Fatalf("exit %d, want 1 and %q:\n%s%s", code, tc.kind, out, stderr)
			}
		})
	}
}

// TestAuditVerifyRedisStream verifies the trail replicas share in Redis,
// and finds an event deleted from the stream.
func TestAuditVerifyRedisStream(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	rs, err := audit.NewRedisStreamSink(rdb, audit.RedisConfig{Prefix: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "k.pem")
	signer, err := audit.LoadOrCreateSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l, err := audit.NewLog(ctx, audit.Config{Chain: rs, Signer: signer, CheckpointEvery: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := l.Append(ctx, audit.RequestExpired("req-"+string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	args := []string{"audit", "verify", "--redis", srv.Addr(), "--redis-prefix", "cli", "--key", keyPath + ".pub"}
	if out, stderr, code := runCLI(args...); code != 0 || !strings.HasPrefix(out, "ok:") {
		t.Fatalf("exit %d:\n%s%s", code, out, stderr)
	}
	if err := rdb.XDel(ctx, rs.StreamKey(), "3-0").Err(); err != nil {
		t.Fatal(err)
	}
	if out, _, code := runCLI(args...); code != 1 || !strings.Contains(out, "deleted at seq 3") {
		t.Fatalf("after XDEL 3-0: exit %d:\n%s", code, out)
	}
}
