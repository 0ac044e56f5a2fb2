package vault

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// Params is an entitlement's vault section, decoded by DecodeParams. It
// names one leased secret and the Vault policies of the per-lease token
// that reads it:
//
//	issuer: vault
//	vault:
//	  path: database/creds/orders-ro     # any engine that returns a leased secret
//	  token_policies: [mayfly-orders-ro] # must allow reading path
//
// or a certificate from the PKI engine (its role needs generate_lease=true):
//
//	vault:
//	  pki:
//	    mount: pki                       # default "pki"
//	    role: workload
//	    common_name: "{{subject}}"       # {{subject}}, {{entitlement}}, {{lease_id}}
//	    alt_names: [orders.internal]     # optional, same placeholders
//	    uri_sans: ["{{subject}}"]        # optional, same placeholders
//	  token_policies: [mayfly-pki-workload]
type Params struct {
	// Path is read (GET) with the per-lease token. Exactly one of Path and
	// PKI is set.
	Path string
	// PKI issues a certificate and key (write to <mount>/issue/<role>).
	PKI *PKIParams
	// TokenPolicies are the Vault policies of the per-lease token. They
	// must allow reading Path (or issuing from the PKI role); the broker's
	// token, or Config.TokenRole, must be allowed to grant them.
	TokenPolicies []string
}

// PKIParams is the pki section of Params.
type PKIParams struct {
	// Mount is the PKI secrets engine mount (default "pki").
	Mount string
	// Role is the PKI role; it must set generate_lease=true, or the
	// certificate would have no lease to revoke.
	Role string
	// CommonName is the certificate's CN; placeholders are expanded.
	CommonName string
	// AltNames are DNS or email subject alternative names.
	AltNames []string
	// URISANs are URI subject alternative names (a SPIFFE ID: "{{subject}}").
	URISANs []string
}

// placeholders are what PKI names may contain, expanded from the lease.
var placeholders = []string{"{{subject}}", "{{entitlement}}", "{{lease_id}}"}

// reservedMounts are Vault paths that are not secrets engines.
var reservedMounts = []string{"sys", "auth", "cubbyhole", "identity"}

// DecodeParams decodes the entitlement's vault section strictly: one of
// path and pki, and token_policies; unknown keys are errors that name the
// key. ssh is recognised but not supported yet. It returns a Params.
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
		return Params{}, errors.New("vault: params are required: path (or pki) and token_policies")
	}
	if node.Kind != yaml.MappingNode {
		return Params{}, errors.New("vault: params must be a mapping with path (or pki) and token_policies")
	}
	var p Params
	err := eachKey(node, "", func(key string, val *yaml.Node) error {
		var err error
		switch key {
		case "path":
			p.Path, err = decodeString("path", val)
			if err == nil {
				if err = validPath(p.Path); err != nil {
					err = fmt.Errorf("vault: %w", err)
				}
			}
		case "pki":
			p.PKI, err = decodePKI(val)
		case "ssh":
			err = errors.New("vault: ssh is not supported yet; use path or pki")
		case "token_policies":
			p.TokenPolicies, err = decodePolicies(val)
		default:
			err = fmt.Errorf("vault: unknown key %q (want path, pki, token_policies)", key)
		}
		return err
	})
	if err != nil {
		return Params{}, err
	}
	if err := validParams(p); err != nil {
		return Params{}, fmt.Errorf("vault: %w", err)
	}
	return p, nil
}

// eachKey calls fn for every key of a mapping, refusing non-string and
// repeated keys. prefix names the section in errors ("pki.").
func eachKey(n *yaml.Node, prefix string, fn func(key string, val *yaml.Node) error) error {
	seen := map[string]bool{}
	for k := 0; k+1 < len(n.Content); k += 2 {
		key, val := resolve(n.Content[k]), resolve(n.Content[k+1])
		if key.Kind != yaml.ScalarNode {
			return fmt.Errorf("vault: %skeys must be strings", prefix)
		}
		if seen[key.Value] {
			return fmt.Errorf("vault: key %q appears twice", prefix+key.Value)
		}
		seen[key.Value] = true
		if err := fn(key.Value, val); err != nil {
			return err
		}
	}
	return nil
}

func decodePKI(n *yaml.Node) (*PKIParams, error) {
	if isNull(n) || n.Kind != yaml.MappingNode {
		return nil, errors.New("vault: pki must be a mapping with role and common_name")
	}
	pk := &PKIParams{}
	err := eachKey(n, "pki.", func(key string, val *yaml.Node) error {
		var err error
		switch key {
		case "mount":
			pk.Mount, err = decodeString("pki.mount", val)
		case "role":
			pk.Role, err = decodeString("pki.role", val)
		case "common_name":
			pk.CommonName, err = decodeString("pki.common_name", val)
		case "alt_names":
			pk.AltNames, err = decodeStrings("pki.alt_names", val)
		case "uri_sans":
			pk.URISANs, err = decodeStrings("pki.uri_sans", val)
		default:
			err = fmt.Errorf("vault: unknown key %q (want mount, role, common_name, alt_names, uri_sans)", "pki."+key)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if pk.Mount == "" {
		pk.Mount = "pki"
	}
	return pk, nil
}

func decodeString(field string, n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return "", fmt.Errorf("vault: %s must be a string", field)
	}
	if strings.TrimSpace(n.Value) == "" {
		return "", fmt.Errorf("vault: %s must not be empty", field)
	}
	return n.Value, nil
}

func decodeStrings(field string, n *yaml.Node) ([]string, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("vault: %s must be a list of strings", field)
	}
	out := make([]string, 0, len(n.Content))
	for j, e := range n.Content {
		s, err := decodeString(fmt.Sprintf("%s[%d]", field, j), resolve(e))
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, s) {
			return nil, fmt.Errorf("vault: %s: %q appears twice", field, s)
		}
		out = append(out, s)
	}
	return out, nil
}

func decodePolicies(n *yaml.Node) ([]string, error) {
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		return nil, errors.New("vault: token_policies must be a list of Vault policy names, e.g. [mayfly-orders-ro]")
	}
	return decodeStrings("token_policies", n)
}

// validParams checks decoded or hand-built params.
func validParams(p Params) error {
	switch {
	case p.Path == "" && p.PKI == nil:
		return errors.New("one of path and pki is required")
	case p.Path != "" && p.PKI != nil:
		return errors.New("path and pki exclude each other; an entitlement brokers one secret")
	case len(p.TokenPolicies) == 0:
		return errors.New("token_policies is required: the Vault policies of the per-lease token, which must allow reading the secret")
	}
	if p.Path != "" {
		if err := validPath(p.Path); err != nil {
			return err
		}
	}
	for j, pol := range p.TokenPolicies {
		switch {
		case !safeName(pol):
			return fmt.Errorf("token_policies[%d] %q is not a Vault policy name (letters, digits, '-', '_', '.')", j, pol)
		case strings.EqualFold(pol, "root"):
			return fmt.Errorf("token_policies[%d]: the root policy cannot be brokered", j)
		case slices.Index(p.TokenPolicies, pol) != j:
			return fmt.Errorf("token_policies: %q appears twice", pol)
		}
	}
	if pk := p.PKI; pk != nil {
		switch {
		case pk.Role == "":
			return errors.New("pki.role is required")
		case !safeName(pk.Role):
			return fmt.Errorf("pki.role %q is not a Vault role name", pk.Role)
		case pk.CommonName == "":
			return errors.New("pki.common_name is required")
		}
		for _, seg := range strings.Split(pk.Mount, "/") {
			if !safeName(seg) {
				return fmt.Errorf("pki.mount %q is not a mount path like \"pki\" or \"pki-int\"", pk.Mount)
			}
		}
		names := append([]string{pk.CommonName}, pk.AltNames...)
		names = append(names, pk.URISANs...)
		for _, s := range names {
			if err := validTemplate(s); err != nil {
				return err
			}
		}
	}
	return nil
}

// validPath checks a secrets path: relative, no empty, "." or ".."
// segments, no query, white space or control characters, and not a
// system path.
func validPath(p string) error {
	if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("path %q must be relative and not end with '/', like database/creds/orders-ro", p)
	}
	segs := strings.Split(p, "/")
	if len(segs) < 2 {
		return fmt.Errorf("path %q must be MOUNT/..., like database/creds/orders-ro", p)
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return fmt.Errorf("path %q has an empty, '.' or '..' segment", p)
		}
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.@+=:~", r)) {
				return fmt.Errorf("path %q contains %q; use letters, digits and -_.@+=:~", p, r)
			}
		}
	}
	if slices.Contains(reservedMounts, strings.ToLower(segs[0])) {
		return fmt.Errorf("path %q is not a secrets engine path (%s/ is Vault's own)", p, segs[0])
	}
	return nil
}

// validTemplate accepts only the known {{placeholders}}.
func validTemplate(s string) error {
	rest := s
	for {
		open := strings.Index(rest, "{{")
		if open < 0 {
			if strings.Contains(rest, "}}") {
				return fmt.Errorf("%q has an unmatched }}", s)
			}
			break
		}
		end := strings.Index(rest[open:], "}}")
		if end < 0 {
			return fmt.Errorf("%q has an unmatched {{", s)
		}
		ph := rest[open : open+end+2]
		if !slices.Contains(placeholders, ph) {
			return fmt.Errorf("%q: unknown placeholder %s (want %s)", s, ph, strings.Join(placeholders, ", "))
		}
		rest = rest[open+end+2:]
	}
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return fmt.Errorf("%q contains a control character", s)
	}
	return nil
}

// expand fills the placeholders of s from the lease.
func expand(s string, l *lease.Lease) string {
	return strings.NewReplacer(
		"{{subject}}", l.Subject,
		"{{entitlement}}", l.Entitlement,
		"{{lease_id}}", l.ID,
	).Replace(s)
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
	return Params{}, fmt.Errorf("params are %T, want vault.Params from DecodeParams", params)
}

// what names the secret in messages: its path, or the PKI issue path.
func (p Params) what() string {
	if p.PKI != nil {
		return p.PKI.Mount + "/issue/" + p.PKI.Role
	}
	return p.Path
}
