package main

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mayflyhq/mayfly/broker/devca"
	"github.com/mayflyhq/mayfly/broker/lease"
	leaseredis "github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

const crashPolicy = `
version: 1
trust_domains: [mayfly.test]
entitlements:
  short-token:
    description: short-lived tokens for the crash test
    owner: user:ops
    issuer: jwt
    jwt: { audience: https://api.mayfly.test }
    ttl: 4s
    max_ttl: 8s
    standing:
      - subject: spiffe://mayfly.test/workload/*
        purpose: crash test
        until: 2099-12-31
`

// TestSIGKILLMidIssuance kills a broker process with SIGKILL while 16
// callers issue credentials, starts another, and checks the promise: every
// credential a caller received has a lease that was written before the
// response, and every lease in Redis (pending ones included) ends revoked
// by its due time plus 2 s.
func TestSIGKILLMidIssuance(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills broker processes")
	}
	rs := testenv.StartRedis(t, testenv.RedisConfig{AppendOnly: true})
	dir := t.TempDir()
	bin := filepath.Join(dir, "mayflyd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
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
	pol := writeFile(t, dir, "policy.yaml", crashPolicy)
	cfg := writeFile(t, dir, "mayflyd.yaml", `
listen: `+addr+`
trust_domains: [mayfly.test]
policy: `+pol+`
identity: {cert: `+cert+`, key: `+key+`, bundle: `+ca.BundlePath()+`}
jwt: {issuer_url: "https://127.0.0.1:7444", key_dir: `+filepath.Join(dir, "keys")+`}
leases: {store: redis, pending_timeout: 3s, redis: {addrs: [`+rs.Addr()+`], prefix: crash}}
log: {level: error}
`)
	startBroker := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--config", cfg)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}

	workload, err := ca.MintX509SVID(spiffeid.RequireFromString("spiffe://mayfly.test/workload/crash"), time.Hour)
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

	first := startBroker()
	waitIssue(t, client)

	// 16 callers issue as fast as they can; the broker dies under them.
	var (
		mu       sync.Mutex
		received = map[string]time.Time{} // lease id -> expiry the caller was told
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				resp, err := client.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "short-token"})
				cancel()
				if err == nil {
					mu.Lock()
					received[resp.GetLease().GetId()] = resp.GetLease().GetExpiresAt().AsTime()
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	killedAt := time.Now()
	if len(received) < 50 {
		t.Fatalf("only %d credentials issued before the kill; the test needs load", len(received))
	}

	// Every credential a caller holds has its lease in Redis.
	rc := goredis.NewClient(&goredis.Options{Addr: rs.Addr()})
	defer rc.Close()
	store, err := leaseredis.New(rc, leaseredis.Options{Prefix: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	for id := range received {
		l, err := store.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("credential %s was handed out without a lease: %v", id, err)
		}
		if l.State == lease.StatePending {
			t.Fatalf("credential %s was handed out with its lease still pending", id)
		}
	}

	// Another broker comes up and ends everything on time.
	startBroker()
	waitIssue(t, client)
	readyAt := time.Now()
	var latest time.Time = readyAt.Add(4 * time.Second) // waitIssue's own lease
	for _, exp := range received {
		if exp.After(latest) {
			latest = exp
		}
	}
	if d := killedAt.Add(3 * time.Second); d.After(latest) { // pending deadlines
		latest = d
	}
	time.Sleep(time.Until(latest.Add(2500 * time.Millisecond)))
	var all []*lease.Lease
	q := lease.Query{PageSize: 1000}
	for {
		page, next, err := store.List(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if q.PageToken = next; next == "" {
			break
		}
	}
	pending, worst := 0, time.Duration(0)
	for _, l := range all {
		if l.State != lease.StateRevoked {
			t.Errorf("lease %s is %s, want revoked", l.ID, l.State)
			continue
		}
		if l.RevokeReason == lease.ReasonPendingTimeout {
			pending++
		}
		lag := l.RevokedAt.Sub(l.EndDue())
		if lag > worst {
			worst = lag
		}
		// A lease whose due time passed while no broker ran is late by
		// the outage; the promise is due + 2 s once a broker is back.
		limit := l.EndDue()
		if limit.Before(readyAt) {
			limit = readyAt
		}
		if l.RevokedAt.After(limit.Add(2 * time.Second)) {
			t.Errorf("lease %s revoked at %s, due %s: later than due + 2s after a broker was back", l.ID, l.RevokedAt, l.EndDue())
		}
	}
	t.Logf("%d credentials received, %d leases in Redis (%d reaped pending), worst lag %v", len(received), len(all), pending, worst)
}

func waitIssue(t *testing.T, client mayflyv1.CredentialServiceClient) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := client.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "short-token"})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker never issued: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
