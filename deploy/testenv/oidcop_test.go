package testenv_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/deploy/testenv"
)

func TestOIDCOP(t *testing.T) {
	op := testenv.OIDCOP(t)
	if !strings.HasPrefix(op.Issuer, "http://localhost:") || !strings.HasSuffix(op.Issuer, "/") {
		t.Fatalf("issuer %q", op.Issuer)
	}
	alice := op.User("alice")
	tok := op.IDToken(t, "alice", alice.Password)

	// The claims, unverified here (broker/authn verifies them).
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("ID token has %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Iss string   `json:"iss"`
		Sub string   `json:"sub"`
		Aud []string `json:"aud"`
		Exp int64    `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Iss != op.Issuer || claims.Sub != "alice" || len(claims.Aud) != 1 || claims.Aud[0] != op.ClientID {
		t.Fatalf("claims = %+v", claims)
	}
	if left := time.Until(time.Unix(claims.Exp, 0)); left < 50*time.Minute || left > 61*time.Minute {
		t.Fatalf("ID token expires in %v", left)
	}

	if _, err := op.Login(context.Background(), "alice", "wrong"); err == nil || !strings.Contains(err.Error(), "username or password wrong") {
		t.Fatalf("wrong password: %v", err)
	}

	// It stops with the test; a second one runs beside it.
	other := testenv.OIDCOP(t)
	if other.Issuer == op.Issuer {
		t.Fatal("two OPs on one port")
	}
	resp, err := http.Get(other.Issuer + ".well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
