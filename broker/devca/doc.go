// Package devca is the certificate authority of Mayfly's local development
// trust domain.
//
// `mayflyd dev` needs identities for the broker, a demo workload and the CLI
// without a SPIRE server. devca provides them with real cryptography and a
// local authority: an ECDSA P-256 CA whose certificate carries the trust
// domain's SPIFFE ID, and an ECDSA P-256 JWT signing key. The CA is created
// the first time a directory is opened and loaded from it afterwards, so the
// trust bundle stays the same across restarts.
//
// Files in the directory (mode 0600, directory 0700):
//
//	ca.pem             CA certificate and private key (secret)
//	jwt.key.pem        JWT-SVID signing key, PKCS#8 (secret)
//	bundle.pem         X.509 trust bundle: the CA certificate
//	jwt-bundle.json    JWT trust bundle: a JWKS with the signing key's public half
//	NAME.crt.pem       an X.509-SVID written by WriteSVID (leaf and chain)
//	NAME.key.pem       its private key, PKCS#8 (secret)
//
// Usage:
//
//	td := spiffeid.RequireTrustDomainFromString("mayfly.dev")
//	ca, err := devca.Open(dir, td)
//	if err != nil {
//		return err
//	}
//	svid, err := ca.MintX509SVID(spiffeid.RequireFromPath(td, "/demo"), time.Hour)
//	if err != nil {
//		return err
//	}
//	certPath, keyPath, err := ca.WriteSVID("demo", svid)
//
// Tests elsewhere need credentials that must be refused. MintX509SVIDOpts and
// MintJWTSVIDOpts make them (expired, two URI SANs, no SPIFFE ID, alg "none",
// HS256 keyed with the public key, …), and NewForeignCA makes an authority
// that looks like the real one — same trust domain, same subject names — but
// has its own keys.
package devca
