package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/access"
)

var _ access.Generations = (*Store)(nil)

// newGeneration is a fresh shard token: random (as the lease store's
// shard epochs), so no two writes, and no write after a flush, leave the
// same one.
func newGeneration() string { return fmt.Sprintf("%016x", rand.Uint64()) }

// Generation returns the shard tokens together (see doc.go): one MGET on
// a single server (sharing a pipeline with concurrent calls), one
// pipeline of GETs per node in a cluster. It implements
// access.Generations.
func (s *Store) Generation(ctx context.Context) (string, error) {
	if err := live(ctx); err != nil {
		return "", err
	}
	ks := s.gens
	vals := make([]string, len(ks))
	if _, cluster := s.c.(*goredis.ClusterClient); !cluster {
		args := make([]any, 0, len(ks)+1)
		args = append(args, "MGET")
		for _, k := range ks {
			args = append(args, k)
		}
		res, err := s.batch.Do(ctx, args...)
		if err != nil {
			return "", fmt.Errorf("redis: read the generation: %w", err)
		}
		list, ok := res.([]any)
		if !ok || len(list) != len(ks) {
			return "", fmt.Errorf("redis: read the generation: unexpected reply %T", res)
		}
		for i, v := range list {
			vals[i], _ = v.(string)
		}
	} else {
		pipe := s.c.Pipeline()
		cmds := make([]*goredis.StringCmd, len(ks))
		for i, k := range ks {
			cmds[i] = pipe.Get(ctx, k)
		}
		_, _ = pipe.Exec(ctx) // each command's error is checked below
		for i, c := range cmds {
			v, err := c.Result()
			if err != nil && !errors.Is(err, goredis.Nil) {
				return "", fmt.Errorf("redis: read the generation: %w", err)
			}
			vals[i] = v
		}
	}
	return strings.Join(vals, "."), nil
}
