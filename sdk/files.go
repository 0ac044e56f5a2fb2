package sdk

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// fileSource serves an X.509-SVID and its trust bundle from PEM files. It is
// consulted on every TLS handshake and reloads the files when their size or
// modification time changes, so certificates rotated on disk are picked up.
// A failed reload keeps serving the last good pair; the next handshake
// tries again.
type fileSource struct {
	certPath, keyPath, bundlePath string

	mu     sync.Mutex
	stamp  [3]fileStamp
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

type fileStamp struct {
	size    int64
	modTime time.Time
}

func newFileSource(certPath, keyPath, bundlePath string) (*fileSource, error) {
	s := &fileSource{certPath: certPath, keyPath: keyPath, bundlePath: bundlePath}
	if err := s.reloadLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// stamps returns the current size and modification time of the three files.
func (s *fileSource) stamps() ([3]fileStamp, error) {
	var out [3]fileStamp
	for i, p := range []string{s.certPath, s.keyPath, s.bundlePath} {
		fi, err := os.Stat(p)
		if err != nil {
			return out, err
		}
		out[i] = fileStamp{size: fi.Size(), modTime: fi.ModTime()}
	}
	return out, nil
}

// reloadLocked loads the files if they changed since the last load.
func (s *fileSource) reloadLocked() error {
	stamp, err := s.stamps()
	if err != nil {
		return fmt.Errorf("sdk: SVID files: %w", err)
	}
	if s.svid != nil && stamp == s.stamp {
		return nil
	}
	svid, err := x509svid.Load(s.certPath, s.keyPath)
	if err != nil {
		return fmt.Errorf("sdk: SVID files: %w", err)
	}
	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), s.bundlePath)
	if err != nil {
		return fmt.Errorf("sdk: SVID files: %w", err)
	}
	s.svid, s.bundle, s.stamp = svid, bundle, stamp
	return nil
}

// refresh reloads if needed and returns the current SVID and bundle.
func (s *fileSource) refresh() (*x509svid.SVID, *x509bundle.Bundle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A half-written rotation fails to parse; keep the previous pair and
	// try again on the next handshake.
	_ = s.reloadLocked()
	return s.svid, s.bundle
}

// GetX509SVID implements x509svid.Source.
func (s *fileSource) GetX509SVID() (*x509svid.SVID, error) {
	svid, _ := s.refresh()
	return svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source. Only the SVID's
// own trust domain is known.
func (s *fileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	_, bundle := s.refresh()
	return bundle.GetX509BundleForTrustDomain(td)
}
