package jwt

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"sync"
	"time"
)

// PeerKey is one replica's public key as it shares it: the JWK, and until
// when tokens it signed may still be presented (its retirement, or now
// for the active key, plus Config.Retain).
type PeerKey struct {
	// KID is the key id (the JWK's kid).
	KID string `json:"kid"`
	// JWK is the public key, as published in the JWKS.
	JWK json.RawMessage `json:"jwk"`
	// Until is when the key may be dropped.
	Until time.Time `json:"until"`
}

// PeerStore shares public keys between broker replicas behind one issuer
// URL, so that each serves, and verifies with, the keys of all: a
// verifier that fetches the JWKS from any replica finds the key that
// signed its token, whichever replica signed it. Only public keys are
// shared; each replica keeps its private keys to itself. RedisPeers is
// the implementation the broker uses.
//
// Whoever can write the store can add a key that verifiers trust, so the
// store must be as well protected as the leases (see the README on Redis).
type PeerStore interface {
	// Publish records keys (replacing entries of the same KID) and drops
	// entries whose Until is before now.
	Publish(ctx context.Context, keys []PeerKey, now time.Time) error
	// Fetch returns every entry.
	Fetch(ctx context.Context) ([]PeerKey, error)
}

// DefaultPeerRefresh is how often Run publishes and fetches peer keys.
const DefaultPeerRefresh = 10 * time.Second

// peerKeys is what this replica knows of the other replicas' keys.
type peerKeys struct {
	byKid map[string]*peerPub
	jwks  []json.RawMessage // their JWKs, sorted by kid
}

type peerPub struct {
	alg string
	pub crypto.PublicKey
}

// merged caches the JWKS served: this replica's keys and its peers'.
type merged struct {
	mu    sync.Mutex
	own   *keySet
	peers *peerKeys
	doc   []byte
}

// jwksDoc is the JWKS to serve.
func (i *Issuer) jwksDoc() []byte {
	own := i.keys.Load()
	peers := i.peers.Load()
	if peers == nil {
		return own.jwks
	}
	m := &i.merged
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.own == own && m.peers == peers {
		return m.doc
	}
	doc := struct {
		Keys []json.RawMessage `json:"keys"`
	}{}
	for _, k := range own.keys {
		b, _ := json.Marshal(k.jwk) // strings only: cannot fail
		doc.Keys = append(doc.Keys, b)
	}
	for _, raw := range peers.jwks {
		var kid struct {
			Kid string `json:"kid"`
		}
		_ = json.Unmarshal(raw, &kid) // parsed before: cannot fail
		if own.byKid[kid.Kid] == nil {
			doc.Keys = append(doc.Keys, raw)
		}
	}
	m.doc, _ = json.Marshal(doc)
	m.own, m.peers = own, peers
	return m.doc
}

// peerKey returns a peer's key by kid, for verification.
func (i *Issuer) peerKey(kid string) *peerPub {
	if p := i.peers.Load(); p != nil {
		return p.byKid[kid]
	}
	return nil
}

// syncPeers publishes this replica's keys and loads everyone's. A failure
// is logged; the last keys fetched stay in use.
func (i *Issuer) syncPeers(ctx context.Context) error {
	now := i.cfg.Clock()
	ks := i.keys.Load()
	mine := make([]PeerKey, 0, len(ks.keys))
	for n, k := range ks.keys {
		until := now.Add(i.cfg.Retain + pruneSlack)
		if n > 0 {
			until = ks.retiredAt(n).Add(i.cfg.Retain + pruneSlack)
		}
		raw, _ := json.Marshal(k.jwk)
		mine = append(mine, PeerKey{KID: k.kid, JWK: raw, Until: until.UTC()})
	}
	if err := i.cfg.Peers.Publish(ctx, mine, now); err != nil {
		return fmt.Errorf("jwt: publish keys to peers: %w", err)
	}
	all, err := i.cfg.Peers.Fetch(ctx)
	if err != nil {
		return fmt.Errorf("jwt: fetch peer keys: %w", err)
	}
	pk := &peerKeys{byKid: map[string]*peerPub{}}
	slices.SortFunc(all, func(a, b PeerKey) int {
		switch {
		case a.KID < b.KID:
			return -1
		case a.KID > b.KID:
			return 1
		}
		return 0
	})
	for _, e := range all {
		if !now.Before(e.Until) || ks.byKid[e.KID] != nil || pk.byKid[e.KID] != nil {
			continue
		}
		alg, pub, err := parsePublicJWK(e.JWK, e.KID)
		if err != nil {
			i.log.Warn("peer key ignored", slog.String("kid", e.KID), slog.Any("error", err))
			continue
		}
		pk.byKid[e.KID] = &peerPub{alg: alg, pub: pub}
		pk.jwks = append(pk.jwks, e.JWK)
	}
	i.peers.Store(pk)
	return nil
}

// runPeers keeps the peer keys in step until ctx ends: at once, every
// PeerRefresh, and after each rotation.
func (i *Issuer) runPeers(ctx context.Context, rotated <-chan struct{}) {
	for {
		sctx, cancel := context.WithTimeout(ctx, i.cfg.PeerRefresh)
		if err := i.syncPeers(sctx); err != nil && ctx.Err() == nil {
			i.log.Warn("jwt keys not shared with peers this round; will retry", slog.Any("error", err))
		}
		cancel()
		t := time.NewTimer(i.cfg.PeerRefresh)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-rotated:
			t.Stop()
		case <-t.C:
		}
	}
}

// parsePublicJWK reads a public JWK of one of the algorithms the issuer
// signs with, and checks that its kid is its RFC 7638 thumbprint, so a
// key cannot be published under another key's id.
func parsePublicJWK(raw json.RawMessage, wantKid string) (string, crypto.PublicKey, error) {
	var j jwk
	if err := json.Unmarshal(raw, &j); err != nil {
		return "", nil, fmt.Errorf("not a JWK: %w", err)
	}
	dec := func(s string) ([]byte, error) { return b64.DecodeString(s) }
	var (
		thumb string
		pub   crypto.PublicKey
		alg   string
	)
	switch {
	case j.Kty == "EC" && j.Crv == "P-256" && j.Alg == ES256:
		x, err1 := dec(j.X)
		y, err2 := dec(j.Y)
		if err := errors.Join(err1, err2); err != nil || len(x) != 32 || len(y) != 32 {
			return "", nil, errors.New("bad EC coordinates")
		}
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return "", nil, fmt.Errorf("EC point: %w", err)
		}
		pub, alg = k, ES256
		thumb = `{"crv":"P-256","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`
	case j.Kty == "RSA" && j.Alg == RS256:
		n, err1 := dec(j.N)
		e, err2 := dec(j.E)
		if err := errors.Join(err1, err2); err != nil || len(e) == 0 || len(e) > 4 {
			return "", nil, errors.New("bad RSA modulus or exponent")
		}
		k := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if k.N.BitLen() < 2048 {
			return "", nil, fmt.Errorf("RSA key of %d bits", k.N.BitLen())
		}
		pub, alg = k, RS256
		thumb = `{"e":"` + j.E + `","kty":"RSA","n":"` + j.N + `"}`
	case j.Kty == "OKP" && j.Crv == "Ed25519" && j.Alg == EdDSA:
		x, err := dec(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return "", nil, errors.New("bad Ed25519 key")
		}
		pub, alg = ed25519.PublicKey(x), EdDSA
		thumb = `{"crv":"Ed25519","kty":"OKP","x":"` + j.X + `"}`
	default:
		return "", nil, fmt.Errorf("unsupported key (kty %q, crv %q, alg %q)", j.Kty, j.Crv, j.Alg)
	}
	sum := sha256.Sum256([]byte(thumb))
	if kid := b64.EncodeToString(sum[:]); kid != j.Kid || kid != wantKid {
		return "", nil, errors.New("kid is not the key's thumbprint")
	}
	return alg, pub, nil
}
