package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/internal/redisbatch"
)

// Defaults for Options.
const (
	// DefaultShards is the number of shards when Options.Shards is 0.
	DefaultShards = 16
	// DefaultPrefix starts every key when Options.Prefix is "".
	DefaultPrefix = "mf:access"
	// DefaultRecordRetention is how long decision records are kept when
	// Options.RecordRetention is 0.
	DefaultRecordRetention = 90 * 24 * time.Hour
	// DefaultWaitTimeout bounds WAIT when Options.WaitReplicas is set and
	// Options.WaitTimeout is 0.
	DefaultWaitTimeout = time.Second
)

const (
	// maxShards: more shards than cluster slots spread nothing further.
	maxShards = 16384
	// listBudget is how many index entries one list script examines.
	listBudget = 1000
	// trimBatch is how many expired decision records one AppendRecord
	// removes from its shard at most.
	trimBatch = 16
	// maxMillis bounds stored times: Lua compares them as doubles, exact
	// up to 2^53.
	maxMillis = 1<<53 - 1
)

// Options configure a Store. The zero value is valid: 16 shards, prefix
// "mf:access", decision records kept 90 days, no WAIT.
type Options struct {
	// Shards is how many shards (hash tags) records are spread over; a
	// record's shard follows from its id (a mark's from its key). Default
	// 16. Choose it once: changing it strands what was written under the
	// old count. With Redis Cluster it should be a few times the number
	// of primaries, so that every primary holds some shards.
	Shards int
	// Prefix starts every key (default "mf:access"). It must not contain
	// '{' or '}', which would change the hash tag. Several stores can
	// share one Redis under different prefixes; the key names never
	// collide with the lease store's, even under one prefix.
	Prefix string
	// RecordRetention is how long a decision record is kept: AppendRecord
	// removes, from the shard it writes to, up to 16 records whose At is
	// more than RecordRetention before the new record's At. Default 90
	// days. The times are the records' own, never Redis's clock.
	RecordRetention time.Duration
	// WaitReplicas, if above 0, makes every write wait (WAIT) until that
	// many replicas acknowledged it. If fewer do within WaitTimeout, the
	// call returns an error, although the write may still have happened
	// on the primary and some replicas: callers treat it as the store
	// being unavailable (the service fails closed). Only with a
	// *redis.Client (single node or Sentinel failover) or a
	// *redis.ClusterClient.
	WaitReplicas int
	// WaitTimeout bounds each WAIT (default 1s).
	WaitTimeout time.Duration
}

// Store is an access.Store on Redis or Redis Cluster. It is safe for
// concurrent use; it holds no state between calls but the client, so any
// number of broker replicas can share one Redis.
type Store struct {
	c      goredis.UniversalClient
	batch  *redisbatch.Batcher // concurrent calls share pipelines (without WaitReplicas)
	opts   Options
	shards []keys
	gens   []string // the generation key of each shard (Generation)
}

var _ access.Store = (*Store)(nil)

// New returns a Store on client, a *redis.Client (single node, or Sentinel
// failover) or a *redis.ClusterClient; a *redis.Ring is accepted without
// WaitReplicas. New does not contact Redis. Use a client with
// ContextTimeoutEnabled so that a call gives up at its context's deadline
// when Redis does not answer.
func New(client goredis.UniversalClient, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redis: nil client")
	}
	switch {
	case opts.Shards < 0 || opts.Shards > maxShards:
		return nil, fmt.Errorf("redis: Shards %d is not between 1 and %d", opts.Shards, maxShards)
	case strings.ContainsAny(opts.Prefix, "{}"):
		return nil, fmt.Errorf("redis: Prefix %q contains '{' or '}'", opts.Prefix)
	case opts.RecordRetention < 0:
		return nil, fmt.Errorf("redis: RecordRetention %s is negative", opts.RecordRetention)
	case opts.WaitReplicas < 0:
		return nil, fmt.Errorf("redis: WaitReplicas %d is negative", opts.WaitReplicas)
	case opts.WaitTimeout < 0:
		return nil, fmt.Errorf("redis: WaitTimeout %s is negative", opts.WaitTimeout)
	}
	if opts.Shards == 0 {
		opts.Shards = DefaultShards
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.RecordRetention == 0 {
		opts.RecordRetention = DefaultRecordRetention
	}
	if opts.RecordRetention < time.Millisecond {
		return nil, fmt.Errorf("redis: RecordRetention %s is under a millisecond", opts.RecordRetention)
	}
	if opts.WaitReplicas > 0 {
		if opts.WaitTimeout == 0 {
			opts.WaitTimeout = DefaultWaitTimeout
		}
		switch client.(type) {
		case *goredis.Client, *goredis.ClusterClient:
		default:
			return nil, fmt.Errorf("redis: WaitReplicas needs a *redis.Client or *redis.ClusterClient, not %T", client)
		}
	}
	s := &Store{c: client, batch: redisbatch.New(client, 0, 0), opts: opts, shards: make([]keys, opts.Shards)}
	for i := range s.shards {
		s.shards[i] = keys{shardPrefix(opts.Prefix, i)}
		s.gens = append(s.gens, s.shards[i].gen())
	}
	return s, nil
}

// Options returns the options in force, defaults filled in.
func (s *Store) Options() Options { return s.opts }

// Shard returns the shard of a record id (request, grant, certification,
// decision record) or of a mark key.
func (s *Store) Shard(id string) int { return shardOf(id, len(s.shards)) }

func (s *Store) keysOf(id string) keys { return s.shards[s.Shard(id)] }

// run runs a write script on the node that owns keys[0] and, with
// WaitReplicas, WAITs on the same connection for the replicas. Without
// WaitReplicas the scripts of concurrent calls share pipelines.
func (s *Store) run(ctx context.Context, sc *goredis.Script, keys []string, args ...any) (any, error) {
	if s.opts.WaitReplicas == 0 {
		return s.batch.Run(ctx, sc, keys, args...)
	}
	var node *goredis.Client
	switch c := s.c.(type) {
	case *goredis.Client:
		node = c
	case *goredis.ClusterClient:
		n, err := c.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		node = n
	}
	// WAIT counts the replicas that acknowledged this connection's writes,
	// so the script and the WAIT share one connection.
	conn := node.Conn()
	defer conn.Close()
	res, err := sc.Run(ctx, conn, keys, args...).Result()
	if err != nil {
		return nil, err // refused (nothing written), or no answer: no WAIT either way
	}
	n, err := conn.Wait(ctx, s.opts.WaitReplicas, s.opts.WaitTimeout).Result()
	if err != nil {
		return nil, fmt.Errorf("WAIT after the write (which may have happened): %w", err)
	}
	if n < int64(s.opts.WaitReplicas) {
		return nil, fmt.Errorf("WAIT: %d of %d replicas acknowledged the write within %s (it may still have happened)",
			n, s.opts.WaitReplicas, s.opts.WaitTimeout)
	}
	return res, nil
}

// fail turns a script's error reply into an access sentinel where it is
// one, and wraps anything else (Redis unreachable, OOM, READONLY, a key of
// the wrong type) as a plain store error.
func fail(op, what, id string, err error) error {
	var re goredis.Error
	if errors.As(err, &re) {
		code, rest, _ := strings.Cut(strings.TrimPrefix(re.Error(), "ERR "), " ")
		switch code {
		case "MFNOTFOUND":
			return fmt.Errorf("redis: %s %s: %w", what, id, access.ErrNotFound)
		case "MFEXISTS":
			return fmt.Errorf("redis: %s %s: %w", what, id, access.ErrExists)
		case "MFCONFLICT":
			return fmt.Errorf("redis: %s %s is at version %s: %w", what, id, rest, access.ErrConflict)
		case "MFBAD":
			return fmt.Errorf("redis: %s %s %s: %s", op, what, id, rest)
		}
	}
	return fmt.Errorf("redis: %s %s %s: %w", op, what, id, err)
}

func live(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// evalEach runs a read-only script n times in one pipeline (split by node
// in a cluster), loading the script once if a node does not have it.
func (s *Store) evalEach(ctx context.Context, sc *goredis.Script, n int, call func(i int) ([]string, []any)) ([]*goredis.Cmd, error) {
	for attempt := 0; ; attempt++ {
		pipe := s.c.Pipeline()
		cmds := make([]*goredis.Cmd, n)
		for i := range n {
			ks, args := call(i)
			cmds[i] = sc.EvalSha(ctx, pipe, ks, args...)
		}
		pipe.Exec(ctx)
		var err error
		noScript := false
		for _, c := range cmds {
			if e := c.Err(); e != nil {
				if goredis.HasErrorPrefix(e, "NOSCRIPT") {
					noScript = true
				} else if err == nil {
					err = e
				}
			}
		}
		if noScript && attempt == 0 && err == nil {
			if err := sc.Load(ctx, s.c).Err(); err != nil {
				return nil, err
			}
			continue
		}
		if err == nil && noScript {
			err = errors.New("script not loaded")
		}
		if err != nil {
			return nil, plain(err)
		}
		return cmds, nil
	}
}

// plain renders a read script's error without its MF code.
func plain(err error) error {
	var re goredis.Error
	if errors.As(err, &re) {
		if rest, ok := strings.CutPrefix(re.Error(), "MFBAD "); ok {
			return errors.New(rest)
		}
	}
	return err
}

// stream is one index of one shard that a listing walks.
type stream struct {
	keys []string // KEYS of the list script
	args []any    // its ARGV after min, want and budget
	min  string   // where the next script starts: "-", "(id" or "[bound"
	done bool
}

// entry is a record a listing found, with its id.
type entry[T any] struct {
	id string
	v  *T
}

// walkStreams runs sc on every stream, in rounds of one pipeline, until
// each stream is exhausted or has given want records that keep accepts,
// then merges them in id order and returns the first want. sc follows the
// walk convention (scripts.go): ARGV min, want, budget, then the stream's
// args; reply {last id examined, done, {id, data, ...}}.
//
// The page is exact: a stream is read in id order, so a record it did not
// reach sorts after want records of its own and cannot be among the first
// want of all.
func walkStreams[T any](ctx context.Context, s *Store, sc *goredis.Script, streams []*stream, want int,
	keep func(id, data string) (*T, bool, error)) ([]*T, error) {
	got := make([][]entry[T], len(streams))
	for {
		var todo []int
		for i, st := range streams {
			if !st.done && len(got[i]) < want {
				todo = append(todo, i)
			}
		}
		if len(todo) == 0 {
			break
		}
		cmds, err := s.evalEach(ctx, sc, len(todo), func(j int) ([]string, []any) {
			i := todo[j]
			st := streams[i]
			return st.keys, append([]any{st.min, want - len(got[i]), listBudget}, st.args...)
		})
		if err != nil {
			return nil, err
		}
		for j, i := range todo {
			st := streams[i]
			r, ok := cmds[j].Val().([]any)
			if !ok || len(r) != 3 {
				return nil, fmt.Errorf("unexpected reply %v", cmds[j].Val())
			}
			last, _ := r[0].(string)
			done, _ := r[1].(int64)
			flat, _ := r[2].([]any)
			if last != "" {
				st.min = "(" + last
			}
			st.done = done == 1
			for k := 0; k+1 < len(flat); k += 2 {
				id, _ := flat[k].(string)
				data, _ := flat[k+1].(string)
				v, ok, err := keep(id, data)
				if err != nil {
					return nil, err
				}
				if ok {
					got[i] = append(got[i], entry[T]{id, v})
				}
			}
		}
	}
	var all []entry[T]
	for _, g := range got {
		all = append(all, g...)
	}
	slices.SortFunc(all, func(a, b entry[T]) int { return cmp.Compare(a.id, b.id) })
	if len(all) > want {
		all = all[:want]
	}
	if len(all) == 0 {
		return nil, nil // as the memory store answers
	}
	out := make([]*T, len(all))
	for i, e := range all {
		out[i] = e.v
	}
	return out, nil
}
