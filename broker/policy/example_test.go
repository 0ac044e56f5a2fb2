package policy_test

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// decodeJWT stands in for the jwt issuer's DecodeParams.
func decodeJWT(node *yaml.Node) (any, error) {
	var params struct {
		Audience string   `yaml:"audience"`
		Scopes   []string `yaml:"scopes"`
	}
	if node == nil {
		return nil, errors.New("audience is required")
	}
	if err := node.Decode(&params); err != nil {
		return nil, err
	}
	return params, nil
}

var opts = policy.Options{Issuers: map[string]func(*yaml.Node) (any, error){"jwt": decodeJWT}}

func ExamplePolicy_Decide() {
	p, err := policy.Parse(policy.ExamplePolicy, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	runner := authn.Principal{Kind: authn.KindWorkload, ID: "spiffe://mayfly.test/ci/runner-7"}

	d := p.Decide(policy.Input{Principal: runner, Entitlement: "ci-deploy-token", TTL: time.Hour, Now: now})
	fmt.Println(d.Outcome, d.GrantID, d.TTL, d.ExpiresAt.Format(time.RFC3339))
	for _, r := range d.Reasons {
		fmt.Println(r.Code+":", r.Message)
	}

	d = p.Decide(policy.Input{Principal: runner, Entitlement: "demo-api-write", Now: now})
	fmt.Println(d.Outcome, d.Reasons[0].Message)
	// Output:
	// allow ci-runners-deploy 30m0s 2026-03-01T12:30:00Z
	// standing_grant: standing grant "ci-runners-deploy" lets spiffe://mayfly.test/ci/* use entitlement "ci-deploy-token" until 2100-01-01T00:00:00Z (purpose: CI deploys the demo after a merge)
	// ttl_clamped: TTL reduced from 1h to 30m: max_ttl of entitlement "ci-deploy-token" is 30m
	// deny no grant allows spiffe://mayfly.test/ci/runner-7 to use entitlement "demo-api-write"
}

func ExampleParse() {
	_, err := policy.Parse([]byte(`version: 1
trust_domains: [prod.example.org]
entitlements:
  orders-db-ro:
    description: Read-only access to the orders database
    owner: user:alice
    issuer: jwt
    jwt: {audience: orders}
    ttl: 15min
    max_ttl: 1h
    standing:
      - subject: spiffe://staging.example.org/orders
        purpose: orders API reads orders
        until: 2027-06-30
`), opts)
	fmt.Println(err)
	// Output:
	// policy: line 9: entitlements.orders-db-ro.ttl: invalid duration "15min" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)
	// policy: line 12: entitlements.orders-db-ro.standing[0].subject: subject "spiffe://staging.example.org/orders": trust domain "staging.example.org" is not listed in trust_domains
}

func ExamplePolicy_Usable() {
	p, err := policy.Parse(policy.ExamplePolicy, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	bob := authn.Principal{Kind: authn.KindHuman, ID: "user:bob"}
	for _, u := range p.Usable(bob, time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) {
		fmt.Println(u.Entitlement.Name, u.TTL)
	}
	// Output:
	// demo-api-write 15m0s
}

func ExampleWhatIf() {
	oldP, err := policy.Parse(policy.ExamplePolicy, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	// A proposed change: admin grants of at most one hour.
	newP, err := policy.Parse(bytes.Replace(policy.ExamplePolicy, []byte("max_duration: 4h"), []byte("max_duration: 1h"), 1), opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	bob := authn.Principal{Kind: authn.KindHuman, ID: "user:bob"}
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	var records []policy.Record
	for _, d := range []time.Duration{30 * time.Minute, 2 * time.Hour} {
		in := policy.RequestInput{Principal: bob, Entitlement: "demo-api-admin", Reason: "migrate", Ticket: "DEMO-7", Duration: d, Now: at}
		records = append(records, policy.Record{Kind: policy.RecordRequest, At: at, Request: &in, Result: policy.ResultOf(oldP.DecideRequest(in))})
	}
	changes := policy.WhatIf(oldP, newP, records)
	for _, c := range changes {
		fmt.Printf("%s %s: %s -> %s (tightens: %v)\n", c.Record.Kind, c.Record.Request.Duration, c.Old.Outcome, c.New.Outcome, c.Tightens)
		fmt.Println(" ", c.New.Reasons[0].Code+":", c.New.Reasons[0].Message)
	}
	fmt.Printf("%+v\n", policy.Summarize(len(records), changes))
	// Output:
	// request 2h0m0s: needs_approval -> deny (tightens: true)
	//   duration_too_long: requested duration 2h is longer than the maximum of 1h for entitlement "demo-api-admin"
	// {Records:2 Changed:1 Tightened:1 Loosened:0 Drifted:0 Unreplayable:0 Transitions:map[request: needs_approval -> deny:1]}
}
