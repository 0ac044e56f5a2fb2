package authn

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ClientTLSConfig returns the TLS configuration with which the SDK, sidecar
// and CLI dial the broker: TLS 1.3 or later, the server authenticated as an
// X.509-SVID against bundles and authorized by authorizer (for example
// tlsconfig.AuthorizeID(brokerID)), and svids' current X.509-SVID as the
// client certificate. With svids nil no client certificate is sent: the
// caller authenticates with a bearer token instead.
//
// go-spiffe verifies the server in VerifyPeerCertificate, which crypto/tls
// skips when it resumes a session; this configuration verifies the server's
// certificate again on resumption, against the bundle current at that time.
// Use it with credentials.NewTLS.
func ClientTLSConfig(svids x509svid.Source, bundles x509bundle.Source, authorizer tlsconfig.Authorizer) *tls.Config {
	var cfg *tls.Config
	if svids == nil {
		cfg = tlsconfig.TLSClientConfig(bundles, authorizer)
	} else {
		cfg = tlsconfig.MTLSClientConfig(svids, bundles, authorizer)
	}
	cfg.MinVersion = tls.VersionTLS13
	verify := tlsconfig.VerifyPeerCertificate(bundles, authorizer)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if !cs.DidResume {
			return nil // VerifyPeerCertificate has run
		}
		raw := make([][]byte, len(cs.PeerCertificates))
		for i, c := range cs.PeerCertificates {
			raw[i] = c.Raw
		}
		return verify(raw, nil)
	}
	return cfg
}

// LoadSVIDFiles loads an X.509-SVID and the trust bundle of its trust domain
// from PEM files, as devca.WriteSVID and devca.BundlePath leave them (or
// SPIRE's agent writes them). The key must be PKCS#8. The files are read
// once; use a FileSource to follow renewals.
func LoadSVIDFiles(certPath, keyPath, bundlePath string) (x509svid.Source, x509bundle.Source, error) {
	svid, err := x509svid.Load(certPath, keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("authn: load X.509-SVID from %s and %s: %w", certPath, keyPath, err)
	}
	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), bundlePath)
	if err != nil {
		return nil, nil, fmt.Errorf("authn: load trust bundle from %s: %w", bundlePath, err)
	}
	return svid, bundle, nil
}

// DefaultPollInterval is how often a FileSource looks for changed files
// unless WithPollInterval says otherwise.
const DefaultPollInterval = 5 * time.Second

// FileSourceOption configures a FileSource. Only this package defines them.
type FileSourceOption interface {
	apply(*FileSource)
}

type fileSourceOption func(*FileSource)

func (f fileSourceOption) apply(s *FileSource) { f(s) }

// WithPollInterval sets how often Run reads the files; d must be positive.
func WithPollInterval(d time.Duration) FileSourceOption {
	return fileSourceOption(func(s *FileSource) {
		if d > 0 {
			s.interval = d
		}
	})
}

// WithLogger sets the logger on which Run reports reloads and failures.
func WithLogger(l *slog.Logger) FileSourceOption {
	return fileSourceOption(func(s *FileSource) {
		if l != nil {
			s.log = l
		}
	})
}

// FileSource is an X.509-SVID and trust bundle read from PEM files and read
// again when they change, so that a process keeps presenting a current SVID
// while something else (mayflyd dev, a SPIRE agent's helper) renews the
// files. It implements x509svid.Source and x509bundle.Source and is safe for
// concurrent use.
type FileSource struct {
	certPath, keyPath, bundlePath string
	interval                      time.Duration
	log                           *slog.Logger

	mu      sync.RWMutex
	svid    *x509svid.SVID
	bundle  *x509bundle.Bundle
	raw     [3][]byte
	updated chan struct{}
}

// NewFileSource reads the files once and returns a FileSource, or the reason
// they cannot be used. Start Run to follow changes.
func NewFileSource(certPath, keyPath, bundlePath string, opts ...FileSourceOption) (*FileSource, error) {
	s := &FileSource{
		certPath:   certPath,
		keyPath:    keyPath,
		bundlePath: bundlePath,
		interval:   DefaultPollInterval,
		log:        slog.Default(),
		updated:    make(chan struct{}),
	}
	for _, o := range opts {
		o.apply(s)
	}
	s.log = s.log.With("component", "authn.filesource")
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetX509SVID returns the current X.509-SVID. It implements x509svid.Source.
func (s *FileSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid, nil
}

// GetX509BundleForTrustDomain returns the current bundle if td is the trust
// domain of the SVID. It implements x509bundle.Source.
func (s *FileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if td != s.bundle.TrustDomain() {
		return nil, fmt.Errorf("authn: no X.509 bundle for trust domain %q (the bundle file is for %q)", td.Name(), s.bundle.TrustDomain().Name())
	}
	return s.bundle, nil
}

// Updated returns a channel that is closed at the next change of SVID or
// bundle; call it again for the change after that.
func (s *FileSource) Updated() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.updated
}

// Reload reads the files now and, if their content changed and parses, makes
// it current. It reports whether it changed anything. On error the previous
// SVID and bundle stay current: a half-written renewal is picked up at the
// next Reload.
func (s *FileSource) Reload() (bool, error) {
	var raw [3][]byte
	for i, path := range []string{s.certPath, s.keyPath, s.bundlePath} {
		b, err := os.ReadFile(path)
		if err != nil {
			return false, fmt.Errorf("authn: %w", err)
		}
		raw[i] = b
	}
	s.mu.RLock()
	same := s.svid != nil && bytes.Equal(raw[0], s.raw[0]) && bytes.Equal(raw[1], s.raw[1]) && bytes.Equal(raw[2], s.raw[2])
	s.mu.RUnlock()
	if same {
		return false, nil
	}
	svid, err := x509svid.Parse(raw[0], raw[1])
	if err != nil {
		return false, fmt.Errorf("authn: X.509-SVID in %s and %s: %w", s.certPath, s.keyPath, err)
	}
	bundle, err := x509bundle.Parse(svid.ID.TrustDomain(), raw[2])
	if err != nil {
		return false, fmt.Errorf("authn: trust bundle in %s: %w", s.bundlePath, err)
	}
	s.mu.Lock()
	s.svid, s.bundle, s.raw = svid, bundle, raw
	close(s.updated)
	s.updated = make(chan struct{})
	s.mu.Unlock()
	return true, nil
}

// Run reloads the files every poll interval until ctx is done, then returns
// nil. A failed reload is logged and retried; the last good files stay in use.
func (s *FileSource) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		changed, err := s.Reload()
		switch {
		case err != nil:
			s.log.Warn("reload of SVID files failed; keeping the previous SVID", "error", err)
		case changed:
			svid, _ := s.GetX509SVID()
			s.log.Info("reloaded SVID files", "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
		}
	}
}
