package devca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// File names inside a CA directory.
const (
	// CAFile holds the CA certificate and its private key.
	CAFile = "ca.pem"
	// JWTKeyFile holds the JWT-SVID signing key.
	JWTKeyFile = "jwt.key.pem"
	// BundleFile is the X.509 trust bundle (the CA certificate) in PEM.
	BundleFile = "bundle.pem"
	// JWTBundleFile is the JWT trust bundle as an RFC 7517 JWKS.
	JWTBundleFile = "jwt-bundle.json"
)

// CALifetime is how long a newly created CA certificate is valid.
const CALifetime = 365 * 24 * time.Hour

// Backdate is how far before "now" a minted certificate's NotBefore is set, so
// that a peer whose clock runs a little behind still accepts it.
const Backdate = 30 * time.Second

// CA is the authority of a development trust domain. It is safe for
// concurrent use: its keys never change after Open.
type CA struct {
	dir    string
	td     spiffeid.TrustDomain
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	jwtKey *ecdsa.PrivateKey
	jwtKID string
	now    func() time.Time
}

// Open loads the CA of trust domain td from dir, creating dir, the CA and the
// JWT signing key the first time. It (re)writes bundle.pem and
// jwt-bundle.json so that the directory always holds current bundles.
//
// Two processes that open the same empty directory at once end up with the
// same CA: each key file is published with a hard link that only one of them
// can win.
//
// Open refuses a directory whose CA belongs to another trust domain or has
// expired; the message says which, and removing the directory starts afresh.
func Open(dir string, td spiffeid.TrustDomain) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("devca: trust domain is empty")
	}
	if dir == "" {
		return nil, errors.New("devca: directory is empty")
	}
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	ca := &CA{dir: dir, td: td, now: time.Now}

	caPEM, err := loadOrCreate(filepath.Join(dir, CAFile), func() ([]byte, error) {
		cert, key, err := newCACert(td, time.Now())
		if err != nil {
			return nil, err
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return nil, err
		}
		return append(encodeCerts(cert), keyPEM...), nil
	})
	if err != nil {
		return nil, err
	}
	if ca.cert, ca.key, err = parseCA(caPEM); err != nil {
		return nil, fmt.Errorf("devca: %s: %w", filepath.Join(dir, CAFile), err)
	}
	if err := ca.checkCA(); err != nil {
		return nil, err
	}

	jwtPEM, err := loadOrCreate(filepath.Join(dir, JWTKeyFile), func() ([]byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("devca: generate JWT key: %w", err)
		}
		return encodeKey(key)
	})
	if err != nil {
		return nil, err
	}
	if ca.jwtKey, err = parseECKey(jwtPEM); err != nil {
		return nil, fmt.Errorf("devca: %s: %w", filepath.Join(dir, JWTKeyFile), err)
	}
	if ca.jwtKID, err = keyID(ca.jwtKey.Public()); err != nil {
		return nil, err
	}

	if err := ca.writeBundles(); err != nil {
		return nil, err
	}
	return ca, nil
}

// NewForeignCA returns an in-memory CA for trust domain td whose certificate
// has the same subject, issuer and SPIFFE ID as the one Open creates for td,
// but whose keys are new. Its SVIDs look right and must be refused by anyone
// who trusts the real CA: tests use it for "a certificate from a foreign CA
// with the same subject". It has no directory, so WriteSVID writes nothing
// and returns an error.
func NewForeignCA(td spiffeid.TrustDomain) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("devca: trust domain is empty")
	}
	cert, key, err := newCACert(td, time.Now())
	if err != nil {
		return nil, err
	}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devca: generate JWT key: %w", err)
	}
	kid, err := keyID(jwtKey.Public())
	if err != nil {
		return nil, err
	}
	return &CA{td: td, cert: cert, key: key, jwtKey: jwtKey, jwtKID: kid, now: time.Now}, nil
}

// TrustDomain returns the trust domain the CA is the authority of.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Dir returns the directory the CA lives in; empty for a foreign CA.
func (ca *CA) Dir() string { return ca.dir }

// Certificate returns the CA certificate, the only X.509 authority of the
// trust domain.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// JWTKeyID returns the key ID ("kid") of the JWT signing key. It is derived
// from the public key, so it is stable across restarts.
func (ca *CA) JWTKeyID() string { return ca.jwtKID }

// X509Bundle returns the trust domain's X.509 bundle: the CA certificate.
// Each call returns a new bundle that the caller may change.
func (ca *CA) X509Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// JWTBundle returns the trust domain's JWT bundle: the signing key's public
// half under its key ID. Each call returns a new bundle.
func (ca *CA) JWTBundle() *jwtbundle.Bundle {
	return jwtbundle.FromJWTAuthorities(ca.td, map[string]crypto.PublicKey{ca.jwtKID: ca.jwtKey.Public()})
}

// BundlePath returns the path of bundle.pem, the X.509 trust bundle in PEM,
// which Open wrote. Load it with x509bundle.Load. Empty for a foreign CA.
func (ca *CA) BundlePath() string {
	if ca.dir == "" {
		return ""
	}
	return filepath.Join(ca.dir, BundleFile)
}

// JWTBundlePath returns the path of jwt-bundle.json, the JWT trust bundle as
// a JWKS, which Open wrote. Load it with jwtbundle.Load. Empty for a foreign
// CA.
func (ca *CA) JWTBundlePath() string {
	if ca.dir == "" {
		return ""
	}
	return filepath.Join(ca.dir, JWTBundleFile)
}

// writeBundles writes bundle.pem and jwt-bundle.json atomically.
func (ca *CA) writeBundles() error {
	if err := writeFileAtomic(ca.BundlePath(), encodeCerts(ca.cert)); err != nil {
		return err
	}
	jwks, err := ca.JWTBundle().Marshal()
	if err != nil {
		return fmt.Errorf("devca: marshal JWT bundle: %w", err)
	}
	return writeFileAtomic(ca.JWTBundlePath(), jwks)
}

// checkCA makes sure a loaded CA is usable for ca.td.
func (ca *CA) checkCA() error {
	path := filepath.Join(ca.dir, CAFile)
	if !ca.cert.IsCA {
		return fmt.Errorf("devca: %s: certificate is not a CA", path)
	}
	if len(ca.cert.URIs) != 1 || ca.cert.URIs[0].String() != ca.td.ID().String() {
		return fmt.Errorf("devca: %s: CA is not for trust domain %q (its URI SANs are %v); use another directory or remove this one", path, ca.td.Name(), ca.cert.URIs)
	}
	if !ca.key.PublicKey.Equal(ca.cert.PublicKey) {
		return fmt.Errorf("devca: %s: private key does not match the CA certificate", path)
	}
	if now := ca.now(); !now.Before(ca.cert.NotAfter) {
		return fmt.Errorf("devca: %s: CA expired at %s; remove %s to create a new trust domain CA", path, ca.cert.NotAfter.UTC().Format(time.RFC3339), ca.dir)
	}
	return nil
}

// caSubject is the subject (and issuer) of every CA made for td, by Open and
// by NewForeignCA alike.
func caSubject(td spiffeid.TrustDomain) pkix.Name {
	return pkix.Name{Organization: []string{"Mayfly dev"}, CommonName: "Mayfly dev CA " + td.Name()}
}

// newCACert makes a self-signed P-256 CA certificate for td.
func newCACert(td spiffeid.TrustDomain, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("devca: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               caSubject(td),
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("devca: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("devca: parse CA certificate: %w", err)
	}
	return cert, key, nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("devca: serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}

// keyID derives a stable key ID from a public key: the base64url SHA-256 of
// its SubjectPublicKeyInfo, shortened to 128 bits.
func keyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("devca: marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:16]), nil
}

func encodeCerts(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("devca: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseCA reads the CERTIFICATE and PRIVATE KEY blocks of ca.pem.
func parseCA(data []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	var cert *x509.Certificate
	var key *ecdsa.PrivateKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parse CA certificate: %w", err)
			}
			cert = c
		case "PRIVATE KEY":
			k, err := parsePKCS8EC(block.Bytes)
			if err != nil {
				return nil, nil, err
			}
			key = k
		}
	}
	if cert == nil || key == nil {
		return nil, nil, errors.New("want a CERTIFICATE and a PRIVATE KEY PEM block")
	}
	return cert, key, nil
}

func parseECKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("want a PRIVATE KEY PEM block")
	}
	return parsePKCS8EC(block.Bytes)
}

func parsePKCS8EC(der []byte) (*ecdsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("private key is a %T, want ECDSA P-256", k)
	}
	return ec, nil
}

// ensureDir creates dir with mode 0700, or tightens an existing directory to
// 0700: it holds private keys.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("devca: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("devca: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("devca: %s is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("devca: %w", err)
		}
	}
	return nil
}

// loadOrCreate returns the content of path, or creates it with the output of
// create. Creation writes a temporary file and hard-links it into place, so a
// concurrent creator either wins or reads the winner's file.
func loadOrCreate(path string, create func() ([]byte, error)) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		return data, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("devca: %w", err)
	}
	data, err = create()
	if err != nil {
		return nil, err
	}
	tmp, err := writeTemp(path, data)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process created it first: use theirs.
			if data, err = os.ReadFile(path); err != nil {
				return nil, fmt.Errorf("devca: %w", err)
			}
			return data, nil
		}
		return nil, fmt.Errorf("devca: %w", err)
	}
	return data, nil
}

// writeFileAtomic replaces path with data (mode 0600) so that readers see
// either the old or the new content, never a partial file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("devca: %w", err)
	}
	return nil
}

// writeTemp writes data to a new mode-0600 file beside path and returns its
// name.
func writeTemp(path string, data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("devca: %w", err)
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", fmt.Errorf("devca: write %s: %w", path, err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("devca: write %s: %w", path, err)
	}
	return name, nil
}
