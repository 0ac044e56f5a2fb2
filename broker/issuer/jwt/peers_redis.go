package jwt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// RedisPeers is a PeerStore in one Redis hash, <prefix>:{jwks}:keys, one
// field per kid holding the PeerKey as JSON. It is small (a few keys per
// replica) and read every PeerRefresh by each replica.
type RedisPeers struct {
	client goredis.UniversalClient
	key    string
}

// NewRedisPeers returns a PeerStore in client under prefix (default "mf",
// the lease store's); the replicas behind one issuer URL must share it.
func NewRedisPeers(client goredis.UniversalClient, prefix string) (*RedisPeers, error) {
	if client == nil {
		return nil, errors.New("jwt: NewRedisPeers: nil client")
	}
	if prefix == "" {
		prefix = "mf"
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("jwt: NewRedisPeers: prefix %q must not contain '{' or '}'", prefix)
	}
	return &RedisPeers{client: client, key: prefix + ":{jwks}:keys"}, nil
}

// Publish implements PeerStore.
func (r *RedisPeers) Publish(ctx context.Context, keys []PeerKey, now time.Time) error {
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		b, err := json.Marshal(k)
		if err != nil {
			return err
		}
		args = append(args, k.KID, b)
	}
	if len(args) > 0 {
		if err := r.client.HSet(ctx, r.key, args...).Err(); err != nil {
			return err
		}
	}
	all, err := r.Fetch(ctx)
	if err != nil {
		return err
	}
	var stale []string
	for _, k := range all {
		if !now.Before(k.Until) {
			stale = append(stale, k.KID)
		}
	}
	if len(stale) > 0 {
		return r.client.HDel(ctx, r.key, stale...).Err()
	}
	return nil
}

// Fetch implements PeerStore. An entry that does not parse is skipped.
func (r *RedisPeers) Fetch(ctx context.Context) ([]PeerKey, error) {
	m, err := r.client.HGetAll(ctx, r.key).Result()
	if err != nil {
		return nil, err
	}
	out := make([]PeerKey, 0, len(m))
	for kid, v := range m {
		var k PeerKey
		if json.Unmarshal([]byte(v), &k) != nil || k.KID != kid {
			continue
		}
		out = append(out, k)
	}
	return out, nil
}
