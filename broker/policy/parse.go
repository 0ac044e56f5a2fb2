package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"
)

// The loader walks the yaml.Node tree by hand instead of decoding into
// structs: that is what lets every problem carry the line of the key or
// value at fault, lets unknown and duplicate keys be caught everywhere, and
// keeps each section's keys in one table below, where later keys
// (requestable_by, approval, break_glass, when, ...) slot in.

// topKeys are the keys of the file itself, in the order they are checked.
var topKeys = []string{"version", "trust_domains", "identity_providers", "groups", "identities", "admins", "webhooks", "entitlements"}

// entField is one key of an entitlement.
type entField struct {
	key      string
	required bool
	set      func(ps *parser, ec *entCtx, e entry)
}

// entFields are the keys of an entitlement, besides the section named
// after its issuer.
var entFields = []entField{
	{"description", true, func(ps *parser, ec *entCtx, e entry) {
		ec.ent.Description, _ = ps.str(ec.path+".description", e.val)
	}},
	{"owner", true, (*parser).entOwner},
	{"issuer", true, nil}, // read first: it decides which params key is allowed
	{"ttl", true, func(ps *parser, ec *entCtx, e entry) {
		ec.ent.TTL, ec.ttlOK = ps.duration(ec.path+".ttl", e.val)
	}},
	{"max_ttl", true, func(ps *parser, ec *entCtx, e entry) {
		ec.ent.MaxTTL, ec.maxOK = ps.duration(ec.path+".max_ttl", e.val)
	}},
	{"standing", false, (*parser).entStanding},
	{"requestable_by", false, (*parser).entRequestable},
	{"approval", false, (*parser).entApproval},
	{"require", false, (*parser).entRequire},
	{"when", false, (*parser).entWhen},
	{"conflicts_with", false, (*parser).entConflicts},
	{"break_glass", false, (*parser).entBreakGlass},
	{"notify", false, func(ps *parser, ec *entCtx, e entry) {
		ec.ent.Notify = ps.webhookRefs(ec.path+".notify", e.val)
	}},
}

// grantKeys are the keys of a standing grant.
var grantKeys = []string{"id", "subject", "purpose", "until", "review_every"}

// grantRequired are the grant keys that must be present.
var grantRequired = []string{"subject", "purpose", "until"}

type entry struct{ key, val *yaml.Node }

type parser struct {
	file string
	opts Options
	errs ErrorList
	p    *Policy

	trustDomains map[string]bool
	groupLine    map[string]int // defined group -> line of its key
	groupEdges   map[string][]string
	groupLeaves  map[string][]*subject
	grantIDs     map[string]int // grant id -> line of first use
	idps         map[string]bool
	idpBroken    bool          // an identity provider entry failed to load
	conflicts    []conflictRef // conflicts_with entries, resolved once every entitlement is read
}

// entCtx is the state of one entitlement while it is read.
type entCtx struct {
	path  string
	line  int
	ent   *Entitlement
	ttlOK bool
	maxOK bool

	approvalLine int // line of the approval key, if any
	requireLine  int // line of the require key, if any
}

func parse(file string, data []byte, opts Options) (*Policy, error) {
	ps := &parser{
		file: file,
		opts: opts,
		p: &Policy{
			Groups:       map[string][]string{},
			Entitlements: map[string]*Entitlement{},
			Webhooks:     map[string]*Webhook{},
			Digest:       digest(data),
			groupSets:    map[string]*groupSet{},
		},
		trustDomains: map[string]bool{},
		groupLine:    map[string]int{},
		groupEdges:   map[string][]string{},
		groupLeaves:  map[string][]*subject{},
		grantIDs:     map[string]int{},
		idps:         map[string]bool{},
	}
	if root := ps.document(data); root != nil {
		ps.noAliases(root)
		if len(ps.errs) == 0 {
			ps.top(root)
		}
	}
	if len(ps.errs) > 0 {
		sort.SliceStable(ps.errs, func(i, j int) bool { return ps.errs[i].Line < ps.errs[j].Line })
		if len(ps.errs) > maxErrors {
			n := len(ps.errs) - maxErrors
			ps.errs = append(ps.errs[:maxErrors:maxErrors], &Error{File: file, Msg: fmt.Sprintf("%d more problems not shown", n)})
		}
		return nil, ps.errs
	}
	for name := range ps.p.Entitlements {
		ps.p.names = append(ps.p.names, name)
	}
	sort.Strings(ps.p.names)
	return ps.p, nil
}

func (ps *parser) errf(line int, format string, args ...any) {
	ps.errs = append(ps.errs, &Error{File: ps.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// at prefixes msg with the dotted path of the key, if any.
func at(path, msg string) string {
	if path == "" {
		return msg
	}
	return path + ": " + msg
}

var yamlLineRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

// yamlParserErr matches the messages of yaml.v3's parser (as opposed to
// its scanner). yaml.v3 v3.0.1 reports their line counting from 0, and
// leaves the line out when it is the first one.
var yamlParserErr = regexp.MustCompile(`^(did not find expected |found undefined tag handle|found duplicate %|found incompatible YAML document)`)

// yamlErr turns a yaml.v3 syntax error into an Error with its 1-based line.
func (ps *parser) yamlErr(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if yamlParserErr.MatchString(msg) {
		line++
	}
	ps.errf(line, "invalid YAML: %s", msg)
}

// document decodes data as exactly one YAML document whose root is a mapping.
func (ps *parser) document(data []byte) (root *yaml.Node) {
	defer func() {
		// yaml.v3 has panicked on hostile input before (CVE-2022-28948);
		// a policy reload must fail, not take the broker down.
		if r := recover(); r != nil {
			ps.errf(0, "invalid YAML: %v", r)
			root = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			ps.errf(0, "empty policy file")
		} else {
			ps.yamlErr(err)
		}
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		line := extra.Line
		if len(extra.Content) > 0 {
			line = extra.Content[0].Line
		}
		ps.errf(line, "a second YAML document; a policy file holds exactly one")
		return nil
	case !errors.Is(err, io.EOF):
		ps.yamlErr(err)
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		ps.errf(0, "empty policy file")
		return nil
	}
	root = doc.Content[0]
	if root.Kind != yaml.MappingNode {
		ps.errf(root.Line, "the file must be a mapping of %s, not %s", strings.Join(topKeys, ", "), kindName(root))
		return nil
	}
	return root
}

// noAliases rejects YAML aliases (and so merge keys) anywhere in the file:
// a governance file is read by people, who should see each grant written
// out, and refusing aliases also rules out alias-expansion bombs in
// sections handed to issuer decoders.
func (ps *parser) noAliases(n *yaml.Node) {
	if n.Kind == yaml.AliasNode {
		ps.errf(n.Line, "YAML aliases (*%s) are not allowed in a policy file; write the value out", n.Value)
		return
	}
	for _, c := range n.Content {
		ps.noAliases(c)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "empty"
	case n.Kind == yaml.ScalarNode:
		return fmt.Sprintf("the scalar %q", n.Value)
	default:
		return "an alias"
	}
}

// mapping returns the entries of a mapping node in file order, reporting
// duplicate and non-scalar keys (and dropping them). An empty (null) value
// is an empty mapping.
func (ps *parser) mapping(path string, n *yaml.Node) ([]entry, bool) {
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.MappingNode {
		ps.errf(n.Line, "%s", at(path, "must be a mapping, not "+kindName(n)))
		return nil, false
	}
	seen := map[string]int{}
	var out []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			ps.errf(k.Line, "%s", at(path, "keys must be plain strings"))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			ps.errf(k.Line, "%s", at(path, fmt.Sprintf("duplicate key %q (first at line %d)", k.Value, first)))
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, entry{k, v})
	}
	return out, true
}

// known keeps the entries whose key is allowed (or accepted by extra) and
// reports the others, naming the allowed keys.
func (ps *parser) known(path string, entries []entry, allowed []string, extra func(string) bool) []entry {
	out := entries[:0:0]
	for _, e := range entries {
		if slices.Contains(allowed, e.key.Value) {
			out = append(out, e)
			continue
		}
		if extra != nil && extra(e.key.Value) {
			continue
		}
		ps.errf(e.key.Line, "%s", at(path, fmt.Sprintf("unknown key %q (allowed: %s)", e.key.Value, strings.Join(allowed, ", "))))
	}
	return out
}

// missing reports required keys that are absent, all in one error.
func (ps *parser) missing(line int, path string, keys []string) {
	switch len(keys) {
	case 0:
	case 1:
		ps.errf(line, "%s", at(path, fmt.Sprintf("missing required key %q", keys[0])))
	default:
		ps.errf(line, "%s", at(path, "missing required keys: "+strings.Join(keys, ", ")))
	}
}

func find(entries []entry, key string) (entry, bool) {
	for _, e := range entries {
		if e.key.Value == key {
			return e, true
		}
	}
	return entry{}, false
}

// sequence returns the items of a list; an empty (null) value is empty.
func (ps *parser) sequence(path string, n *yaml.Node) ([]*yaml.Node, bool) {
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		ps.errf(n.Line, "%s", at(path, "must be a list, not "+kindName(n)))
		return nil, false
	}
	return n.Content, true
}

// str reads a non-empty string scalar.
func (ps *parser) str(path string, n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		ps.errf(n.Line, "%s", at(path, "must be a string, not "+kindName(n)))
		return "", false
	}
	if strings.TrimSpace(n.Value) == "" {
		ps.errf(n.Line, "%s", at(path, "must not be empty"))
		return "", false
	}
	return n.Value, true
}

// duration reads a positive policy duration (see ParseDuration).
func (ps *parser) duration(path string, n *yaml.Node) (time.Duration, bool) {
	s, ok := ps.str(path, n)
	if !ok {
		return 0, false
	}
	d, err := ParseDuration(s)
	if err != nil {
		ps.errf(n.Line, "%s", at(path, fmt.Sprintf("invalid duration %q (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)", s)))
		return 0, false
	}
	if d <= 0 {
		ps.errf(n.Line, "%s", at(path, fmt.Sprintf("must be greater than zero, not %q", s)))
		return 0, false
	}
	return d, true
}

// until reads a grant end: a date holds through that whole day UTC; an
// RFC 3339 time is exact.
func (ps *parser) until(path string, n *yaml.Node) (time.Time, bool) {
	s, ok := ps.str(path, n)
	if !ok {
		return time.Time{}, false
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.AddDate(0, 0, 1).UTC(), true
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), true
	}
	ps.errf(n.Line, "%s", at(path, fmt.Sprintf("invalid date %q (want a date such as 2027-06-30, which holds through that day UTC, or an RFC 3339 time such as 2027-06-30T17:00:00Z)", s)))
	return time.Time{}, false
}

// top reads the file. Sections are read in a fixed order whatever their
// order in the file, since entitlements refer to groups and trust domains.
func (ps *parser) top(root *yaml.Node) {
	entries, _ := ps.mapping("", root)
	entries = ps.known("", entries, topKeys, nil)
	if e, ok := find(entries, "version"); ok {
		ps.version(e)
	} else {
		ps.missing(root.Line, "", []string{"version"})
	}
	if e, ok := find(entries, "trust_domains"); ok {
		ps.trustDomainList(e)
	}
	if e, ok := find(entries, "identity_providers"); ok {
		ps.identityProviders(e)
	}
	if e, ok := find(entries, "groups"); ok {
		ps.groups(e)
	}
	if e, ok := find(entries, "identities"); ok {
		ps.identitySets(e)
	}
	if e, ok := find(entries, "admins"); ok {
		ps.admins(e)
	}
	if e, ok := find(entries, "webhooks"); ok {
		ps.webhooks(e)
	}
	if e, ok := find(entries, "entitlements"); ok {
		ps.entitlements(e)
	}
	ps.resolveConflicts()
}

// admins reads the principals who may administer the broker (explain for
// others; later: kill switches, irrevocable leases).
func (ps *parser) admins(e entry) {
	items, _ := ps.sequence("admins", e.val)
	for i, n := range items {
		if s := ps.subject(fmt.Sprintf("admins[%d]", i), n, false); s != nil {
			ps.p.Admins = append(ps.p.Admins, s.raw)
			ps.p.admins = append(ps.p.admins, s)
		}
	}
}

func (ps *parser) version(e entry) {
	n := e.val
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Value != "1" {
		v := n.Value
		if n.Kind != yaml.ScalarNode {
			v = kindName(n)
		}
		ps.errf(n.Line, "version: unsupported version %q (this broker reads version 1)", v)
		return
	}
	ps.p.Version = 1
}

func (ps *parser) trustDomainList(e entry) {
	items, _ := ps.sequence("trust_domains", e.val)
	seen := map[string]int{}
	for i, n := range items {
		path := fmt.Sprintf("trust_domains[%d]", i)
		s, ok := ps.str(path, n)
		if !ok {
			continue
		}
		if strings.Contains(s, ":/") {
			ps.errf(n.Line, "%s: write the trust domain name (%s), not a SPIFFE ID", path, "example.org")
			continue
		}
		td, err := spiffeid.TrustDomainFromString(s)
		if err != nil {
			ps.errf(n.Line, "%s: invalid trust domain %q: %v", path, s, err)
			continue
		}
		if first, dup := seen[td.Name()]; dup {
			ps.errf(n.Line, "%s: duplicate trust domain %q (first at line %d)", path, s, first)
			continue
		}
		seen[td.Name()] = n.Line
		ps.trustDomains[td.Name()] = true
		ps.p.TrustDomains = append(ps.p.TrustDomains, td.Name())
	}
}

// subject parses and checks one subject: SPIFFE trust domains must be
// listed, groups defined.
func (ps *parser) subject(path string, n *yaml.Node, allowOIDC bool) *subject {
	raw, ok := ps.str(path, n)
	if !ok {
		return nil
	}
	s, err := parseSubject(raw, allowOIDC)
	if err != nil {
		ps.errf(n.Line, "%s: %v", path, err)
		return nil
	}
	switch s.kind {
	case subjectSPIFFE:
		if !ps.trustDomains[s.td] {
			ps.errf(n.Line, "%s: subject %q: trust domain %q is not listed in trust_domains", path, raw, s.td)
			return nil
		}
	case subjectGroup:
		if _, ok := ps.groupLine[s.name]; !ok {
			ps.errf(n.Line, "%s: subject %q: undefined group %q", path, raw, s.name)
			return nil
		}
	case subjectOIDCGroup:
		provider, _, _ := strings.Cut(strings.TrimPrefix(raw, prefixOIDCGroup), "/")
		if len(ps.idps) > 0 && !ps.idpBroken && !ps.idps[provider] {
			ps.errf(n.Line, "%s: subject %q: identity provider %q is not listed in identity_providers", path, raw, provider)
			return nil
		}
	}
	return s
}

// groups reads the groups section, then flattens every group for
// matching, reporting cycles.
func (ps *parser) groups(e entry) {
	entries, _ := ps.mapping("groups", e.val)
	// Define every name first, so a group may include one written below it.
	for _, ge := range entries {
		name := ge.key.Value
		if !validName(name) {
			ps.errf(ge.key.Line, "groups: invalid group name %q (want %s)", name, nameRule)
			continue
		}
		ps.groupLine[name] = ge.key.Line
	}
	for _, ge := range entries {
		name := ge.key.Value
		if _, ok := ps.groupLine[name]; !ok {
			continue
		}
		path := "groups." + name
		items, _ := ps.sequence(path, ge.val)
		members := []string{}
		seen := map[string]int{}
		for i, n := range items {
			mpath := fmt.Sprintf("%s[%d]", path, i)
			s := ps.subject(mpath, n, true)
			if s == nil {
				continue
			}
			if first, dup := seen[s.raw]; dup {
				ps.errf(n.Line, "%s: duplicate member %q (first at line %d)", mpath, s.raw, first)
				continue
			}
			seen[s.raw] = n.Line
			members = append(members, s.raw)
			if s.kind == subjectGroup {
				ps.groupEdges[name] = append(ps.groupEdges[name], s.name)
			} else {
				ps.groupLeaves[name] = append(ps.groupLeaves[name], s)
			}
		}
		ps.p.Groups[name] = members
	}
	ps.flattenGroups()
}

// flattenGroups resolves nested groups into one groupSet each, reporting
// each cycle once at the line of the group where it was entered.
func (ps *parser) flattenGroups() {
	names := make([]string, 0, len(ps.groupLine))
	for name := range ps.groupLine {
		names = append(names, name)
	}
	sort.Strings(names)
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(name string) *groupSet
	visit = func(name string) *groupSet {
		switch state[name] {
		case done:
			return ps.p.groupSets[name]
		case visiting:
			i := slices.Index(stack, name)
			cycle := append(slices.Clone(stack[i:]), name)
			ps.errf(ps.groupLine[name], "groups.%s: groups include each other in a cycle: %s", name, strings.Join(cycle, " -> "))
			return nil
		}
		state[name] = visiting
		stack = append(stack, name)
		g := &groupSet{users: map[string]bool{}, oidc: map[string]bool{}}
		for _, s := range ps.groupLeaves[name] {
			switch s.kind {
			case subjectUser:
				g.users[s.name] = true
			case subjectOIDCGroup:
				g.oidc[s.name] = true
			case subjectSPIFFE:
				g.spiffe = append(g.spiffe, s)
			}
		}
		for _, child := range ps.groupEdges[name] {
			cg := visit(child)
			if cg == nil {
				continue
			}
			for u := range cg.users {
				g.users[u] = true
			}
			for o := range cg.oidc {
				g.oidc[o] = true
			}
			g.spiffe = append(g.spiffe, cg.spiffe...)
		}
		// Groups reached along several paths (a diamond) add their
		// patterns once, or nested diamonds would grow exponentially.
		seen := make(map[string]bool, len(g.spiffe))
		g.spiffe = slices.DeleteFunc(g.spiffe, func(s *subject) bool {
			dup := seen[s.raw]
			seen[s.raw] = true
			return dup
		})
		stack = stack[:len(stack)-1]
		state[name] = done
		ps.p.groupSets[name] = g
		return g
	}
	for _, name := range names {
		if visit(name) != nil {
			ps.p.groupNames = append(ps.p.groupNames, name)
		}
	}
}

func (ps *parser) entitlements(e entry) {
	entries, _ := ps.mapping("entitlements", e.val)
	for _, ee := range entries {
		ps.entitlement(ee)
	}
}

func (ps *parser) entitlement(ee entry) {
	name := ee.key.Value
	valid := validName(name)
	if !valid {
		ps.errf(ee.key.Line, "entitlements: invalid entitlement name %q (want %s)", name, nameRule)
	}
	path := "entitlements." + name
	if !valid {
		path = "entitlements." + strconv.Quote(name) // keep odd bytes out of messages
	}
	ec := &entCtx{
		path: path,
		line: ee.key.Line,
		ent:  &Entitlement{Name: name},
	}
	entries, ok := ps.mapping(ec.path, ee.val)
	if !ok {
		return
	}

	// The issuer decides which params section is allowed.
	issuerName, issuerKnown := "", false
	if ie, ok := find(entries, "issuer"); ok {
		if s, ok := ps.str(ec.path+".issuer", ie.val); ok {
			issuerName = s
			if _, issuerKnown = ps.opts.Issuers[s]; !issuerKnown {
				ps.errf(ie.val.Line, "%s.issuer: unknown issuer %q (known: %s)", ec.path, s, ps.knownIssuers())
			}
		}
	}
	allowed := make([]string, 0, len(entFields)+1)
	for _, f := range entFields {
		allowed = append(allowed, f.key)
	}
	var extra func(string) bool
	if issuerKnown {
		allowed = append(allowed, issuerName)
	} else {
		// Without a usable issuer, stay quiet about sections named after
		// issuers: the issuer error already says what to fix.
		extra = func(k string) bool {
			_, isIssuer := ps.opts.Issuers[k]
			return isIssuer || (issuerName != "" && k == issuerName)
		}
	}
	entries = ps.known(ec.path, entries, allowed, extra)

	var missing []string
	for _, f := range entFields {
		if _, ok := find(entries, f.key); !ok && f.required {
			missing = append(missing, f.key)
		}
	}
	ps.missing(ec.line, ec.path, missing)
	for _, f := range entFields {
		if e, ok := find(entries, f.key); ok && f.set != nil {
			f.set(ps, ec, e)
		}
	}
	ps.entChecks(ec, entries)
	if ec.ttlOK && ec.maxOK && ec.ent.MaxTTL < ec.ent.TTL {
		e, _ := find(entries, "max_ttl")
		ps.errf(e.val.Line, "%s.max_ttl: %s is less than ttl %s", ec.path, e.val.Value, fmtDuration(ec.ent.TTL))
	}
	if issuerKnown {
		ec.ent.Issuer = issuerName
		var node *yaml.Node
		line := ec.line
		if pe, ok := find(entries, issuerName); ok {
			node, line = pe.val, pe.key.Line
		}
		params, err := ps.opts.Issuers[issuerName](node)
		if err != nil {
			ps.errf(line, "%s.%s: %v", ec.path, issuerName, err)
		}
		ec.ent.Params = params
		ps.ttlBounds(ec, entries, params)
	}
	if valid {
		ps.p.Entitlements[name] = ec.ent
	}
}

// TTLBounder is implemented by issuer params whose backend limits a
// credential's lifetime (STS sessions last 15 minutes to 12 hours). The
// loader refuses a ttl or max_ttl outside the bounds, so the mistake shows
// at load time, with its line, instead of at the first issuance.
type TTLBounder interface {
	TTLBounds() (min, max time.Duration)
}

func (ps *parser) ttlBounds(ec *entCtx, entries []entry, params any) {
	b, ok := params.(TTLBounder)
	if !ok || !ec.ttlOK || !ec.maxOK {
		return
	}
	lo, hi := b.TTLBounds()
	if lo > 0 && ec.ent.TTL < lo {
		e, _ := find(entries, "ttl")
		ps.errf(e.val.Line, "%s.ttl: %s is shorter than the %s issuer allows (at least %s)", ec.path, fmtDuration(ec.ent.TTL), ec.ent.Issuer, fmtDuration(lo))
	}
	if hi > 0 && ec.ent.MaxTTL > hi {
		e, _ := find(entries, "max_ttl")
		ps.errf(e.val.Line, "%s.max_ttl: %s is longer than the %s issuer allows (at most %s)", ec.path, fmtDuration(ec.ent.MaxTTL), ec.ent.Issuer, fmtDuration(hi))
	}
}

func (ps *parser) knownIssuers() string {
	if len(ps.opts.Issuers) == 0 {
		return "none configured"
	}
	names := make([]string, 0, len(ps.opts.Issuers))
	for name := range ps.opts.Issuers {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (ps *parser) entOwner(ec *entCtx, e entry) {
	path := ec.path + ".owner"
	s := ps.subject(path, e.val, false)
	if s == nil {
		return
	}
	if s.kind != subjectUser && s.kind != subjectGroup {
		ps.errf(e.val.Line, "%s: owner %q must be a person or a group (user:NAME or group:NAME)", path, s.raw)
		return
	}
	ec.ent.Owner = s.raw
	ec.ent.owner = s
}

func (ps *parser) entStanding(ec *entCtx, e entry) {
	items, _ := ps.sequence(ec.path+".standing", e.val)
	for i, n := range items {
		if g := ps.grant(fmt.Sprintf("%s.standing[%d]", ec.path, i), ec, n); g != nil {
			ec.ent.Standing = append(ec.ent.Standing, g)
		}
	}
}

func (ps *parser) grant(path string, ec *entCtx, n *yaml.Node) *StandingGrant {
	if n.Kind != yaml.MappingNode {
		ps.errf(n.Line, "%s: must be a mapping with %s, not %s", path, strings.Join(grantRequired, ", "), kindName(n))
		return nil
	}
	entries, _ := ps.mapping(path, n)
	entries = ps.known(path, entries, grantKeys, nil)
	var missing []string
	for _, k := range grantRequired {
		if _, ok := find(entries, k); !ok {
			missing = append(missing, k)
		}
	}
	ps.missing(n.Line, path, missing)
	g := &StandingGrant{}
	ok := true
	explicitID := false
	idLine := n.Line
	for _, e := range entries {
		var good bool
		switch e.key.Value {
		case "id":
			g.ID, good = ps.str(path+".id", e.val)
			if good && !validName(g.ID) {
				ps.errf(e.val.Line, "%s.id: invalid grant id %q (want %s)", path, g.ID, nameRule)
				good = false
			}
			explicitID, idLine = true, e.val.Line
		case "subject":
			g.subject = ps.subject(path+".subject", e.val, false)
			good = g.subject != nil
			if good {
				g.Subject = g.subject.raw
			}
		case "purpose":
			g.Purpose, good = ps.str(path+".purpose", e.val)
		case "until":
			g.Until, good = ps.until(path+".until", e.val)
		case "review_every":
			g.ReviewEvery, good = ps.duration(path+".review_every", e.val)
		}
		ok = ok && good
	}
	if !ok || g.subject == nil || g.Purpose == "" || g.Until.IsZero() {
		return nil
	}
	if !explicitID {
		sum := sha256.Sum256([]byte(g.Subject))
		g.ID = ec.ent.Name + "/standing/" + hex.EncodeToString(sum[:])[:12]
	}
	if first, dup := ps.grantIDs[g.ID]; dup {
		if explicitID {
			ps.errf(idLine, "%s.id: duplicate standing grant id %q (first at line %d)", path, g.ID, first)
		} else {
			ps.errf(n.Line, "%s: a second standing grant for subject %q (first at line %d); merge them or give each an id", path, g.Subject, first)
		}
		return nil
	}
	ps.grantIDs[g.ID] = idLine
	return g
}
