package jwt

import (
	"slices"
	"testing"

	"gopkg.in/yaml.v3"
)

func parseNode(t *testing.T, text string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("yaml %q: %v", text, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

func TestDecodeParams(t *testing.T) {
	ok := []struct {
		name, yaml string
		want       Params
	}{
		{"string audience", "audience: sts.amazonaws.com", Params{Audience: []string{"sts.amazonaws.com"}}},
		{"list audience and scopes", "audience: [a, b]\nscopes: [orders.read, 'x:y']", Params{Audience: []string{"a", "b"}, Scopes: []string{"orders.read", "x:y"}}},
		{"empty scopes", "audience: a\nscopes: []", Params{Audience: []string{"a"}}},
		{"null scopes", "audience: a\nscopes:", Params{Audience: []string{"a"}}},
		{"alias", "x: &aud [a, b]\ny:\n  audience: *aud", Params{Audience: []string{"a", "b"}}},
		{"quoted number", `audience: "123"`, Params{Audience: []string{"123"}}},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			n := parseNode(t, tt.yaml)
			if tt.name == "alias" {
				n = n.Content[3] // the mapping under y
			}
			p, err := DecodeParams(n)
			if err != nil {
				t.Fatalf("DecodeParams: %v", err)
			}
			if !slices.Equal(p.Audience, tt.want.Audience) || !slices.Equal(p.Scopes, tt.want.Scopes) {
				t.Errorf("got %+v; want %+v", p, tt.want)
			}
		})
	}

	bad := []struct{ name, yaml, want string }{
		{"nil", "", "jwt: audience is required"},
		{"unknown key", "audience: a\naud: b", `jwt: unknown key "aud" (want audience, scopes)`},
		{"duplicate key", "audience: a\naudience: b", `jwt: key "audience" appears twice`},
		{"no audience", "scopes: [a]", "jwt: audience is required"},
		{"null audience", "audience:", "jwt: audience is required"},
		{"empty audience", `audience: ""`, "jwt: audience[0] must not be empty"},
		{"empty list", "audience: []", "jwt: audience must not be empty"},
		{"int audience", "audience: 123", "jwt: audience must be a string or a list of strings, not !!int"},
		{"map audience", "audience: {a: b}", "jwt: audience must be a string or a list of strings"},
		{"list of lists", "audience: [[a]]", "jwt: audience[0] must be a string"},
		{"duplicate audience", "audience: [a, a]", `jwt: audience "a" appears twice`},
		{"control char", "audience: \"a\\tb\"", `jwt: audience[0] "a\tb" contains a control character`},
		{"scopes string", "audience: a\nscopes: read", "jwt: scopes must be a list of strings"},
		{"scope with space", "audience: a\nscopes: [\"a b\"]", `jwt: scopes[0] "a b" is not an RFC 6749 scope-token (printable ASCII, no space, quote or backslash)`},
		{"scope with quote", "audience: a\nscopes: ['a\"b']", `jwt: scopes[0] "a\"b" is not an RFC 6749 scope-token (printable ASCII, no space, quote or backslash)`},
		{"scope with backslash", "audience: a\nscopes: ['a\\b']", `jwt: scopes[0] "a\\b" is not an RFC 6749 scope-token (printable ASCII, no space, quote or backslash)`},
		{"non-ascii scope", "audience: a\nscopes: [café]", `jwt: scopes[0] "café" is not an RFC 6749 scope-token (printable ASCII, no space, quote or backslash)`},
		{"empty scope", "audience: a\nscopes: ['']", `jwt: scopes[0] "" is not an RFC 6749 scope-token (printable ASCII, no space, quote or backslash)`},
		{"int scope", "audience: a\nscopes: [1]", "jwt: scopes[0] must be a string"},
		{"duplicate scope", "audience: a\nscopes: [r, r]", `jwt: scope "r" appears twice`},
		{"not a mapping", "sts.amazonaws.com", "jwt: params must be a mapping with audience and scopes"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DecodeParams(parseNode(t, tt.yaml))
			if err == nil || err.Error() != tt.want {
				t.Errorf("DecodeParams = %+v, %v; want error %q", p, err, tt.want)
			}
		})
	}

	// The Issuer method returns the same, as an any holding Params.
	iss, err := New(Config{IssuerURL: "https://mayfly.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := iss.DecodeParams(parseNode(t, "audience: a"))
	if p, ok := v.(Params); err != nil || !ok || p.Audience[0] != "a" {
		t.Errorf("Issuer.DecodeParams = %#v, %v", v, err)
	}
	// A whole document node is accepted too.
	var doc yaml.Node
	yaml.Unmarshal([]byte("audience: a"), &doc)
	if _, err := DecodeParams(&doc); err != nil {
		t.Errorf("document node: %v", err)
	}
}
