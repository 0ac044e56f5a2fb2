package jwt

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// TestPeersShareKeys: two replicas behind one issuer URL share their
// public keys through Redis, so the JWKS of either verifies a token signed
// by the other (checked with go-jose, as a relying party would), before
// and after a rotation; a key published under a kid that is not its
// thumbprint is ignored; keys past their time are dropped.
func TestPeersShareKeys(t *testing.T) {
	rs := testenv.Redis(t)
	rdb := goredis.NewClient(&goredis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	peers, err := NewRedisPeers(rdb, "peers")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	newReplica := func() *Issuer {
		iss, err := New(Config{IssuerURL: "https://mayfly.example.org", Peers: peers, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	a, b := newReplica(), newReplica()
	if err := a.syncPeers(ctx); err != nil { // a learns b's key
		t.Fatal(err)
	}
	sign := func(iss *Issuer) string {
		c, err := iss.Issue(ctx, issuerRequest(testLease(time.Now(), time.Minute)))
		if err != nil {
			t.Fatal(err)
		}
		return c.Token
	}
	verifyWithJWKS := func(doc []byte, token string) error {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(doc, &set); err != nil {
			return err
		}
		jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			return err
		}
		keys := set.Key(jws.Signatures[0].Header.KeyID)
		if len(keys) != 1 {
			return errNoKey
		}
		_, err = jws.Verify(keys[0])
		return err
	}
	for _, tc := range []struct {
		name         string
		signer, peer *Issuer
	}{{"a signs, b serves", a, b}, {"b signs, a serves", b, a}} {
		tok := sign(tc.signer)
		if err := verifyWithJWKS(tc.peer.jwksDoc(), tok); err != nil {
			t.Fatalf("%s: the JWKS does not verify the token: %v", tc.name, err)
		}
		if _, err := tc.peer.Verify(tok); err != nil {
			t.Fatalf("%s: Verify: %v", tc.name, err)
		}
	}

	// a rotates: its new key reaches b at the next sync; the old one stays.
	old := sign(a)
	if err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	if err := a.syncPeers(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.syncPeers(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{old, sign(a)} {
		if err := verifyWithJWKS(b.jwksDoc(), tok); err != nil {
			t.Fatalf("after a's rotation: %v", err)
		}
	}

	// A key under someone else's kid is not served.
	forged, _ := json.Marshal(PeerKey{KID: a.keys.Load().active().kid + "x", JWK: a.keys.Load().active().jwk.raw(t), Until: time.Now().Add(time.Hour)})
	if err := rdb.HSet(ctx, "peers:{jwks}:keys", a.keys.Load().active().kid+"x", forged).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.syncPeers(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b.jwksDoc()), a.keys.Load().active().kid+"x") {
		t.Fatal("a key published under a kid that is not its thumbprint is served")
	}

	// Entries past their time are dropped at the next publish.
	if err := peers.Publish(ctx, nil, time.Now().Add(30*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if left, err := peers.Fetch(ctx); err != nil || len(left) != 0 {
		t.Fatalf("after expiry: %d entries, %v", len(left), err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

const errNoKey = errString("no key with the token's kid in the JWKS")

func (j jwk) raw(t *testing.T) json.RawMessage {
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// issuerRequest asks for a token for l with the test parameters; the JWT
// issuer never binds.
func issuerRequest(l *lease.Lease) issuer.Request {
	return issuer.Request{Lease: l, Params: testParams, Bind: func(context.Context, string) error { return nil }}
}
