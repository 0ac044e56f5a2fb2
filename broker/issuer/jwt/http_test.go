package jwt

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
)

func TestDiscovery(t *testing.T) {
	e := newEnv(t, Config{Algorithm: RS256})
	resp, body := e.get(t, DiscoveryPath)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"issuer":                                e.srv.URL,
		"jwks_uri":                              e.srv.URL + "/.well-known/jwks.json",
		"introspection_endpoint":                e.srv.URL + "/introspect",
		"response_types_supported":              []any{"id_token"},
		"subject_types_supported":               []any{"public"},
		"id_token_signing_alg_values_supported": []any{"RS256"},
		"claims_supported":                      []any{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "ent", "scope"},
	}
	if !mapsEqual(doc, want) {
		t.Errorf("discovery\n got %s\nwant %v", body, want)
	}

	// Without an introspect function the endpoint is neither served nor advertised.
	h := e.iss.Handler(nil, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", DiscoveryPath, nil))
	if strings.Contains(rec.Body.String(), "introspection_endpoint") {
		t.Errorf("introspection advertised without introspect: %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", IntrospectPath, strings.NewReader("token=x")))
	if rec.Code != http.StatusNotFound {
		t.Errorf("introspect without a lookup: %d", rec.Code)
	}
}

func TestIssuerURLWithPath(t *testing.T) {
	iss, err := New(Config{IssuerURL: "https://mayfly.example.com/tenants/a"})
	if err != nil {
		t.Fatal(err)
	}
	h := iss.Handler(nil, nil)
	for path, code := range map[string]int{
		"/tenants/a" + DiscoveryPath: 200,
		"/tenants/a" + JWKSPath:      200,
		DiscoveryPath:                404,
		"/tenants/ab" + JWKSPath:     404,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != code {
			t.Errorf("GET %s: %d; want %d", path, rec.Code, code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/tenants/a"+DiscoveryPath, nil))
	var doc struct{ Issuer, JWKSURI string }
	json.Unmarshal(rec.Body.Bytes(), &doc)
	if doc.Issuer != "https://mayfly.example.com/tenants/a" {
		t.Errorf("issuer %q", doc.Issuer)
	}
}

func TestJWKS(t *testing.T) {
	for _, alg := range []string{ES256, RS256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			e := newEnv(t, Config{Algorithm: alg})
			resp, body := e.get(t, JWKSPath)
			if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "public, max-age=300" {
				t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
			}
			var set struct{ Keys []map[string]any }
			if err := json.Unmarshal(body, &set); err != nil || len(set.Keys) != 1 {
				t.Fatalf("JWKS %s: %v", body, err)
			}
			k := set.Keys[0]
			if k["use"] != "sig" || k["alg"] != alg || k["kid"] != e.iss.Keys()[0].KID {
				t.Errorf("JWK %v", k)
			}
			for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
				if _, ok := k[private]; ok {
					t.Errorf("JWK publishes private member %q", private)
				}
			}
			// go-jose, independently, verifies a token with it.
			l := testLease(time.Now(), time.Minute)
			e.harnessVerify(t, l, e.issue(t, l, testParams), testParams)
		})
	}
}

func TestMethods(t *testing.T) {
	e := newEnv(t, Config{})
	h := e.iss.Handler(e.leases.lookup, authorizeBearer)
	for _, tt := range []struct{ method, path, allow string }{
		{"POST", DiscoveryPath, "GET, HEAD"},
		{"DELETE", JWKSPath, "GET, HEAD"},
		{"GET", IntrospectPath, "POST"},
		{"PUT", IntrospectPath, "POST"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d Allow %q", tt.method, tt.path, rec.Code, rec.Header().Get("Allow"))
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("HEAD", JWKSPath, nil))
	if rec.Code != 200 {
		t.Errorf("HEAD jwks: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/other", nil))
	if rec.Code != 404 {
		t.Errorf("GET /other: %d", rec.Code)
	}
}

// introspect posts form to /introspect over TLS.
func (e *env) introspect(t *testing.T, form url.Values, auth bool) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+IntrospectPath, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth {
		req.Header.Set("Authorization", "Bearer "+introspectSecret)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("introspection body %q: %v", body, err)
	}
	return resp.StatusCode, out, resp.Header
}

func TestIntrospection(t *testing.T) {
	clk := &fakeClock{now: time.Now().Truncate(time.Second)}
	e := newEnv(t, Config{Clock: clk.Now})
	l := testLease(clk.Now(), 10*time.Minute)
	good := e.issue(t, l, testParams)
	e.leases.set(l.ID, true)

	k := e.iss.keys.Load().active()
	claims, _ := e.iss.Verify(good.Token)
	inactive := map[string]any{"active": false}

	t.Run("active", func(t *testing.T) {
		code, got, hdr := e.introspect(t, url.Values{"token": {good.Token}, "token_type_hint": {"access_token"}}, true)
		want := map[string]any{
			"active":     true,
			"scope":      "orders.read orders.write",
			"token_type": "Bearer",
			"sub":        l.Subject,
			"aud":        "https://orders.example.com",
			"iss":        e.srv.URL,
			"exp":        float64(l.ExpiresAt.Unix()),
			"iat":        float64(l.IssuedAt.Unix()),
			"nbf":        float64(l.IssuedAt.Unix()),
			"jti":        l.ID,
			"ent":        "orders-api",
		}
		if code != 200 || !mapsEqual(got, want) {
			t.Errorf("%d %v\nwant %v", code, got, want)
		}
		if hdr.Get("Cache-Control") != "no-store" {
			t.Errorf("Cache-Control %q", hdr.Get("Cache-Control"))
		}
	})

	revokedLease := testLease(clk.Now(), 10*time.Minute)
	revoked := e.issue(t, revokedLease, testParams)
	e.leases.set(revokedLease.ID, false)
	unknownLease := testLease(clk.Now(), 10*time.Minute)
	unknown := e.issue(t, unknownLease, testParams) // never recorded in the store

	noneTok := strings.Join([]string{b64.EncodeToString([]byte(`{"alg":"none","kid":"` + k.kid + `","typ":"JWT"}`)), strings.Split(good.Token, ".")[1], ""}, ".")
	hsTok := forge(t, gojwt.SigningMethodHS256, publicKeyPEM(t, k), k.kid, claims)
	otherEnv := newEnv(t, Config{})
	otherKey := otherEnv.iss.keys.Load().active()
	wrongSig := forge(t, gojwt.SigningMethodES256, otherKey.priv, k.kid, claims)
	unknownKid := forge(t, gojwt.SigningMethodES256, otherKey.priv, otherKey.kid, claims)

	for _, tt := range []struct{ name, token string }{
		{"revoked", revoked.Token},
		{"lease unknown", unknown.Token},
		{"wrong signature", wrongSig},
		{"alg none", noneTok},
		{"HS256 keyed with public key bytes", hsTok},
		{"unknown kid", unknownKid},
		{"garbage", "garbage"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, got, _ := e.introspect(t, url.Values{"token": {tt.token}}, true)
			if code != 200 || !mapsEqual(got, inactive) {
				t.Errorf("%d %v; want 200 {active:false}", code, got)
			}
		})
	}

	t.Run("unauthorized", func(t *testing.T) {
		calls := e.leases.calls.Load()
		code, got, hdr := e.introspect(t, url.Values{"token": {good.Token}}, false)
		if code != http.StatusUnauthorized || got["error"] != "invalid_client" || got["active"] != nil || hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%d %v %v", code, got, hdr)
		}
		if e.leases.calls.Load() != calls {
			t.Error("lease store asked before the caller was authorized")
		}
	})

	t.Run("nil authorize refuses", func(t *testing.T) {
		h := e.iss.Handler(e.leases.lookup, nil)
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", IntrospectPath, strings.NewReader("token="+good.Token))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%d", rec.Code)
		}
	})

	t.Run("bad form", func(t *testing.T) {
		for name, body := range map[string]string{
			"no token":    "token_type_hint=access_token",
			"two tokens":  "token=a&token=b",
			"empty token": "token=",
			"bad escape":  "token=%zz",
		} {
			req, _ := http.NewRequest("POST", e.srv.URL+IntrospectPath, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", "Bearer "+introspectSecret)
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: %d; want 400", name, resp.StatusCode)
			}
		}
		req, _ := http.NewRequest("POST", e.srv.URL+IntrospectPath, strings.NewReader(`{"token":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+introspectSecret)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("JSON body: %d; want 400", resp.StatusCode)
		}
		// A token in the query string is not read (URLs end up in logs).
		req, _ = http.NewRequest("POST", e.srv.URL+IntrospectPath+"?token="+url.QueryEscape(good.Token), strings.NewReader(""))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+introspectSecret)
		resp, err = e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("token in query: %d; want 400", resp.StatusCode)
		}
	})

	t.Run("lookup error", func(t *testing.T) {
		e.leases.mu.Lock()
		e.leases.fail = errors.New("redis: connection refused")
		e.leases.mu.Unlock()
		defer func() {
			e.leases.mu.Lock()
			e.leases.fail = nil
			e.leases.mu.Unlock()
		}()
		code, got, _ := e.introspect(t, url.Values{"token": {good.Token}}, true)
		if code != http.StatusServiceUnavailable || got["error"] != "temporarily_unavailable" || got["active"] != nil {
			t.Errorf("%d %v; want 503 without active", code, got)
		}
		if strings.Contains(got["error_description"].(string), "redis") {
			t.Errorf("503 leaks the backend error: %v", got)
		}
		_, err := e.iss.IntrospectToken(context.Background(), good.Token, e.leases.lookup)
		if !errors.Is(err, ErrLookup) {
			t.Errorf("IntrospectToken: %v; want ErrLookup", err)
		}
	})

	t.Run("expired", func(t *testing.T) {
		clk.Advance(10*time.Minute + leeway + time.Second)
		code, got, _ := e.introspect(t, url.Values{"token": {good.Token}}, true)
		if code != 200 || !mapsEqual(got, inactive) {
			t.Errorf("%d %v; want inactive", code, got)
		}
	})
}

func TestIntrospectToken(t *testing.T) {
	e := newEnv(t, Config{})
	l := testLease(time.Now(), time.Minute)
	c := e.issue(t, l, testParams)
	var asked string
	in, err := e.iss.IntrospectToken(context.Background(), c.Token, func(_ context.Context, jti string) (bool, error) {
		asked = jti
		return true, nil
	})
	if err != nil || !in.Active || in.Claims.ID != l.ID || asked != l.ID {
		t.Fatalf("IntrospectToken = %+v, %v (asked %q)", in, err, asked)
	}
	if _, err := e.iss.IntrospectToken(context.Background(), c.Token, nil); !errors.Is(err, ErrLookup) {
		t.Errorf("nil lookup: %v; want ErrLookup (fail closed)", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if in, err := e.iss.IntrospectToken(ctx, c.Token, e.leases.lookup); err == nil || in.Active {
		t.Errorf("cancelled ctx: %+v, %v", in, err)
	}
	b, _ := json.Marshal(Introspection{Active: false, Claims: in.Claims})
	if string(b) != `{"active":false}` {
		t.Errorf("inactive JSON %s", b)
	}
}
