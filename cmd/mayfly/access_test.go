package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/brokertest"
)

const governancePolicy = `
version: 1
trust_domains: [mayfly.test]
groups:
  agents: ["spiffe://mayfly.test/agents/*"]
  leads: ["spiffe://mayfly.test/people/lead"]
  security: ["spiffe://mayfly.test/people/sec"]
admins: ["spiffe://mayfly.test/people/sec"]
entitlements:
  orders-db-admin:
    description: DDL on the orders database
    owner: group:security
    issuer: jwt
    jwt: { audience: https://orders-db.mayfly.test }
    ttl: 10m
    max_ttl: 1h
    requestable_by: [group:agents]
    approval: { approvals: 2, approvers: [group:leads, group:security], distinct_groups: true }
    require: { reason: true, ticket: "^CHG-[0-9]+$" }
`

const (
	agent = "spiffe://mayfly.test/agents/migrator"
	lead  = "spiffe://mayfly.test/people/lead"
	sec   = "spiffe://mayfly.test/people/sec"
)

// syncBuf lets the waiting command write while the test reads.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestRequestWaitApproveExport is the human flow end to end: request with
// --wait shows the approvals as they come, two approvers approve, and the
// waiting command prints the credential as exports.
func TestRequestWaitApproveExport(t *testing.T) {
	env := brokertest.Start(t, brokertest.Options{Policy: []byte(governancePolicy)})
	_, stderr, code := cliAs(t, env, agent, "request", "orders-db-admin", "--reason", "index", "--ticket", "JIRA-1")
	if code != 1 || !strings.Contains(stderr, "InvalidArgument") || !strings.Contains(stderr, "CHG-") {
		t.Fatalf("bad ticket: exit %d %q", code, stderr)
	}

	cert, key, bundle := env.WriteSVID(t, "agent", agent)
	var out, errb syncBuf
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--addr", env.GRPCAddr, "--broker-id", brokertest.BrokerID.String(), "--cert", cert, "--key", key, "--bundle", bundle,
			"request", "orders-db-admin", "--reason", "add index", "--ticket", "CHG-7", "--for", "30m", "--wait", "--export"}, &out, &errb)
	}()
	var id string
	deadline := time.Now().Add(10 * time.Second)
	for id == "" {
		if s := errb.String(); strings.Contains(s, "pending, 0 of 2 approvals") {
			id = strings.Fields(strings.TrimPrefix(s[strings.Index(s, "request "):], "request "))[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pending status line: %q", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if o, e, c := cliAs(t, env, agent, "approve", id); c != 1 || !strings.Contains(e, "same person or agent") {
		t.Fatalf("self-approval: exit %d %q %q", c, o, e)
	}
	if o, e, c := cliAs(t, env, lead, "requests", "--to-review"); c != 0 || !strings.Contains(o, id) {
		t.Fatalf("lead's review queue: exit %d %q %q", c, o, e)
	}
	if o, e, c := cliAs(t, env, lead, "approve", id, "--comment", "looks fine"); c != 0 || !strings.Contains(o, "1 of 2") {
		t.Fatalf("first approval: exit %d %q %q", c, o, e)
	}
	for !strings.Contains(errb.String(), "1 of 2 approvals") {
		if time.Now().After(deadline) {
			t.Fatalf("status line did not show the first approval: %q", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if o, e, c := cliAs(t, env, sec, "approve", id); c != 0 || !strings.Contains(o, "approved") {
		t.Fatalf("second approval: exit %d %q %q", c, o, e)
	}
	select {
	case c := <-done:
		if c != 0 {
			t.Fatalf("request --wait exited %d: %s", c, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request --wait did not finish after approval")
	}
	if !strings.Contains(errb.String(), "approved (grant") || !strings.Contains(out.String(), "export MAYFLY_TOKEN='ey") {
		t.Fatalf("stdout %q stderr %q", out.String(), errb.String())
	}
	if o, _, c := cliAs(t, env, agent, "grants"); c != 0 || !strings.Contains(o, "orders-db-admin") || !strings.Contains(o, "request") {
		t.Fatalf("grants: %q", o)
	}
	// What-if as the admin: a policy that drops requestable_by would have
	// refused the request.
	stricter := strings.Replace(governancePolicy, "    requestable_by: [group:agents]\n    approval: { approvals: 2, approvers: [group:leads, group:security], distinct_groups: true }\n    require: { reason: true, ticket: \"^CHG-[0-9]+$\" }\n", "", 1)
	path := t.TempDir() + "/new.yaml"
	writeTestFile(t, path, stricter)
	o, e, c := cliAs(t, env, sec, "policy", "whatif", path)
	if c != 0 || !strings.Contains(o, "would change") || !strings.Contains(o, "needs_approval") {
		t.Fatalf("whatif: exit %d %q %q", c, o, e)
	}
}
