package jwt

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Params is an entitlement's jwt section, decoded by DecodeParams:
//
//	issuer: jwt
//	jwt:
//	  audience: sts.amazonaws.com        # or a list
//	  scopes: [orders.read, orders.write] # optional
type Params struct {
	// Audience is the aud claim: who the token is for (an AWS IAM OIDC
	// client id, a Google workload identity provider, an API). At least
	// one, no duplicates.
	Audience []string
	// Scopes become the space-separated scope claim (RFC 8693 / RFC 9068
	// style); omitted when empty. Each is an RFC 6749 scope-token.
	Scopes []string
	// Extra are further claims, set by the broker itself, never from the
	// policy file: e.g. the source identity and session tags AWS reads
	// from a web identity token. They may not replace a claim above.
	Extra map[string]any
}

// scopeToken is RFC 6749 section 3.3: 1*( %x21 / %x23-5B / %x5D-7E ).
var scopeToken = regexp.MustCompile(`^[\x21\x23-\x5b\x5d-\x7e]+$`)

// DecodeParams decodes the entitlement's jwt section strictly: only
// audience (a string or a list of strings, required) and scopes (a list of
// scope-tokens) are allowed. It returns a Params.
func (i *Issuer) DecodeParams(node *yaml.Node) (any, error) {
	return DecodeParams(node)
}

// DecodeParams is Issuer.DecodeParams without an Issuer, for policy tools
// that validate a file offline.
func DecodeParams(node *yaml.Node) (Params, error) {
	node = resolve(node)
	if node != nil && node.Kind == yaml.DocumentNode && len(node.Content) == 1 {
		node = resolve(node.Content[0])
	}
	if node == nil || isNull(node) {
		return Params{}, fmt.Errorf("jwt: audience is required")
	}
	if node.Kind != yaml.MappingNode {
		return Params{}, fmt.Errorf("jwt: params must be a mapping with audience and scopes")
	}
	var (
		p    Params
		seen = map[string]bool{}
	)
	for k := 0; k+1 < len(node.Content); k += 2 {
		key, val := resolve(node.Content[k]), resolve(node.Content[k+1])
		if key.Kind != yaml.ScalarNode {
			return Params{}, fmt.Errorf("jwt: params keys must be strings")
		}
		if seen[key.Value] {
			return Params{}, fmt.Errorf("jwt: key %q appears twice", key.Value)
		}
		seen[key.Value] = true
		var err error
		switch key.Value {
		case "audience":
			p.Audience, err = decodeAudience(val)
		case "scopes":
			p.Scopes, err = decodeScopes(val)
		default:
			return Params{}, fmt.Errorf("jwt: unknown key %q (want audience, scopes)", key.Value)
		}
		if err != nil {
			return Params{}, err
		}
	}
	if len(p.Audience) == 0 {
		return Params{}, fmt.Errorf("jwt: audience is required")
	}
	return p, nil
}

func decodeAudience(n *yaml.Node) ([]string, error) {
	var auds []string
	switch {
	case isNull(n):
		return nil, fmt.Errorf("jwt: audience is required")
	case n.Kind == yaml.ScalarNode:
		auds = []string{n.Value}
		if n.ShortTag() != "!!str" {
			return nil, fmt.Errorf("jwt: audience must be a string or a list of strings, not %s", n.ShortTag())
		}
	case n.Kind == yaml.SequenceNode:
		if len(n.Content) == 0 {
			return nil, fmt.Errorf("jwt: audience must not be empty")
		}
		for j, e := range n.Content {
			e = resolve(e)
			if e.Kind != yaml.ScalarNode || e.ShortTag() != "!!str" {
				return nil, fmt.Errorf("jwt: audience[%d] must be a string", j)
			}
			auds = append(auds, e.Value)
		}
	default:
		return nil, fmt.Errorf("jwt: audience must be a string or a list of strings")
	}
	for j, a := range auds {
		switch {
		case strings.TrimSpace(a) == "":
			return nil, fmt.Errorf("jwt: audience[%d] must not be empty", j)
		case strings.IndexFunc(a, unicode.IsControl) >= 0:
			return nil, fmt.Errorf("jwt: audience[%d] %q contains a control character", j, a)
		case slices.Index(auds, a) != j:
			return nil, fmt.Errorf("jwt: audience %q appears twice", a)
		}
	}
	return auds, nil
}

func decodeScopes(n *yaml.Node) ([]string, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("jwt: scopes must be a list of strings")
	}
	scopes := make([]string, 0, len(n.Content))
	for j, e := range n.Content {
		e = resolve(e)
		if e.Kind != yaml.ScalarNode || e.ShortTag() != "!!str" {
			return nil, fmt.Errorf("jwt: scopes[%d] must be a string", j)
		}
		if !scopeToken.MatchString(e.Value) {
			return nil, fmt.Errorf("jwt: scopes[%d] %q is not an RFC 6749 scope-token (printable ASCII, no space, quote or backslash)", j, e.Value)
		}
		if slices.Contains(scopes, e.Value) {
			return nil, fmt.Errorf("jwt: scope %q appears twice", e.Value)
		}
		scopes = append(scopes, e.Value)
	}
	if len(scopes) == 0 {
		return nil, nil
	}
	return scopes, nil
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
	switch p := params.(type) {
	case Params:
		return p, validParams(p)
	case *Params:
		if p != nil {
			return *p, validParams(*p)
		}
	}
	return Params{}, fmt.Errorf("params are %T, want jwt.Params from DecodeParams", params)
}

// validParams re-checks a Params built in code rather than decoded.
func validParams(p Params) error {
	if len(p.Audience) == 0 {
		return errors.New("audience is required")
	}
	for _, a := range p.Audience {
		if a == "" {
			return errors.New("audience must not be empty")
		}
	}
	for _, s := range p.Scopes {
		if !scopeToken.MatchString(s) {
			return fmt.Errorf("scope %q is not an RFC 6749 scope-token", s)
		}
	}
	return nil
}
