package policy

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// jwtParams is what the test-only jwt decoder returns.
type jwtParams struct {
	Audience string
	Scopes   []string
}

// decodeJWT is a test-only stand-in for the jwt issuer's DecodeParams: it
// accepts audience (required) and scopes, strictly.
func decodeJWT(node *yaml.Node) (any, error) {
	if node == nil {
		return nil, fmt.Errorf("section is required (audience, scopes)")
	}
	if node.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("must be a mapping")
	}
	var p jwtParams
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], node.Content[i+1]
		switch k.Value {
		case "audience":
			if v.Kind != yaml.ScalarNode || v.Value == "" {
				return nil, fmt.Errorf("audience must be a string")
			}
			p.Audience = v.Value
		case "scopes":
			if v.Kind != yaml.SequenceNode {
				return nil, fmt.Errorf("scopes must be a list")
			}
			for _, s := range v.Content {
				if s.Kind != yaml.ScalarNode {
					return nil, fmt.Errorf("scopes must be strings")
				}
				p.Scopes = append(p.Scopes, s.Value)
			}
		default:
			return nil, fmt.Errorf("unknown key %q (allowed: audience, scopes)", k.Value)
		}
	}
	if p.Audience == "" {
		return nil, fmt.Errorf("audience is required")
	}
	return p, nil
}

// decodeVault is a test-only decoder that accepts any section, so tests can
// have two known issuers.
func decodeVault(node *yaml.Node) (any, error) {
	if node == nil {
		return nil, nil
	}
	var m map[string]any
	if err := node.Decode(&m); err != nil {
		return nil, fmt.Errorf("must be a mapping")
	}
	return m, nil
}

func testOpts() Options {
	return Options{Issuers: map[string]func(*yaml.Node) (any, error){
		"jwt":   decodeJWT,
		"vault": decodeVault,
	}}
}

// lines joins its arguments as lines of a file, so a test reads its line
// numbers off the argument positions.
func lines(ls ...string) []byte {
	return []byte(strings.Join(ls, "\n") + "\n")
}
