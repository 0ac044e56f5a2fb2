package gcp

import (
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/issuertest"
	"github.com/mayflyhq/mayfly/broker/lease"
)

func TestConformance(t *testing.T) {
	const valid = "service_account: " + testSA + "\nscopes: [https://www.googleapis.com/auth/bigquery.readonly, https://www.googleapis.com/auth/devstorage.read_only]"
	var cur *env
	var params Params
	issuertest.Run(t, issuertest.Harness{
		New: func(t *testing.T) issuer.Issuer {
			cur = newEnv(t, nil)
			params = decode(t, cur.iss, valid)
			return cur.iss
		},
		ValidParams: []string{
			valid,
			"service_account: 123456789-compute@developer.gserviceaccount.com",
			"service_account: " + testSA + "\nmax_lifetime: 12h\ndelegates: [hop@analytics-prod.iam.gserviceaccount.com]",
		},
		InvalidParams: []issuertest.InvalidParams{
			{Name: "unknown key", YAML: "service_account: " + testSA + "\nscope: [x]", WantErr: `unknown key "scope"`},
			{Name: "no service account", YAML: "scopes: [x]", WantErr: "service_account is required"},
			{Name: "not a service account", YAML: "service_account: alice@example.org", WantErr: "not a service account email"},
			{Name: "lifetime too long", YAML: "service_account: " + testSA + "\nmax_lifetime: 24h", WantErr: "max_lifetime"},
			{Name: "bad scope", YAML: "service_account: " + testSA + "\nscopes: [\"a b\"]", WantErr: "scopes[0]"},
			{Name: "bad delegate", YAML: "service_account: " + testSA + "\ndelegates: [bob]", WantErr: "delegates[0]"},
			{Name: "not a mapping", YAML: "[service_account]", WantErr: "must be a mapping"},
		},
		Verify: func(t *testing.T, l *lease.Lease, c *issuer.Credential) {
			cur.verify(t, l, c, params)
		},
		IsRevoked:   nil, // a Google access token cannot be revoked
		Entitlement: testEnt,
		TTL:         15 * time.Minute,
	})
}
