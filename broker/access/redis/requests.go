package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/access"
)

// Requests and grants are versioned records of a family (keys.go): a hash
// holding the version, the JSON and the indexed fields, and an entry in
// the family's every-id index and in one index per indexed field.

func encodeJSON(what, id string, v any) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("redis: encode %s %s: %w", what, id, err)
	}
	return string(data), nil
}

// decodeJSON decodes a stored value; its error has no "redis: " prefix,
// for callers that wrap it.
func decodeJSON[T any](what, id, data string) (*T, error) {
	v := new(T)
	if err := json.Unmarshal([]byte(data), v); err != nil {
		return nil, fmt.Errorf("%s %s is damaged: %w", what, id, err)
	}
	return v, nil
}

// decoded is decodeJSON for a top-level result.
func decoded[T any](what, id, data string) (*T, error) {
	v, err := decodeJSON[T](what, id, data)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	return v, nil
}

// create stores a new record of f with version 1; values are its indexed
// fields, in the order of f.fields.
func (s *Store) create(ctx context.Context, f *family, id, data string, values []string) error {
	k := s.keysOf(id)
	ks := []string{k.one(f, id), k.gen(), k.all(f)}
	args := []any{id, data, newGeneration()}
	for i, v := range values {
		ks = append(ks, k.index(f, i, v))
		args = append(args, f.fields[i].field, v)
	}
	if _, err := s.run(ctx, createScript, ks, args...); err != nil {
		return fail("create", f.what, id, err)
	}
	return nil
}

// update stores a record of f at version+1 if it is at version.
func (s *Store) update(ctx context.Context, f *family, id string, version int64, data string, values []string) error {
	k := s.keysOf(id)
	ks := []string{k.one(f, id), k.gen()}
	args := []any{k.p, id, strconv.FormatInt(version, 10), strconv.FormatInt(version+1, 10), data, newGeneration()}
	for i, v := range values {
		ks = append(ks, k.index(f, i, v))
		args = append(args, f.fields[i].field, f.fields[i].index, v)
	}
	if _, err := s.run(ctx, updateScript, ks, args...); err != nil {
		return fail("update", f.what, id, err)
	}
	return nil
}

// get returns the JSON of a record of f.
func (s *Store) get(ctx context.Context, f *family, id string) (string, error) {
	data, err := s.c.HGet(ctx, s.keysOf(id).one(f, id), fJSON).Result()
	if errors.Is(err, goredis.Nil) {
		return "", fmt.Errorf("redis: %s %s: %w", f.what, id, access.ErrNotFound)
	}
	if err != nil {
		return "", fail("get", f.what, id, err)
	}
	return data, nil
}

// filter keeps the records whose indexed field i is one of values.
type filter struct {
	i      int
	values []string
}

// list returns up to limit records of f after the id after that pass
// every filter, in ascending id order. It walks, in every shard, the
// indexes of the filter with the fewest entries (one index per value), or
// the every-id index without filters, and merges.
func list[T any](ctx context.Context, s *Store, f *family, filters []filter, after string, limit int) ([]*T, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	indexes, err := s.smallest(ctx, f, filters)
	if err != nil {
		return nil, fmt.Errorf("redis: list %ss: %w", f.what, err)
	}
	args := []any{"", len(filters)}
	for _, fl := range filters {
		args = append(args, f.fields[fl.i].field, len(fl.values))
		for _, v := range fl.values {
			args = append(args, v)
		}
	}
	var streams []*stream
	for _, k := range s.shards {
		a := slices.Clone(args)
		a[0] = k.p + f.one
		for _, index := range indexes(k) {
			streams = append(streams, &stream{keys: []string{index}, args: a, min: afterBound(after)})
		}
	}
	out, err := walkStreams(ctx, s, listScript, streams, limit, func(id, data string) (*T, bool, error) {
		v, err := decodeJSON[T](f.what, id, data)
		return v, err == nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("redis: list %ss: %w", f.what, err)
	}
	return out, nil
}

// smallest picks the indexes a listing walks: those of the filter whose
// indexes hold the fewest ids over all shards (one pipeline of ZCARD), or
// the every-id index.
func (s *Store) smallest(ctx context.Context, f *family, filters []filter) (func(keys) []string, error) {
	pick := func(fl filter) func(keys) []string {
		return func(k keys) []string {
			out := make([]string, len(fl.values))
			for i, v := range fl.values {
				out[i] = k.index(f, fl.i, v)
			}
			return out
		}
	}
	switch len(filters) {
	case 0:
		return func(k keys) []string { return []string{k.all(f)} }, nil
	case 1:
		return pick(filters[0]), nil
	}
	pipe := s.c.Pipeline()
	counts := make([][]*goredis.IntCmd, len(filters))
	for i, fl := range filters {
		for _, k := range s.shards {
			for _, index := range pick(fl)(k) {
				counts[i] = append(counts[i], pipe.ZCard(ctx, index))
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	best, bestN := 0, int64(-1)
	for i, cs := range counts {
		var n int64
		for _, c := range cs {
			n += c.Val()
		}
		if bestN < 0 || n < bestN {
			best, bestN = i, n
		}
	}
	return pick(filters[best]), nil
}

// afterBound is the ZRANGEBYLEX bound of the ids after id ("" for all).
func afterBound(id string) string {
	if id == "" {
		return "-"
	}
	return "(" + id
}

// eq adds a filter on field i for value v, if v is set.
func eq(filters []filter, i int, v string) []filter {
	if v == "" {
		return filters
	}
	return append(filters, filter{i, []string{v}})
}

// anyOf adds a filter on field i for a set of values (states), if any.
func anyOf[S ~string](filters []filter, i int, ss []S) []filter {
	if len(ss) == 0 {
		return filters
	}
	var vs []string
	for _, st := range ss {
		if !slices.Contains(vs, string(st)) {
			vs = append(vs, string(st))
		}
	}
	return append(filters, filter{i, vs})
}

func requestValues(r *access.Request) []string {
	return []string{r.Requester.ID, r.Entitlement, string(r.State)}
}

func grantValues(g *access.Grant) []string {
	return []string{g.Subject, g.Entitlement, string(g.Kind), string(g.State)}
}

// CreateRequest stores a new request with Version 1 and sets r.Version.
// See access.Store.
func (s *Store) CreateRequest(ctx context.Context, r *access.Request) error {
	if err := live(ctx); err != nil {
		return err
	}
	if r == nil {
		return errors.New("redis: nil request")
	}
	if r.ID == "" {
		return errors.New("redis: request without id")
	}
	c := *r
	c.Version = 1
	data, err := encodeJSON("request", r.ID, &c)
	if err != nil {
		return err
	}
	if err := s.create(ctx, requests, r.ID, data, requestValues(&c)); err != nil {
		return err
	}
	r.Version = 1
	return nil
}

// GetRequest returns the request. See access.Store.
func (s *Store) GetRequest(ctx context.Context, id string) (*access.Request, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	data, err := s.get(ctx, requests, id)
	if err != nil {
		return nil, err
	}
	return decoded[access.Request]("request", id, data)
}

// UpdateRequest stores r at r.Version+1 if the stored request is at
// r.Version, moving its index entries if its requester, entitlement or
// state changed, and returns what it stored. See access.Store.
func (s *Store) UpdateRequest(ctx context.Context, r *access.Request) (*access.Request, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	if r == nil {
		return nil, errors.New("redis: nil request")
	}
	c := *r
	c.Version++
	data, err := encodeJSON("request", r.ID, &c)
	if err != nil {
		return nil, err
	}
	if err := s.update(ctx, requests, r.ID, r.Version, data, requestValues(&c)); err != nil {
		return nil, err
	}
	return decoded[access.Request]("request", r.ID, data)
}

// ListRequests returns up to q.Limit matching requests with ids after
// q.After, in ascending id order. See access.Store.
func (s *Store) ListRequests(ctx context.Context, q access.RequestQuery) ([]*access.Request, error) {
	var fs []filter
	fs = eq(fs, rqRequester, q.Requester)
	fs = eq(fs, rqEntitlement, q.Entitlement)
	fs = anyOf(fs, rqState, q.States)
	return list[access.Request](ctx, s, requests, fs, q.After, access.PageLimit(q.Limit))
}

// CreateGrant stores a new grant with Version 1 and sets g.Version. See
// access.Store.
func (s *Store) CreateGrant(ctx context.Context, g *access.Grant) error {
	if err := live(ctx); err != nil {
		return err
	}
	if g == nil {
		return errors.New("redis: nil grant")
	}
	if g.ID == "" {
		return errors.New("redis: grant without id")
	}
	c := *g
	c.Version = 1
	data, err := encodeJSON("grant", g.ID, &c)
	if err != nil {
		return err
	}
	if err := s.create(ctx, grants, g.ID, data, grantValues(&c)); err != nil {
		return err
	}
	g.Version = 1
	return nil
}

// GetGrant returns the grant. See access.Store.
func (s *Store) GetGrant(ctx context.Context, id string) (*access.Grant, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	data, err := s.get(ctx, grants, id)
	if err != nil {
		return nil, err
	}
	return decoded[access.Grant]("grant", id, data)
}

// UpdateGrant is UpdateRequest for grants. See access.Store.
func (s *Store) UpdateGrant(ctx context.Context, g *access.Grant) (*access.Grant, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	if g == nil {
		return nil, errors.New("redis: nil grant")
	}
	c := *g
	c.Version++
	data, err := encodeJSON("grant", g.ID, &c)
	if err != nil {
		return nil, err
	}
	if err := s.update(ctx, grants, g.ID, g.Version, data, grantValues(&c)); err != nil {
		return nil, err
	}
	return decoded[access.Grant]("grant", g.ID, data)
}

// ListGrants is ListRequests for grants, filtered by subject,
// entitlement, kind and states. See access.Store.
func (s *Store) ListGrants(ctx context.Context, q access.GrantQuery) ([]*access.Grant, error) {
	var fs []filter
	fs = eq(fs, grSubject, q.Subject)
	fs = eq(fs, grEntitlement, q.Entitlement)
	fs = eq(fs, grKind, string(q.Kind))
	fs = anyOf(fs, grState, q.States)
	return list[access.Grant](ctx, s, grants, fs, q.After, access.PageLimit(q.Limit))
}
