package devca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// MintOptions describes a leaf certificate for MintX509SVIDOpts. The zero
// value of every field but ID and TTL gives a valid X.509-SVID; the others
// exist to make certificates that must be refused.
type MintOptions struct {
	// ID is the SPIFFE ID in the URI SAN. The zero ID leaves it out, which
	// makes a certificate that is not an X.509-SVID at all.
	ID spiffeid.ID
	// TTL is how long the certificate is valid from now. It is ignored when
	// NotAfter is set.
	TTL time.Duration
	// NotBefore is the start of validity; zero means now minus Backdate.
	NotBefore time.Time
	// NotAfter is the end of validity; zero means now plus TTL, capped at the
	// CA's own NotAfter. An explicit NotAfter is not capped, so it can be in
	// the past (an expired SVID) or outlive the CA.
	NotAfter time.Time
	// ExtraURIs are more URI SANs, added after ID. Any makes the certificate
	// an invalid X.509-SVID ("exactly one URI SAN").
	ExtraURIs []string
	// DNS are DNS SANs; entries that parse as IP addresses become IP SANs.
	DNS []string
	// IsCA marks the leaf as a CA that may sign certificates, which an
	// X.509-SVID must not be.
	IsCA bool
}

// MintX509SVID mints an X.509-SVID for id, valid from Backdate ago for ttl
// (capped at the CA's expiry): a fresh ECDSA P-256 key, exactly one URI SAN,
// key usage digitalSignature, extended key usages clientAuth and serverAuth.
func (ca *CA) MintX509SVID(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	return ca.MintX509SVIDWithDNS(id, ttl)
}

// MintX509SVIDWithDNS is MintX509SVID with DNS SANs as well, for the broker's
// server certificate: "localhost" and "127.0.0.1" let HTTPS clients that do
// not speak SPIFFE verify it by name. Entries that parse as IP addresses
// become IP SANs. The certificate keeps exactly one URI SAN, so it is still
// an X.509-SVID.
func (ca *CA) MintX509SVIDWithDNS(id spiffeid.ID, ttl time.Duration, dnsNames ...string) (*x509svid.SVID, error) {
	if id.IsZero() {
		return nil, errors.New("devca: SPIFFE ID is empty")
	}
	if id.TrustDomain() != ca.td {
		return nil, fmt.Errorf("devca: SPIFFE ID %q is not in trust domain %q", id, ca.td.Name())
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("devca: TTL %s is not positive", ttl)
	}
	return ca.MintX509SVIDOpts(MintOptions{ID: id, TTL: ttl, DNS: dnsNames})
}

// MintX509SVIDOpts mints a leaf certificate described by opts. Unlike
// MintX509SVID it checks little, so that it can make invalid X.509-SVIDs for
// tests: the returned SVID's ID is opts.ID even when the certificate carries
// other URI SANs or none.
func (ca *CA) MintX509SVIDOpts(opts MintOptions) (*x509svid.SVID, error) {
	now := ca.now()
	notBefore := opts.NotBefore
	if notBefore.IsZero() {
		notBefore = now.Add(-Backdate)
	}
	notAfter := opts.NotAfter
	if notAfter.IsZero() {
		if opts.TTL <= 0 {
			return nil, fmt.Errorf("devca: TTL %s is not positive and NotAfter is not set", opts.TTL)
		}
		notAfter = now.Add(opts.TTL)
		if notAfter.After(ca.cert.NotAfter) {
			notAfter = ca.cert.NotAfter
		}
	}

	var uris []*url.URL
	if !opts.ID.IsZero() {
		uris = append(uris, opts.ID.URL())
	}
	for _, s := range opts.ExtraURIs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("devca: extra URI %q: %w", s, err)
		}
		uris = append(uris, u)
	}
	var dns []string
	var ips []net.IP
	for _, name := range opts.DNS {
		if ip := net.ParseIP(name); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, name)
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devca: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Mayfly dev"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  uris,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	if opts.IsCA {
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("devca: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devca: parse certificate: %w", err)
	}
	return &x509svid.SVID{
		ID:           opts.ID,
		Certificates: []*x509.Certificate{leaf},
		PrivateKey:   key,
	}, nil
}

// WriteSVID writes svid into the CA directory as name.crt.pem (the leaf and
// the rest of its chain) and name.key.pem (the PKCS#8 private key), both
// mode 0600 and replaced atomically, and returns their paths. Load them with
// x509svid.Load. name must be a plain file name such as "broker".
func (ca *CA) WriteSVID(name string, svid *x509svid.SVID) (certPath, keyPath string, err error) {
	if ca.dir == "" {
		return "", "", errors.New("devca: this CA has no directory (it was made by NewForeignCA)")
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return "", "", fmt.Errorf("devca: SVID name %q is not a plain file name", name)
	}
	if svid == nil || len(svid.Certificates) == 0 {
		return "", "", errors.New("devca: SVID has no certificates")
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return "", "", fmt.Errorf("devca: %w", err)
	}
	certPath = filepath.Join(ca.dir, name+".crt.pem")
	keyPath = filepath.Join(ca.dir, name+".key.pem")
	if err := writeFileAtomic(keyPath, keyPEM); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(certPath, certPEM); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}
