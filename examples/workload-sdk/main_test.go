package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly/broker/brokertest"
)

// The example runs against a real broker with the demo workload's SVID
// files laid out as `mayflyd dev` lays them out, renews its 3s credential
// and revokes it on exit.
func TestExampleAgainstBroker(t *testing.T) {
	env := brokertest.Start(t, brokertest.Options{})
	cert, _, _ := env.WriteSVID(t, "workload", "spiffe://mayfly.test/workload/demo")
	var out bytes.Buffer
	err := run(context.Background(), []string{
		"-addr", env.GRPCAddr, "-dev-dir", filepath.Dir(cert), "-ttl", "3s", "-duration", "4s",
	}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"credential: sdk.Credential{kind=jwt lease_id=",
		"entitlement=demo-api-read",
		"token=REDACTED",
		"claims: sub=spiffe://mayfly.test/workload/demo aud=https://demo-api.mayfly.test",
		"renewed: sdk.Credential{",
		"lease revoked",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "e+09") {
		t.Errorf("claims printed as floats:\n%s", got)
	}
}
