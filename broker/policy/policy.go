package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
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
	// explain decisions for other principals, and more as the API grows.
	Admins []string
	// Entitlements are keyed by name.
	Entitlements map[string]*Entitlement
	// Digest is the sha256 (hex) of the source bytes; audit events record
	// which policy a decision was made under.
	Digest string

	admins    []*subject           // parsed Admins
	names     []string             // entitlement names, sorted
	groupSets map[string]*groupSet // groups flattened for matching
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
