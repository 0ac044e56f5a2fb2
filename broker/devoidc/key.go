package devoidc

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-jose/go-jose/v4"
)

// KeyFile is the name of the signing key in Config.KeyDir: an ECDSA P-256
// private key, PKCS#8 PEM, mode 0600.
const KeyFile = "signing-key.pem"

// loadOrCreateKey returns the key in dir, creating dir (0700) and the key
// the first time. Two processes that start at once end up with the same
// key: it is published with a hard link that only one of them can win.
func loadOrCreateKey(dir string) (*ecdsa.PrivateKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devoidc: key directory: %w", err)
	}
	path := filepath.Join(dir, KeyFile)
	key, err := readKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devoidc: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("devoidc: %w", err)
	}
	tmp, err := os.CreateTemp(dir, KeyFile+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("devoidc: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("devoidc: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("devoidc: writing the signing key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("devoidc: writing the signing key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("devoidc: publishing the signing key: %w", err)
	}
	return readKey(path) // ours, or the one another process published first
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("devoidc: %s holds no PKCS#8 PEM private key; remove it to start afresh", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devoidc: %s: %w", path, err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("devoidc: %s is not an ECDSA P-256 key; remove it to start afresh", path)
	}
	return ec, nil
}

// keyID is the RFC 7638 thumbprint of the public key.
func keyID(key *ecdsa.PrivateKey) (string, error) {
	jwk := jose.JSONWebKey{Key: key.Public()}
	t, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("devoidc: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(t), nil
}
