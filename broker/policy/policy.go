package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"
)

// maxFileSize bounds what LoadFile reads; a policy file is hand-written.
const maxFileSize = 8 << 20

// Options tells the loader what the running broker supports.
type Options struct {
	// Issuers maps each known issuer name to its params decoder
	// (issuer.Issuer.DecodeParams). An entitlement may name only these
	// issuers, and its section under the issuer's name is handed to the
	// decoder; node is nil if the entitlement has no section for its issuer.
	Issuers map[string]func(node *yaml.Node) (any, error)
}

// Policy is a loaded, validated policy file. It is immutable once returned:
// Decide, Explain and Usable may be called from many goroutines, and a
// reload builds a new Policy instead of changing this one.
type Policy struct {
	// Version is the file format version; only 1 exists.
	Version int
	// TrustDomains are the SPIFFE trust domains whose workloads the policy
	// may name, in file order.
	TrustDomains []string
	// Groups are the named sets of principals as written (member subjects
	// in file order), keyed by group name.
	Groups map[string][]string
	// Admins are the subjects (as written) who may administer the broker:
	// explain decisions for other principals, see and act on every access
	// request, grant and review.
	Admins []string
	// IdentityProviders are the OIDC issuers whose ID tokens authenticate
	// humans, in file order. The OIDC verifier reads them; oidc-group
	// subjects name one of them as their PROVIDER when any are listed.
	IdentityProviders []IdentityProvider
	// Webhooks are the notification endpoints, keyed by name; entitlements
	// name them as "webhook:NAME" in notify lists.
	Webhooks map[string]*Webhook
	// Identities are sets of subjects (as written) that are one person or
	// agent: an approver is refused when any subject of a set they match
	// also matches the requester, and two approvals by one identity count
	// once.
	Identities [][]string
	// Entitlements are keyed by name.
	Entitlements map[string]*Entitlement
	// Digest is the sha256 (hex) of the source bytes; audit events record
	// which policy a decision was made under.
	Digest string

	admins     []*subject           // parsed Admins
	identities [][]*subject         // parsed Identities
	names      []string             // entitlement names, sorted
	groupSets  map[string]*groupSet // groups flattened for matching
	groupNames []string             // group names, sorted (principal.groups in conditions)
}

// IdentityProvider is an OIDC issuer trusted to authenticate humans.
type IdentityProvider struct {
	// Name is the PROVIDER in oidc-group:PROVIDER/NAME subjects.
	Name string
	// Issuer is the issuer URL (https) whose discovery document and keys
	// verify ID tokens.
	Issuer string
	// Audience is the client id ID tokens must be issued to.
	Audience string
	// GroupsClaim is the claim holding the user's groups ("groups" if the
	// file sets none); each becomes oidc-group:NAME/GROUP.
	GroupsClaim string
	// UsernameClaim is the claim that names the user ("email" if the file
	// sets none); it becomes user:VALUE.
	UsernameClaim string
}

// Webhook formats.
const (
	// WebhookJSON posts the event as a JSON object.
	WebhookJSON = "json"
	// WebhookSlack posts a Slack-compatible {"text", "blocks"} message.
	WebhookSlack = "slack"
)

// Webhook is an endpoint notified of access events. The policy names the
// environment variable holding the signing key, never the key itself, and
// loading does not read it: the notifier does, when it sends.
type Webhook struct {
	// Name is the webhook's key in the file.
	Name string
	// URL is where events are posted: https, or http to a loopback host.
	URL string
	// SecretEnv is the environment variable that holds the HMAC-SHA256 key
	// events are signed with.
	SecretEnv string
	// Format is WebhookJSON (the default) or WebhookSlack.
	Format string
}

// Entitlement is a named permission: what a credential from it grants (the
// issuer and its params), for how long, who owns it, and who holds it.
type Entitlement struct {
	// Name is the entitlement's key in the file.
	Name string
	// Description says what the permission is for, for people.
	Description string
	// Owner is the user:NAME or group:NAME subject who answers for the
	// entitlement and certifies its standing grants.
	Owner string
	// Issuer is the name of the backend that mints the credential.
	Issuer string
	// Params is what the issuer's DecodeParams returned for the section
	// under the issuer's name.
	Params any
	// TTL is the default credential lifetime.
	TTL time.Duration
	// MaxTTL bounds every lease of this entitlement, renewals included.
	MaxTTL time.Duration
	// Standing are the grants held without asking, in file order.
	Standing []*StandingGrant
	// RequestableBy are the subjects (as written: users, groups, SPIFFE
	// patterns for agents) who may ask for the entitlement with an access
	// request; empty if nobody may.
	RequestableBy []string
	// Approval says how requests are approved; nil exactly when
	// RequestableBy is empty.
	Approval *ApprovalPolicy
	// Require is what a request must carry.
	Require Require
	// When is the CEL condition (as written) that every request and every
	// issuance of the entitlement must meet, except break-glass; empty if
	// none. See the package doc for its variables.
	When string
	// ConflictsWith are the entitlements a holder of this one may not hold
	// at the same time (segregation of duties), sorted. The relation is
	// symmetric: naming B under A puts A under B too.
	ConflictsWith []string
	// BreakGlass says who may grant themselves the entitlement in an
	// emergency; nil if nobody may.
	BreakGlass *BreakGlassPolicy
	// Notify are the webhooks (as "webhook:NAME") told of every request,
	// approval, denial, break-glass use and review of the entitlement.
	Notify []string

	owner       *subject
	requestable []*subject
	when        *condition
}

// ApprovalPolicy is how access requests for an entitlement are approved.
type ApprovalPolicy struct {
	// Approvals is how many approvals a request needs; 0 approves every
	// request that passes the other checks at once.
	Approvals int
	// Approvers are the subjects (as written) whose approvals count. The
	// requester never counts, under any identity they hold.
	Approvers []string
	// DistinctGroups requires each approval to count under a different
	// entry of Approvers (one from each group).
	DistinctGroups bool
	// MaxDuration is the longest grant a request may ask for (8h if the
	// file sets none). A longer request is refused, not shortened.
	MaxDuration time.Duration
	// PendingTTL is how long a request waits for decisions before it
	// expires (24h if the file sets none).
	PendingTTL time.Duration

	approvers []*subject
}

// Require is what an access request must carry.
type Require struct {
	// Reason requires a non-empty reason.
	Reason bool
	// Ticket is the pattern (as written) a request's ticket must match as
	// a whole; empty if no ticket is required.
	Ticket string

	ticket *regexp.Regexp // anchored: ^(?:Ticket)$
}

// BreakGlassPolicy says who may grant themselves an entitlement in an
// emergency, for how long, who hears of it, and when the use must have
// been reviewed. An overdue review blocks the user's further break-glass.
type BreakGlassPolicy struct {
	// Allowed are the subjects (as written) who may break glass.
	Allowed []string
	// MaxTTL caps the break-glass grant's lifetime.
	MaxTTL time.Duration
	// ReviewWithin is how long after the use its review is due.
	ReviewWithin time.Duration
	// Notify are the webhooks (as "webhook:NAME") told at once of every
	// use and of every overdue review.
	Notify []string

	allowed []*subject
}

// StandingGrant lets a subject use an entitlement without asking, for a
// stated purpose, until a set end.
type StandingGrant struct {
	// ID names the grant in leases and audit events: the explicit id from
	// the file, or ENTITLEMENT/standing/ followed by the first 12 hex
	// digits of sha256(subject), which stays the same across edits.
	ID string
	// Subject is the subject as written: spiffe://TD/PATH (with trailing
	// * or ** wildcards), user:NAME or group:NAME.
	Subject string
	// Purpose says why the subject holds the entitlement.
	Purpose string
	// Until is the first instant the grant no longer holds. A date in the
	// file (2027-06-30) holds through that whole day UTC, so Until is the
	// next midnight UTC; an RFC 3339 time is taken exactly.
	Until time.Time
	// ReviewEvery is how often the grant must be certified; zero if the
	// file sets none.
	ReviewEvery time.Duration

	subject *subject
}

// Parse reads a policy from data. Every problem is reported (up to a cap)
// as an ErrorList whose entries read "policy: line N: ...".
func Parse(data []byte, opts Options) (*Policy, error) {
	return parse("", data, opts)
}

// LoadFile reads and parses the policy file at path. Problems read
// "policy: PATH:LINE: ...".
func LoadFile(path string, opts Options) (*Policy, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return parse(path, data, opts)
}

// readFile reads at most maxFileSize bytes of path.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("policy: %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("file is larger than %d bytes", maxFileSize)}
	}
	return data, nil
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Entitlement returns the named entitlement, or nil.
func (p *Policy) Entitlement(name string) *Entitlement {
	return p.Entitlements[name]
}

// Names returns the entitlement names in sorted order.
func (p *Policy) Names() []string {
	return append([]string(nil), p.names...)
}

// ConflictingEntitlements returns, sorted, every entitlement that some
// conflicts_with names (conflicts are symmetric, so both sides). Holding
// any other entitlement can never matter for segregation of duties.
func (p *Policy) ConflictingEntitlements() []string {
	var out []string
	for _, name := range p.names {
		if len(p.Entitlements[name].ConflictsWith) > 0 {
			out = append(out, name)
		}
	}
	return out
}
