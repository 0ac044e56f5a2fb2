package jwt_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
)

func Example() {
	iss, err := jwt.New(jwt.Config{IssuerURL: "https://mayfly.example.com"})
	if err != nil {
		log.Fatal(err)
	}

	// The entitlement's jwt section, as the policy loader hands it over.
	var section yaml.Node
	if err := yaml.Unmarshal([]byte("audience: https://orders.example.com\nscopes: [orders.read]"), &section); err != nil {
		log.Fatal(err)
	}
	params, err := iss.DecodeParams(section.Content[0])
	if err != nil {
		log.Fatal(err)
	}

	now := time.Now()
	l := &lease.Lease{
		ID:          lease.NewID(now),
		Subject:     "spiffe://example.org/ns/shop/sa/orders",
		Entitlement: "orders-api",
		State:       lease.StatePending,
		IssuedAt:    now,
		ExpiresAt:   now.Add(15 * time.Minute),
	}
	cred, err := iss.Issue(context.Background(), issuer.Request{Lease: l, Params: params})
	if err != nil {
		log.Fatal(err)
	}

	claims, err := iss.Verify(cred.Token)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(claims.Subject, claims.Audience, claims.Scopes, claims.ID == l.ID)
	fmt.Println(cred) // secrets are redacted
	// Output:
	// spiffe://example.org/ns/shop/sa/orders [https://orders.example.com] [orders.read] true
	// credential{kind=jwt ref= secret=REDACTED}
}
