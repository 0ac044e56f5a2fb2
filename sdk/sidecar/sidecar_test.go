package sidecar_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sidecarv1 "github.com/mayflyhq/mayfly/proto/mayfly/sidecar/v1"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"github.com/mayflyhq/mayfly/sdk/sidecar"
)

// startSidecar starts a sidecar and closes it when the test ends.
func startSidecar(t *testing.T, cfg *sidecar.Config) *sidecar.Sidecar {
	t.Helper()
	sc, err := sidecar.New(cfg, sidecar.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sc.Close(); err != nil {
			t.Error(err)
		}
	})
	return sc
}

// The sidecar fetches a credential, writes it atomically with mode 0600,
// renews it (a 3s TTL: new JWTs every two seconds or so), serves it over
// the socket to its own uid, and at Close revokes the lease and removes the
// file and the socket.
func TestSidecarFilesSocketRenewalAndShutdown(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	dir := t.TempDir()
	sock := join(dir, "run", "sidecar.sock")
	cfg := b.config(
		sidecar.EntitlementConfig{Name: "fast-token", File: sidecar.FileConfig{Path: join(dir, "fast.env"), Template: "env"}},
		sidecar.EntitlementConfig{Name: "slow-token", File: sidecar.FileConfig{Path: join(dir, "slow.json")}},
	)
	cfg.Socket.Path = sock
	sc := startSidecar(t, cfg)

	// Files: contents and modes.
	env := readEnvFile(t, join(dir, "fast.env"))
	if env["MAYFLY_FAST_TOKEN_KIND"] != "jwt" || env["MAYFLY_FAST_TOKEN_TOKEN"] == "" || env["MAYFLY_FAST_TOKEN_SCOPES"] != "fast:read" {
		t.Fatalf("fast.env = %v", env)
	}
	first := sc.Credential("fast-token")
	if first == nil || env["MAYFLY_FAST_TOKEN_TOKEN"] != first.Token || env["MAYFLY_FAST_TOKEN_LEASE_ID"] != first.Lease.ID {
		t.Fatalf("fast.env does not hold the current credential")
	}
	var js struct {
		Entitlement, Kind, Token string
		LeaseID                  string    `json:"lease_id"`
		ExpiresAt                time.Time `json:"expires_at"`
	}
	raw, err := os.ReadFile(join(dir, "slow.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatal(err)
	}
	slow := sc.Credential("slow-token")
	if js.Entitlement != "slow-token" || js.Kind != "jwt" || js.Token != slow.Token || js.LeaseID != slow.Lease.ID || !js.ExpiresAt.Equal(slow.ExpiresAt) {
		t.Fatalf("slow.json = %s", raw)
	}
	for _, f := range []string{"fast.env", "slow.json"} {
		if m := fileMode(t, join(dir, f)); m != 0o600 {
			t.Errorf("%s mode %04o, want 0600", f, m)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
	// Socket and its directory: never open to others.
	if m := fileMode(t, sock); m != 0o600 {
		t.Errorf("socket mode %04o, want 0600", m)
	}
	if m := fileMode(t, join(dir, "run")); m != 0o700 {
		t.Errorf("socket directory mode %04o, want 0700", m)
	}

	// Renewal: the 3s token is replaced by a new one, in memory and on disk.
	eventually(t, 10*time.Second, "a renewed fast-token", func() bool {
		c := sc.Credential("fast-token")
		return c != nil && c.Token != first.Token
	})
	eventually(t, 5*time.Second, "fast.env rewritten", func() bool {
		return readEnvFile(t, join(dir, "fast.env"))["MAYFLY_FAST_TOKEN_TOKEN"] != first.Token
	})
	if cur := sc.Credential("fast-token"); cur.Lease.ID != first.Lease.ID {
		t.Errorf("renewal switched lease %s -> %s; want the same lease renewed", first.Lease.ID, cur.Lease.ID)
	}

	// The socket, as our own uid (the default allow_uids).
	cc, err := sidecar.DialSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := sidecarv1.NewSidecarServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := client.GetCredential(ctx, &sidecarv1.GetCredentialRequest{Entitlement: "slow-token"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetCredential().GetJwt().GetToken() != slow.Token || got.GetLease().GetId() != slow.Lease.ID ||
		got.GetLease().GetState() != mayflyv1.LeaseState_LEASE_STATE_ACTIVE || got.GetLease().GetEntitlement() != "slow-token" {
		t.Fatalf("GetCredential = %v", got)
	}
	_, err = client.GetCredential(ctx, &sidecarv1.GetCredentialRequest{Entitlement: "not-configured"})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `"not-configured" is not configured`) {
		t.Fatalf("unknown entitlement: %v", err)
	}
	_, err = client.GetCredential(ctx, &sidecarv1.GetCredentialRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no entitlement: %v", err)
	}

	// WatchCredential: the current token at once, then each renewal.
	stream, err := client.WatchCredential(ctx, &sidecarv1.WatchCredentialRequest{Entitlement: "fast-token"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < 3 {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v (after %d tokens)", err, len(seen))
		}
		tok := msg.GetCredential().GetJwt().GetToken()
		if tok == "" {
			t.Fatalf("watch sent no credential while one was valid: %v", msg)
		}
		if exp := msg.GetCredential().GetExpiresAt().AsTime(); !time.Now().Before(exp) {
			t.Fatalf("watch sent an expired credential (expired %v)", exp)
		}
		seen[tok] = true
	}

	// Shutdown: leases revoked, files and socket gone.
	fastLease, slowLease := sc.Credential("fast-token").Lease.ID, slow.Lease.ID
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{fastLease, slowLease} {
		if l := b.waitRevoked(t, id); l.GetRevokeReason() != "explicit" {
			t.Errorf("lease %s revoke reason %q, want explicit", id, l.GetRevokeReason())
		}
	}
	noFile(t, join(dir, "fast.env"))
	noFile(t, join(dir, "slow.json"))
	noFile(t, sock)
	if _, err := stream.Recv(); err == nil {
		t.Error("watch stream still open after Close")
	}
	if sc.Credential("fast-token") != nil {
		t.Error("Credential after Close is not nil")
	}
}

// An entitlement the broker refuses stops the start with an error naming
// it; the lease already issued for the other entitlement is revoked again
// and no file is left behind.
func TestSidecarStartRefusedEntitlement(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	dir := t.TempDir()
	cfg := b.config(
		sidecar.EntitlementConfig{Name: "slow-token", File: sidecar.FileConfig{Path: join(dir, "slow.json")}},
		sidecar.EntitlementConfig{Name: "not-granted", File: sidecar.FileConfig{Path: join(dir, "nope.json")}},
	)
	cfg.Socket.Path = join(dir, "run", "sock")
	sc, err := sidecar.New(cfg, sidecar.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = sc.Start(ctx)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Start: %v, want PermissionDenied", err)
	}
	want := `sidecar: entitlement "not-granted": the broker refused it (PermissionDenied)`
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Start error %q\ndoes not start with %q", err, want)
	}
	noFile(t, join(dir, "slow.json"))
	noFile(t, join(dir, "nope.json"))
	noFile(t, join(dir, "run", "sock"))

	// The slow-token lease it got first is revoked.
	resp, err := b.credentialsAsDemo.ListLeases(ctx, &mayflyv1.ListLeasesRequest{Entitlement: "slow-token"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetLeases()) != 1 {
		t.Fatalf("%d slow-token leases, want 1", len(resp.GetLeases()))
	}
	b.waitRevoked(t, resp.GetLeases()[0].GetId())
	if err := sc.Start(ctx); err == nil {
		t.Error("a failed sidecar started again")
	}
}

// A lease revoked behind the sidecar's back (an explicit RevokeLease by the
// workload, then the operator's kill switch) is noticed at the next lease
// check and replaced with a new credential; the file follows.
func TestSidecarReplacesRevokedLease(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	dir := t.TempDir()
	path := join(dir, "slow.token")
	sc := startSidecar(t, b.config(sidecar.EntitlementConfig{Name: "slow-token",
		File: sidecar.FileConfig{Path: path, Template: "raw"}}))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	revokers := []struct {
		name   string
		reason string
		revoke func(leaseID string) error
	}{
		{"RevokeLease by the workload", "explicit", func(id string) error {
			_, err := b.credentialsAsDemo.RevokeLease(ctx, &mayflyv1.RevokeLeaseRequest{LeaseId: id})
			return err
		}},
		{"kill switch on the entitlement", "kill_switch", func(string) error {
			resp, err := b.credentialsAsAdmin.RevokeBySelector(ctx, &mayflyv1.RevokeBySelectorRequest{
				Selector: &mayflyv1.RevokeBySelectorRequest_Entitlement{Entitlement: "slow-token"}, Reason: "test"})
			if err == nil && resp.GetRevoked() != 1 {
				err = fmt.Errorf("kill switch revoked %d leases, want 1", resp.GetRevoked())
			}
			return err
		}},
	}
	for _, r := range revokers {
		old := sc.Credential("slow-token")
		if old == nil {
			t.Fatalf("%s: no credential before revoking", r.name)
		}
		if err := r.revoke(old.Lease.ID); err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		if l := b.waitRevoked(t, old.Lease.ID); l.GetRevokeReason() != r.reason {
			t.Errorf("%s: revoke reason %q, want %q", r.name, l.GetRevokeReason(), r.reason)
		}
		eventually(t, 10*time.Second, r.name+": a new lease", func() bool {
			c := sc.Credential("slow-token")
			return c != nil && c.Lease.ID != old.Lease.ID
		})
		cur := sc.Credential("slow-token")
		eventually(t, 5*time.Second, r.name+": file rewritten", func() bool {
			b, err := os.ReadFile(path)
			return err == nil && string(b) == cur.Token
		})
		if l := b.leaseState(t, cur.Lease.ID); l.GetState() != mayflyv1.LeaseState_LEASE_STATE_ACTIVE {
			t.Errorf("%s: new lease is %v", r.name, l.GetState())
		}
	}
}

// Exec runs the child with the credentials in its environment, signals it
// with SIGHUP on each rotation (the child traps HUP and writes a marker),
// passes its exit code through, and revokes the lease once it has exited.
func TestExecSignalsOnRotation(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	dir := t.TempDir()
	script := join(dir, "child.sh")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
echo "$MAYFLY_TOKEN" > "$1/env-token"
echo "$MAYFLY_LEASE_ID" > "$1/env-lease"
trap 'cp "$1/token" "$1/hup-$(date +%s%N)"' HUP
while [ ! -e "$1/stop" ]; do sleep 0.05; done
exit 7
`), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := b.config(sidecar.EntitlementConfig{Name: "fast-token", File: sidecar.FileConfig{Path: join(dir, "token"), Template: "raw"}})
	cfg.Exec.Signal = "SIGHUP"
	sc, err := sidecar.New(cfg, sidecar.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := sc.Exec(context.Background(), []string{script, dir})
		done <- result{code, err}
	}()

	eventually(t, 20*time.Second, "the child wrote its environment", func() bool {
		b, err := os.ReadFile(join(dir, "env-lease"))
		return err == nil && len(strings.TrimSpace(string(b))) > 0
	})
	first := sc.Credential("fast-token")
	envTok, _ := os.ReadFile(join(dir, "env-token"))
	if first == nil || strings.TrimSpace(string(envTok)) == "" {
		t.Fatal("MAYFLY_TOKEN empty in the child's environment")
	}
	// Each HUP copies the token file as it was when signalled: the file is
	// written before the signal, so every copy holds a token newer than the
	// one in the environment.
	var hups []string
	eventually(t, 15*time.Second, "two SIGHUPs", func() bool {
		hups = nil
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "hup-") {
				hups = append(hups, e.Name())
			}
		}
		return len(hups) >= 2
	})
	for _, h := range hups {
		tok, err := os.ReadFile(join(dir, h))
		if err != nil {
			t.Fatal(err)
		}
		if string(tok) == strings.TrimSpace(string(envTok)) || len(tok) == 0 {
			t.Errorf("%s holds the token of the start, not a rotated one", h)
		}
	}

	leaseID := sc.Credential("fast-token").Lease.ID
	if err := os.WriteFile(join(dir, "stop"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.code != 7 {
			t.Fatalf("Exec = %d, %v; want 7, nil", r.code, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Exec did not return after the child exited")
	}
	b.waitRevoked(t, leaseID)
	noFile(t, join(dir, "token"))
}

// With restart_on_rotation the child is stopped and started again with the
// new token in its environment; when ctx ends, the child gets SIGTERM.
func TestExecRestartsOnRotation(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	dir := t.TempDir()
	script := join(dir, "child.sh")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
echo "$MAYFLY_TOKEN" >> "$1/starts"
trap 'echo term >> "$1/terms"; exit 0' TERM
while :; do sleep 0.05; done
`), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := b.config(sidecar.EntitlementConfig{Name: "fast-token"})
	cfg.Exec.RestartOnRotation = true
	cfg.Exec.StopTimeout = sidecar.Duration(5 * time.Second)
	sc, err := sidecar.New(cfg, sidecar.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		code, err := sc.Exec(ctx, []string{script, dir})
		if err == nil && code != 0 {
			err = fmt.Errorf("exit code %d", code)
		}
		done <- err
	}()
	var starts []string
	eventually(t, 20*time.Second, "three starts", func() bool {
		b, _ := os.ReadFile(join(dir, "starts"))
		starts = strings.Fields(string(b))
		return len(starts) >= 3
	})
	for i := 1; i < len(starts); i++ {
		if starts[i] == starts[i-1] {
			t.Errorf("start %d got the same token as start %d", i, i-1)
		}
	}
	leaseID := sc.Credential("fast-token").Lease.ID
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Exec did not return")
	}
	terms, _ := os.ReadFile(join(dir, "terms"))
	if n := strings.Count(string(terms), "term"); n < len(starts) {
		t.Errorf("%d SIGTERMs for %d starts", n, len(starts))
	}
	b.waitRevoked(t, leaseID)
}

// An existing socket directory open to others is refused; so is a live
// socket of another sidecar.
func TestSocketDirectoryChecks(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	dir := t.TempDir()
	open := join(dir, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := b.config(sidecar.EntitlementConfig{Name: "slow-token"})
	cfg.Socket.Path = join(open, "sock")
	sc, err := sidecar.New(cfg, sidecar.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = sc.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "is open to other users (mode 0755)") {
		t.Fatalf("Start with an open socket directory: %v", err)
	}

	cfg.Socket.Path = join(dir, "private", "sock")
	startSidecar(t, cfg)
	second, err := sidecar.New(cfg, sidecar.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	err = second.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "another process is serving") {
		t.Fatalf("second sidecar on the same socket: %v", err)
	}
}
