package devoidc

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/mayflyhq/mayfly/broker/authn"
)

// Defaults of Config.
const (
	// DefaultPath is where `mayflyd dev` mounts the provider on its HTTPS
	// listener; the issuer is the listener's base URL plus this path.
	DefaultPath = "/dev-oidc"
	// DefaultClientID is the one client: public (no secret), used by
	// `mayfly login --dev`.
	DefaultClientID = "mayfly-cli"
	// ProviderName is the name OIDCProvider gives this provider: its groups
	// are "oidc-group:dev/<group>".
	ProviderName = "dev"
	// DefaultTokenLifetime is how long ID and access tokens last.
	DefaultTokenLifetime = time.Hour
	// DefaultDeviceCodeLifetime is how long a user code can be approved.
	DefaultDeviceCodeLifetime = 10 * time.Minute
	// DefaultPollInterval is the interval the device flow's client is told
	// to poll the token endpoint at.
	DefaultPollInterval = time.Second
)

// maxPending bounds the device authorizations held at once.
const maxPending = 1000

// User is a dev user and the groups its ID tokens assert.
type User struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
}

// DefaultUsers are the dev users the verification page offers. Any other
// name that is a valid user name can be typed in; it has no groups.
var DefaultUsers = []User{
	{Name: "alice", Groups: []string{"platform"}},
	{Name: "bob", Groups: []string{"developers"}},
	{Name: "carol", Groups: []string{"security"}},
}

// userNameRE is what a dev user may be called: a policy name, so that
// "user:<name>" is always a valid policy subject.
var userNameRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,62}$`)

// Config configures a Provider.
type Config struct {
	// Issuer is the provider's issuer URL: the HTTPS base URL it is served
	// at, including the path it is mounted under (DefaultPath). Required.
	Issuer string
	// KeyDir holds the signing key (KeyFile), created the first time, so
	// that tokens stay valid across restarts. Required; `mayflyd dev` uses
	// <state dir>/dev-oidc.
	KeyDir string
	// ClientID is the one (public) client; default DefaultClientID.
	ClientID string
	// Users are the users the verification page offers, with their groups;
	// default DefaultUsers.
	Users []User
	// TokenLifetime, DeviceCodeLifetime and PollInterval default to
	// DefaultTokenLifetime, DefaultDeviceCodeLifetime, DefaultPollInterval.
	TokenLifetime      time.Duration
	DeviceCodeLifetime time.Duration
	PollInterval       time.Duration
	// Now is the clock (default time.Now); Logger the logger (default
	// slog.Default()). Codes and tokens are never logged.
	Now    func() time.Time
	Logger *slog.Logger
}

// Provider is the dev OIDC provider, an http.Handler. It is safe for
// concurrent use. Device authorizations live in memory and are lost at
// restart; the signing key is kept in Config.KeyDir.
type Provider struct {
	cfg    Config
	issuer *url.URL
	path   string
	key    *ecdsa.PrivateKey
	kid    string
	signer jose.Signer
	log    *slog.Logger

	mu      sync.Mutex
	pending map[string]*authorization // by device code
	byUser  map[string]*authorization // by normalized user code
}

// authorization is one device authorization in progress.
type authorization struct {
	deviceCode string
	userCode   string // normalized: 8 letters, no dash
	scope      string
	expires    time.Time
	user       *User // set when approved
	denied     bool
}

// New checks cfg, loads or creates the signing key and returns the
// provider. The error names the field that is wrong.
func New(cfg Config) (*Provider, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("devoidc: Config.Issuer is required")
	}
	u, err := url.Parse(cfg.Issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(u.Path, "/") {
		return nil, fmt.Errorf("devoidc: Config.Issuer %q must be an https URL without query, fragment or trailing slash", cfg.Issuer)
	}
	if cfg.KeyDir == "" {
		return nil, errors.New("devoidc: Config.KeyDir is required")
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultClientID
	}
	if cfg.Users == nil {
		cfg.Users = DefaultUsers
	}
	seen := map[string]bool{}
	for i, usr := range cfg.Users {
		if !userNameRE.MatchString(usr.Name) {
			return nil, fmt.Errorf("devoidc: Config.Users[%d]: name %q must be lower-case letters, digits, '.', '_' or '-', starting with a letter", i, usr.Name)
		}
		if seen[usr.Name] {
			return nil, fmt.Errorf("devoidc: Config.Users[%d]: user %q is listed twice", i, usr.Name)
		}
		seen[usr.Name] = true
	}
	if cfg.TokenLifetime <= 0 {
		cfg.TokenLifetime = DefaultTokenLifetime
	}
	if cfg.DeviceCodeLifetime <= 0 {
		cfg.DeviceCodeLifetime = DefaultDeviceCodeLifetime
	}
	if cfg.PollInterval < time.Second {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	key, err := loadOrCreateKey(cfg.KeyDir)
	if err != nil {
		return nil, err
	}
	kid, err := keyID(key)
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return nil, fmt.Errorf("devoidc: %w", err)
	}
	return &Provider{
		cfg:     cfg,
		issuer:  u,
		path:    u.Path,
		key:     key,
		kid:     kid,
		signer:  signer,
		log:     cfg.Logger.With("component", "devoidc"),
		pending: map[string]*authorization{},
		byUser:  map[string]*authorization{},
	}, nil
}

// Issuer is the issuer URL.
func (p *Provider) Issuer() string { return p.cfg.Issuer }

// ClientID is the one client's ID.
func (p *Provider) ClientID() string { return p.cfg.ClientID }

// Path is the URL path the provider must be mounted under (the issuer's
// path, "" for the root): mux.Handle(p.Path()+"/", p).
func (p *Provider) Path() string { return p.path }

// OIDCProvider is the configuration with which the broker's
// authn.OIDCVerifier accepts this provider's ID tokens: users are
// "user:<name>", groups "oidc-group:dev/<group>".
func (p *Provider) OIDCProvider() authn.OIDCProvider {
	return authn.OIDCProvider{
		Name:          ProviderName,
		Issuer:        p.cfg.Issuer,
		Audience:      p.cfg.ClientID,
		GroupsClaim:   "groups",
		UsernameClaim: "preferred_username",
	}
}

// Endpoint paths, relative to the issuer.
const (
	pathDiscovery  = "/.well-known/openid-configuration"
	pathKeys       = "/keys"
	pathDeviceCode = "/device/code"
	pathToken      = "/token"
	pathVerify     = "/device"
)

func (p *Provider) url(path string) string { return p.cfg.Issuer + path }

// ServeHTTP serves the endpoints under Path.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, p.path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch rest {
	case pathDiscovery:
		p.only(w, r, http.MethodGet, p.discovery)
	case pathKeys:
		p.only(w, r, http.MethodGet, p.keys)
	case pathDeviceCode:
		p.only(w, r, http.MethodPost, p.deviceCode)
	case pathToken:
		p.only(w, r, http.MethodPost, p.token)
	case pathVerify:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			p.verifyPage(w, r)
		case http.MethodPost:
			p.verifySubmit(w, r)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	default:
		http.NotFound(w, r)
	}
}

func (p *Provider) only(w http.ResponseWriter, r *http.Request, method string, h http.HandlerFunc) {
	if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", method)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h(w, r)
}

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                p.cfg.Issuer,
		"jwks_uri":                              p.url(pathKeys),
		"device_authorization_endpoint":         p.url(pathDeviceCode),
		"token_endpoint":                        p.url(pathToken),
		"grant_types_supported":                 []string{"urn:ietf:params:oauth:grant-type:device_code"},
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"scopes_supported":                      []string{"openid", "profile", "email", "groups"},
		"claims_supported":                      []string{"iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "preferred_username", "name", "email", "email_verified", "groups"},
	})
}

func (p *Provider) keys(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: p.key.Public(), KeyID: p.kid, Algorithm: string(jose.ES256), Use: "sig",
	}}})
}

// oauthError writes an RFC 6749 §5.2 error response.
func oauthError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// checkClient checks that the client_id of a token or device request
// (in the form, or HTTP Basic with an empty secret) is the provider's one
// client.
func (p *Provider) checkClient(r *http.Request) error {
	id := r.PostForm.Get("client_id")
	if u, _, ok := r.BasicAuth(); ok {
		if u, err := url.QueryUnescape(u); err == nil {
			if id != "" && id != u {
				return errors.New("client_id in the form and in the Authorization header differ")
			}
			id = u
		}
	}
	if id != p.cfg.ClientID {
		return fmt.Errorf("unknown client_id %q: the dev provider's client is %q", id, p.cfg.ClientID)
	}
	return nil
}

// deviceCode is the device authorization endpoint (RFC 8628 §3.1).
func (p *Provider) deviceCode(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body is not a form")
		return
	}
	if err := p.checkClient(r); err != nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client", err.Error())
		return
	}
	scope := r.PostForm.Get("scope")
	if scope == "" {
		scope = "openid"
	}
	if !slices.Contains(strings.Fields(scope), "openid") {
		oauthError(w, http.StatusBadRequest, "invalid_scope", `the scope must include "openid"`)
		return
	}
	now := p.cfg.Now()
	a := &authorization{deviceCode: randomToken(), userCode: randomUserCode(), scope: scope, expires: now.Add(p.cfg.DeviceCodeLifetime)}
	p.mu.Lock()
	p.prune(now)
	if len(p.pending) >= maxPending {
		p.mu.Unlock()
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "too many device authorizations in progress")
		return
	}
	for p.byUser[a.userCode] != nil {
		a.userCode = randomUserCode()
	}
	p.pending[a.deviceCode] = a
	p.byUser[a.userCode] = a
	p.mu.Unlock()

	display := formatUserCode(a.userCode)
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code":               a.deviceCode,
		"user_code":                 display,
		"verification_uri":          p.url(pathVerify),
		"verification_uri_complete": p.url(pathVerify) + "?user_code=" + url.QueryEscape(display),
		"expires_in":                int(p.cfg.DeviceCodeLifetime / time.Second),
		"interval":                  int(p.cfg.PollInterval / time.Second),
	})
}

// prune forgets expired authorizations. p.mu is held.
func (p *Provider) prune(now time.Time) {
	for code, a := range p.pending {
		if now.After(a.expires) {
			delete(p.pending, code)
			delete(p.byUser, a.userCode)
		}
	}
}

// token is the token endpoint, for the device_code grant only (RFC 8628
// §3.4, §3.5).
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body is not a form")
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "urn:ietf:params:oauth:grant-type:device_code" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "the dev provider supports only the device_code grant")
		return
	}
	if err := p.checkClient(r); err != nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client", err.Error())
		return
	}
	code := r.PostForm.Get("device_code")
	now := p.cfg.Now()
	p.mu.Lock()
	a := p.pending[code]
	switch {
	case code == "" || a == nil || subtle.ConstantTimeCompare([]byte(code), []byte(a.deviceCode)) != 1:
		p.mu.Unlock()
		oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown or already used device_code")
		return
	// Expired and denied authorizations stay until they are pruned: a
	// client may ask again (x/oauth2 retries with other client
	// authentication after any error).
	case now.After(a.expires):
		p.mu.Unlock()
		oauthError(w, http.StatusBadRequest, "expired_token", "the device code expired before it was approved; start again")
		return
	case a.denied:
		p.mu.Unlock()
		oauthError(w, http.StatusBadRequest, "access_denied", "the sign-in was denied on the verification page")
		return
	case a.user == nil:
		p.mu.Unlock()
		oauthError(w, http.StatusBadRequest, "authorization_pending", "waiting for the user code to be entered on the verification page")
		return
	}
	p.forget(a) // a device code yields tokens once
	p.mu.Unlock()

	idToken, err := p.IDToken(*a.user, now)
	if err != nil {
		p.log.Error("signing an ID token failed", "error", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "signing failed")
		return
	}
	p.log.Info("dev OIDC sign-in: tokens issued", "user", a.user.Name, "groups", a.user.Groups)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": randomToken(),
		"token_type":   "Bearer",
		"expires_in":   int(p.cfg.TokenLifetime / time.Second),
		"id_token":     idToken,
		"scope":        a.scope,
	})
}

func (p *Provider) forget(a *authorization) {
	delete(p.pending, a.deviceCode)
	delete(p.byUser, a.userCode)
}

// IDToken signs an ID token for u, issued at now. The device flow uses it;
// tests may too.
func (p *Provider) IDToken(u User, now time.Time) (string, error) {
	groups := u.Groups
	if groups == nil {
		groups = []string{}
	}
	claims := map[string]any{
		"iss":                p.cfg.Issuer,
		"sub":                u.Name,
		"aud":                p.cfg.ClientID,
		"azp":                p.cfg.ClientID,
		"iat":                now.Unix(),
		"auth_time":          now.Unix(),
		"exp":                now.Add(p.cfg.TokenLifetime).Unix(),
		"jti":                randomToken(),
		"preferred_username": u.Name,
		"name":               u.Name + " (dev user)",
		"email":              u.Name + "@mayfly.test",
		"email_verified":     true,
		"groups":             groups,
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := p.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// user returns the configured user called name, or a user of that name
// with no groups.
func (p *Provider) user(name string) (User, error) {
	for _, u := range p.cfg.Users {
		if u.Name == name {
			return u, nil
		}
	}
	if !userNameRE.MatchString(name) {
		return User{}, fmt.Errorf("user name %q is not valid: use lower-case letters, digits, '.', '_' or '-', starting with a letter", name)
	}
	return User{Name: name}, nil
}

// approve completes (or denies) the authorization of userCode as name.
func (p *Provider) approve(userCode, name string, deny bool) (User, error) {
	u, err := p.user(name)
	if !deny && err != nil {
		return User{}, err
	}
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.byUser[normalizeUserCode(userCode)]
	switch {
	case a == nil || now.After(a.expires):
		return User{}, errors.New("unknown or expired code: check it, or start `mayfly login` again")
	case a.user != nil || a.denied:
		return User{}, errors.New("this code was already used")
	case deny:
		a.denied = true
		return User{}, nil
	}
	a.user = &u
	return u, nil
}

// randomToken is 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// userCodeAlphabet has no vowels (no words) and no look-alikes (RFC 8628 §6.1).
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

func randomUserCode() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = userCodeAlphabet[int(b[i])%len(userCodeAlphabet)]
	}
	return string(b)
}

// formatUserCode shows a code as XXXX-XXXX.
func formatUserCode(c string) string { return c[:4] + "-" + c[4:] }

// normalizeUserCode accepts what a person types: any case, with or without
// dash or spaces.
func normalizeUserCode(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ':
			return -1
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		}
		return r
	}, s)
}
