package authn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
)

// ServerCredentials returns the broker's gRPC transport credentials: TLS 1.3
// or later, serving the X.509-SVID that svids holds at each handshake (so a
// rotated SVID is served at once), and asking the client for a certificate
// without requiring one or rejecting a bad one.
//
// After the handshake — a full one or a resumed session alike — the client's
// chain is verified as an X.509-SVID against the bundle that bundles holds at
// that moment, and the outcome is recorded in the connection's AuthInfo, which
// Authenticator.Authenticate reads. The handshake itself fails only for TLS
// reasons (no common version, a client that cannot prove it holds the key of
// the certificate it sent), never because the certificate is not trusted.
func ServerCredentials(svids x509svid.Source, bundles x509bundle.Source) credentials.TransportCredentials {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: tlsconfig.GetCertificate(svids),
		// Request, don't verify: a refused handshake reaches the client as
		// codes.Unavailable without a reason. Verification happens after the
		// handshake, in ServerHandshake.
		ClientAuth: tls.RequestClientCert,
	}
	return &serverCredentials{
		TransportCredentials: credentials.NewTLS(cfg),
		bundles:              bundles,
		now:                  time.Now,
	}
}

// serverCredentials wraps grpc's TLS credentials and adds X.509-SVID
// verification of the client after the server handshake.
type serverCredentials struct {
	credentials.TransportCredentials
	bundles x509bundle.Source
	now     func() time.Time
}

// ServerHandshake runs the TLS handshake and verifies the client's
// certificate, if any, returning an AuthInfo.
func (c *serverCredentials) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(rawConn)
	if err != nil {
		return nil, nil, err
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	if !ok {
		conn.Close()
		return nil, nil, fmt.Errorf("authn: TLS handshake returned auth info of type %T, want credentials.TLSInfo", info)
	}
	return conn, newAuthInfo(tlsInfo, c.bundles, c.now()), nil
}

// Clone returns a copy of the credentials.
func (c *serverCredentials) Clone() credentials.TransportCredentials {
	return &serverCredentials{
		TransportCredentials: c.TransportCredentials.Clone(),
		bundles:              c.bundles,
		now:                  c.now,
	}
}

// AuthInfo is the credentials.AuthInfo of a connection accepted by
// ServerCredentials. It embeds credentials.TLSInfo so that code which reads
// the TLS state (channelz, authority checks) keeps working. Read it from a
// request context with peer.FromContext(ctx).AuthInfo.(authn.AuthInfo), or let
// Authenticator.Authenticate do it.
//
// ID, NotAfter and VerifyErr are the outcome of verification at handshake
// time. Authenticate does not rely on them alone: it checks the certificate
// again against the current time and, when the bundle has changed since, the
// current bundle.
type AuthInfo struct {
	credentials.TLSInfo
	// ID is the SPIFFE ID of the client's X.509-SVID, verified against the
	// trust bundle; zero when the client sent no certificate or it did not
	// verify. TLSInfo.SPIFFEID is set to the same value (grpc fills it from
	// the unverified certificate; here it is cleared unless verified).
	ID spiffeid.ID
	// NotAfter is when the verified chain stops being valid: the earliest
	// NotAfter of the leaf and the authorities it was verified through.
	NotAfter time.Time
	// VerifyErr says why the client's certificate is not a valid
	// X.509-SVID; nil when it verified or the client sent none. It wraps
	// ErrUnauthenticated.
	VerifyErr error

	peer *peerSVID
}

// ClientCertificatePresented reports whether the client sent a certificate.
func (a AuthInfo) ClientCertificatePresented() bool {
	return len(a.State.PeerCertificates) > 0
}

func newAuthInfo(tlsInfo credentials.TLSInfo, bundles x509bundle.Source, now time.Time) AuthInfo {
	tlsInfo.SPIFFEID = nil
	info := AuthInfo{TLSInfo: tlsInfo}
	if len(tlsInfo.State.PeerCertificates) == 0 {
		return info
	}
	info.peer = &peerSVID{certs: tlsInfo.State.PeerCertificates, bundles: bundles}
	id, notAfter, err := info.peer.check(now)
	if err != nil {
		info.VerifyErr = err
		return info
	}
	info.ID = id
	info.NotAfter = notAfter
	info.TLSInfo.SPIFFEID = id.URL()
	return info
}

// peerSVID verifies a client's certificate chain as an X.509-SVID and
// remembers the bundle it last verified against, so that a later check only
// repeats the chain verification when the bundle has changed.
type peerSVID struct {
	certs   []*x509.Certificate
	bundles x509bundle.Source

	mu       sync.Mutex
	verified *x509bundle.Bundle // bundle the chain last verified against
	notAfter time.Time          // earliest NotAfter on that chain
}

// claimedID returns the SPIFFE ID the leaf claims, unverified; zero when it
// does not carry exactly one SPIFFE ID. It is for choosing a message only.
func (p *peerSVID) claimedID() spiffeid.ID {
	if len(p.certs[0].URIs) != 1 {
		return spiffeid.ID{}
	}
	id, err := spiffeid.FromURI(p.certs[0].URIs[0])
	if err != nil {
		return spiffeid.ID{}
	}
	return id
}

// check verifies the chain as an X.509-SVID valid at now against the current
// bundle and returns its SPIFFE ID and the end of its validity. Errors wrap
// ErrUnauthenticated and say what is wrong.
func (p *peerSVID) check(now time.Time) (spiffeid.ID, time.Time, error) {
	leaf := p.certs[0]
	switch n := len(leaf.URIs); n {
	case 0:
		return spiffeid.ID{}, time.Time{}, unauthenticated("client certificate is not an X.509-SVID: it has no URI SAN, exactly 1 is required")
	case 1:
	default:
		return spiffeid.ID{}, time.Time{}, unauthenticated("client certificate is not an X.509-SVID: it has %d URI SANs, exactly 1 is required", n)
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffeid.ID{}, time.Time{}, unauthenticated("client certificate is not an X.509-SVID: its URI SAN %q is not a SPIFFE ID: %v", leaf.URIs[0].String(), err)
	}
	switch {
	case leaf.IsCA:
		return spiffeid.ID{}, time.Time{}, unauthenticated("X.509-SVID %q is a CA certificate; a leaf X.509-SVID must not be", id)
	case leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return spiffeid.ID{}, time.Time{}, unauthenticated("X.509-SVID %q has key usage keyCertSign or cRLSign; a leaf X.509-SVID must not", id)
	case now.Before(leaf.NotBefore):
		return spiffeid.ID{}, time.Time{}, unauthenticated("X.509-SVID %q is not valid until %s (check the clocks of client and broker)", id, formatTime(leaf.NotBefore))
	case now.After(leaf.NotAfter):
		return spiffeid.ID{}, time.Time{}, unauthenticated("X.509-SVID %q expired at %s; renew it", id, formatTime(leaf.NotAfter))
	}

	bundle, err := p.bundles.GetX509BundleForTrustDomain(id.TrustDomain())
	if err != nil {
		return spiffeid.ID{}, time.Time{}, unauthenticated("X.509-SVID %q: the broker has no trust bundle for trust domain %q", id, id.TrustDomain().Name())
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.verified == nil || !p.verified.Equal(bundle) {
		p.verified = nil
		_, chains, err := x509svid.Verify(p.certs, bundle, x509svid.WithTime(now))
		if err != nil {
			var unknown x509.UnknownAuthorityError
			if errors.As(err, &unknown) {
				return spiffeid.ID{}, time.Time{}, unauthenticated("X.509-SVID %q is not signed by an authority in the trust bundle of %q", id, id.TrustDomain().Name())
			}
			return spiffeid.ID{}, time.Time{}, unauthenticated("X.509-SVID %q did not verify: %v", id, err)
		}
		p.verified = bundle.Clone()
		p.notAfter = leaf.NotAfter
		for _, c := range chains[0] {
			if c.NotAfter.Before(p.notAfter) {
				p.notAfter = c.NotAfter
			}
		}
	}
	if now.After(p.notAfter) {
		return spiffeid.ID{}, time.Time{}, unauthenticated("X.509-SVID %q: its issuing authority expired at %s", id, formatTime(p.notAfter))
	}
	return id, p.notAfter, nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
