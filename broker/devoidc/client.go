package devoidc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Approve signs in as user on the verification page at verificationURI,
// for the device authorization whose code is userCode: what a developer
// does in the browser, for scripts and tests. It works only with this dev
// provider.
func Approve(ctx context.Context, client *http.Client, verificationURI, userCode, user string) error {
	form := url.Values{"user_code": {userCode}, "user": {user}, "action": {"approve"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, verificationURI, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("devoidc: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("devoidc: verification page: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return fmt.Errorf("devoidc: signing in as %q: %s", user, e.Error)
	}
	return fmt.Errorf("devoidc: signing in as %q: verification page answered %s", user, resp.Status)
}

// HTTPClient returns an HTTP client that trusts the CA certificates in the
// PEM file bundlePath (the dev trust bundle, which signed the dev broker's
// HTTPS certificate): for the broker's OIDC verifier and for clients of
// the dev provider.
func HTTPClient(bundlePath string) (*http.Client, error) {
	pemBytes, err := os.ReadFile(bundlePath)
	if err != nil {
		return nil, fmt.Errorf("devoidc: trust bundle: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return nil, errors.New("devoidc: trust bundle " + bundlePath + " holds no PEM certificate")
	}
	return HTTPClientWithRoots(roots), nil
}

// HTTPClientWithRoots returns an HTTP client that trusts roots only.
func HTTPClientWithRoots(roots *x509.CertPool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}
