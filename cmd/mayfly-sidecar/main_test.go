package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	sidecarv1 "github.com/mayflyhq/mayfly/proto/mayfly/sidecar/v1"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"github.com/mayflyhq/mayfly/sdk/sidecar"
)

// These tests run the mayfly-sidecar binary, built once for the package,
// against a real broker (brokertest).

var sidecarBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mayfly-sidecar-bin-")
	if err != nil {
		log.Fatal(err)
	}
	sidecarBin = filepath.Join(dir, "mayfly-sidecar")
	if out, err := exec.Command("go", "build", "-o", sidecarBin, ".").CombinedOutput(); err != nil {
		log.Fatalf("go build: %v\n%s", err, out)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

const testPolicy = `version: 1
trust_domains: [mayfly.test]
entitlements:
  fast-token:
    description: Short-lived token for rotation tests
    owner: user:alice
    issuer: jwt
    jwt:
      audience: https://fast.mayfly.test
    ttl: 3s
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/demo
        purpose: sidecar tests
        until: 2099-12-31
  slow-token:
    description: Token that does not rotate during a test
    owner: user:alice
    issuer: jwt
    jwt:
      audience: https://slow.mayfly.test
    ttl: 10m
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/demo
        purpose: sidecar tests
        until: 2099-12-31
  not-granted:
    description: Nobody holds a grant for this one
    owner: user:alice
    issuer: jwt
    jwt:
      audience: https://nobody.mayfly.test
    ttl: 5m
    max_ttl: 1h
`

const workloadID = "spiffe://mayfly.test/workload/demo"

type fixture struct {
	env  *brokertest.Env
	dir  string
	demo mayflyv1.CredentialServiceClient
}

// setup starts a broker and writes a sidecar config with the given body
// (entitlements, socket, exec) after the broker and identity sections.
func setup(t *testing.T, body string) (*fixture, string) {
	t.Helper()
	env := brokertest.Start(t, brokertest.Options{Policy: []byte(testPolicy)})
	cert, key, bundle := env.WriteSVID(t, "demo", workloadID)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`broker:
  addr: %s
  id: %s
identity:
  files: {cert: %s, key: %s, bundle: %s}
lease_check_interval: 500ms
%s`, env.GRPCAddr, brokertest.BrokerID, cert, key, bundle, body)
	path := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &fixture{env: env, dir: dir, demo: mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))}, path
}

// start runs the binary; stdout and stderr are collected.
func start(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(sidecarBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("mayfly-sidecar output:\n%s", out.String())
		}
	})
	return cmd, &out
}

// wait waits for the process to exit and returns its exit code.
func wait(t *testing.T, cmd *exec.Cmd, timeout time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("mayfly-sidecar did not exit within %v", timeout)
		return -1
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// leaseOf returns the lease id in a json credential file.
func (f *fixture) waitRevoked(t *testing.T, leaseID string) {
	t.Helper()
	eventually(t, 10*time.Second, "lease "+leaseID+" revoked", func() bool {
		resp, err := f.demo.GetLease(context.Background(), &mayflyv1.GetLeaseRequest{LeaseId: leaseID})
		return err == nil && resp.GetLease().GetState() == mayflyv1.LeaseState_LEASE_STATE_REVOKED
	})
}

// `run` keeps the file and the socket until SIGTERM, then revokes the lease
// and removes both before exiting with status 0.
func TestRunServesUntilSIGTERM(t *testing.T) {
	t.Parallel()
	f, cfg := setup(t, `entitlements:
  - name: slow-token
    file: {path: token.env, template: env}
socket:
  path: run/sidecar.sock
`)
	cmd, _ := start(t, "run", "--config", cfg, "--log-level", "debug")
	envPath, sock := filepath.Join(f.dir, "token.env"), filepath.Join(f.dir, "run", "sidecar.sock")
	eventually(t, 20*time.Second, "the credential file", func() bool { return strings.Contains(readFile(envPath), "MAYFLY_TOKEN=") })
	eventually(t, 5*time.Second, "the socket", func() bool { _, err := os.Stat(sock); return err == nil })
	if m := mode(t, envPath); m != 0o600 {
		t.Errorf("file mode %04o", m)
	}
	if m := mode(t, sock); m != 0o600 {
		t.Errorf("socket mode %04o", m)
	}
	if m := mode(t, filepath.Dir(sock)); m != 0o700 {
		t.Errorf("socket directory mode %04o", m)
	}

	cc, err := sidecar.DialSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := sidecarv1.NewSidecarServiceClient(cc).GetCredential(ctx, &sidecarv1.GetCredentialRequest{Entitlement: "slow-token"})
	if err != nil {
		t.Fatal(err)
	}
	if tok := resp.GetCredential().GetJwt().GetToken(); !strings.Contains(readFile(envPath), "MAYFLY_TOKEN='"+tok+"'") {
		t.Errorf("socket and file disagree")
	}

	// `get` reads the same credential from the socket.
	get, out := start(t, "get", "--socket", sock, "slow-token")
	if code := wait(t, get, 10*time.Second); code != 0 || !strings.Contains(out.String(), "MAYFLY_TOKEN='"+resp.GetCredential().GetJwt().GetToken()+"'\n") {
		t.Errorf("get: exit %d, output %q", code, out)
	}
	get, out = start(t, "get", "--socket", sock, "--template", "{{ .Lease.ID }}", "slow-token")
	if code := wait(t, get, 10*time.Second); code != 0 || out.String() != resp.GetLease().GetId() {
		t.Errorf("get --template: exit %d, output %q", code, out)
	}
	get, out = start(t, "get", "--socket", sock, "fast-token")
	if code := wait(t, get, 10*time.Second); code != 1 || !strings.Contains(out.String(), `"fast-token" is not configured`) {
		t.Errorf("get of an unconfigured entitlement: exit %d, output %q", code, out)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := wait(t, cmd, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	f.waitRevoked(t, resp.GetLease().GetId())
	for _, p := range []string{envPath, sock} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind", p)
		}
	}
}

// `exec` runs the child with MAYFLY_TOKEN, sends SIGHUP on each rotation,
// and exits with the child's code after revoking the lease.
func TestExecSignalsChild(t *testing.T) {
	t.Parallel()
	f, cfg := setup(t, `entitlements:
  - name: fast-token
    file: {path: token, template: raw}
exec:
  signal: SIGHUP
`)
	script := filepath.Join(f.dir, "child.sh")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
printf %s "$MAYFLY_TOKEN" > "$1/env-token"
printf %s "$MAYFLY_LEASE_ID" > "$1/lease"
hups=0
trap 'hups=$((hups+1)); echo "hup $hups" >> "$1/hups"' HUP
while [ "$hups" -lt 2 ]; do sleep 0.05; done
exit 3
`), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd, out := start(t, "exec", "--config", cfg, "--", script, f.dir)
	if code := wait(t, cmd, 30*time.Second); code != 3 {
		t.Fatalf("exit code %d, want the child's 3\n%s", code, out)
	}
	if got := readFile(filepath.Join(f.dir, "hups")); got != "hup 1\nhup 2\n" {
		t.Errorf("hups = %q", got)
	}
	if tok := readFile(filepath.Join(f.dir, "env-token")); strings.Count(tok, ".") != 2 {
		t.Errorf("MAYFLY_TOKEN = %q, want a JWT", tok)
	}
	f.waitRevoked(t, readFile(filepath.Join(f.dir, "lease")))
	if _, err := os.Lstat(filepath.Join(f.dir, "token")); !os.IsNotExist(err) {
		t.Error("credential file left behind")
	}
}

// SIGTERM to `exec` reaches the child; the sidecar waits for it, revokes,
// and exits with the child's code.
func TestExecSIGTERM(t *testing.T) {
	t.Parallel()
	f, cfg := setup(t, `entitlements:
  - name: slow-token
`)
	script := filepath.Join(f.dir, "child.sh")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
trap 'echo term > "$1/term"; exit 0' TERM
printf %s "$MAYFLY_LEASE_ID" > "$1/lease"
while :; do sleep 0.05; done
`), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd, _ := start(t, "exec", "--config", cfg, "--", script, f.dir)
	eventually(t, 20*time.Second, "the child", func() bool { return readFile(filepath.Join(f.dir, "lease")) != "" })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := wait(t, cmd, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if readFile(filepath.Join(f.dir, "term")) != "term\n" {
		t.Error("the child did not get SIGTERM")
	}
	f.waitRevoked(t, readFile(filepath.Join(f.dir, "lease")))
}

// An entitlement the broker refuses fails the start with its name.
func TestStartRefused(t *testing.T) {
	t.Parallel()
	_, cfg := setup(t, `entitlements:
  - name: not-granted
`)
	cmd, out := start(t, "run", "--config", cfg)
	if code := wait(t, cmd, 20*time.Second); code != 1 {
		t.Fatalf("exit code %d", code)
	}
	want := `mayfly-sidecar: sidecar: entitlement "not-granted": the broker refused it (PermissionDenied)`
	if !strings.Contains(out.String(), want) {
		t.Fatalf("output does not contain %q:\n%s", want, out)
	}
}

func TestCheckAndUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(good, []byte("broker: {addr: x:1}\nidentity: {workload_api: {}}\nentitlements: [{name: a}]\n"), 0o600)
	_ = os.WriteFile(bad, []byte("broker: {addr: x:1}\nidentity: {workload_api: {}}\nentitlements: [{name: a, tll: 1m}]\n"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"check", "--config", good}, 0, "configuration ok"},
		{[]string{"check", "--config", bad}, 1, "mayfly-sidecar: sidecar: config " + bad + ": yaml: unmarshal errors:\n  line 3: field tll not found"},
		{[]string{"run"}, 1, "mayfly-sidecar: --config is required"},
		{[]string{"exec", "--config", good}, 1, "requires at least 1 arg(s)"},
		{[]string{"run", "--config", good, "--log-level", "loud"}, 1, `--log-level "loud"`},
	} {
		cmd, out := start(t, tc.args...)
		if code := wait(t, cmd, 10*time.Second); code != tc.code || !strings.Contains(out.String(), tc.want) {
			t.Errorf("%v: exit %d, output %q; want %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}
