package authn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// OIDC defaults, each changed by an OIDCOption.
const (
	// DefaultOIDCDiscoveryTimeout bounds one discovery attempt (the
	// discovery document) and one fetch of a provider's keys.
	DefaultOIDCDiscoveryTimeout = 10 * time.Second
	// DefaultOIDCRetryMin and DefaultOIDCRetryMax bound the pause after a
	// failed discovery before the next token for that provider tries again;
	// the pause doubles after each failure.
	DefaultOIDCRetryMin = time.Second
	DefaultOIDCRetryMax = time.Minute
	// DefaultOIDCUsernameClaim and DefaultOIDCGroupsClaim are the claims
	// used when OIDCProvider leaves them empty, the same defaults as the
	// policy's identity_providers (user:alice@example.org).
	DefaultOIDCUsernameClaim = "email"
	DefaultOIDCGroupsClaim   = "groups"
)

// oidcClockSkew is how far in the future an ID token's "iat" or "nbf" may
// be (the provider's clock runs ahead). Expiry gets no leeway at all.
const oidcClockSkew = time.Minute

// oidcMaxLifetime is the longest ID token accepted (exp - iat; exp - now
// without iat): providers issue ID tokens for an hour or so, and a token
// that lives for days is a login nobody can end.
const oidcMaxLifetime = 12 * time.Hour

// oidcKeysRefreshAfter is how long fetched keys are used before they are
// fetched again; oidcKeysMinRefresh is the least time between two fetches
// prompted by a token signed with a key the broker has not seen (so that
// forged tokens with made-up key IDs cannot make the broker hammer the
// provider).
const (
	oidcKeysRefreshAfter = time.Hour
	oidcKeysMinRefresh   = 10 * time.Second
)

// oidcAlgorithms are the signature algorithms an ID token may use: the
// asymmetric ones only. "none" and the HMACs ("HS256", whose "key" an
// attacker would take from the provider's public JWKS) are never accepted.
var oidcAlgorithms = []string{
	oidc.RS256, oidc.RS384, oidc.RS512,
	oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512,
	oidc.EdDSA,
}

// oidcProviderNameRE is the policy's rule for names; a provider's name
// appears in the groups it asserts ("oidc-group:corp/sre").
var oidcProviderNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// OIDCProvider is an OpenID Connect identity provider whose ID tokens
// authenticate people (the policy's identity_providers).
type OIDCProvider struct {
	// Name is how the policy refers to the provider: the groups it asserts
	// become "oidc-group:<Name>/<group>". Lower-case letters, digits, '.',
	// '_' and '-', as every policy name.
	Name string
	// Issuer is the provider's issuer URL, exactly as it appears in the
	// "iss" claim and its discovery document. It must be https (http only
	// on a loopback host, for tests and dev).
	Issuer string
	// Audience is the client ID that people log in with (`mayfly login
	// --client-id`); an ID token is accepted only if its "aud" includes it.
	Audience string
	// GroupsClaim is the claim that lists the user's groups, as a string or
	// a list of strings; default "groups". A token without it has no
	// groups.
	GroupsClaim string
	// UsernameClaim is the claim whose value, a printable ASCII string
	// without spaces, names the user: the Principal is "user:<value>".
	// Default "email"; a token whose "email_verified" is present and not
	// true is then refused. "sub" is the one claim that OIDC guarantees to
	// be unique and stable at a provider, but it is often opaque.
	//
	// Every provider writes into the same "user:" namespace: configure only
	// providers that you trust to assert those names.
	UsernameClaim string
}

// OIDCOption configures an OIDCVerifier. Only this package defines them.
type OIDCOption interface {
	applyOIDC(*OIDCVerifier)
}

type oidcOption func(*OIDCVerifier)

func (f oidcOption) applyOIDC(v *OIDCVerifier) { f(v) }

// WithOIDCHTTPClient sets the HTTP client for discovery and key fetches,
// for example one that trusts a private CA. The default is an
// http.Client with its own transport and a timeout.
func WithOIDCHTTPClient(c *http.Client) OIDCOption {
	return oidcOption(func(v *OIDCVerifier) {
		if c != nil {
			v.client = c
		}
	})
}

// WithOIDCClock sets the clock for expiry checks and retry pauses.
func WithOIDCClock(now func() time.Time) OIDCOption {
	return oidcOption(func(v *OIDCVerifier) {
		if now != nil {
			v.now = now
		}
	})
}

// WithOIDCLogger sets the logger that reports discovery and key fetches.
// Tokens are never logged.
func WithOIDCLogger(l *slog.Logger) OIDCOption {
	return oidcOption(func(v *OIDCVerifier) {
		if l != nil {
			v.log = l
		}
	})
}

// WithOIDCDiscoveryTimeout bounds one discovery attempt and one key fetch;
// d must be positive.
func WithOIDCDiscoveryTimeout(d time.Duration) OIDCOption {
	return oidcOption(func(v *OIDCVerifier) {
		if d > 0 {
			v.timeout = d
		}
	})
}

// WithOIDCRetry sets the shortest and longest pause after a failed
// discovery; both must be positive and min <= max.
func WithOIDCRetry(minPause, maxPause time.Duration) OIDCOption {
	return oidcOption(func(v *OIDCVerifier) {
		if minPause > 0 && maxPause >= minPause {
			v.retryMin, v.retryMax = minPause, maxPause
		}
	})
}

// OIDCVerifier is the BearerVerifier for people: it verifies OIDC ID tokens
// from the configured identity providers with go-oidc and turns them into
// Principals of kind human. Put it in Config.Bearer. It is safe for
// concurrent use.
//
// Discovery is lazy: NewOIDCVerifier does not wait for any provider, so a
// provider that is down does not stop the broker. A token from a provider
// that could not be discovered yet is answered with an error that does not
// wrap ErrUnauthenticated (the broker's fault, not the caller's), and the
// next token after a pause (doubling from one second to a minute) tries
// discovery again.
type OIDCVerifier struct {
	issuers  map[string]*oidcIssuer // by issuer URL
	client   *http.Client
	now      func() time.Time
	log      *slog.Logger
	timeout  time.Duration
	retryMin time.Duration
	retryMax time.Duration
}

// NewOIDCVerifier checks the providers and returns a verifier for their ID
// tokens. It starts discovery of every provider in the background, bound to
// ctx, without waiting for it; a provider that cannot be discovered now is
// tried again when a token from it arrives. The error names the provider
// and field that is wrong.
func NewOIDCVerifier(ctx context.Context, providers []OIDCProvider, opts ...OIDCOption) (*OIDCVerifier, error) {
	v := &OIDCVerifier{
		issuers:  make(map[string]*oidcIssuer, len(providers)),
		now:      time.Now,
		log:      slog.Default(),
		timeout:  DefaultOIDCDiscoveryTimeout,
		retryMin: DefaultOIDCRetryMin,
		retryMax: DefaultOIDCRetryMax,
	}
	for _, o := range opts {
		o.applyOIDC(v)
	}
	if v.client == nil {
		v.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: v.timeout}
	}
	v.log = v.log.With("component", "authn.oidc")
	if len(providers) == 0 {
		return nil, errors.New("authn: NewOIDCVerifier: no identity providers")
	}
	names := map[string]bool{}
	for i, p := range providers {
		if err := checkOIDCProvider(p); err != nil {
			return nil, fmt.Errorf("authn: OIDC provider %d (%q): %w", i, p.Name, err)
		}
		if names[p.Name] {
			return nil, fmt.Errorf("authn: OIDC provider %d: two providers are named %q", i, p.Name)
		}
		if _, dup := v.issuers[p.Issuer]; dup {
			return nil, fmt.Errorf("authn: OIDC provider %d (%q): issuer %s is also configured for another provider", i, p.Name, p.Issuer)
		}
		names[p.Name] = true
		if p.UsernameClaim == "" {
			p.UsernameClaim = DefaultOIDCUsernameClaim
		}
		if p.GroupsClaim == "" {
			p.GroupsClaim = DefaultOIDCGroupsClaim
		}
		v.issuers[p.Issuer] = &oidcIssuer{cfg: p, v: v}
	}
	for _, iss := range v.issuers {
		iss.warmUp(ctx)
	}
	return v, nil
}

func checkOIDCProvider(p OIDCProvider) error {
	switch {
	case !oidcProviderNameRE.MatchString(p.Name):
		return errors.New("Name must be lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 characters")
	case p.Issuer == "":
		return errors.New("Issuer is required")
	case p.Audience == "":
		return errors.New("Audience (the client ID people log in with) is required")
	case strings.ContainsAny(p.GroupsClaim+p.UsernameClaim, " \t\r\n"):
		return errors.New("claim names must not contain spaces")
	}
	u, err := url.Parse(p.Issuer)
	if err != nil {
		return fmt.Errorf("Issuer is not a URL: %w", err)
	}
	switch {
	case u.Host == "":
		return fmt.Errorf("Issuer %q has no host", p.Issuer)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Errorf("Issuer %q must not have a query, fragment or user info", p.Issuer)
	case u.Scheme == "https":
	case u.Scheme == "http" && oidcLoopback(u.Hostname()):
	default:
		return fmt.Errorf("Issuer %q must be an https URL (http only on a loopback host)", p.Issuer)
	}
	return nil
}

func oidcLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Providers returns the configured providers (with defaults filled in).
func (v *OIDCVerifier) Providers() []OIDCProvider {
	out := make([]OIDCProvider, 0, len(v.issuers))
	for _, iss := range v.issuers {
		out = append(out, iss.cfg)
	}
	slices.SortFunc(out, func(a, b OIDCProvider) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// oidcClaims is what the verifier reads of an ID token before verifying it;
// those checks can only refuse a token. go-oidc checks the same again after
// the signature.
type oidcClaims struct {
	Iss string       `json:"iss"`
	Aud audience     `json:"aud"`
	Azp string       `json:"azp"`
	Exp *json.Number `json:"exp"`
	Iat *json.Number `json:"iat"`
	Nbf *json.Number `json:"nbf"`
}

// oidcHeader is the part of a JWS header the verifier reads.
type oidcHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
}

// peekOIDC decodes the header and claims of a compact JWS without
// verifying it.
func peekOIDC(token string) (h oidcHeader, c oidcClaims, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return h, c, fmt.Errorf("it has %d dot-separated parts, a JWT has 3", len(parts))
	}
	if err := decodeSegment(parts[0], &h); err != nil {
		return h, c, fmt.Errorf("header: %w", err)
	}
	if err := decodeSegment(parts[1], &c); err != nil {
		return h, c, fmt.Errorf("claims: %w", err)
	}
	return h, c, nil
}

// VerifyBearer implements BearerVerifier. A token that is not a JWT, or
// whose "iss" is not a configured provider, is ErrTokenNotRecognized. A
// token from a configured provider is verified: the signature with the
// provider's published keys (asymmetric algorithms only), the issuer, the
// audience (it must include the provider's Audience) and the expiry (no
// leeway); "iat" and "nbf" may be at most a minute in the future. Refusals
// wrap ErrUnauthenticated and name the provider and the reason, never the
// token. When the provider's discovery document or keys cannot be fetched,
// the error does not wrap ErrUnauthenticated.
func (v *OIDCVerifier) VerifyBearer(ctx context.Context, token string) (Principal, error) {
	header, claims, err := peekOIDC(token)
	if err != nil || claims.Iss == "" {
		return Principal{}, ErrTokenNotRecognized
	}
	iss, ok := v.issuers[claims.Iss]
	if !ok {
		return Principal{}, ErrTokenNotRecognized
	}
	return iss.verify(ctx, token, header, claims)
}

// oidcIssuer is one provider and the state of its discovery.
type oidcIssuer struct {
	cfg OIDCProvider
	v   *OIDCVerifier

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier // nil until discovery succeeded
	algs     []string              // what the provider signs with (∩ oidcAlgorithms)
	inflight chan struct{}         // closed when the running discovery ends
	lastErr  error                 // why the last discovery failed
	retryAt  time.Time             // no new attempt before this
	pause    time.Duration         // the pause after the next failure
}

// warmUp starts discovery in the background so that the first token does
// not wait for it. It gives up when ctx is done; lazy discovery still
// works after that.
func (s *oidcIssuer) warmUp(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := make(chan struct{})
	s.inflight = done
	dctx, cancel := context.WithTimeout(ctx, s.v.timeout)
	go func() {
		defer cancel()
		s.discover(dctx, done, ctx)
	}()
}

// ready returns the provider's go-oidc verifier, running discovery (once,
// for every waiting caller) when it is not done yet and the pause after
// the last failure is over.
func (s *oidcIssuer) ready(ctx context.Context) (*oidc.IDTokenVerifier, []string, error) {
	for {
		s.mu.Lock()
		if s.verifier != nil {
			defer s.mu.Unlock()
			return s.verifier, s.algs, nil
		}
		if s.inflight == nil {
			if now := s.v.now(); s.lastErr != nil && now.Before(s.retryAt) {
				err := fmt.Errorf("authn: OIDC token from %s cannot be verified now: %w; discovery is tried again in %s", s.cfg.Name, s.lastErr, s.retryAt.Sub(now).Round(time.Second))
				s.mu.Unlock()
				return nil, nil, err
			}
			done := make(chan struct{})
			s.inflight = done
			// Not bound to ctx: a caller that gives up must not make the
			// attempt fail for the others.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.v.timeout)
			go func() {
				defer cancel()
				s.discover(dctx, done, nil)
			}()
		}
		done := s.inflight
		s.mu.Unlock()

		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("authn: OIDC token from %s: gave up waiting for discovery of %s: %w", s.cfg.Name, s.cfg.Issuer, ctx.Err())
		case <-done:
		}
		s.mu.Lock()
		verifier, algs, lastErr := s.verifier, s.algs, s.lastErr
		s.mu.Unlock()
		switch {
		case verifier != nil:
			return verifier, algs, nil
		case lastErr != nil:
			return nil, nil, fmt.Errorf("authn: OIDC token from %s cannot be verified now: %w", s.cfg.Name, lastErr)
		}
		// A warm-up that was called off: discover now.
	}
}

// discover fetches the discovery document and sets up the verifier, or
// records why it failed and when to try again. It closes done. A warm-up
// (parent set) that fails because parent ended is not a failure of the
// provider: it leaves no pause behind.
func (s *oidcIssuer) discover(ctx context.Context, done chan struct{}, parent context.Context) {
	verifier, algs, err := s.newVerifier(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer close(done)
	s.inflight = nil
	if err != nil && parent != nil && parent.Err() != nil {
		return
	}
	if err != nil {
		if s.pause == 0 {
			s.pause = s.v.retryMin
		}
		s.lastErr = err
		s.retryAt = s.v.now().Add(s.pause)
		s.v.log.Warn("OIDC discovery failed; tokens from this provider are refused until it succeeds",
			"provider", s.cfg.Name, "issuer", s.cfg.Issuer, "error", err, "retry_in", s.pause)
		s.pause = min(2*s.pause, s.v.retryMax)
		return
	}
	s.verifier, s.algs = verifier, algs
	s.lastErr, s.pause = nil, 0
	s.v.log.Info("OIDC provider discovered", "provider", s.cfg.Name, "issuer", s.cfg.Issuer, "algorithms", algs)
}

func (s *oidcIssuer) newVerifier(ctx context.Context) (*oidc.IDTokenVerifier, []string, error) {
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, s.v.client), s.cfg.Issuer)
	if err != nil {
		var mismatch *oidc.IssuerMismatchError
		if errors.As(err, &mismatch) {
			return nil, nil, fmt.Errorf("the discovery document of %s names the issuer %q: the configured issuer must be exactly that", s.cfg.Issuer, mismatch.Discovered)
		}
		return nil, nil, fmt.Errorf("discovery of %s failed: %s", s.cfg.Issuer, oidcOneLine(err))
	}
	var meta struct {
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, nil, fmt.Errorf("discovery document of %s: %w", s.cfg.Issuer, err)
	}
	if meta.JWKSURI == "" {
		return nil, nil, fmt.Errorf("discovery document of %s has no jwks_uri", s.cfg.Issuer)
	}
	// Sign with what the provider says it uses, of the asymmetric
	// algorithms; all of them if it says nothing.
	algs := oidcAlgorithms
	if len(meta.Algs) > 0 {
		algs = nil
		for _, a := range meta.Algs {
			if slices.Contains(oidcAlgorithms, a) {
				algs = append(algs, a)
			}
		}
		if len(algs) == 0 {
			return nil, nil, fmt.Errorf("%s signs ID tokens only with %q; the broker accepts %s", s.cfg.Issuer, meta.Algs, strings.Join(oidcAlgorithms, ", "))
		}
	}
	keys := &oidcKeySet{url: meta.JWKSURI, client: s.v.client, timeout: s.v.timeout, now: s.v.now, log: s.v.log.With("provider", s.cfg.Name)}
	return oidc.NewVerifier(s.cfg.Issuer, keys, &oidc.Config{
		ClientID:             s.cfg.Audience,
		SupportedSigningAlgs: algs,
		Now:                  s.v.now,
	}), algs, nil
}

// verify checks a token whose "iss" is this provider's.
func (s *oidcIssuer) verify(ctx context.Context, token string, h oidcHeader, c oidcClaims) (Principal, error) {
	name, alg := s.cfg.Name, h.Alg
	// What can be judged before the signature is checked; it can only
	// refuse, and it makes the reason precise.
	if !slices.Contains(oidcAlgorithms, alg) {
		return Principal{}, unauthenticated("OIDC token from %s: signed with alg %q, which is not accepted: use one of %s", name, alg, strings.Join(oidcAlgorithms, ", "))
	}
	if typ := strings.ToLower(h.Typ); typ == "at+jwt" || typ == "application/at+jwt" {
		// An RFC 9068 access token from the same provider: not proof of
		// who logged in to this client.
		return Principal{}, unauthenticated("OIDC token from %s is an access token (typ %q); send the ID token", name, h.Typ)
	}
	if !slices.Contains(c.Aud, s.cfg.Audience) {
		return Principal{}, unauthenticated("OIDC token from %s: audience %q not accepted: it must include %q", name, []string(c.Aud), s.cfg.Audience)
	}
	// OpenID Connect Core 3.1.3.7: a token for several audiences must say
	// which client it was issued to (azp), and that must be ours; another
	// client's token that merely lists us is not a login to the broker.
	if (len(c.Aud) > 1 && c.Azp == "") || (c.Azp != "" && c.Azp != s.cfg.Audience) {
		return Principal{}, unauthenticated("OIDC token from %s was issued to client %q (azp), not to %q", name, c.Azp, s.cfg.Audience)
	}
	if c.Exp == nil {
		return Principal{}, unauthenticated("OIDC token from %s has no exp claim", name)
	}
	now := s.v.now()
	exp := numericDate(*c.Exp)
	if !now.Before(exp) {
		return Principal{}, unauthenticated("OIDC token from %s expired at %s; log in again (mayfly login)", name, formatTime(exp))
	}
	if c.Nbf != nil {
		if nbf := numericDate(*c.Nbf); nbf.After(now.Add(oidcClockSkew)) {
			return Principal{}, unauthenticated("OIDC token from %s is not valid until %s (check the clocks of the identity provider and the broker)", name, formatTime(nbf))
		}
	}
	if c.Iat != nil {
		if iat := numericDate(*c.Iat); iat.After(now.Add(oidcClockSkew)) {
			return Principal{}, unauthenticated("OIDC token from %s was issued in the future, at %s (check the clocks of the identity provider and the broker)", name, formatTime(iat))
		}
	}
	start := now
	if c.Iat != nil {
		start = numericDate(*c.Iat)
	}
	if life := exp.Sub(start); life > oidcMaxLifetime+oidcClockSkew {
		return Principal{}, unauthenticated("OIDC token from %s lives %s; the broker accepts ID tokens of at most %s (configure the provider's ID token lifetime)", name, life.Round(time.Minute), oidcMaxLifetime)
	}

	verifier, algs, err := s.ready(ctx)
	if err != nil {
		return Principal{}, err
	}
	if !slices.Contains(algs, alg) {
		return Principal{}, unauthenticated("OIDC token from %s: signed with alg %q, but the provider signs with %s", name, alg, strings.Join(algs, ", "))
	}
	outcome := &oidcKeyOutcome{}
	idt, err := verifier.Verify(context.WithValue(ctx, oidcKeyOutcomeKey{}, outcome), token)
	switch {
	case err == nil:
	case outcome.fetchErr != nil:
		return Principal{}, fmt.Errorf("authn: OIDC token from %s cannot be verified now: %w", name, outcome.fetchErr)
	case outcome.sigErr != nil:
		return Principal{}, unauthenticated("OIDC token from %s: %v", name, outcome.sigErr)
	default:
		var expired *oidc.TokenExpiredError
		if errors.As(err, &expired) {
			return Principal{}, unauthenticated("OIDC token from %s expired at %s; log in again (mayfly login)", name, formatTime(expired.Expiry))
		}
		// go-oidc's messages name claims, never the token.
		return Principal{}, unauthenticated("OIDC token from %s did not verify: %v", name, err)
	}
	return s.principal(idt)
}

// principal turns a verified ID token into a Principal.
func (s *oidcIssuer) principal(idt *oidc.IDToken) (Principal, error) {
	name := s.cfg.Name
	var claims map[string]json.RawMessage
	if err := idt.Claims(&claims); err != nil {
		return Principal{}, unauthenticated("OIDC token from %s: claims are not a JSON object", name)
	}

	var user string
	raw, ok := claims[s.cfg.UsernameClaim]
	if !ok {
		return Principal{}, unauthenticated("OIDC token from %s has no %q claim, which names the user", name, s.cfg.UsernameClaim)
	}
	if err := json.Unmarshal(raw, &user); err != nil {
		return Principal{}, unauthenticated("OIDC token from %s: the %q claim, which names the user, is not a string", name, s.cfg.UsernameClaim)
	}
	if err := checkOIDCUser(user); err != nil {
		return Principal{}, unauthenticated("OIDC token from %s: the %q claim, which names the user, %v", name, s.cfg.UsernameClaim, err)
	}
	if s.cfg.UsernameClaim == "email" {
		if raw, ok := claims["email_verified"]; ok && !oidcTrue(raw) {
			return Principal{}, unauthenticated("OIDC token from %s: the user's email is not verified (email_verified is not true)", name)
		}
	}

	var groups []string
	{
		raw, ok := claims[s.cfg.GroupsClaim]
		if ok && string(raw) != "null" {
			var list []string
			var one string
			if err := json.Unmarshal(raw, &one); err == nil {
				list = []string{one}
			} else if err := json.Unmarshal(raw, &list); err != nil {
				return Principal{}, unauthenticated("OIDC token from %s: the groups claim %q is neither a string nor a list of strings", name, s.cfg.GroupsClaim)
			}
			var dropped []string
			seen := map[string]bool{}
			for _, g := range list {
				if checkOIDCGroup(g) != nil {
					dropped = append(dropped, g)
					continue
				}
				full := "oidc-group:" + name + "/" + g
				if !seen[full] {
					seen[full] = true
					groups = append(groups, full)
				}
			}
			if len(dropped) > 0 {
				// A group the policy cannot name can match nothing in it.
				s.v.log.Warn("ignored groups that a policy cannot name (printable ASCII, no leading or trailing space, at most 254 bytes)",
					"provider", name, "user", "user:"+user, "groups", dropped)
			}
		}
	}

	return Principal{
		Kind:     KindHuman,
		ID:       "user:" + user,
		Groups:   groups,
		Method:   MethodOIDC,
		NotAfter: idt.Expiry,
	}, nil
}

// checkOIDCUser is the policy's rule for user names: printable ASCII
// without spaces, at most 254 bytes.
func checkOIDCUser(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > 254:
		return errors.New("is longer than 254 bytes")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' {
			return errors.New("is not printable ASCII without spaces")
		}
	}
	return nil
}

// checkOIDCGroup is the policy's rule for an identity provider's group
// names: printable ASCII, inner spaces allowed, at most 254 bytes.
func checkOIDCGroup(name string) error {
	if name == "" || len(name) > 254 || name[0] == ' ' || name[len(name)-1] == ' ' {
		return errors.New("invalid group name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' {
			return errors.New("invalid group name")
		}
	}
	return nil
}

// oidcTrue reports whether a claim is true, or the string "true" that some
// providers send.
func oidcTrue(raw json.RawMessage) bool {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b
	}
	var s string
	return json.Unmarshal(raw, &s) == nil && s == "true"
}

// oidcOneLine makes an error from an identity provider fit for one log
// line: go-oidc includes the response body, which may be a whole HTML page.
func oidcOneLine(err error) string {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}
