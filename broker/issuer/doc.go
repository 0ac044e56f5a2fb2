// Package issuer defines the Issuer seam: the backends that mint, renew and
// revoke credentials (jwt, vault, awssts, ...), one sub-package each, and
// the conformance suite every one of them passes (issuer/issuertest).
package issuer
