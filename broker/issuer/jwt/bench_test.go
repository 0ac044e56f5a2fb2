package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// BenchmarkSignES256 is the floor: golang-jwt signing a claim set like
// ours with ES256, nothing else.
func BenchmarkSignES256(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	claims := gojwt.MapClaims{
		"iss":   "https://mayfly.example.com",
		"sub":   "spiffe://example.org/ns/shop/sa/orders",
		"aud":   "https://orders.example.com",
		"iat":   now.Unix(),
		"nbf":   now.Unix(),
		"exp":   now.Add(15 * time.Minute).Unix(),
		"jti":   lease.NewID(now),
		"ent":   "orders-api",
		"scope": "orders.read orders.write",
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tok := gojwt.NewWithClaims(gojwt.SigningMethodES256, claims)
			tok.Header["kid"] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
			if _, err := tok.SignedString(key); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkIssue is the issuer's whole Issue for one lease: params check,
// claims, active key load, signing.
func BenchmarkIssue(b *testing.B) {
	for _, alg := range []string{ES256, RS256, EdDSA} {
		b.Run(alg, func(b *testing.B) {
			iss, err := New(Config{IssuerURL: "https://mayfly.example.com", Algorithm: alg, Logger: testLogger(b)})
			if err != nil {
				b.Fatal(err)
			}
			req := issuer.Request{Lease: testLease(time.Now(), 15*time.Minute), Params: testParams}
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := iss.Issue(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkVerify is what introspection costs before the lease lookup.
func BenchmarkVerify(b *testing.B) {
	iss, err := New(Config{IssuerURL: "https://mayfly.example.com", Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	c, err := iss.Issue(context.Background(), issuer.Request{Lease: testLease(time.Now(), 15*time.Minute), Params: testParams})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := iss.Verify(c.Token); err != nil {
				b.Fatal(err)
			}
		}
	})
}
