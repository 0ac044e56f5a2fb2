package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/cmd/internal/devenv"
)

// syncBuffer is a bytes.Buffer safe for the broker goroutine to write while
// the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevQuickstart follows the README's quickstart as a new user would:
// `mayflyd dev`, then the mayfly CLI built from source with --dev.
func TestDevQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the CLI")
	}
	dir := t.TempDir()
	bin := filepath.Join(t.TempDir(), "mayfly")
	if out, err := exec.Command("go", "build", "-o", bin, "../mayfly").CombinedOutput(); err != nil {
		t.Fatalf("go build ../mayfly: %v\n%s", err, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var stdout syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- newRoot(&stdout, "dev", "--state-dir", dir, "--listen", "127.0.0.1:0",
			"--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-level", "warn").ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mayflyd dev: %v", err)
		}
	})
	var client *devenv.Client
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), "Next, in another terminal") {
		if time.Now().After(deadline) {
			t.Fatalf("mayflyd dev did not start; output so far:\n%s", stdout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	client, err := devenv.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{client.CLI.Key, client.Workload.Key, filepath.Join(dir, "policy.yaml")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, fi.Mode().Perm(), err)
		}
	}

	mayfly := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--dev", "--dev-dir", dir}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("mayfly %v: %v\n%s", args, err, errb.String())
		}
		return out.String()
	}
	if out := mayfly("entitlements"); !strings.Contains(out, "demo-api-write") {
		t.Fatalf("entitlements:\n%s", out)
	}
	var issued struct {
		Lease struct {
			ID string `json:"id"`
		} `json:"lease"`
		Credential struct {
			JWT struct {
				Token string `json:"token"`
			} `json:"jwt"`
		} `json:"credential"`
	}
	if err := json.Unmarshal([]byte(mayfly("issue", "demo-api-write", "-o", "json")), &issued); err != nil {
		t.Fatal(err)
	}
	if issued.Lease.ID == "" || strings.Count(issued.Credential.JWT.Token, ".") != 2 {
		t.Fatalf("issue: %+v", issued)
	}
	if out := mayfly("leases"); !strings.Contains(out, issued.Lease.ID) || !strings.Contains(out, "active") {
		t.Fatalf("leases:\n%s", out)
	}
	if out := mayfly("explain", "demo-api-read", "--as", devenv.WorkloadID); !strings.Contains(out, "allow") {
		t.Fatalf("explain --as:\n%s", out)
	}
	mayfly("revoke", issued.Lease.ID)

	// People: dev users log in through the dev OIDC provider. bob (a
	// developer) asks for admin access, alice (platform) approves, bob
	// issues under the grant; bob cannot approve his own request.
	if out := mayfly("--user", "bob", "issue", "demo-api-write"); !strings.Contains(out, "user:bob") {
		t.Fatalf("bob's credential:\n%s", out)
	}
	var req struct {
		ID     string `json:"id"`
		State  string `json:"state"`
		Digest string `json:"digest"`
	}
	if err := json.Unmarshal([]byte(mayfly("--user", "bob", "request", "demo-api-admin", "--reason", "schema change", "--ticket", "DEMO-7", "--for", "30m", "-o", "json")), &req); err != nil {
		t.Fatal(err)
	}
	if req.State != "ACCESS_REQUEST_STATE_PENDING" {
		t.Fatalf("request: %+v", req)
	}
	self := exec.Command(bin, "--dev", "--dev-dir", dir, "--user", "bob", "approve", req.ID)
	if out, err := self.CombinedOutput(); err == nil || !strings.Contains(string(out), "PermissionDenied") {
		t.Fatalf("bob approved his own request: %v %s", err, out)
	}
	if out := mayfly("--user", "alice", "approve", req.ID, "--comment", "ok"); !strings.Contains(out, "approved") {
		t.Fatalf("alice's approval:\n%s", out)
	}
	if out := mayfly("--user", "bob", "issue", "demo-api-admin"); !strings.Contains(out, "demo:admin") {
		t.Fatalf("bob's admin credential:\n%s", out)
	}

	// The dev broker serves discovery and the JWKS over HTTPS with its SVID.
	hc := &http.Client{Timeout: 5 * time.Second}
	if _, err := hc.Get(client.HTTPURL + "/.well-known/jwks.json"); err == nil {
		t.Fatal("the JWKS endpoint was trusted without the dev bundle")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("unexpected error: %v", err)
	}
	metricsURL := between(stdout.String(), "metrics          ", "\n")
	resp, err := hc.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`mayfly_issue_duration_seconds_count{result="ok"} 3`, `mayfly_audit_events_total`, `mayfly_leases{state="active"}`, `mayfly_access_requests_pending 0`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Fatalf("metrics lack %s:\n%s", want, body)
		}
	}

	// The dev broker keeps an audit trail in its state directory: it
	// verifies with the key beside it, and shows bob's request through to
	// his lease.
	if out := mayfly("audit", "verify"); !strings.HasPrefix(out, "ok: seq 1..") || strings.Contains(out, "not checked") {
		t.Fatalf("audit verify:\n%s", out)
	}
	if out := mayfly("lineage", "--request", req.ID); !strings.Contains(out, "user:bob") || !strings.Contains(out, "lease") {
		t.Fatalf("lineage of bob's request:\n%s", out)
	}
}

func between(s, from, to string) string {
	i := strings.Index(s, from)
	if i < 0 {
		return ""
	}
	s = s[i+len(from):]
	if j := strings.Index(s, to); j >= 0 {
		return strings.TrimSpace(s[:j])
	}
	return s
}
