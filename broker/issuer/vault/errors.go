package vault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/mayflyhq/mayfly/broker/issuer"
)

// ErrNoLease: the path returned a secret without a Vault lease (a KV
// secret, a PKI role without generate_lease). Mayfly only brokers leased
// secrets, whose end Vault enforces. It wraps issuer.ErrRejected.
var ErrNoLease = fmt.Errorf("returns no lease; Mayfly only brokers leased secrets: %w", issuer.ErrRejected)

// errNoReplay: a retried Issue for a lease whose credential this process
// no longer holds.
var errNoReplay = fmt.Errorf("cannot replay: the credential of this lease is no longer held by this broker; request a new lease: %w", issuer.ErrRejected)

// statusOf is the HTTP status of a Vault error response, 0 for a
// transport error.
func statusOf(err error) int {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// vaultSays reports whether Vault's error text contains any of words. The
// text is only looked at, never repeated: it may carry more than we want
// in an error message.
func vaultSays(err error, words ...string) bool {
	var re *vaultapi.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	text := strings.ToLower(strings.Join(re.Errors, " "))
	for _, w := range words {
		if strings.Contains(text, w) {
			return true
		}
	}
	return false
}

// refused reports whether Vault answered with a client error that retrying
// will not fix (4xx other than 408 and 429).
func refused(err error) bool {
	st := statusOf(err)
	return st >= 400 && st < 500 && st != http.StatusRequestTimeout && st != http.StatusTooManyRequests
}

// classify turns an error of a Vault call into the issuer contract,
// without Vault's own text: ErrRejected with hint when Vault refused (4xx),
// ErrUnavailable when it could not be reached, timed out, or failed on its
// side (5xx, 429, sealed or standby). op says what was being done.
func classify(op string, err error, hint string) error {
	st := statusOf(err)
	switch {
	case refused(err):
		if hint == "" {
			hint = "check the broker's Vault policy"
		}
		return fmt.Errorf("%s: Vault refused (HTTP %d): %s: %w", op, st, hint, issuer.ErrRejected)
	case st != 0:
		return fmt.Errorf("%s: Vault failed (HTTP %d); retry later: %w", op, st, issuer.ErrUnavailable)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: cancelled: %w: %w", op, issuer.ErrUnavailable, context.Canceled)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: Vault did not answer in time: %w: %w", op, issuer.ErrUnavailable, context.DeadlineExceeded)
	}
	return fmt.Errorf("%s: Vault unreachable (%s): %w", op, netCause(err), issuer.ErrUnavailable)
}

// netCause names a transport failure without the request URL.
func netCause(err error) string {
	var (
		errno syscall.Errno
		dns   *net.DNSError
		op    *net.OpError
	)
	switch {
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &dns):
		return "DNS lookup failed"
	case errors.As(err, &op):
		return op.Op + " failed"
	case strings.Contains(err.Error(), "certificate"):
		return "TLS certificate not trusted"
	case strings.Contains(err.Error(), "tls"):
		return "TLS handshake failed"
	}
	return "connection failed"
}
