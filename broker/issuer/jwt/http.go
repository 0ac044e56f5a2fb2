package jwt

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// Paths the Handler serves, below the path of Config.IssuerURL.
const (
	DiscoveryPath  = "/.well-known/openid-configuration"
	JWKSPath       = "/.well-known/jwks.json"
	IntrospectPath = "/introspect"
)

// maxFormBytes bounds an introspection request body.
const maxFormBytes = 64 << 10

// IntrospectFunc reports whether the lease whose id is jti is active now
// (lease.Lease.Active): the broker answers from its lease store. An error
// means the store could not answer; introspection then fails (503 or
// Unavailable) and never reports the token active.
type IntrospectFunc func(ctx context.Context, jti string) (active bool, err error)

// Introspection is the answer to an RFC 7662 introspection request.
// Marshalled as JSON it is the response body: {"active":false} and
// nothing else for a token that is not active, so an inactive answer
// reveals nothing about the token.
type Introspection struct {
	// Active is true only for a token this issuer signed, unexpired, whose
	// lease is active.
	Active bool
	// Claims are the token's claims when Active; nil otherwise.
	Claims *Claims
}

type introspectionJSON struct {
	Active      bool     `json:"active"`
	Scope       string   `json:"scope,omitempty"`
	TokenType   string   `json:"token_type,omitempty"`
	Exp         int64    `json:"exp,omitempty"`
	Iat         int64    `json:"iat,omitempty"`
	Nbf         int64    `json:"nbf,omitempty"`
	Sub         string   `json:"sub,omitempty"`
	Aud         audience `json:"aud,omitempty"`
	Iss         string   `json:"iss,omitempty"`
	Jti         string   `json:"jti,omitempty"`
	Entitlement string   `json:"ent,omitempty"`
}

// MarshalJSON writes the RFC 7662 response: active, and for an active
// token scope, token_type "Bearer", exp, iat, nbf, sub, aud, iss, jti and
// ent (the entitlement).
func (in Introspection) MarshalJSON() ([]byte, error) {
	if !in.Active || in.Claims == nil {
		return []byte(`{"active":false}`), nil
	}
	c := in.Claims
	return json.Marshal(introspectionJSON{
		Active:      true,
		Scope:       strings.Join(c.Scopes, " "),
		TokenType:   "Bearer",
		Exp:         c.ExpiresAt.Unix(),
		Iat:         c.IssuedAt.Unix(),
		Nbf:         c.NotBefore.Unix(),
		Sub:         c.Subject,
		Aud:         c.Audience,
		Iss:         c.Issuer,
		Jti:         c.ID,
		Entitlement: c.Entitlement,
	})
}

// IntrospectToken decides whether token is active: signed by this issuer
// with a published key, unexpired (Verify), and its lease active according
// to lookup. Any invalid token is simply inactive (nil error). An error
// wraps ErrLookup (lookup failed or ctx ended): the caller answers
// Unavailable, never active. Shared by the HTTP endpoint and the gRPC
// IntrospectionService.
func (i *Issuer) IntrospectToken(ctx context.Context, token string, lookup IntrospectFunc) (Introspection, error) {
	if lookup == nil {
		return Introspection{}, fmt.Errorf("%w: no lease lookup configured", ErrLookup)
	}
	if err := ctx.Err(); err != nil {
		return Introspection{}, fmt.Errorf("%w: %w", ErrLookup, err)
	}
	c, err := i.Verify(token)
	if err != nil {
		i.log.DebugContext(ctx, "introspected token is not valid", slog.Any("error", err))
		return Introspection{}, nil
	}
	active, err := lookup(ctx, c.ID)
	if err != nil {
		return Introspection{}, fmt.Errorf("%w: lease %s: %w", ErrLookup, c.ID, err)
	}
	if !active {
		return Introspection{}, nil
	}
	return Introspection{Active: true, Claims: c}, nil
}

// Handler serves, below the path of Config.IssuerURL:
//
//   - GET /.well-known/openid-configuration: the OIDC discovery document
//     that AWS IAM OIDC providers and Google workload identity federation
//     read (issuer, jwks_uri, id_token_signing_alg_values_supported, ...).
//   - GET /.well-known/jwks.json: the published public keys.
//   - POST /introspect: RFC 7662 token introspection. authorize must accept
//     the caller first (else 401; a nil authorize refuses everyone), then
//     the token is checked with IntrospectToken and introspect. A nil
//     introspect leaves the endpoint out (404, and not in discovery).
//
// Wrong method: 405. Malformed form: 400. Lookup failure: 503.
func (i *Issuer) Handler(introspect IntrospectFunc, authorize func(*http.Request) error) http.Handler {
	prefix := ""
	if u, err := url.Parse(i.cfg.IssuerURL); err == nil { // validated in New
		prefix = u.Path
	}
	return &handler{i: i, prefix: prefix, introspect: introspect, authorize: authorize}
}

type handler struct {
	i          *Issuer
	prefix     string
	introspect IntrospectFunc
	authorize  func(*http.Request) error
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutPrefix(r.URL.Path, h.prefix)
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "")
		return
	}
	switch path {
	case DiscoveryPath:
		if allow(w, r, http.MethodGet, http.MethodHead) {
			h.discovery(w)
		}
	case JWKSPath:
		if allow(w, r, http.MethodGet, http.MethodHead) {
			h.jwks(w)
		}
	case IntrospectPath:
		if h.introspect == nil {
			writeError(w, http.StatusNotFound, "not_found", "")
			return
		}
		if allow(w, r, http.MethodPost) {
			h.introspection(w, r)
		}
	default:
		writeError(w, http.StatusNotFound, "not_found", "")
	}
}

// allow answers 405 unless r uses one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "")
	return false
}

// discoveryDoc is the subset of OpenID Connect Discovery 1.0 that token
// verifiers read; the same shape the Kubernetes service account issuer
// publishes, which AWS and Google accept.
type discoveryDoc struct {
	Issuer                string   `json:"issuer"`
	JWKSURI               string   `json:"jwks_uri"`
	IntrospectionEndpoint string   `json:"introspection_endpoint,omitempty"`
	ResponseTypes         []string `json:"response_types_supported"`
	SubjectTypes          []string `json:"subject_types_supported"`
	IDTokenSigningAlgs    []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported       []string `json:"claims_supported"`
}

func (h *handler) discovery(w http.ResponseWriter) {
	iss := h.i.cfg.IssuerURL
	doc := discoveryDoc{
		Issuer:             iss,
		JWKSURI:            iss + JWKSPath,
		ResponseTypes:      []string{"id_token"},
		SubjectTypes:       []string{"public"},
		IDTokenSigningAlgs: h.i.keys.Load().algs,
		ClaimsSupported:    []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "ent", "scope"},
	}
	if h.introspect != nil {
		doc.IntrospectionEndpoint = iss + IntrospectPath
	}
	body, _ := json.Marshal(doc)
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeBody(w, http.StatusOK, body)
}

func (h *handler) jwks(w http.ResponseWriter) {
	// Modest caching: a verifier sees a new key within five minutes, and
	// well-behaved ones refetch at once on an unknown kid.
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeBody(w, http.StatusOK, h.i.jwksDoc())
}

func (h *handler) introspection(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if h.authorize == nil {
		h.i.log.WarnContext(r.Context(), "introspection refused: no authorize function configured")
		unauthorized(w)
		return
	}
	if err := h.authorize(r); err != nil {
		h.i.log.DebugContext(r.Context(), "introspection caller refused", slog.String("remote", r.RemoteAddr), slog.Any("error", err))
		unauthorized(w)
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		writeError(w, http.StatusBadRequest, "invalid_request", "body must be application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "malformed form")
		return
	}
	// The token only ever comes from the body: a URL ends up in logs.
	tokens := r.PostForm["token"]
	if len(tokens) != 1 || tokens[0] == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", "exactly one token parameter is required")
		return
	}
	if len(r.PostForm["token_type_hint"]) > 1 {
		writeError(w, http.StatusBadRequest, "invalid_request", "token_type_hint given more than once")
		return
	}
	// token_type_hint is advisory (RFC 7662 section 2.1); every token
	// here is an access token, so it changes nothing.
	res, err := h.i.IntrospectToken(r.Context(), tokens[0], h.introspect)
	if err != nil {
		h.i.log.WarnContext(r.Context(), "introspection failed", slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "lease store unavailable; try again")
		return
	}
	body, err := json.Marshal(res)
	if err != nil { // cannot happen: strings and numbers only
		writeError(w, http.StatusInternalServerError, "server_error", "")
		return
	}
	writeBody(w, http.StatusOK, body)
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="mayfly", error="invalid_client"`)
	writeError(w, http.StatusUnauthorized, "invalid_client", "caller not authorized to introspect")
}

// writeError writes an OAuth-style JSON error (RFC 6749 section 5.2).
func writeError(w http.ResponseWriter, status int, code, desc string) {
	body, _ := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{code, desc})
	writeBody(w, status, body)
}

func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(body)
}
