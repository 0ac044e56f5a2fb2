package audit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Checkpoint signature algorithms.
const (
	// AlgEd25519: Ed25519 over CheckpointMessage.
	AlgEd25519 = "ed25519"
	// AlgECDSASHA256: ECDSA (any NIST curve), ASN.1 DER signature over the
	// SHA-256 of CheckpointMessage.
	AlgECDSASHA256 = "ecdsa-sha256"
)

// checkpointDomain separates checkpoint signatures from any other use of
// the same key (the broker signs JWTs and SVIDs too).
const checkpointDomain = "mayfly.audit.checkpoint.v1\n"

// CheckpointMessage is what a checkpoint signs: the bytes
// "mayfly.audit.checkpoint.v1\n" || uint64 big-endian seq || the 32 bytes
// of hash. The prefix keeps the signature from meaning anything outside
// this audit trail.
func CheckpointMessage(seq uint64, hash string) ([]byte, error) {
	h, err := decodeHash(hash)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint hash: %w", err)
	}
	b := make([]byte, 0, len(checkpointDomain)+8+32)
	b = append(b, checkpointDomain...)
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, h[:]...), nil
}

// KeyID returns the id a checkpoint records for pub: the first 16 hex
// digits of the SHA-256 of its PKIX DER encoding.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("audit: public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8]), nil
}

// signerAlg returns the checkpoint algorithm for a signer's key.
func signerAlg(s crypto.Signer) (string, error) {
	switch s.Public().(type) {
	case ed25519.PublicKey:
		return AlgEd25519, nil
	case *ecdsa.PublicKey:
		return AlgECDSASHA256, nil
	}
	return "", fmt.Errorf("audit: checkpoint signer must hold an Ed25519 or ECDSA key, not %T", s.Public())
}

// signCheckpoint signs (seq, hash) with s.
func signCheckpoint(s crypto.Signer, alg, keyID string, seq uint64, hash string) (*Checkpoint, error) {
	msg, err := CheckpointMessage(seq, hash)
	if err != nil {
		return nil, err
	}
	var sig []byte
	switch alg {
	case AlgEd25519:
		sig, err = s.Sign(rand.Reader, msg, crypto.Hash(0))
	case AlgECDSASHA256:
		d := sha256.Sum256(msg)
		sig, err = s.Sign(rand.Reader, d[:], crypto.SHA256)
	default:
		err = fmt.Errorf("unknown algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	return &Checkpoint{Seq: seq, Hash: hash, KeyID: keyID, Alg: alg, Sig: base64.StdEncoding.EncodeToString(sig)}, nil
}

// keyRing holds the public keys Verify trusts, by KeyID.
type keyRing map[string]crypto.PublicKey

func newKeyRing(pubs []crypto.PublicKey) (keyRing, error) {
	r := keyRing{}
	for _, p := range pubs {
		if p == nil {
			continue
		}
		switch p.(type) {
		case ed25519.PublicKey, *ecdsa.PublicKey:
		default:
			return nil, fmt.Errorf("audit: public key must be Ed25519 or ECDSA, not %T", p)
		}
		id, err := KeyID(p)
		if err != nil {
			return nil, err
		}
		r[id] = p
	}
	return r, nil
}

// errUnknownKey: the checkpoint names a key that is not trusted.
var errUnknownKey = errors.New("signed by a key that is not trusted")

// verifyCheckpoint checks the signature of c with the ring.
func (r keyRing) verifyCheckpoint(c *Checkpoint) error {
	pub, ok := r[c.KeyID]
	if !ok {
		return fmt.Errorf("key %q: %w", c.KeyID, errUnknownKey)
	}
	msg, err := CheckpointMessage(c.Seq, c.Hash)
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	if err != nil {
		return errors.New("signature is not base64")
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if c.Alg != AlgEd25519 || !ed25519.Verify(k, msg, sig) {
			return errors.New("signature does not verify")
		}
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		if c.Alg != AlgECDSASHA256 || !ecdsa.VerifyASN1(k, d[:], sig) {
			return errors.New("signature does not verify")
		}
	}
	return nil
}
