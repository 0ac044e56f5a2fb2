package authn

import (
	"errors"
	"fmt"
)

// ErrUnauthenticated is wrapped by every error that means "the caller did not
// prove who it is": no credential, or a credential that is refused. The rest
// of the message says what is wrong and what to fix, and never carries a
// secret. broker/api maps it to codes.Unauthenticated; any other error from
// Authenticate is a fault of the broker (codes.Internal or Unavailable).
var ErrUnauthenticated = errors.New("authn: unauthenticated")

// ErrTokenNotRecognized is returned by a BearerVerifier for a token that is
// not of its kind (a JWT-SVID verifier given an OIDC ID token, an OIDC
// verifier given a token from another issuer), so that the Authenticator
// tries the next verifier. It never reaches Authenticate's caller.
var ErrTokenNotRecognized = errors.New("authn: bearer token not recognized")

// unauthenticated returns an error that wraps ErrUnauthenticated with a
// formatted reason.
func unauthenticated(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnauthenticated, fmt.Sprintf(format, args...))
}
