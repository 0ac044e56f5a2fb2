package policy

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mayflyhq/mayfly/broker/authn"
)

// nameRE is the one rule for names the policy defines (entitlements,
// groups, grant ids, identity providers): lower-case ASCII only, so two
// names that differ by case, whitespace or a look-alike Unicode letter can
// never both exist or match each other.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

const nameRule = "lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 characters"

// validName reports whether s is a valid entitlement, group or grant name.
func validName(s string) bool { return nameRE.MatchString(s) }

// Subject prefixes. Subjects are compared byte for byte after parsing.
const (
	prefixSPIFFE    = "spiffe://"
	prefixUser      = "user:"
	prefixGroup     = "group:"
	prefixOIDCGroup = "oidc-group:"
)

type subjectKind int

const (
	subjectSPIFFE subjectKind = iota + 1
	subjectUser
	subjectGroup
	subjectOIDCGroup
)

// subject is a parsed principal pattern from a grant or a group.
type subject struct {
	kind subjectKind
	raw  string

	// SPIFFE: the trust domain name, the literal path segments, then
	// stars segments that each match exactly one segment, then (deep) one
	// or more further segments.
	td    string
	segs  []string
	stars int
	deep  bool

	// user: the whole principal id ("user:alice"); group: the group name;
	// oidc-group: the whole asserted string ("oidc-group:corp/sre").
	name string
}

// subjectForms lists the accepted forms for error messages.
func subjectForms(allowOIDC bool) string {
	if allowOIDC {
		return "spiffe://TRUST_DOMAIN/PATH, user:NAME, group:NAME or oidc-group:PROVIDER/NAME"
	}
	return "spiffe://TRUST_DOMAIN/PATH, user:NAME or group:NAME"
}

// parseSubject parses raw. It checks syntax only; the caller checks that a
// SPIFFE trust domain is listed and a group is defined.
func parseSubject(raw string, allowOIDC bool) (*subject, error) {
	switch {
	case strings.HasPrefix(raw, prefixSPIFFE):
		return parseSPIFFESubject(raw)
	case strings.HasPrefix(raw, prefixUser):
		name := raw[len(prefixUser):]
		if err := checkUserName(name); err != nil {
			return nil, fmt.Errorf("invalid subject %q: %w", raw, err)
		}
		return &subject{kind: subjectUser, raw: raw, name: raw}, nil
	case strings.HasPrefix(raw, prefixGroup):
		name := raw[len(prefixGroup):]
		if !validName(name) {
			return nil, fmt.Errorf("invalid subject %q: group names are %s", raw, nameRule)
		}
		return &subject{kind: subjectGroup, raw: raw, name: name}, nil
	case allowOIDC && strings.HasPrefix(raw, prefixOIDCGroup):
		rest := raw[len(prefixOIDCGroup):]
		provider, group, ok := strings.Cut(rest, "/")
		if !ok || !validName(provider) {
			return nil, fmt.Errorf("invalid subject %q: want oidc-group:PROVIDER/NAME where PROVIDER is %s", raw, nameRule)
		}
		if err := checkIdPGroup(group); err != nil {
			return nil, fmt.Errorf("invalid subject %q: %w", raw, err)
		}
		return &subject{kind: subjectOIDCGroup, raw: raw, name: raw}, nil
	case !allowOIDC && strings.HasPrefix(raw, prefixOIDCGroup):
		return nil, fmt.Errorf("invalid subject %q: oidc-group subjects are allowed only inside groups; define a group and use group:NAME", raw)
	default:
		return nil, fmt.Errorf("invalid subject %q (want %s)", raw, subjectForms(allowOIDC))
	}
}

// checkUserName accepts printable ASCII without spaces: what IdPs put in a
// user or email claim. Anything else cannot match exactly what an IdP
// asserts and is most likely a typo or a look-alike.
func checkUserName(name string) error {
	if name == "" {
		return fmt.Errorf("user name is empty")
	}
	if len(name) > 254 {
		return fmt.Errorf("user name is longer than 254 bytes")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("user names are printable ASCII without spaces")
		}
	}
	return nil
}

// checkIdPGroup accepts printable ASCII, with inner spaces (IdP group names
// such as "Domain Admins" have them).
func checkIdPGroup(name string) error {
	if name == "" {
		return fmt.Errorf("group name is empty")
	}
	if len(name) > 254 {
		return fmt.Errorf("group name is longer than 254 bytes")
	}
	if name[0] == ' ' || name[len(name)-1] == ' ' {
		return fmt.Errorf("group name starts or ends with a space")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' {
			return fmt.Errorf("group names are printable ASCII")
		}
	}
	return nil
}

func parseSPIFFESubject(raw string) (*subject, error) {
	rest := raw[len(prefixSPIFFE):]
	tdName, path, ok := strings.Cut(rest, "/")
	if !ok {
		return nil, fmt.Errorf("invalid subject %q: a SPIFFE subject needs a path (the trust domain itself is not a workload)", raw)
	}
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return nil, fmt.Errorf("invalid subject %q: %v", raw, err)
	}
	segs := strings.Split(path, "/")
	s := &subject{kind: subjectSPIFFE, raw: raw, td: td.Name()}
	if segs[len(segs)-1] == "**" {
		s.deep = true
		segs = segs[:len(segs)-1]
	}
	for len(segs) > 0 && segs[len(segs)-1] == "*" {
		s.stars++
		segs = segs[:len(segs)-1]
	}
	for _, seg := range segs {
		if seg == "**" {
			return nil, fmt.Errorf("invalid subject %q: \"**\" may only be the last path segment", raw)
		}
		if strings.Contains(seg, "*") {
			return nil, fmt.Errorf("invalid subject %q: \"*\" may only stand for whole path segments at the end of the path", raw)
		}
	}
	id, err := spiffeid.FromSegments(td, segs...)
	if err != nil {
		return nil, fmt.Errorf("invalid subject %q: %v", raw, err)
	}
	// Keep the literal segments exactly as spiffeid accepted them.
	if p := id.Path(); p != "" {
		s.segs = strings.Split(p[1:], "/")
	}
	return s, nil
}

// caller is a Principal prepared for matching once per decision.
type caller struct {
	pr       authn.Principal
	workload bool
	human    bool
	td       string   // workload trust domain, from its parsed id
	segs     []string // workload path segments
	groups   map[string]bool
}

func newCaller(pr authn.Principal) *caller {
	c := &caller{pr: pr}
	switch pr.Kind {
	case authn.KindWorkload:
		id, err := spiffeid.FromString(pr.ID)
		if err != nil || id.Path() == "" {
			return c // matches nothing
		}
		c.workload = true
		c.td = id.TrustDomain().Name()
		c.segs = strings.Split(id.Path()[1:], "/")
	case authn.KindHuman:
		if !strings.HasPrefix(pr.ID, prefixUser) || len(pr.ID) == len(prefixUser) {
			return c // matches nothing
		}
		c.human = true
		c.groups = make(map[string]bool, len(pr.Groups))
		for _, g := range pr.Groups {
			c.groups[g] = true
		}
	}
	return c
}

// matchSPIFFE reports whether the workload's parsed id fits the pattern.
func (s *subject) matchSPIFFE(c *caller) bool {
	if !c.workload || c.td != s.td {
		return false
	}
	n := len(s.segs) + s.stars
	if s.deep {
		if len(c.segs) <= n {
			return false
		}
	} else if len(c.segs) != n {
		return false
	}
	for i, seg := range s.segs {
		if c.segs[i] != seg {
			return false
		}
	}
	return true
}

// groupSet is a group flattened at load time: every user, IdP group and
// SPIFFE pattern reachable through nested group: members.
type groupSet struct {
	users  map[string]bool
	oidc   map[string]bool
	spiffe []*subject
}

func (g *groupSet) match(c *caller) bool {
	switch {
	case c.human:
		if g.users[c.pr.ID] {
			return true
		}
		for name := range c.groups {
			if g.oidc[name] {
				return true
			}
		}
	case c.workload:
		for _, s := range g.spiffe {
			if s.matchSPIFFE(c) {
				return true
			}
		}
	}
	return false
}

// match reports whether the caller is, or belongs to, the subject.
func (p *Policy) match(s *subject, c *caller) bool {
	switch s.kind {
	case subjectSPIFFE:
		return s.matchSPIFFE(c)
	case subjectUser:
		return c.human && c.pr.ID == s.name
	case subjectGroup:
		g := p.groupSets[s.name]
		return g != nil && g.match(c)
	case subjectOIDCGroup:
		return c.human && c.groups[s.name]
	}
	return false
}

// IsAdmin reports whether the caller is, or belongs to, one of the policy's
// admins.
func (p *Policy) IsAdmin(pr authn.Principal) bool {
	c := newCaller(pr)
	for _, s := range p.admins {
		if p.match(s, c) {
			return true
		}
	}
	return false
}
