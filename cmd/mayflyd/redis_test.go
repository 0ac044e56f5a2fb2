package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/devca"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// TestServeOnRedisFailsClosedAndRecovers runs `mayflyd serve` on a real
// Redis: issuance works; with Redis down it answers Unavailable and mints
// nothing; when Redis returns the broker recovers by itself.
func TestServeOnRedisFailsClosedAndRecovers(t *testing.T) {
	rs := testenv.StartRedis(t, testenv.RedisConfig{AppendOnly: true}) // a restart keeps the leases
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("mayfly.test")
	ca, err := devca.Open(filepath.Join(dir, "ca"), td)
	if err != nil {
		t.Fatal(err)
	}
	brokerID := spiffeid.RequireFromString("spiffe://mayfly.test/mayfly")
	svid, err := ca.MintX509SVIDWithDNS(brokerID, time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.WriteSVID("broker", svid)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pol := writeFile(t, dir, "policy.yaml", string(policy.ExamplePolicy))
	cfg := writeFile(t, dir, "mayflyd.yaml", `
listen: `+addr+`
trust_domains: [mayfly.test]
policy: `+pol+`
identity: {cert: `+cert+`, key: `+key+`, bundle: `+ca.BundlePath()+`}
jwt: {issuer_url: "https://127.0.0.1:7444", key_dir: `+filepath.Join(dir, "keys")+`}
leases: {store: redis, redis: {addrs: [`+rs.Addr()+`], prefix: serve}}
audit: {redis: true, file: `+filepath.Join(dir, "audit.jsonl")+`, signing_key: `+filepath.Join(dir, "audit-key.pem")+`, checkpoint_every: 2}
log: {level: error}
`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newRoot(io.Discard, "serve", "--config", cfg).ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	workload, err := ca.MintX509SVID(spiffeid.RequireFromString("spiffe://mayfly.test/workload/demo"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc := tlsconfig.MTLSClientConfig(workload, ca.X509Bundle(), tlsconfig.AuthorizeID(brokerID))
	tc.MinVersion = tls.VersionTLS13
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := mayflyv1.NewCredentialServiceClient(cc)
	issue := func() error {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_, err := client.IssueCredential(cctx, &mayflyv1.IssueCredentialRequest{Entitlement: "demo-api-read"})
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for issue() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("serve on Redis never issued: %v", issue())
		}
		time.Sleep(100 * time.Millisecond)
	}
	list, err := client.ListLeases(context.Background(), &mayflyv1.ListLeasesRequest{})
	if err != nil || len(list.GetLeases()) != 1 {
		t.Fatalf("leases in Redis = %v, %v", list, err)
	}

	rs.Stop()
	start := time.Now()
	err = issue()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("with Redis down: %v, want Unavailable", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("failing closed took %v", took)
	}
	rs.Start()
	deadline = time.Now().Add(15 * time.Second)
	for {
		if err := issue(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("broker did not recover after Redis returned: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	list, err = client.ListLeases(context.Background(), &mayflyv1.ListLeasesRequest{})
	if err != nil || len(list.GetLeases()) != 2 {
		t.Fatalf("after recovery: %d leases, %v; want 2 (nothing minted during the outage)", len(list.GetLeases()), err)
	}

	// The audit trail, shared by replicas in the same Redis, holds both
	// issues and verifies with the key the broker wrote beside its own.
	pubs, err := audit.LoadPublicKeys(filepath.Join(dir, "audit-key.pem.pub"))
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	stream, err := audit.NewRedisStreamSink(rdb, audit.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(context.Background(), stream, pubs...)
	if err != nil || !rep.OK() || !rep.SignaturesChecked || rep.Checkpoints == 0 {
		t.Fatalf("verify the Redis trail = %v, %v", rep, err)
	}
	issued, err := audit.Query(context.Background(), stream, audit.Filter{Types: []audit.Type{audit.TypeLeaseIssued}})
	if err != nil || len(issued) != 2 {
		t.Fatalf("%d lease.issued events in the Redis trail, %v; want 2", len(issued), err)
	}
	if rep, err := audit.Verify(context.Background(), audit.JSONLFile{Path: filepath.Join(dir, "audit.jsonl")}); err != nil || rep.Records == 0 {
		t.Fatalf("the replica's file: %v, %v", rep, err)
	}
}
