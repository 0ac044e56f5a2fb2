package jwt

import "errors"

var (
	// ErrInvalidToken: Verify refused the token (bad signature, unknown
	// kid, wrong algorithm, wrong issuer, expired, not yet valid,
	// malformed). The wrapped error says which; it never holds the token.
	ErrInvalidToken = errors.New("jwt: invalid token")

	// ErrLookup: the IntrospectFunc failed, so whether the token's lease is
	// active is unknown. The API answers Unavailable, never active.
	ErrLookup = errors.New("jwt: lease lookup failed")
)
