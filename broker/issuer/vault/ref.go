package vault

import (
	"fmt"
	"strings"
	"unicode"
)

// refSep separates the token accessor from the Vault lease id in an
// ExternalRef. Vault accessors never contain it.
const refSep = "|"

// Ref is what a lease's ExternalRef holds for a Vault credential:
//
//	ACCESSOR|LEASE_ID    e.g. "hmZ3…Qk|database/creds/orders-ro/Xy7…"
//
// ACCESSOR is the accessor of the per-lease token that read the secret;
// revoking it revokes the token and, through Vault's lease tree, every
// secret read with it. LEASE_ID is the secret's Vault lease, renewed and
// revoked directly so that revocation is synchronous and confirmed. A
// bare ACCESSOR (no separator) is accepted too and revoked through the
// token alone. Neither part is a secret: an accessor cannot be used to
// authenticate.
type Ref struct {
	// Accessor is the per-lease token's accessor.
	Accessor string
	// LeaseID is the secret's Vault lease id.
	LeaseID string
}

// String formats r as ACCESSOR|LEASE_ID (or ACCESSOR alone).
func (r Ref) String() string {
	if r.LeaseID == "" {
		return r.Accessor
	}
	return r.Accessor + refSep + r.LeaseID
}

// ParseRef parses an ExternalRef written by this issuer.
func ParseRef(s string) (Ref, error) {
	acc, lid, _ := strings.Cut(s, refSep)
	switch {
	case acc == "":
		return Ref{}, fmt.Errorf("external reference %.80q has no token accessor", s)
	case strings.IndexFunc(acc, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_')
	}) >= 0:
		return Ref{}, fmt.Errorf("external reference %.80q: the accessor is not a Vault token accessor", s)
	case strings.IndexFunc(lid, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return Ref{}, fmt.Errorf("external reference %.80q: the lease id contains white space", s)
	}
	return Ref{Accessor: acc, LeaseID: lid}, nil
}
