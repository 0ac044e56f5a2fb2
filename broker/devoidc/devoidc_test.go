package devoidc_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/devoidc"
)

// clock is a settable clock.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

type env struct {
	op     *devoidc.Provider
	srv    *httptest.Server
	client *http.Client
	clock  *clock
	keyDir string
}

// start mounts a provider under DefaultPath on a TLS server, as the dev
// broker does on its HTTPS listener.
func start(t *testing.T) *env {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "the broker's own endpoints", http.StatusTeapot)
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	e := &env{srv: srv, client: srv.Client(), clock: &clock{}, keyDir: filepath.Join(t.TempDir(), "dev-oidc")}
	op, err := devoidc.New(devoidc.Config{
		Issuer: srv.URL + devoidc.DefaultPath,
		KeyDir: e.keyDir,
		Now:    e.clock.Now,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle(op.Path()+"/", op)
	e.op = op
	return e
}

func (e *env) ctx() context.Context {
	return oidc.ClientContext(context.Background(), e.client)
}

// oauth2Config discovers the provider as a client does.
func (e *env) oauth2Config(t *testing.T) *oauth2.Config {
	t.Helper()
	provider, err := oidc.NewProvider(e.ctx(), e.op.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	return &oauth2.Config{ClientID: e.op.ClientID(), Endpoint: provider.Endpoint(), Scopes: []string{oidc.ScopeOpenID, "profile", "groups"}}
}

func TestDeviceFlowSignsInDevUser(t *testing.T) {
	e := start(t)
	conf := e.oauth2Config(t)
	if conf.Endpoint.DeviceAuthURL != e.op.Issuer()+"/device/code" || conf.Endpoint.TokenURL != e.op.Issuer()+"/token" {
		t.Fatalf("endpoints = %+v", conf.Endpoint)
	}
	da, err := conf.DeviceAuth(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if da.VerificationURI != e.op.Issuer()+"/device" || len(da.UserCode) != 9 || da.UserCode[4] != '-' || da.Interval != 1 ||
		da.VerificationURIComplete != da.VerificationURI+"?user_code="+da.UserCode || time.Until(da.Expiry) < 9*time.Minute {
		t.Fatalf("device authorization = %+v", da)
	}

	// Before approval the client is told to wait.
	if code := e.rawToken(t, da.DeviceCode, e.op.ClientID()); code != "authorization_pending" {
		t.Fatalf("before approval: %q", code)
	}
	// The code as a person might type it.
	if err := devoidc.Approve(e.ctx(), e.client, da.VerificationURI, strings.ToLower(strings.ReplaceAll(da.UserCode, "-", "")), "alice"); err != nil {
		t.Fatal(err)
	}
	tok, err := conf.DeviceAccessToken(e.ctx(), da)
	if err != nil {
		t.Fatal(err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	if idToken == "" || tok.AccessToken == "" || tok.TokenType != "Bearer" || time.Until(tok.Expiry) < 59*time.Minute || time.Until(tok.Expiry) > time.Hour {
		t.Fatalf("token = %+v", tok)
	}
	// One device code, one set of tokens.
	if code := e.rawToken(t, da.DeviceCode, e.op.ClientID()); code != "invalid_grant" {
		t.Fatalf("second redemption: %q", code)
	}

	// The broker's verifier accepts it as the dev user, with its groups.
	v, err := authn.NewOIDCVerifier(context.Background(), []authn.OIDCProvider{e.op.OIDCProvider()}, authn.WithOIDCHTTPClient(e.client), authn.WithOIDCLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.VerifyBearer(context.Background(), idToken)
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != "user:alice" || !slices.Equal(p.Groups, []string{"oidc-group:dev/platform"}) || p.Kind != authn.KindHuman || p.Method != authn.MethodOIDC {
		t.Fatalf("principal = %+v", p)
	}

	// A name that is not in the config signs in without groups.
	da, err = conf.DeviceAuth(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if err := devoidc.Approve(e.ctx(), e.client, da.VerificationURI, da.UserCode, "dave"); err != nil {
		t.Fatal(err)
	}
	tok, err = conf.DeviceAccessToken(e.ctx(), da)
	if err != nil {
		t.Fatal(err)
	}
	p, err = v.VerifyBearer(context.Background(), tok.Extra("id_token").(string))
	if err != nil || p.ID != "user:dave" || len(p.Groups) != 0 {
		t.Fatalf("dave: %+v, %v", p, err)
	}
}

// rawToken polls the token endpoint once and returns the OAuth error code
// ("" on success).
func (e *env) rawToken(t *testing.T, deviceCode, clientID string) string {
	t.Helper()
	resp, err := e.client.PostForm(e.op.Issuer()+"/token", url.Values{
		"grant_type":  {"urn:ietf:params:oauth:grant-type:device_code"},
		"device_code": {deviceCode},
		"client_id":   {clientID},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error   string `json:"error"`
		IDToken string `json:"id_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("token response Cache-Control = %q", resp.Header.Get("Cache-Control"))
	}
	return body.Error
}

func TestDeviceFlowRefusals(t *testing.T) {
	e := start(t)
	conf := e.oauth2Config(t)

	// Denied on the page.
	da, err := conf.DeviceAuth(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.PostForm(da.VerificationURI, url.Values{"user_code": {da.UserCode}, "action": {"deny"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("deny: %s", resp.Status)
	}
	if _, err := conf.DeviceAccessToken(e.ctx(), da); err == nil || !strings.Contains(err.Error(), "access_denied") {
		t.Fatalf("denied: %v", err)
	}

	// Bad names and codes.
	da, err = conf.DeviceAuth(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ code, user, want string }{
		{da.UserCode, "Alice Smith", `devoidc: signing in as "Alice Smith": user name "Alice Smith" is not valid: use lower-case letters, digits, '.', '_' or '-', starting with a letter`},
		{"BCDF-GHJK", "alice", `devoidc: signing in as "alice": unknown or expired code: check it, or start ` + "`mayfly login`" + ` again`},
	} {
		if err := devoidc.Approve(e.ctx(), e.client, da.VerificationURI, tc.code, tc.user); err == nil || err.Error() != tc.want {
			t.Errorf("Approve(%q, %q) = %v\nwant %s", tc.code, tc.user, err, tc.want)
		}
	}
	if err := devoidc.Approve(e.ctx(), e.client, da.VerificationURI, da.UserCode, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := devoidc.Approve(e.ctx(), e.client, da.VerificationURI, da.UserCode, "carol"); err == nil || !strings.Contains(err.Error(), "this code was already used") {
		t.Fatalf("second approval: %v", err)
	}

	// Wrong client, wrong grant.
	if code := e.rawToken(t, da.DeviceCode, "someone-else"); code != "invalid_client" {
		t.Fatalf("wrong client: %q", code)
	}
	resp, err = e.client.PostForm(e.op.Issuer()+"/token", url.Values{"grant_type": {"password"}, "client_id": {e.op.ClientID()}, "username": {"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("password grant: %s", resp.Status)
	}

	// A code that is not approved in time expires.
	da, err = conf.DeviceAuth(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(devoidc.DefaultDeviceCodeLifetime + time.Second)
	if code := e.rawToken(t, da.DeviceCode, e.op.ClientID()); code != "expired_token" {
		t.Fatalf("expired: %q", code)
	}
	if err := devoidc.Approve(e.ctx(), e.client, da.VerificationURI, da.UserCode, "alice"); err == nil {
		t.Fatal("approved an expired code")
	}
}

func TestVerificationPage(t *testing.T) {
	e := start(t)
	resp, err := e.client.Get(e.op.Issuer() + "/device?user_code=BCDF-GHJK")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	page := string(b)
	for _, want := range []string{"Development only.", `value="BCDF-GHJK"`, `<option value="alice">`, "<code>bob</code></td><td>groups: developers", "<code>carol</code></td><td>groups: security"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Error("the page may be framed")
	}
	// HTML form post (no JSON accepted): an HTML answer.
	resp, err = e.client.PostForm(e.op.Issuer()+"/device", url.Values{"user_code": {"nope"}, "user": {"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "unknown or expired code") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("bad code: %s %s", resp.Status, b)
	}
	// Outside its path, the provider serves nothing.
	resp, err = e.client.Get(e.srv.URL + devoidc.DefaultPath + "x/keys")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatal("served a path outside its prefix")
	}
}

func TestKeyIsPersisted(t *testing.T) {
	e := start(t)
	st, err := os.Stat(filepath.Join(e.keyDir, devoidc.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode().Perm())
	}
	if st, err = os.Stat(e.keyDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("key dir: %v %v", st.Mode().Perm(), err)
	}
	tok, err := e.op.IDToken(devoidc.User{Name: "alice"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// A restarted provider (same directory) publishes the same key, so
	// tokens issued before the restart stay valid.
	again, err := devoidc.New(devoidc.Config{Issuer: e.op.Issuer(), KeyDir: e.keyDir})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(again)
	defer srv.Close()
	ks := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), srv.Client()), srv.URL+devoidc.DefaultPath+"/keys")
	if _, err := ks.VerifySignature(context.Background(), tok); err != nil {
		t.Fatalf("restarted provider does not verify an earlier token: %v", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		cfg  devoidc.Config
		want string
	}{
		{devoidc.Config{KeyDir: dir}, "devoidc: Config.Issuer is required"},
		{devoidc.Config{Issuer: "http://127.0.0.1:7444/dev-oidc", KeyDir: dir}, `devoidc: Config.Issuer "http://127.0.0.1:7444/dev-oidc" must be an https URL without query, fragment or trailing slash`},
		{devoidc.Config{Issuer: "https://127.0.0.1:7444/dev-oidc/", KeyDir: dir}, `devoidc: Config.Issuer "https://127.0.0.1:7444/dev-oidc/" must be an https URL without query, fragment or trailing slash`},
		{devoidc.Config{Issuer: "https://127.0.0.1:7444/dev-oidc"}, "devoidc: Config.KeyDir is required"},
		{devoidc.Config{Issuer: "https://127.0.0.1:7444/dev-oidc", KeyDir: dir, Users: []devoidc.User{{Name: "Alice"}}}, `devoidc: Config.Users[0]: name "Alice" must be lower-case letters, digits, '.', '_' or '-', starting with a letter`},
		{devoidc.Config{Issuer: "https://127.0.0.1:7444/dev-oidc", KeyDir: dir, Users: []devoidc.User{{Name: "a"}, {Name: "a"}}}, `devoidc: Config.Users[1]: user "a" is listed twice`},
	} {
		if _, err := devoidc.New(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("%+v: %v\nwant %s", tc.cfg, err, tc.want)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, devoidc.KeyFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := devoidc.New(devoidc.Config{Issuer: "https://127.0.0.1:7444/dev-oidc", KeyDir: dir}); err == nil || !strings.Contains(err.Error(), "remove it to start afresh") {
		t.Fatalf("junk key: %v", err)
	}
}
