package audit

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadOrCreateSigningKey reads the checkpoint signing key from path (a
// PKCS #8 PEM private key: Ed25519 or ECDSA), creating an Ed25519 key
// there (mode 0600, directory 0700) when the file does not exist. It
// writes the public key beside it, at path + ".pub" (PKIX PEM, 0644), for
// verifiers (`mayfly audit verify --key FILE.pub`): for a new key this
// must succeed; for an existing one it is skipped when the file is
// already there and tried otherwise (a read-only mount is fine). Replicas
// that share one trail should share the key.
func LoadOrCreateSigningKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("audit: signing key: %w", err)
		}
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("audit: signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("audit: signing key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit: signing key: %w", err)
		}
		werr := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("audit: signing key %s: %w", path, werr)
		}
		return priv, writePublicKey(path+".pub", priv.Public())
	case err != nil:
		return nil, fmt.Errorf("audit: signing key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("audit: signing key %s: not a PEM \"PRIVATE KEY\" (PKCS #8)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit: signing key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("audit: signing key %s: %T cannot sign", path, k)
	}
	if _, err := signerAlg(s); err != nil {
		return nil, fmt.Errorf("audit: signing key %s: %w", path, err)
	}
	// Best effort: a key mounted read-only (a Kubernetes Secret) comes
	// with its public key beside it, or the operator keeps it elsewhere.
	_ = writePublicKey(path+".pub", s.Public())
	return s, nil
}

func writePublicKey(path string, pub crypto.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("audit: public key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return nil
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("audit: public key: %w", err)
	}
	return nil
}

// LoadPublicKeys reads the public keys in a PEM file for Verify: PUBLIC
// KEY blocks (PKIX), or a PRIVATE KEY (PKCS #8) whose public half is used.
func LoadPublicKeys(path string) ([]crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: key: %w", err)
	}
	var out []crypto.PublicKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		switch block.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("audit: key %s: %w", path, err)
			}
			out = append(out, k)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("audit: key %s: %w", path, err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("audit: key %s: %T has no public key", path, k)
			}
			out = append(out, s.Public())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("audit: key %s: no PEM PUBLIC KEY or PRIVATE KEY block", path)
	}
	return out, nil
}
