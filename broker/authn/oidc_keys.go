package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// oidcKeyOutcomeKey carries an *oidcKeyOutcome in the context of one
// verification, so that the key set can tell the verifier whether a
// failure was the provider's (keys unreachable) or the token's (signature)
// after go-oidc has turned its error into text.
type oidcKeyOutcomeKey struct{}

type oidcKeyOutcome struct {
	fetchErr error // the keys could not be fetched: not the caller's fault
	sigErr   error // the signature is bad: the caller is refused
}

// oidcKeySet is the go-oidc KeySet of one provider: its JWKS, fetched on
// first use, again when older than oidcKeysRefreshAfter, and again (at most
// every oidcKeysMinRefresh) when a token names a key it does not hold, which
// is how providers rotate keys.
type oidcKeySet struct {
	url     string
	client  *http.Client
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger

	fetchMu sync.Mutex // one fetch at a time

	mu      sync.RWMutex
	keys    []jose.JSONWebKey
	fetched time.Time // zero until the first successful fetch
}

// VerifySignature implements oidc.KeySet.
func (k *oidcKeySet) VerifySignature(ctx context.Context, token string) ([]byte, error) {
	outcome, _ := ctx.Value(oidcKeyOutcomeKey{}).(*oidcKeyOutcome)
	if outcome == nil {
		outcome = &oidcKeyOutcome{}
	}
	algs := make([]jose.SignatureAlgorithm, len(oidcAlgorithms))
	for i, a := range oidcAlgorithms {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	jws, err := jose.ParseSigned(token, algs)
	if err != nil || len(jws.Signatures) != 1 {
		outcome.sigErr = errors.New("not a JWS with one signature by an accepted algorithm")
		return nil, outcome.sigErr
	}
	header := jws.Signatures[0].Header

	keys, fetched := k.cached()
	if fetched.IsZero() || k.now().Sub(fetched) >= oidcKeysRefreshAfter {
		fresh, err := k.fetch(ctx, fetched)
		switch {
		case err == nil:
			keys, fetched = fresh, k.now()
		case fetched.IsZero():
			outcome.fetchErr = err
			return nil, err
		default:
			k.log.Warn("OIDC keys could not be refreshed; using the ones fetched before", "error", err, "fetched", fetched)
		}
	}
	payload, known := verifyWithKeys(jws, header, keys)
	if payload != nil {
		return payload, nil
	}
	if !known && k.now().Sub(fetched) >= oidcKeysMinRefresh {
		// A key the broker has not seen: the provider may have rotated.
		fresh, err := k.fetch(ctx, fetched)
		if err != nil {
			outcome.fetchErr = err
			return nil, err
		}
		if payload, known = verifyWithKeys(jws, header, fresh); payload != nil {
			return payload, nil
		}
	}
	if !known {
		outcome.sigErr = fmt.Errorf("signed with key %q, which the provider does not publish", header.KeyID)
	} else {
		outcome.sigErr = errors.New("signature does not verify with the provider's keys")
	}
	return nil, outcome.sigErr
}

// verifyWithKeys tries the keys whose ID is the header's (every key when
// the header names none) and whose algorithm, if the key says, is the
// header's. It returns the payload when one verifies, and whether any key
// was a candidate.
func verifyWithKeys(jws *jose.JSONWebSignature, header jose.Header, keys []jose.JSONWebKey) (payload []byte, known bool) {
	for i := range keys {
		key := &keys[i]
		if header.KeyID != "" && key.KeyID != header.KeyID {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != header.Algorithm {
			continue
		}
		known = true
		if p, err := jws.Verify(key); err == nil {
			return p, true
		}
	}
	return nil, known
}

func (k *oidcKeySet) cached() ([]jose.JSONWebKey, time.Time) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys, k.fetched
}

// fetch gets the JWKS unless another caller fetched it after since, in
// which case it returns that.
func (k *oidcKeySet) fetch(ctx context.Context, since time.Time) ([]jose.JSONWebKey, error) {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	if keys, fetched := k.cached(); fetched.After(since) {
		return keys, nil
	}
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("keys of the provider: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("keys of the provider could not be fetched: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("keys of the provider could not be read from %s: %w", k.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("keys of the provider could not be fetched: GET %s: %s", k.url, resp.Status)
	}
	keys, err := parseOIDCKeys(body)
	if err != nil {
		return nil, fmt.Errorf("keys of the provider at %s: %w", k.url, err)
	}
	k.mu.Lock()
	k.keys, k.fetched = keys, k.now()
	k.mu.Unlock()
	k.log.Debug("fetched OIDC keys", "url", k.url, "keys", len(keys))
	return keys, nil
}

// parseOIDCKeys reads a JWKS, keeping the public signing keys of the kinds
// the accepted algorithms use and skipping the rest (as RFC 7517 §5 says).
// Symmetric keys are never kept.
func parseOIDCKeys(body []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, errors.New("not a JSON Web Key Set")
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		if err := json.Unmarshal(raw, &key); err != nil {
			continue
		}
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		key = key.Public()
		switch key.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			keys = append(keys, key)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("the JSON Web Key Set holds no public signing key")
	}
	return keys, nil
}
