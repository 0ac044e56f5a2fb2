package policy

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// This file reads the governance sections: identity providers, webhooks,
// identities, and the entitlement keys that say who may ask, who approves,
// what a request must carry, conditions, conflicts and break-glass.

// Defaults for the approval section.
const (
	// DefaultMaxDuration is the longest grant a request may ask for when
	// approval.max_duration is not set.
	DefaultMaxDuration = 8 * time.Hour
	// DefaultPendingTTL is how long a request waits for decisions when
	// approval.pending_ttl is not set.
	DefaultPendingTTL = 24 * time.Hour
	// maxApprovals bounds approval.approvals: a rule nobody can meet is a
	// typo, and matching approvals to approver entries stays small.
	maxApprovals = 10
)

var (
	idpKeys        = []string{"name", "issuer", "audience", "groups_claim", "username_claim"}
	idpRequired    = []string{"name", "issuer", "audience"}
	webhookKeys    = []string{"url", "secret_env", "format"}
	approvalKeys   = []string{"approvals", "approvers", "distinct_groups", "max_duration", "pending_ttl"}
	requireKeys    = []string{"reason", "ticket"}
	breakGlassKeys = []string{"allowed", "max_ttl", "review_within", "notify"}

	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// conflictRef is one conflicts_with entry, resolved once every entitlement
// has been read.
type conflictRef struct {
	ent  *Entitlement
	path string
	name string
	line int
}

// boolean reads true or false.
func (ps *parser) boolean(path string, n *yaml.Node) (bool, bool) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		v, err := strconv.ParseBool(n.Value)
		if err == nil {
			return v, true
		}
	}
	v := n.Value
	if n.Kind != yaml.ScalarNode {
		v = kindName(n)
	}
	ps.errf(n.Line, "%s: must be true or false, not %q", path, v)
	return false, false
}

// integer reads a whole number in [lo, hi].
func (ps *parser) integer(path string, n *yaml.Node, lo, hi int) (int, bool) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!int" {
		if v, err := strconv.Atoi(n.Value); err == nil && v >= lo && v <= hi {
			return v, true
		}
	}
	v := n.Value
	if n.Kind != yaml.ScalarNode {
		v = kindName(n)
	}
	ps.errf(n.Line, "%s: must be a whole number from %d to %d, not %q", path, lo, hi, v)
	return 0, false
}

// subjectList reads a list of subjects (users, groups, SPIFFE patterns),
// reporting duplicates.
func (ps *parser) subjectList(path string, n *yaml.Node) (raw []string, parsed []*subject) {
	items, _ := ps.sequence(path, n)
	seen := map[string]int{}
	for i, item := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s := ps.subject(ipath, item, false)
		if s == nil {
			continue
		}
		if first, dup := seen[s.raw]; dup {
			ps.errf(item.Line, "%s: duplicate subject %q (first at line %d)", ipath, s.raw, first)
			continue
		}
		seen[s.raw] = item.Line
		raw = append(raw, s.raw)
		parsed = append(parsed, s)
	}
	return raw, parsed
}

// section reads a mapping with a fixed set of keys and reports missing
// required ones.
func (ps *parser) section(path string, n *yaml.Node, keys, required []string) ([]entry, bool) {
	entries, ok := ps.mapping(path, n)
	if !ok {
		return nil, false
	}
	entries = ps.known(path, entries, keys, nil)
	var missing []string
	for _, k := range required {
		if _, ok := find(entries, k); !ok {
			missing = append(missing, k)
		}
	}
	ps.missing(n.Line, path, missing)
	return entries, true
}

func (ps *parser) identityProviders(e entry) {
	items, _ := ps.sequence("identity_providers", e.val)
	seen := map[string]int{}
	for i, n := range items {
		path := fmt.Sprintf("identity_providers[%d]", i)
		if n.Kind != yaml.MappingNode {
			ps.errf(n.Line, "%s: must be a mapping with %s, not %s", path, strings.Join(idpRequired, ", "), kindName(n))
			continue
		}
		entries, _ := ps.section(path, n, idpKeys, idpRequired)
		idp := IdentityProvider{GroupsClaim: "groups", UsernameClaim: "email"}
		ok := true
		for _, f := range entries {
			fpath := path + "." + f.key.Value
			var good bool
			switch f.key.Value {
			case "name":
				idp.Name, good = ps.str(fpath, f.val)
				if good && !validName(idp.Name) {
					ps.errf(f.val.Line, "%s: invalid identity provider name %q (want %s)", fpath, idp.Name, nameRule)
					good = false
				}
				if good {
					if first, dup := seen[idp.Name]; dup {
						ps.errf(f.val.Line, "%s: duplicate identity provider %q (first at line %d)", fpath, idp.Name, first)
						good = false
					} else {
						seen[idp.Name] = f.val.Line
					}
				}
			case "issuer":
				idp.Issuer, good = ps.str(fpath, f.val)
				if good {
					u, err := url.Parse(idp.Issuer)
					if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
						ps.errf(f.val.Line, "%s: issuer %q must be an https URL with no credentials, query or fragment", fpath, idp.Issuer)
						good = false
					}
				}
			case "audience":
				idp.Audience, good = ps.str(fpath, f.val)
			case "groups_claim":
				idp.GroupsClaim, good = ps.str(fpath, f.val)
			case "username_claim":
				idp.UsernameClaim, good = ps.str(fpath, f.val)
			}
			ok = ok && good
		}
		if ok && idp.Name != "" && idp.Issuer != "" && idp.Audience != "" {
			ps.idps[idp.Name] = true
			ps.p.IdentityProviders = append(ps.p.IdentityProviders, idp)
		} else {
			// The provider error says what to fix; do not add one for
			// every oidc-group subject that names it.
			ps.idpBroken = true
		}
	}
}

func (ps *parser) webhooks(e entry) {
	entries, _ := ps.mapping("webhooks", e.val)
	for _, we := range entries {
		name := we.key.Value
		if !validName(name) {
			ps.errf(we.key.Line, "webhooks: invalid webhook name %q (want %s)", name, nameRule)
			continue
		}
		path := "webhooks." + name
		fields, ok := ps.section(path, we.val, webhookKeys, []string{"url", "secret_env"})
		if !ok {
			continue
		}
		w := &Webhook{Name: name, Format: WebhookJSON}
		good := true
		for _, f := range fields {
			fpath := path + "." + f.key.Value
			var fine bool
			switch f.key.Value {
			case "url":
				w.URL, fine = ps.str(fpath, f.val)
				if fine {
					if msg := checkWebhookURL(w.URL); msg != "" {
						ps.errf(f.val.Line, "%s: %q %s", fpath, w.URL, msg)
						fine = false
					}
				}
			case "secret_env":
				w.SecretEnv, fine = ps.str(fpath, f.val)
				if fine && !envNameRE.MatchString(w.SecretEnv) {
					ps.errf(f.val.Line, "%s: %q is not an environment variable name (name the variable that holds the key, not the key)", fpath, w.SecretEnv)
					fine = false
				}
			case "format":
				w.Format, fine = ps.str(fpath, f.val)
				if fine && w.Format != WebhookJSON && w.Format != WebhookSlack {
					ps.errf(f.val.Line, "%s: unknown format %q (want json or slack)", fpath, w.Format)
					fine = false
				}
			}
			good = good && fine
		}
		// Define the name even when the entry is broken, so references to
		// it do not add a second error.
		if good && w.URL != "" && w.SecretEnv != "" {
			ps.p.Webhooks[name] = w
		} else {
			ps.p.Webhooks[name] = nil
		}
	}
}

// checkWebhookURL says what is wrong with a webhook URL, or "".
func checkWebhookURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "is not an absolute URL"
	}
	if u.User != nil {
		return "must not carry credentials (the signing key comes from secret_env)"
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		host := u.Hostname()
		if host == "localhost" {
			return ""
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return ""
		}
		return "must be https (http only to a loopback host such as 127.0.0.1)"
	default:
		return "must be https (http only to a loopback host such as 127.0.0.1)"
	}
}

// webhookRefs reads a list of "webhook:NAME" references to defined webhooks.
func (ps *parser) webhookRefs(path string, n *yaml.Node) []string {
	items, _ := ps.sequence(path, n)
	var out []string
	seen := map[string]int{}
	for i, item := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s, ok := ps.str(ipath, item)
		if !ok {
			continue
		}
		name, isHook := strings.CutPrefix(s, "webhook:")
		if !isHook {
			ps.errf(item.Line, "%s: %q: want webhook:NAME", ipath, s)
			continue
		}
		if _, defined := ps.p.Webhooks[name]; !defined {
			ps.errf(item.Line, "%s: undefined webhook %q", ipath, name)
			continue
		}
		if first, dup := seen[s]; dup {
			ps.errf(item.Line, "%s: duplicate target %q (first at line %d)", ipath, s, first)
			continue
		}
		seen[s] = item.Line
		out = append(out, s)
	}
	return out
}

// identitySets reads identities: lists of subjects that are one person
// or agent.
func (ps *parser) identitySets(e entry) {
	sets, _ := ps.sequence("identities", e.val)
	where := map[string]string{} // subject -> path of the set holding it
	for i, n := range sets {
		path := fmt.Sprintf("identities[%d]", i)
		items, ok := ps.sequence(path, n)
		if !ok {
			continue
		}
		if len(items) < 2 {
			ps.errf(n.Line, "%s: an identity set lists at least two subjects that are one person or agent", path)
			continue
		}
		var raw []string
		var parsed []*subject
		for j, item := range items {
			ipath := fmt.Sprintf("%s[%d]", path, j)
			s := ps.subject(ipath, item, false)
			if s == nil {
				continue
			}
			if s.kind == subjectGroup {
				ps.errf(item.Line, "%s: subject %q: an identity is one person or agent (user:NAME or spiffe://...), not a group", ipath, s.raw)
				continue
			}
			if other, dup := where[s.raw]; dup {
				ps.errf(item.Line, "%s: subject %q is already in %s; merge the two sets", ipath, s.raw, other)
				continue
			}
			where[s.raw] = path
			raw = append(raw, s.raw)
			parsed = append(parsed, s)
		}
		ps.p.Identities = append(ps.p.Identities, raw)
		ps.p.identities = append(ps.p.identities, parsed)
	}
}

func (ps *parser) entRequestable(ec *entCtx, e entry) {
	ec.ent.RequestableBy, ec.ent.requestable = ps.subjectList(ec.path+".requestable_by", e.val)
}

func (ps *parser) entApproval(ec *entCtx, e entry) {
	ec.approvalLine = e.key.Line
	path := ec.path + ".approval"
	entries, ok := ps.section(path, e.val, approvalKeys, []string{"approvals"})
	if !ok {
		return
	}
	a := &ApprovalPolicy{MaxDuration: DefaultMaxDuration, PendingTTL: DefaultPendingTTL}
	approvalsOK := false
	approverEntries := 0 // entries in the approvers list, valid or not
	var approvalsLine int
	for _, f := range entries {
		fpath := path + "." + f.key.Value
		switch f.key.Value {
		case "approvals":
			a.Approvals, approvalsOK = ps.integer(fpath, f.val, 0, maxApprovals)
			approvalsLine = f.val.Line
		case "approvers":
			a.Approvers, a.approvers = ps.subjectList(fpath, f.val)
			if f.val.Kind == yaml.SequenceNode {
				approverEntries = len(f.val.Content)
			}
		case "distinct_groups":
			a.DistinctGroups, _ = ps.boolean(fpath, f.val)
		case "max_duration":
			if d, ok := ps.duration(fpath, f.val); ok {
				a.MaxDuration = d
			}
		case "pending_ttl":
			if d, ok := ps.duration(fpath, f.val); ok {
				a.PendingTTL = d
			}
		}
	}
	if approvalsOK {
		switch {
		case a.Approvals > 0 && approverEntries == 0:
			ps.errf(approvalsLine, "%s.approvals: %d approvals need approvers", path, a.Approvals)
		case a.Approvals == 0 && approverEntries > 0:
			ps.errf(approvalsLine, "%s.approvals: 0 approves every request at once, so approvers are never asked; remove them or ask for approvals", path)
		case a.DistinctGroups && a.Approvals > approverEntries:
			ps.errf(approvalsLine, "%s.approvals: distinct_groups needs an approvers entry for each approval (%d approvals, %d entries)", path, a.Approvals, approverEntries)
		}
	}
	ec.ent.Approval = a
}

func (ps *parser) entRequire(ec *entCtx, e entry) {
	ec.requireLine = e.key.Line
	path := ec.path + ".require"
	entries, _ := ps.section(path, e.val, requireKeys, nil)
	for _, f := range entries {
		fpath := path + "." + f.key.Value
		switch f.key.Value {
		case "reason":
			ec.ent.Require.Reason, _ = ps.boolean(fpath, f.val)
		case "ticket":
			pat, ok := ps.str(fpath, f.val)
			if !ok {
				continue
			}
			if len(pat) > 1024 {
				ps.errf(f.val.Line, "%s: pattern is longer than 1024 bytes", fpath)
				continue
			}
			re, err := regexp.Compile(`^(?:` + pat + `)$`)
			if err != nil {
				ps.errf(f.val.Line, "%s: invalid pattern %q: %v", fpath, pat, err)
				continue
			}
			ec.ent.Require.Ticket, ec.ent.Require.ticket = pat, re
		}
	}
}

func (ps *parser) entWhen(ec *entCtx, e entry) {
	path := ec.path + ".when"
	src, ok := ps.str(path, e.val)
	if !ok {
		return
	}
	c, err := compileCondition(src)
	if err != nil {
		ps.errf(e.val.Line, "%s: invalid condition: %v", path, err)
		return
	}
	ec.ent.When, ec.ent.when = src, c
}

func (ps *parser) entConflicts(ec *entCtx, e entry) {
	path := ec.path + ".conflicts_with"
	items, _ := ps.sequence(path, e.val)
	seen := map[string]int{}
	for i, n := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		name, ok := ps.str(ipath, n)
		if !ok {
			continue
		}
		switch {
		case !validName(name):
			ps.errf(n.Line, "%s: invalid entitlement name %q (want %s)", ipath, name, nameRule)
		case name == ec.ent.Name:
			ps.errf(n.Line, "%s: an entitlement cannot conflict with itself", ipath)
		case seen[name] != 0:
			ps.errf(n.Line, "%s: duplicate entitlement %q (first at line %d)", ipath, name, seen[name])
		default:
			seen[name] = n.Line
			ps.conflicts = append(ps.conflicts, conflictRef{ent: ec.ent, path: ipath, name: name, line: n.Line})
		}
	}
}

// resolveConflicts checks that conflicts_with names entitlements that
// exist and makes the relation symmetric.
func (ps *parser) resolveConflicts() {
	for _, c := range ps.conflicts {
		other := ps.p.Entitlements[c.name]
		if other == nil {
			ps.errf(c.line, "%s: unknown entitlement %q", c.path, c.name)
			continue
		}
		c.ent.ConflictsWith = append(c.ent.ConflictsWith, c.name)
		other.ConflictsWith = append(other.ConflictsWith, c.ent.Name)
	}
	for _, ent := range ps.p.Entitlements {
		if len(ent.ConflictsWith) == 0 {
			continue
		}
		sort.Strings(ent.ConflictsWith)
		out := ent.ConflictsWith[:1]
		for _, n := range ent.ConflictsWith[1:] {
			if n != out[len(out)-1] {
				out = append(out, n)
			}
		}
		ent.ConflictsWith = out
	}
}

func (ps *parser) entBreakGlass(ec *entCtx, e entry) {
	path := ec.path + ".break_glass"
	entries, ok := ps.section(path, e.val, breakGlassKeys, []string{"allowed", "max_ttl", "review_within"})
	if !ok {
		return
	}
	bg := &BreakGlassPolicy{}
	good := true
	for _, f := range entries {
		fpath := path + "." + f.key.Value
		var fine bool
		switch f.key.Value {
		case "allowed":
			if isNull(f.val) || (f.val.Kind == yaml.SequenceNode && len(f.val.Content) == 0) {
				ps.errf(f.val.Line, "%s: must list who may break glass", fpath)
				break
			}
			bg.Allowed, bg.allowed = ps.subjectList(fpath, f.val)
			fine = len(bg.Allowed) > 0
		case "max_ttl":
			bg.MaxTTL, fine = ps.duration(fpath, f.val)
		case "review_within":
			bg.ReviewWithin, fine = ps.duration(fpath, f.val)
		case "notify":
			bg.Notify = ps.webhookRefs(fpath, f.val)
			fine = true
		}
		good = good && fine
	}
	if good && len(bg.Allowed) > 0 && bg.MaxTTL > 0 && bg.ReviewWithin > 0 {
		ec.ent.BreakGlass = bg
	}
}

// entChecks reports combinations of keys that cannot work.
func (ps *parser) entChecks(ec *entCtx, entries []entry) {
	_, hasRequestable := find(entries, "requestable_by")
	_, hasApproval := find(entries, "approval")
	switch {
	case len(ec.ent.RequestableBy) > 0 && !hasApproval:
		ps.errf(ec.line, "%s: requestable_by needs an approval section saying who approves (approvals: 0 approves at once)", ec.path)
	case hasApproval && !hasRequestable:
		ps.errf(ec.approvalLine, "%s.approval: nobody may request this entitlement; add requestable_by", ec.path)
	}
	if ec.requireLine > 0 && !hasRequestable {
		ps.errf(ec.requireLine, "%s.require: applies to access requests; add requestable_by", ec.path)
	}
	if len(ec.ent.RequestableBy) == 0 && ec.ent.Approval != nil {
		ec.ent.Approval = nil
	}
}
