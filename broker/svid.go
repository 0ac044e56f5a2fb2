package broker

import (
	"crypto/tls"
	"errors"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// svidCertificate turns an X.509-SVID into a tls.Certificate.
func svidCertificate(svid *x509svid.SVID) (*tls.Certificate, error) {
	if len(svid.Certificates) == 0 {
		return nil, errors.New("broker: SVID has no certificate")
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}
