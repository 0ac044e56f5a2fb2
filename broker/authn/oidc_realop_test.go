package authn_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// TestOIDCVerifierWithRealProvider verifies ID tokens of a real OpenID
// provider that nobody on this project wrote: the zitadel/oidc example OP
// (deploy/tools/oidc-op), logged into through its own login form with the
// authorization code flow and PKCE. Skipped where the OP cannot be built,
// except with CI=true.
func TestOIDCVerifierWithRealProvider(t *testing.T) {
	op := testenv.OIDCOP(t)
	clock := &fakeClock{}
	newVerifier := func(p authn.OIDCProvider) *authn.OIDCVerifier {
		t.Helper()
		v, err := authn.NewOIDCVerifier(context.Background(), []authn.OIDCProvider{p},
			authn.WithOIDCClock(clock.Now), authn.WithOIDCLogger(oidcTestLogger()))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// The example's ID tokens name the user by "sub" (its user ID) and
	// carry no groups claim.
	provider := authn.OIDCProvider{Name: "zitadel", Issuer: op.Issuer, Audience: op.ClientID, GroupsClaim: "groups", UsernameClaim: "sub"}
	v := newVerifier(provider)

	tok := op.IDToken(t, "alice", op.User("alice").Password)
	exp := oidcTokenExpiry(t, tok)
	p, err := v.VerifyBearer(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	want := authn.Principal{Kind: authn.KindHuman, ID: "user:alice", Method: authn.MethodOIDC, NotAfter: exp}
	if !oidcPrincipalsEqual(p, want) {
		t.Fatalf("principal = %+v, want %+v", p, want)
	}
	bob := op.IDToken(t, "bob", op.User("bob").Password)
	if p, err := v.VerifyBearer(context.Background(), bob); err != nil || p.ID != "user:bob" {
		t.Fatalf("bob: %+v, %v", p, err)
	}

	// Groups: the example OP asserts none, so point groups_claim at the
	// list claim it does assert ("amr", the login methods: ["pwd"]) to see
	// a real provider's list claim become oidc-group subjects.
	byAMR := provider
	byAMR.GroupsClaim = "amr"
	if p, err := newVerifier(byAMR).VerifyBearer(context.Background(), tok); err != nil || !slices.Equal(p.Groups, []string{"oidc-group:zitadel/pwd"}) {
		t.Fatalf("groups from a list claim: %+v, %v", p, err)
	}

	// A broker whose audience is another client refuses it.
	other := provider
	other.Audience = "mayfly"
	_, err = newVerifier(other).VerifyBearer(context.Background(), tok)
	wantOIDCRefusal(t, err, `OIDC token from zitadel: audience ["native"] not accepted: it must include "mayfly"`)

	// Its signature, tampered with, or the claims changed under it.
	parts := strings.Split(tok, ".")
	sig := []byte(parts[2])
	if sig[len(sig)/2] == 'A' { // another base64url letter: the bytes change, the encoding stays valid
		sig[len(sig)/2] = 'B'
	} else {
		sig[len(sig)/2] = 'A'
	}
	_, err = v.VerifyBearer(context.Background(), parts[0]+"."+parts[1]+"."+string(sig))
	wantOIDCRefusal(t, err, "OIDC token from zitadel: signature does not verify with the provider's keys")
	bobParts := strings.Split(bob, ".")
	_, err = v.VerifyBearer(context.Background(), parts[0]+"."+bobParts[1]+"."+parts[2])
	wantOIDCRefusal(t, err, "OIDC token from zitadel: signature does not verify with the provider's keys")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`))
	_, err = v.VerifyBearer(context.Background(), none+"."+parts[1]+".")
	if !errors.Is(err, authn.ErrUnauthenticated) || !strings.Contains(err.Error(), `signed with alg "none", which is not accepted`) {
		t.Fatalf("alg none: %v", err)
	}

	// After its expiry (one hour: the example's lifetime is fixed), it is
	// refused; the clock moves instead of the test waiting.
	clock.Advance(time.Until(exp))
	_, err = v.VerifyBearer(context.Background(), tok)
	wantOIDCRefusal(t, err, "OIDC token from zitadel expired at "+utc(exp)+"; log in again (mayfly login)")
}

// oidcTokenExpiry reads "exp" of a token without verifying it.
func oidcTokenExpiry(t *testing.T, tok string) time.Time {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.Exp == 0 {
		t.Fatalf("exp: %v", err)
	}
	return time.Unix(c.Exp, 0)
}
