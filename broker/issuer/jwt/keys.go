package jwt

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
)

// rsaBits is the size of generated RS256 keys: what AWS, Google and most
// OIDC providers use, and quick enough to generate on rotation.
const rsaBits = 2048

// pruneSlack keeps a retired key published a little past Retain, for
// verifiers with clock skew and leeway, and for a token signed in the
// instant the key was being retired.
const pruneSlack = time.Minute

// rotateRetry is how long Run waits after a failed rotation (a full disk)
// before it tries again; the old key keeps signing meanwhile.
const rotateRetry = time.Minute

// maxWait caps one sleep of Run, so a wall clock that jumps is noticed.
const maxWait = time.Minute

// keyFileTime is the creation time in a key file's name; it sorts the
// files by age in a directory listing.
const keyFileTime = "20060102T150405.000000000Z"

// signingKey is one key pair. It never changes once built.
type signingKey struct {
	kid     string // RFC 7638 JWK thumbprint (SHA-256), base64url
	alg     string
	method  gojwt.SigningMethod
	priv    crypto.Signer // *ecdsa.PrivateKey, *rsa.PrivateKey or ed25519.PrivateKey
	pub     crypto.PublicKey
	jwk     jwk
	created time.Time
	path    string // key file; "" when in memory only
	header  string // base64url JOSE header of its tokens and the dot after it
	sigLen  int    // length of its raw signatures
}

// keySet is the published state, swapped atomically as a whole: signers
// load the active key and verifiers the kid index without a lock.
type keySet struct {
	keys  []*signingKey // newest first; keys[0] is active
	byKid map[string]*signingKey
	jwks  []byte   // the JWKS document, rendered once
	algs  []string // algorithms of the published keys, sorted
}

func (ks *keySet) active() *signingKey { return ks.keys[0] }

// retiredAt is when keys[n] stopped signing: when its successor was made.
func (ks *keySet) retiredAt(n int) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return ks.keys[n-1].created
}

// jwk is a public key as RFC 7517 publishes it.
type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

var b64 = base64.RawURLEncoding

// newSigningKey wraps a private key and derives its algorithm, public JWK
// and kid.
func newSigningKey(priv crypto.Signer, created time.Time) (*signingKey, error) {
	k := &signingKey{priv: priv, pub: priv.Public(), created: created}
	var thumb string // RFC 7638: required members, lexicographic order, no spaces
	switch p := priv.(type) {
	case *ecdsa.PrivateKey:
		if p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on %s; only P-256 (ES256) is supported", p.Curve.Params().Name)
		}
		raw, err := p.PublicKey.Bytes() // 0x04 || X || Y, 32 bytes each
		if err != nil {
			return nil, err
		}
		k.alg, k.method = ES256, gojwt.SigningMethodES256
		k.jwk = jwk{Kty: "EC", Crv: "P-256", X: b64.EncodeToString(raw[1:33]), Y: b64.EncodeToString(raw[33:65])}
		thumb = `{"crv":"P-256","kty":"EC","x":"` + k.jwk.X + `","y":"` + k.jwk.Y + `"}`
	case *rsa.PrivateKey:
		if p.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits; at least 2048 are required", p.N.BitLen())
		}
		k.alg, k.method = RS256, gojwt.SigningMethodRS256
		k.jwk = jwk{Kty: "RSA", N: b64.EncodeToString(p.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(p.E)).Bytes())}
		thumb = `{"e":"` + k.jwk.E + `","kty":"RSA","n":"` + k.jwk.N + `"}`
	case ed25519.PrivateKey:
		k.alg, k.method = EdDSA, gojwt.SigningMethodEdDSA
		k.jwk = jwk{Kty: "OKP", Crv: "Ed25519", X: b64.EncodeToString(p.Public().(ed25519.PublicKey))}
		thumb = `{"crv":"Ed25519","kty":"OKP","x":"` + k.jwk.X + `"}`
	default:
		return nil, fmt.Errorf("unsupported key type %T", priv)
	}
	sum := sha256.Sum256([]byte(thumb))
	k.kid = b64.EncodeToString(sum[:])
	k.jwk.Kid, k.jwk.Alg, k.jwk.Use = k.kid, k.alg, "sig"
	k.header, k.sigLen = tokenHeader(k.alg, k.kid), signatureLen(priv)
	return k, nil
}

func generateKey(alg string, created time.Time) (*signingKey, error) {
	var (
		priv crypto.Signer
		err  error
	)
	switch alg {
	case ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		priv, err = rsa.GenerateKey(rand.Reader, rsaBits)
	case EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		err = fmt.Errorf("unsupported algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("jwt: generate %s key: %w", alg, err)
	}
	k, err := newSigningKey(priv, created)
	if err != nil {
		return nil, fmt.Errorf("jwt: generate %s key: %w", alg, err)
	}
	return k, nil
}

// newKeySet renders the published state of keys (newest first).
func newKeySet(keys []*signingKey) *keySet {
	ks := &keySet{keys: keys, byKid: make(map[string]*signingKey, len(keys))}
	doc := struct {
		Keys []jwk `json:"keys"`
	}{Keys: make([]jwk, 0, len(keys))}
	for _, k := range keys {
		ks.byKid[k.kid] = k
		doc.Keys = append(doc.Keys, k.jwk)
		if !slices.Contains(ks.algs, k.alg) {
			ks.algs = append(ks.algs, k.alg)
		}
	}
	slices.Sort(ks.algs)
	ks.jwks, _ = json.Marshal(doc) // strings only: cannot fail
	return ks
}

// KeyInfo describes one published signing key, for operators and tests.
type KeyInfo struct {
	// KID is the key id: the RFC 7638 SHA-256 thumbprint, base64url.
	KID string
	// Algorithm is ES256, RS256 or EdDSA.
	Algorithm string
	// Created is when the key was generated.
	Created time.Time
	// Retired is when a newer key replaced it; zero for the active key.
	Retired time.Time
	// Active reports whether the key signs new tokens.
	Active bool
	// File is the key file; empty when keys live in memory only.
	File string
}

// Keys lists the published keys, the active one first.
func (i *Issuer) Keys() []KeyInfo {
	ks := i.keys.Load()
	out := make([]KeyInfo, len(ks.keys))
	for n, k := range ks.keys {
		out[n] = KeyInfo{KID: k.kid, Algorithm: k.alg, Created: k.created, Retired: ks.retiredAt(n), Active: n == 0, File: k.path}
	}
	return out
}

// Rotate makes a new key of Config.Algorithm the active one. The key it
// replaces stays published for Config.Retain, so tokens it signed keep
// verifying until they expire; keys retired longer ago are pruned, from
// KeyDir too. Signing goes on during a rotation without waiting.
func (i *Issuer) Rotate() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.rotateLocked(i.cfg.Clock()); err != nil {
		return err
	}
	select { // let Run recompute its schedule
	case i.changed <- struct{}{}:
	default:
	}
	return nil
}

func (i *Issuer) rotateLocked(now time.Time) error {
	now = now.UTC().Round(0)
	var keys []*signingKey
	if ks := i.keys.Load(); ks != nil {
		keys = ks.keys
		// Creation times order the keys (and the files after a restart);
		// a clock that stepped back must not put the new key behind.
		if len(keys) > 0 && !now.After(keys[0].created) {
			now = keys[0].created.Add(time.Nanosecond)
		}
	}
	k, err := generateKey(i.cfg.Algorithm, now)
	if err != nil {
		return err
	}
	if i.cfg.KeyDir != "" {
		if err := writeKeyFile(i.cfg.KeyDir, k); err != nil {
			return err
		}
	}
	next := append([]*signingKey{k}, keys...)
	i.keys.Store(newKeySet(next))
	attrs := []any{slog.String("kid", k.kid), slog.String("alg", k.alg)}
	if len(keys) > 0 {
		attrs = append(attrs, slog.String("retired_kid", keys[0].kid))
	}
	i.log.Info("jwt signing key rotated", attrs...)
	select { // share the new key with the peers at once
	case i.rotated <- struct{}{}:
	default:
	}
	i.pruneLocked(now)
	return nil
}

// pruneLocked drops keys retired more than Retain (plus slack) before now.
func (i *Issuer) pruneLocked(now time.Time) {
	ks := i.keys.Load()
	keep := len(ks.keys)
	for n := 1; n < len(ks.keys); n++ {
		if !now.Before(ks.retiredAt(n).Add(i.cfg.Retain + pruneSlack)) {
			keep = n // retirement times fall with age: the rest go too
			break
		}
	}
	if keep == len(ks.keys) {
		return
	}
	i.keys.Store(newKeySet(slices.Clone(ks.keys[:keep])))
	for _, k := range ks.keys[keep:] {
		if k.path != "" {
			if err := os.Remove(k.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				i.log.Warn("jwt signing key unpublished but its file remains", slog.String("kid", k.kid), slog.String("file", k.path), slog.Any("error", err))
				continue
			}
		}
		i.log.Info("jwt signing key pruned", slog.String("kid", k.kid), slog.String("alg", k.alg))
	}
}

// nextEventLocked is when Run next has work: a due rotation or prune.
func (i *Issuer) nextEventLocked() time.Time {
	ks := i.keys.Load()
	var next time.Time
	if i.cfg.RotateEvery > 0 {
		next = ks.active().created.Add(i.cfg.RotateEvery)
		if next.Before(i.rotateRetryAt) {
			next = i.rotateRetryAt
		}
	}
	if n := len(ks.keys) - 1; n > 0 { // the oldest retired key goes first
		prune := ks.retiredAt(n).Add(i.cfg.Retain + pruneSlack)
		if next.IsZero() || prune.Before(next) {
			next = prune
		}
	}
	return next
}

// Run rotates the active key every Config.RotateEvery (counted from the
// active key's creation, so restarts keep the schedule) and prunes keys
// retired more than Config.Retain ago. A failed rotation is logged and
// retried a minute later while the current key keeps signing. It returns
// nil when ctx ends.
func (i *Issuer) Run(ctx context.Context) error {
	if i.cfg.Peers != nil {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			i.runPeers(ctx, i.rotated)
		}()
	}
	for {
		i.mu.Lock()
		next := i.nextEventLocked()
		i.mu.Unlock()
		wait := maxWait
		if !next.IsZero() {
			wait = min(maxWait, max(0, next.Sub(i.cfg.Clock())))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-i.changed:
			t.Stop()
			continue
		case <-t.C:
		}
		i.tick()
	}
}

// tick does the work that is due now.
func (i *Issuer) tick() {
	i.mu.Lock()
	defer i.mu.Unlock()
	now := i.cfg.Clock()
	if i.cfg.RotateEvery > 0 && !now.Before(i.keys.Load().active().created.Add(i.cfg.RotateEvery)) && !now.Before(i.rotateRetryAt) {
		if err := i.rotateLocked(now); err != nil {
			i.rotateRetryAt = now.Add(rotateRetry)
			i.log.Error("jwt signing key rotation failed; the current key keeps signing", slog.Any("error", err), slog.Time("retry_at", i.rotateRetryAt))
		}
	}
	i.pruneLocked(now)
}

// openKeyDir creates dir (0700) if missing and tightens an existing one
// that group or others can reach, so no one but the broker reads its keys.
func openKeyDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("jwt: Config.KeyDir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("jwt: Config.KeyDir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("jwt: Config.KeyDir %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("jwt: Config.KeyDir %s has mode %04o and cannot be made 0700: %w", dir, perm, err)
		}
		log.Warn("jwt key directory mode tightened", slog.String("dir", dir), slog.String("was", fmt.Sprintf("%04o", perm)), slog.String("now", "0700"))
	}
	return nil
}

// keyFileName is "<created>_<kid>.pem": the creation time in UTC, then the
// kid, which the loader checks against the key.
func keyFileName(k *signingKey) string {
	return k.created.UTC().Format(keyFileTime) + "_" + k.kid + ".pem"
}

// writeKeyFile writes k as PKCS#8 PEM, mode 0600, atomically: a crash
// leaves either no file or the whole key.
func writeKeyFile(dir string, k *signingKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return fmt.Errorf("jwt: encode key %s: %w", k.kid, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	f, err := os.CreateTemp(dir, ".key-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("jwt: write key %s: %w", k.kid, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("jwt: write key %s: %w", k.kid, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("jwt: write key %s: %w", k.kid, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("jwt: write key %s: %w", k.kid, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("jwt: write key %s: %w", k.kid, err)
	}
	path := filepath.Join(dir, keyFileName(k))
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("jwt: write key %s: %w", k.kid, err)
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable
		_ = d.Sync()
		d.Close()
	}
	k.path = path
	return nil
}

// loadKeys reads every *.pem in dir, newest first.
func loadKeys(dir string) ([]*signingKey, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("jwt: Config.KeyDir: %w", err)
	}
	var keys []*signingKey
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".pem") {
			continue // temporary files of an interrupted write, and others
		}
		k, err := loadKeyFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b *signingKey) int { return b.created.Compare(a.created) })
	for n := 1; n < len(keys); n++ {
		if keys[n].kid == keys[n-1].kid || keys[n].created.Equal(keys[n-1].created) {
			return nil, fmt.Errorf("jwt: key files %s and %s hold the same key or the same creation time", keys[n-1].path, keys[n].path)
		}
	}
	return keys, nil
}

func loadKeyFile(path string) (*signingKey, error) {
	base := strings.TrimSuffix(filepath.Base(path), ".pem")
	ts, kid, ok := strings.Cut(base, "_")
	created, err := time.Parse(keyFileTime, ts)
	if !ok || err != nil {
		return nil, fmt.Errorf("jwt: key file %s: name is not <%s>_<kid>.pem", path, keyFileTime)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("jwt: key file %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("jwt: key file %s has mode %04o; want 0600", path, perm)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwt: key file %s: %w", path, err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("jwt: key file %s: want exactly one PKCS#8 PRIVATE KEY PEM block", path)
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("jwt: key file %s: %w", path, err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("jwt: key file %s: unsupported key type %T", path, priv)
	}
	k, err := newSigningKey(signer, created)
	if err != nil {
		return nil, fmt.Errorf("jwt: key file %s: %w", path, err)
	}
	if k.kid != kid {
		return nil, fmt.Errorf("jwt: key file %s: kid in the name does not match the key (thumbprint %s)", path, k.kid)
	}
	k.path = path
	return k, nil
}
