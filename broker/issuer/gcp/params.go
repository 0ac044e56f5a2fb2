package gcp

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Limits of generateAccessToken that DecodeParams and Issue enforce.
const (
	// DefaultMaxLifetime is the longest token Google mints unless the
	// organisation policy extends it, and max_lifetime's default.
	DefaultMaxLifetime = time.Hour
	// MaxLifetime is the longest token Google mints at all (with
	// constraints/iam.allowServiceAccountCredentialLifetimeExtension).
	MaxLifetime = 12 * time.Hour
	// MinLifetime is the shortest token Issue asks for: a shorter one is
	// not worth the two calls.
	MinLifetime = time.Minute
	// SkewAllowance is how long before its lease a token is asked to end:
	// it covers the call (Config.CallTimeout) and clock skew.
	SkewAllowance = 30 * time.Second
	// MinTTL is the shortest lease a gcp entitlement may have: MinLifetime,
	// SkewAllowance, and 30 seconds for the pending lease to reach Issue.
	MinTTL = MinLifetime + SkewAllowance + 30*time.Second
	// ExchangeTokenLifetime is the longest a token the broker exchanges at
	// Google STS lives.
	ExchangeTokenLifetime = 5 * time.Minute
)

// DefaultScope is the scope of a token when the entitlement names none.
const DefaultScope = "https://www.googleapis.com/auth/cloud-platform"

// Params is an entitlement's gcp section, decoded by DecodeParams:
//
//	issuer: gcp
//	gcp:
//	  service_account: reader@project.iam.gserviceaccount.com   # required
//	  scopes: [https://www.googleapis.com/auth/bigquery.readonly] # default cloud-platform
//	  max_lifetime: 1h          # up to 12h where the org policy allows it
//	  delegates: [hop@project.iam.gserviceaccount.com]           # optional
type Params struct {
	// ServiceAccount is the email of the service account whose token is
	// minted.
	ServiceAccount string
	// Scopes are the OAuth scopes of the token; [DefaultScope] when absent.
	Scopes []string
	// MaxLifetime caps a token's lifetime: 1h by default, up to 12h when
	// the organisation policy lists the service account. max_ttl must not
	// exceed it.
	MaxLifetime time.Duration
	// Delegates is the delegation chain (service account emails), each
	// holding roles/iam.serviceAccountTokenCreator on the next and the last
	// on ServiceAccount; empty for direct impersonation, the usual case.
	Delegates []string
}

// TTLBounds is the range an entitlement's ttl and max_ttl must keep to:
// MinTTL and max_lifetime. DecodeParams cannot see ttl, so the policy loader
// checks it (policy.TTLBounder).
func (p Params) TTLBounds() (min, max time.Duration) {
	max = p.MaxLifetime
	if max == 0 {
		max = DefaultMaxLifetime
	}
	return MinTTL, max
}

var (
	// saEmailRE: user-managed (NAME@PROJECT.iam.gserviceaccount.com),
	// default (NUMBER-compute@developer.gserviceaccount.com,
	// PROJECT@appspot.gserviceaccount.com) and domain-scoped project
	// accounts.
	saEmailRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}@[a-z0-9][a-z0-9.-]{0,200}\.gserviceaccount\.com$`)
	// scopeRE: an RFC 6749 scope-token.
	scopeRE = regexp.MustCompile(`^[\x21\x23-\x5b\x5d-\x7e]{1,512}$`)
)

const maxDelegates = 10

// DecodeParams decodes the entitlement's gcp section strictly (see
// Params). It returns a Params.
func (i *Issuer) DecodeParams(node *yaml.Node) (any, error) {
	p, err := DecodeParams(node)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// DecodeParams is Issuer.DecodeParams without an Issuer, for policy tools
// that validate a file offline.
func DecodeParams(node *yaml.Node) (Params, error) {
	node = resolve(node)
	if node != nil && node.Kind == yaml.DocumentNode && len(node.Content) == 1 {
		node = resolve(node.Content[0])
	}
	if node == nil || isNull(node) {
		return Params{}, errors.New("gcp: service_account is required")
	}
	if node.Kind != yaml.MappingNode {
		return Params{}, errors.New("gcp: params must be a mapping with service_account and the other keys")
	}
	var p Params
	seen := map[string]bool{}
	for k := 0; k+1 < len(node.Content); k += 2 {
		key, val := resolve(node.Content[k]), resolve(node.Content[k+1])
		if key.Kind != yaml.ScalarNode {
			return Params{}, errors.New("gcp: params keys must be strings")
		}
		if seen[key.Value] {
			return Params{}, fmt.Errorf("gcp: key %q appears twice", key.Value)
		}
		seen[key.Value] = true
		var err error
		switch key.Value {
		case "service_account":
			p.ServiceAccount, err = str(key.Value, val)
		case "scopes":
			p.Scopes, err = strs(key.Value, val)
		case "delegates":
			p.Delegates, err = strs(key.Value, val)
		case "max_lifetime":
			var s string
			if s, err = str(key.Value, val); err == nil {
				if p.MaxLifetime, err = time.ParseDuration(s); err != nil {
					err = fmt.Errorf("max_lifetime %q is not a duration (say 1h)", s)
				}
			}
		default:
			err = fmt.Errorf("unknown key %q (want service_account, scopes, max_lifetime, delegates)", key.Value)
		}
		if err != nil {
			return Params{}, fmt.Errorf("gcp: %w", err)
		}
	}
	p, err := p.normalize()
	if err != nil {
		return Params{}, fmt.Errorf("gcp: %w", err)
	}
	return p, nil
}

// normalize fills in defaults, turns delegates given as resource names
// into emails, and checks p.
func (p Params) normalize() (Params, error) {
	if p.MaxLifetime == 0 {
		p.MaxLifetime = DefaultMaxLifetime
	}
	if len(p.Scopes) == 0 {
		p.Scopes = []string{DefaultScope}
	}
	p.Scopes = slices.Clone(p.Scopes)
	delegates := make([]string, 0, len(p.Delegates))
	for _, d := range p.Delegates {
		delegates = append(delegates, strings.TrimPrefix(d, "projects/-/serviceAccounts/"))
	}
	p.Delegates = nil
	if len(delegates) > 0 {
		p.Delegates = delegates
	}
	switch {
	case p.ServiceAccount == "":
		return Params{}, errors.New("service_account is required")
	case !saEmailRE.MatchString(p.ServiceAccount):
		return Params{}, fmt.Errorf("service_account %q is not a service account email (NAME@PROJECT.iam.gserviceaccount.com)", p.ServiceAccount)
	case p.MaxLifetime < MinLifetime || p.MaxLifetime > MaxLifetime || p.MaxLifetime%time.Second != 0:
		return Params{}, fmt.Errorf("max_lifetime %v must be whole seconds from %v to 12h (over 1h only where the org policy allows it)", p.MaxLifetime, MinLifetime)
	case len(p.Delegates) > maxDelegates:
		return Params{}, fmt.Errorf("delegates has %d service accounts; at most %d", len(p.Delegates), maxDelegates)
	}
	for n, s := range p.Scopes {
		if !scopeRE.MatchString(s) {
			return Params{}, fmt.Errorf("scopes[%d] %q is not an OAuth scope", n, s)
		}
		if slices.Index(p.Scopes, s) != n {
			return Params{}, fmt.Errorf("scope %q appears twice", s)
		}
	}
	for n, d := range p.Delegates {
		if !saEmailRE.MatchString(d) {
			return Params{}, fmt.Errorf("delegates[%d] %q is not a service account email", n, d)
		}
		if d == p.ServiceAccount || slices.Index(p.Delegates, d) != n {
			return Params{}, fmt.Errorf("delegates[%d] %q repeats a service account of the chain", n, d)
		}
	}
	return p, nil
}

func str(key string, n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return "", fmt.Errorf("%s must be a string", key)
	}
	return n.Value, nil
}

func strs(key string, n *yaml.Node) ([]string, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s must be a list of strings", key)
	}
	out := make([]string, 0, len(n.Content))
	for j, e := range n.Content {
		e = resolve(e)
		if e.Kind != yaml.ScalarNode || e.ShortTag() != "!!str" {
			return nil, fmt.Errorf("%s[%d] must be a string", key, j)
		}
		out = append(out, e.Value)
	}
	return out, nil
}

// resolve follows aliases (a YAML anchor reused under another entitlement).
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// paramsOf accepts what DecodeParams returned (or a Params built in code).
func paramsOf(params any) (Params, error) {
	switch v := params.(type) {
	case Params:
		return v.normalize()
	case *Params:
		if v != nil {
			return v.normalize()
		}
		return Params{}, errors.New("params are a nil *gcp.Params")
	}
	return Params{}, fmt.Errorf("params are %T, want gcp.Params from DecodeParams", params)
}
