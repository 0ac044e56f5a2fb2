package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// cli runs the mayfly command in-process against env as the dev CLI
// identity and returns stdout, stderr and the exit code.
func cli(t *testing.T, env *brokertest.Env, args ...string) (string, string, int) {
	t.Helper()
	return cliAs(t, env, "spiffe://mayfly.test/cli/dev", args...)
}

// cliAs runs the mayfly command as the workload id.
func cliAs(t *testing.T, env *brokertest.Env, id string, args ...string) (string, string, int) {
	t.Helper()
	name := strings.NewReplacer("spiffe://", "", "/", "_").Replace(id)
	cert, key, bundle := env.WriteSVID(t, name, id)
	full := append([]string{"--addr", env.GRPCAddr, "--broker-id", brokertest.BrokerID.String(),
		"--cert", cert, "--key", key, "--bundle", bundle}, args...)
	var out, errb bytes.Buffer
	code := run(full, &out, &errb)
	return out.String(), errb.String(), code
}

func TestIssueTableJSONAndExport(t *testing.T) {
	env := brokertest.Start(t, brokertest.Options{Policy: policy.ExamplePolicy})

	out, stderr, code := cli(t, env, "issue", "demo-api-write", "--ttl", "2m", "--reason", "try writes")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"LEASE", "ENTITLEMENT  demo-api-write", "TTL          2m0s", "REVOCABLE    no: a bearer JWT", "TOKEN        ey"} {
		if !strings.Contains(out, want) {
			t.Errorf("table output lacks %q:\n%s", want, out)
		}
	}

	out, stderr, code = cli(t, env, "issue", "demo-api-write", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var resp struct {
		Lease struct {
			ID          string `json:"id"`
			Entitlement string `json:"entitlement"`
			State       string `json:"state"`
		} `json:"lease"`
		Credential struct {
			JWT struct {
				Token string `json:"token"`
			} `json:"jwt"`
		} `json:"credential"`
		EffectiveTTL string `json:"effectiveTtl"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("json output: %v\n%s", err, out)
	}
	if resp.Lease.State != "LEASE_STATE_ACTIVE" || resp.Credential.JWT.Token == "" || resp.EffectiveTTL != "900s" {
		t.Fatalf("json = %+v", resp)
	}

	out, _, code = cli(t, env, "issue", "demo-api-write", "--export")
	if code != 0 || !strings.Contains(out, "export MAYFLY_TOKEN='ey") || !strings.Contains(out, "export MAYFLY_LEASE_ID='") {
		t.Fatalf("export output (exit %d):\n%s", code, out)
	}

	// The leases table lists all three; revoke one and see it end.
	out, _, code = cli(t, env, "leases")
	if code != 0 || strings.Count(out, "demo-api-write") != 3 {
		t.Fatalf("leases (exit %d):\n%s", code, out)
	}
	out, stderr, code = cli(t, env, "revoke", resp.Lease.ID)
	if code != 0 || !strings.Contains(out, resp.Lease.ID) {
		t.Fatalf("revoke (exit %d): %s %s", code, out, stderr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _, _ = cli(t, env, "leases", "--state", "revoked")
		if strings.Contains(out, resp.Lease.ID) && strings.Contains(out, "(explicit)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease not listed as revoked:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestExplainAndEntitlements(t *testing.T) {
	env := brokertest.Start(t, brokertest.Options{Policy: policy.ExamplePolicy})
	out, stderr, code := cli(t, env, "explain", "demo-api-write", "--ttl", "3h")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"DECISION     allow", "TTL          1h0m0s (clamped by policy)", "REASON       standing_grant:", "REASON       ttl_clamped:"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
	// The dev CLI is a policy admin: it may explain for the demo workload.
	out, stderr, code = cli(t, env, "explain", "demo-api-read", "--as", "spiffe://mayfly.test/workload/demo")
	if code != 0 || !strings.Contains(out, "DECISION     allow") || !strings.Contains(out, "SUBJECT      spiffe://mayfly.test/workload/demo") {
		t.Fatalf("explain --as (exit %d): %s %s", code, out, stderr)
	}
	out, _, code = cli(t, env, "explain", "demo-api-read")
	if code != 0 || !strings.Contains(out, "DECISION     deny") || !strings.Contains(out, "not_granted") {
		t.Fatalf("explain for an entitlement the CLI does not hold (exit %d):\n%s", code, out)
	}
	out, _, code = cli(t, env, "entitlements")
	if code != 0 || !strings.Contains(out, "demo-api-write") || strings.Contains(out, "demo-api-read") {
		t.Fatalf("entitlements (exit %d):\n%s", code, out)
	}
}

func TestErrorsAPersonCanActOn(t *testing.T) {
	env := brokertest.Start(t, brokertest.Options{Policy: policy.ExamplePolicy})
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"issue", "demo-api-read"}, "mayfly: PermissionDenied: no grant allows spiffe://mayfly.test/cli/dev to use entitlement \"demo-api-read\""},
		{[]string{"issue", "Demo"}, "mayfly: InvalidArgument: entitlement:"},
		{[]string{"revoke", "nope"}, "mayfly: InvalidArgument: lease_id:"},
		{[]string{"leases", "--state", "gone"}, `mayfly: --state "gone": use pending, active, revoking, revoked or irrevocable`},
		{[]string{"leases", "-o", "yaml"}, `mayfly: --output must be table or json, not "yaml"`},
		{[]string{"issue"}, "mayfly: accepts 1 arg(s), received 0"},
	}
	for _, tc := range cases {
		_, stderr, code := cli(t, env, tc.args...)
		if code != 1 || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want prefix %q", tc.args, code, stderr, tc.want)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"leases"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no identity: use --dev, or --cert/--key/--bundle, or --socket") {
		t.Fatalf("no identity: exit %d, %q", code, errb.String())
	}
	if code := run([]string{"--dev", "--dev-dir", t.TempDir(), "leases"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "start one with `mayflyd dev`") {
		t.Fatalf("no dev broker: exit %d, %q", code, errb.String())
	}
}

func TestCompletion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"completion", "bash"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "__start_mayfly") {
		t.Fatalf("bash completion: exit %d, %d bytes, %s", code, out.Len(), errb.String())
	}
}

func TestKillSwitchAndAllLeases(t *testing.T) {
	env := brokertest.Start(t, brokertest.Options{Policy: policy.ExamplePolicy})
	for i := 0; i < 2; i++ {
		if _, stderr, code := cli(t, env, "issue", "demo-api-write"); code != 0 {
			t.Fatal(stderr)
		}
	}
	if _, stderr, code := cli(t, env, "revoke", "--subject", "x", "--entitlement", "y"); code != 1 || !strings.Contains(stderr, "exactly one of --subject, --entitlement, --grant") {
		t.Fatalf("two selectors: exit %d %q", code, stderr)
	}
	out, stderr, code := cli(t, env, "revoke", "--subject", "spiffe://mayfly.test/cli/dev", "--reason", "drill")
	if code != 0 || !strings.Contains(out, "REVOKED  2") {
		t.Fatalf("kill switch (exit %d): %s %s", code, out, stderr)
	}
	out, stderr, code = cli(t, env, "leases", "--all", "--subject", "spiffe://mayfly.test/cli/dev")
	if code != 0 || strings.Count(out, "demo-api-write") != 2 || !strings.Contains(out, "SUBJECT") {
		t.Fatalf("leases --all (exit %d): %s %s", code, out, stderr)
	}
	if _, stderr, code = cli(t, env, "leases", "--subject", "spiffe://mayfly.test/cli/dev"); code != 1 || !strings.Contains(stderr, "--subject needs --all") {
		t.Fatalf("--subject without --all: exit %d %q", code, stderr)
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
